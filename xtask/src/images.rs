//! Stage build & push: the service image (a static binary and the model
//! artifact on `scratch`) and the nginx image, tagged with the commit sha;
//! the service image is pushed to the local registry, where the
//! integration stage and the deployment controller pull it from.
//!
//! The Docker build context is assembled under `target/images/` from the
//! few files each image needs, never the whole repository.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::docker::{self, docker};
use crate::process::{cmd, output, run};
use crate::revision::{self, Revision};
use crate::{nginx_image, paths, registry};

/// The service image repository in the local registry.
pub const SERVICE_REPO: &str = "localhost:5000/taxi/service";
/// The Rust target the service is built for: static glibc (static-pie).
const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

#[derive(clap::Args, Debug, Clone, Default)]
pub struct BuildArgs {
    /// The model artifact baked into the service image
    /// [default: artifacts/model.json, written by `cargo xtask train`].
    #[arg(long, env = "TAXI_MODEL")]
    pub model: Option<PathBuf>,
    /// The Debian mirror for the nginx root file system [default: the one
    /// apt uses on this machine].
    #[arg(long, env = "DEBIAN_MIRROR")]
    pub debian_mirror: Option<String>,
}

/// What a build produced; also written to `artifacts/images.json` for the
/// stages (and CI jobs) that come after.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Built {
    /// `localhost:5000/taxi/service:<sha>[-dirty]`, pushed.
    pub service: String,
    /// `taxi/nginx:<sha>[-dirty]`, local.
    pub nginx: String,
    /// The revision tag both carry.
    pub tag: String,
    /// The model version baked into the service image.
    pub model_version: String,
    pub service_bytes: u64,
    pub nginx_bytes: u64,
}

/// Where a build records what it produced.
pub fn record_path() -> PathBuf {
    paths::artifacts().join("images.json")
}

/// What the last build in this workspace produced, if any.
pub fn last_built() -> Option<Built> {
    let text = fs::read_to_string(record_path()).ok()?;
    serde_json::from_str(&text).ok()
}

/// The default model artifact path.
pub fn default_model() -> PathBuf {
    paths::artifacts().join("model.json")
}

/// The model artifact a build bakes in: read, and validated by the `model`
/// crate exactly as the service will.
pub fn load_model(path: &Path) -> Result<model::ModelArtifact> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no model artifact at {}: run `cargo xtask train` first (or pass --model)",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    model::ModelArtifact::from_json(&text)
        .with_context(|| format!("{} is not a usable model artifact", path.display()))
}

pub fn build(args: &BuildArgs) -> Result<Built> {
    docker::ensure_running()?;
    // First, so a taken port 5000 fails the stage before minutes of building.
    let registry_guard = registry::ensure_running()?;
    let model_path = args.model.clone().unwrap_or_else(default_model);
    let artifact = load_model(&model_path)?;
    let revision = Revision::current()?;
    let tag = revision.tag();
    // The commit's time, not the clock's (as SOURCE_DATE_EPOCH would):
    // the same inputs then give the same image ID, so a rebuild hits the
    // build cache and `up` leaves unchanged containers alone.
    let created = revision.committed_at.clone();
    let source = revision::source_url().unwrap_or_default();

    let binary = build_static_service()?;
    let service = format!("{SERVICE_REPO}:{tag}");
    build_service_image(
        &binary,
        &model_path,
        &service,
        &[
            ("REVISION", revision.commit.clone()),
            ("VERSION", tag.clone()),
            ("CREATED", created.clone()),
            ("SOURCE", source.clone()),
            ("MODEL_VERSION", artifact.model_version.clone()),
            ("MODEL_SHA256", sha256_of(&model_path)?),
        ],
    )?;

    let base = nginx_image::ensure_base(args.debian_mirror.as_deref())?;
    let nginx = nginx_image::build(
        &base,
        &tag,
        &[("REVISION", revision.commit.clone()), ("CREATED", created), ("SOURCE", source)],
    )?;

    docker::push(&service)?;
    let latest = format!("{SERVICE_REPO}:latest");
    run(docker(["tag", &service, &latest]))?;
    docker::push(&latest)?;
    drop(registry_guard);
    prune_superseded();

    let built = Built {
        service_bytes: image_size(&service)?,
        nginx_bytes: image_size(&nginx)?,
        service,
        nginx,
        tag,
        model_version: artifact.model_version,
    };
    fs::create_dir_all(paths::artifacts())?;
    fs::write(record_path(), serde_json::to_string_pretty(&built)?)?;
    println!("service image  {}  {}", built.service, megabytes(built.service_bytes));
    println!("nginx image    {}  {}", built.nginx, megabytes(built.nginx_bytes));
    println!("pushed {} (and :latest) to {}", built.service, registry::ADDR);
    Ok(built)
}

/// Removes the dangling images earlier builds of this project left behind
/// (a rebuilt `-dirty` tag moves to the new image); best effort.
fn prune_superseded() {
    for title in ["taxi-fare service", "taxi-fare nginx"] {
        let filter = format!("label=org.opencontainers.image.title={title}");
        if let Err(e) = output(docker(["image", "prune", "-f", "--filter", &filter])) {
            eprintln!("warning: cannot prune superseded images: {e:#}");
        }
    }
}

/// `RUSTFLAGS="-C target-feature=+crt-static" cargo build --release
/// --target x86_64-unknown-linux-gnu -p service`, then checks the result
/// really needs no dynamic loader (a `scratch` image has none).
fn build_static_service() -> Result<PathBuf> {
    let mut flags = std::env::var("RUSTFLAGS").unwrap_or_default();
    if !flags.contains("crt-static") {
        flags = format!("{flags} -C target-feature=+crt-static").trim().to_owned();
    }
    let mut c = cmd("cargo", ["build", "--release", "--target", STATIC_TARGET, "-p", "service"]);
    c.env("RUSTFLAGS", &flags).current_dir(paths::root());
    run(c)?;
    let binary = paths::cargo_target().join(STATIC_TARGET).join("release/service");
    let bytes = fs::read(&binary).with_context(|| format!("cannot read {}", binary.display()))?;
    if elf_needs_interpreter(&bytes)? {
        bail!("{} is dynamically linked; a scratch image cannot run it", binary.display());
    }
    Ok(binary)
}

/// Whether an ELF64 little-endian executable has a `PT_INTERP` header,
/// i.e. needs a dynamic loader at run time.
fn elf_needs_interpreter(elf: &[u8]) -> Result<bool> {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| elf.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let u64_at =
        |o: usize| elf.get(o..o + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    if elf.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        bail!("not a 64-bit little-endian ELF file");
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        bail!("truncated ELF header");
    };
    for i in 0..usize::from(phnum) {
        let at = usize::try_from(phoff)? + i * usize::from(phentsize);
        match u32_at(at) {
            Some(PT_INTERP) => return Ok(true),
            Some(_) => {}
            None => bail!("truncated ELF program headers"),
        }
    }
    Ok(false)
}

fn build_service_image(
    binary: &Path,
    model: &Path,
    reference: &str,
    build_args: &[(&str, String)],
) -> Result<()> {
    let context = fresh_context("service")?;
    copy_with_mode(binary, &context.join("service"), 0o755)?;
    copy_with_mode(model, &context.join("model.json"), 0o644)?;
    docker::build(&context, &[reference], build_args)
}

/// An empty build context for the image `name` under `target/images/`,
/// holding `images/<name>/Dockerfile`; the caller adds the other files.
pub fn fresh_context(name: &str) -> Result<PathBuf> {
    let context = paths::target().join("images").join(name);
    paths::remove_dir_if_present(&context)?;
    fs::create_dir_all(&context)?;
    let dockerfile = paths::root().join("images").join(name).join("Dockerfile");
    fs::copy(&dockerfile, context.join("Dockerfile"))
        .with_context(|| format!("cannot copy {}", dockerfile.display()))?;
    Ok(context)
}

fn copy_with_mode(from: &Path, to: &Path, mode: u32) -> Result<()> {
    fs::copy(from, to).with_context(|| format!("cannot copy {}", from.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The file's sha256, by coreutils' `sha256sum` (always on Debian).
fn sha256_of(path: &Path) -> Result<String> {
    let out = output(cmd("sha256sum", [path]))?;
    out.split_whitespace()
        .next()
        .map(str::to_owned)
        .with_context(|| format!("unexpected sha256sum output {out:?}"))
}

fn image_size(reference: &str) -> Result<u64> {
    let text = docker::inspect(reference, "{{.Size}}")?;
    text.parse().with_context(|| format!("unexpected image size {text:?}"))
}

/// Bytes as megabytes (10^6, as `docker images` counts them).
pub fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf_with_headers(types: &[u32]) -> Vec<u8> {
        let mut elf = vec![0u8; 64 + 56 * types.len()];
        elf[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1]);
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&(types.len() as u16).to_le_bytes());
        for (i, t) in types.iter().enumerate() {
            elf[64 + 56 * i..68 + 56 * i].copy_from_slice(&t.to_le_bytes());
        }
        elf
    }

    #[test]
    fn tells_static_from_dynamic_executables() {
        assert!(elf_needs_interpreter(&elf_with_headers(&[6, 3, 1])).unwrap());
        assert!(!elf_needs_interpreter(&elf_with_headers(&[6, 1, 1, 2])).unwrap());
        assert!(elf_needs_interpreter(b"#!/bin/sh\n").is_err());
        let mut truncated = elf_with_headers(&[1, 3]);
        truncated.truncate(100);
        assert!(elf_needs_interpreter(&truncated).is_err());
    }

    #[test]
    fn this_test_binary_is_dynamic() {
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        // Test binaries are built without crt-static: they need ld.so.
        assert!(elf_needs_interpreter(&me).unwrap());
    }

    #[test]
    fn a_missing_model_is_named() {
        let err = load_model(Path::new("/nonexistent/model.json")).unwrap_err();
        assert!(format!("{err:#}").contains("cargo xtask train"), "{err:#}");
    }
}
