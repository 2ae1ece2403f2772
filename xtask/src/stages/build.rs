//! Stage build & push: the service image (a static binary and the model
//! artifact on `scratch`), the controller image, the nginx image and the
//! Prometheus image, tagged with the commit sha;
//! the service image is pushed to the local registry, where the
//! integration stage and the deployment controller pull it from.
//! The recipes themselves live in [`crate::images`]; this stage runs them,
//! pushes, and records what it built in `artifacts/images.json`.

use std::path::PathBuf;

use anyhow::{Context, Result};

use bluegreen::{REGISTRY_ADDR, SERVICE_REPOSITORY};

use crate::effects::docker::{self, docker};
use crate::effects::process::{output, run};
use crate::effects::registry;
use crate::effects::revision::{self, Revision};
use crate::images::{controller, nginx, prometheus, service, static_binary};
use crate::stages::artifacts::{self, Built};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct BuildArgs {
    /// The model artifact baked into the service image
    /// [default: artifacts/model.json, written by `cargo xtask train`].
    #[arg(long, env = "TAXI_MODEL")]
    pub model: Option<PathBuf>,
    /// The Debian mirror for the nginx and Prometheus root file systems
    /// [default: the one apt uses on this machine].
    #[arg(long, env = "DEBIAN_MIRROR")]
    pub debian_mirror: Option<String>,
}

pub fn build(args: &BuildArgs) -> Result<Built> {
    docker::ensure_running()?;
    // First, so a taken port 5000 fails the stage before minutes of building.
    let registry_guard = registry::ensure_running()?;
    let model_path = args.model.clone().unwrap_or_else(artifacts::model_path);
    let artifact = artifacts::load_model(&model_path)?;
    let revision = Revision::current()?;
    let tag = revision.tag();
    // The commit's time, not the clock's (as SOURCE_DATE_EPOCH would):
    // the same inputs then give the same image ID, so a rebuild hits the
    // build cache and `up` leaves unchanged containers alone.
    let created = revision.committed_at.clone();
    let source = revision::source_url().unwrap_or_default();

    let binaries = static_binary::build(&["service", "controller"])?;
    let service = format!("{SERVICE_REPOSITORY}:{tag}");
    service::build_image(
        &binaries[0],
        &model_path,
        &service,
        &[
            ("REVISION", revision.commit.clone()),
            ("VERSION", tag.clone()),
            ("CREATED", created.clone()),
            ("SOURCE", source.clone()),
            ("MODEL_VERSION", artifact.model_version.clone()),
            ("MODEL_SHA256", service::sha256_of(&model_path)?),
        ],
    )?;

    let controller = format!("{}:{tag}", controller::REPOSITORY);
    controller::build_image(
        &binaries[1],
        &controller,
        &[
            ("REVISION", revision.commit.clone()),
            ("CREATED", created.clone()),
            ("SOURCE", source.clone()),
        ],
    )?;

    let base = nginx::BASE.ensure(args.debian_mirror.as_deref())?;
    let nginx = nginx::build(
        &base,
        &tag,
        &[
            ("REVISION", revision.commit.clone()),
            ("CREATED", created.clone()),
            ("SOURCE", source.clone()),
        ],
    )?;

    // Tagged as nginx's: the stack finds it beside nginx's image
    // (`prometheus::beside`).
    let prometheus_base = prometheus::BASE.ensure(args.debian_mirror.as_deref())?;
    let prometheus = prometheus::build(
        &prometheus_base,
        &tag,
        &[("REVISION", revision.commit.clone()), ("CREATED", created), ("SOURCE", source)],
    )?;

    docker::push(&service)?;
    let latest = format!("{SERVICE_REPOSITORY}:latest");
    run(docker(["tag", &service, &latest]))?;
    docker::push(&latest)?;
    drop(registry_guard);
    prune_superseded();

    let built = Built {
        service_bytes: image_size(&service)?,
        nginx_bytes: image_size(&nginx)?,
        controller_bytes: image_size(&controller)?,
        service,
        nginx,
        controller,
        tag,
        model_version: artifact.model_version,
    };
    built.record()?;
    println!("service image  {}  {}", built.service, megabytes(built.service_bytes));
    println!("nginx image    {}  {}", built.nginx, megabytes(built.nginx_bytes));
    println!("controller     {}  {}", built.controller, megabytes(built.controller_bytes));
    println!("prometheus     {}  {}", prometheus, megabytes(image_size(&prometheus)?));
    println!("pushed {} (and :latest) to {}", built.service, REGISTRY_ADDR);
    Ok(built)
}

/// Removes the dangling images earlier builds of this project left behind
/// (a rebuilt `-dirty` tag moves to the new image); best effort.
fn prune_superseded() {
    for title in
        ["taxi-fare service", "taxi-fare nginx", "taxi-fare controller", "taxi-fare prometheus"]
    {
        let filter = format!("label=org.opencontainers.image.title={title}");
        if let Err(e) = output(docker(["image", "prune", "-f", "--filter", &filter])) {
            eprintln!("warning: cannot prune superseded images: {e:#}");
        }
    }
}

fn image_size(reference: &str) -> Result<u64> {
    let text = docker::inspect(reference, "{{.Size}}")?;
    text.parse().with_context(|| format!("unexpected image size {text:?}"))
}

/// Bytes as megabytes (10^6, as `docker images` counts them).
pub fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}
