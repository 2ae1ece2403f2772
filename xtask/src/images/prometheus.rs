//! The Prometheus image, built offline from Debian's packages as nginx's
//! is ([`super::nginx`]): a `debootstrap --variant=minbase
//! --include=prometheus,prometheus-nginx-exporter` root file system,
//! trimmed, loaded with `docker import` as
//! `taxi/prometheus-base:<suite>-<recipe hash>` and cached by that tag. The
//! project image, `taxi/prometheus:<revision>`, adds `prometheus/`'s
//! configuration and rules, checked with `promtool` inside it before it is
//! accepted. The same image runs the nginx exporters of the stack.

use std::fs;

use anyhow::{Context, Result};

use crate::effects::docker::{self, docker};
use crate::effects::paths;
use crate::effects::process::run;
use crate::images;
use crate::images::debian_base::Recipe;

/// The project's Prometheus image repository (local only, as nginx's).
pub const REPO: &str = "taxi/prometheus";

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

/// Prometheus's base image, with the nginx exporter.
pub const BASE: Recipe = Recipe {
    name: "prometheus",
    repo: "taxi/prometheus-base",
    suite: "bookworm",
    packages: "prometheus,prometheus-nginx-exporter",
    trim: TRIM,
    keep_empty: KEEP_EMPTY,
    import_changes: IMPORT_CHANGES,
};

/// The files of `prometheus/` the image carries, and where in the build
/// context they go.
const FILES: &[(&str, &str)] = &[
    ("prometheus.yml", "prometheus.yml"),
    ("rules.yml", "rules.yml"),
    ("targets/targets.json", "targets.json"),
];

/// The Prometheus image built beside `nginx_image` (`taxi/nginx:<tag>`):
/// the build stage tags both with the same revision, and `images.json`
/// records only nginx's.
pub fn beside(nginx_image: &str) -> String {
    let tag = nginx_image.rsplit_once(':').map_or("latest", |(_, t)| t);
    format!("{REPO}:{tag}")
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
    fn another_recipe_than_nginx_s_so_another_cached_base() {
        let tag = BASE.tag();
        assert!(tag.starts_with("bookworm-") && tag.len() == "bookworm-".len() + 16, "{tag}");
        assert_ne!(tag, crate::images::nginx::BASE.tag());
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
