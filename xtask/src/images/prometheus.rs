//! The Prometheus image, built offline from Debian's packages as nginx's
//! is ([`super::nginx`]): a `debootstrap --variant=minbase
//! --include=prometheus,prometheus-nginx-exporter` root file system,
//! trimmed, loaded with `docker import` as
//! `taxi/prometheus-base:<suite>-<recipe hash>` and cached by that tag. The
//! project image, `taxi/prometheus:<revision>`, adds `prometheus/`'s
//! configuration and rules, checked with `promtool` inside it before it is
//! accepted. The same image runs the nginx exporters of the stack.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};

use crate::effects::docker::{self, docker};
use crate::effects::process::{cmd, run};
use crate::effects::{deps, paths};
use crate::images::{self, nginx};

/// The cached base image's repository.
pub const BASE_REPO: &str = "taxi/prometheus-base";
/// The project's Prometheus image repository (local only, as nginx's).
pub const REPO: &str = "taxi/prometheus";

const SUITE: &str = "bookworm";
const PACKAGES: &str = "prometheus,prometheus-nginx-exporter";
/// Paths (relative to the root file system) removed after the bootstrap:
/// nothing Prometheus or the exporter needs at run time. A trailing `*`
/// matches a name prefix.
const TRIM: &[&str] = &[
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/i18n",
    "usr/share/lintian",
    "usr/share/bash-completion",
    "usr/share/common-licenses",
    "usr/share/perl5",
    "usr/lib/x86_64-linux-gnu/gconv",
    "usr/lib/x86_64-linux-gnu/perl-base",
    "usr/lib/x86_64-linux-gnu/libapt-*",
    "usr/bin/perl*",
    "usr/bin/apt*",
    "usr/lib/apt",
    "etc/apt",
    "var/cache/apt",
    "var/lib/apt",
    "var/cache/debconf",
    "var/log",
];
/// Directories recreated empty after the trim.
const KEEP_EMPTY: &[&str] = &["var/log", "var/cache/debconf", "tmp"];
/// The imported image's defaults.
const IMPORT_CHANGES: &[&str] = &[
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    r#"CMD ["prometheus", "--config.file=/etc/prometheus/prometheus.yml"]"#,
];

/// The files of `prometheus/` the image carries, and where in the build
/// context they go.
const FILES: &[(&str, &str)] = &[
    ("prometheus.yml", "prometheus.yml"),
    ("rules.yml", "rules.yml"),
    ("targets/targets.json", "targets.json"),
];

/// The base image's tag: the suite and a hash of the recipe.
pub fn base_tag() -> String {
    let recipe: Vec<&str> = [SUITE, PACKAGES, "minbase"]
        .into_iter()
        .chain(TRIM.iter().copied())
        .chain(KEEP_EMPTY.iter().copied())
        .chain(IMPORT_CHANGES.iter().copied())
        .collect();
    tag_of(&recipe)
}

/// `<suite>-<16 hex digits>`: the FNV-1a hash of the recipe's parts, in
/// order (stable across Rust releases, as std's hash is not promised to
/// be).
fn tag_of(recipe: &[&str]) -> String {
    let hash = recipe
        .join("|")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("{SUITE}-{hash:016x}")
}

/// The Prometheus image built beside `nginx_image` (`taxi/nginx:<tag>`):
/// the build stage tags both with the same revision, and `images.json`
/// records only nginx's.
pub fn beside(nginx_image: &str) -> String {
    let tag = nginx_image.rsplit_once(':').map_or("latest", |(_, t)| t);
    format!("{REPO}:{tag}")
}

/// Makes sure the base image exists, bootstrapping it if not; returns its
/// reference. `mirror` overrides the Debian mirror read from apt's sources.
pub fn ensure_base(mirror: Option<&str>) -> Result<String> {
    let reference = format!("{BASE_REPO}:{}", base_tag());
    if docker::image_id(&reference)?.is_some() {
        eprintln!("prometheus base image {reference} is cached");
        return Ok(reference);
    }
    deps::ensure(deps::NGINX_ROOTFS)?;
    let mirror = match mirror {
        Some(m) => m.to_owned(),
        None => nginx::apt_mirror(SUITE)?,
    };
    let rootfs = paths::target().join("images/prometheus-rootfs");
    paths::remove_dir_if_present(&rootfs)?;
    fs::create_dir_all(&rootfs)?;
    eprintln!("bootstrapping the prometheus root file system from {mirror} (a few minutes)");
    let mut bootstrap =
        cmd("debootstrap", ["--variant=minbase", &format!("--include={PACKAGES}"), SUITE]);
    bootstrap.arg(&rootfs).arg(&mirror);
    run(bootstrap)?;
    trim(&rootfs)?;
    import(&rootfs, &reference)?;
    paths::remove_dir_if_present(&rootfs)?;
    Ok(reference)
}

/// Removes [`TRIM`] from the root file system, then recreates
/// [`KEEP_EMPTY`].
fn trim(rootfs: &Path) -> Result<()> {
    for pattern in TRIM {
        for path in expand(rootfs, pattern)? {
            let meta = fs::symlink_metadata(&path)?;
            if meta.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) }
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    for dir in KEEP_EMPTY {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    Ok(())
}

/// The existing paths a [`TRIM`] pattern names.
fn expand(rootfs: &Path, pattern: &str) -> Result<Vec<PathBuf>> {
    let Some(prefix_path) = pattern.strip_suffix('*') else {
        let p = rootfs.join(pattern);
        return Ok(if fs::symlink_metadata(&p).is_ok() { vec![p] } else { Vec::new() });
    };
    let (dir, prefix) = prefix_path.rsplit_once('/').unwrap_or(("", prefix_path));
    let mut found = Vec::new();
    if let Ok(entries) = fs::read_dir(rootfs.join(dir)) {
        for entry in entries {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                found.push(entry.path());
            }
        }
    }
    Ok(found)
}

/// `tar -C ROOTFS -c . | docker import --change … - REFERENCE`.
fn import(rootfs: &Path, reference: &str) -> Result<()> {
    eprintln!("$ tar -C {} -c . | docker import - {reference}", rootfs.display());
    let mut tar = cmd("tar", ["--numeric-owner", "-C"])
        .arg(rootfs)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start tar")?;
    let stdout = tar.stdout.take().context("tar has no stdout")?;
    let mut import = docker(["import"]);
    for change in IMPORT_CHANGES {
        import.args(["--change", change]);
    }
    let status = import
        .args(["-", reference])
        .stdin(stdout)
        .status()
        .context("cannot start `docker import`")?;
    let tar_status = tar.wait()?;
    if !tar_status.success() {
        bail!("tar of the prometheus root file system failed ({tar_status})");
    }
    if !status.success() {
        bail!("`docker import` of the prometheus root file system failed ({status})");
    }
    Ok(())
}

/// Builds `taxi/prometheus:<tag>` (and `:latest`) from the base and
/// `prometheus/`, then checks the configuration and rules with `promtool`
/// inside it. Returns the image reference.
pub fn build(base: &str, tag: &str, build_args: &[(&str, String)]) -> Result<String> {
    let context = images::fresh_context("prometheus")?;
    for (from, to) in FILES {
        fs::copy(paths::root().join("prometheus").join(from), context.join(to))
            .with_context(|| format!("cannot copy prometheus/{from}"))?;
    }
    let reference = format!("{REPO}:{tag}");
    let mut args = vec![("BASE", base.to_owned())];
    args.extend_from_slice(build_args);
    docker::build(&context, &[&reference, &format!("{REPO}:latest")], &args)?;
    check_config(&reference)?;
    Ok(reference)
}

/// `promtool check config` (which checks the rule files it names too) in
/// a throwaway container, and the exporter's presence.
fn check_config(reference: &str) -> Result<()> {
    let in_image = |args: &[&str]| {
        let mut c = docker(["run", "--rm", "--network", "none", reference]);
        c.args(args);
        run(c)
    };
    in_image(&["promtool", "check", "config", "/etc/prometheus/prometheus.yml"])
        .context("promtool rejects prometheus/prometheus.yml in the image")?;
    in_image(&["prometheus-nginx-exporter", "-version"])
        .context("the image has no working prometheus-nginx-exporter")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_tag_follows_the_recipe() {
        let tag = base_tag();
        assert!(tag.starts_with("bookworm-") && tag.len() == "bookworm-".len() + 16, "{tag}");
        let mut recipe = vec![SUITE, PACKAGES, "minbase"];
        recipe.extend(TRIM);
        recipe.extend(KEEP_EMPTY);
        recipe.extend(IMPORT_CHANGES);
        assert_eq!(tag_of(&recipe), tag);
        // FNV-1a of the same parts as nginx's recipe hashes them.
        assert_eq!(tag_of(&[""]), format!("{SUITE}-cbf29ce484222325"));
        recipe.swap(0, 1);
        assert_ne!(tag_of(&recipe), tag);
        // Another recipe than nginx's, so another cached base.
        assert_ne!(tag, nginx::base_tag());
    }

    #[test]
    fn the_image_sits_beside_nginx_s() {
        assert_eq!(beside("taxi/nginx:3f1c-dirty"), "taxi/prometheus:3f1c-dirty");
        assert_eq!(beside("taxi/nginx"), "taxi/prometheus:latest");
    }

    #[test]
    fn the_files_it_carries_exist() {
        for (from, _) in FILES {
            assert!(paths::root().join("prometheus").join(from).is_file(), "prometheus/{from}");
        }
    }
}
