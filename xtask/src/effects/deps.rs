//! Debian packages the stages need, installed on first use so a fresh
//! machine needs nothing but Rust and Docker.

use anyhow::{Result, bail};

use crate::effects::process::{cmd, output, run};

/// What each capability needs from Debian.
pub const TRAINER: &[&str] = &["libopenblas-dev", "pkg-config"];
/// The local image registry on 127.0.0.1:5000.
pub const REGISTRY: &[&str] = &["docker-registry"];
/// The nginx image's root file system, bootstrapped from Debian's packages.
pub const NGINX_ROOTFS: &[&str] = &["debootstrap"];
/// `promtool`, which the unit stage checks Prometheus' files and the
/// services' metrics with.
pub const PROMTOOL: &[&str] = &["prometheus"];
/// Compose, when neither `docker compose` nor `docker-compose` is present.
pub const COMPOSE: &[&str] = &["docker-compose"];

/// `cargo xtask bench serve`: the load generator.
pub const BENCH_SERVE: &[&str] = &["wrk"];

/// The status page's end-to-end scenario: a headless browser.
pub const BROWSER: &[&str] = &["chromium"];

/// `cargo xtask bench train`: GNU time, for the peak RSS of each run.
pub const BENCH_TRAIN: &[&str] = &["time"];

/// Makes sure the given Debian packages are installed, installing the
/// missing ones with apt-get when running as root, else naming them.
pub fn ensure(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let root = output(cmd("id", ["-u"])).map(|u| u == "0").unwrap_or(false);
    if !root {
        bail!(
            "missing Debian packages: {}; install them with `sudo apt-get install -y {}`",
            missing.join(" "),
            missing.join(" ")
        );
    }
    eprintln!("installing Debian packages: {}", missing.join(" "));
    let mut update = cmd("apt-get", ["update", "-q"]);
    update.env("DEBIAN_FRONTEND", "noninteractive");
    run(update)?;
    let mut install = cmd("apt-get", ["install", "-y", "-q", "--no-install-recommends"]);
    install.args(&missing).env("DEBIAN_FRONTEND", "noninteractive");
    run(install)
}

/// `promtool` ([`PROMTOOL`]). Debian's `prometheus` package also brings a
/// Prometheus daemon that systemd starts on port 9090, the stack's own
/// Prometheus port: when this call installs the package, that daemon is
/// stopped and disabled at once (one installed before is left alone).
pub fn ensure_promtool() -> Result<()> {
    let fresh = !installed(PROMTOOL[0]);
    ensure(PROMTOOL)?;
    if fresh && std::path::Path::new("/run/systemd/system").exists() {
        eprintln!(
            "stopping the Prometheus daemon Debian's package started (port 9090 is the stack's)"
        );
        if let Err(e) = run(cmd("systemctl", ["disable", "--now", "prometheus.service"])) {
            eprintln!("warning: cannot stop prometheus.service: {e:#}");
        }
    }
    Ok(())
}

fn installed(package: &str) -> bool {
    output(cmd("dpkg-query", ["-W", "-f=${Status}", package]))
        .map(|s| s.contains("install ok installed"))
        .unwrap_or(false)
}
