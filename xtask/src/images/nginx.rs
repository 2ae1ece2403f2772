//! The nginx image, built offline from Debian's packages.
//!
//! The base is a Debian root file system with `nginx-light`
//! ([`BASE`], made by [`debian_base`](super::debian_base)). The project image, `taxi/nginx:<revision>`, adds
//! `nginx/nginx.conf` and the upstream files on top, and its configuration
//! is checked with `nginx -t` before it is accepted.

use std::fs;

use anyhow::{Context, Result};

use crate::effects::docker::{self, docker};
use crate::effects::paths;
use crate::effects::process::run;
use crate::images;
use crate::images::debian_base::Recipe;

/// The project's nginx image repository (local only: the stack runs it
/// from the Docker image store; only the service image travels through the
/// registry).
pub const REPO: &str = "taxi/nginx";

/// Paths (relative to the root file system) removed after the bootstrap:
/// nothing nginx needs at run time. A trailing `*` matches a name prefix.
const TRIM: &[&str] = &[
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/i18n",
    "usr/share/lintian",
    "usr/share/bash-completion",
    "usr/share/zoneinfo",
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
    "var/www/html",
    "etc/nginx/sites-enabled",
    "etc/nginx/sites-available",
    "etc/nginx/conf.d",
];
/// Directories nginx expects, recreated empty after the trim.
const KEEP_EMPTY: &[&str] = &["var/log/nginx", "var/cache/debconf", "tmp"];
/// The imported image's defaults (`docker import --change` takes no
/// STOPSIGNAL on Engine 20.10: the project image's Dockerfile sets it).
const IMPORT_CHANGES: &[&str] = &[
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    r#"CMD ["nginx", "-g", "daemon off;"]"#,
];

/// nginx's base image.
pub const BASE: Recipe = Recipe {
    name: "nginx",
    repo: "taxi/nginx-base",
    suite: "bookworm",
    packages: "nginx-light",
    trim: TRIM,
    keep_empty: KEEP_EMPTY,
    import_changes: IMPORT_CHANGES,
};

/// Builds `taxi/nginx:<tag>` (and `:latest`) from the base, the project's
/// nginx.conf and upstream files, then checks the configuration with
/// `nginx -t`. Returns the image reference.
pub fn build(base: &str, tag: &str, build_args: &[(&str, String)]) -> Result<String> {
    let context = images::fresh_context("nginx")?;
    for file in [
        "nginx.conf",
        "edge.conf",
        "upstream.conf",
        "preview.conf",
        "mirror.conf",
        "upstream_blue.tmpl",
        "upstream_green.tmpl",
    ] {
        fs::copy(paths::root().join("nginx").join(file), context.join(file))
            .with_context(|| format!("cannot copy nginx/{file}"))?;
    }
    let reference = format!("{REPO}:{tag}");
    let mut args = vec![("BASE", base.to_owned())];
    args.extend_from_slice(build_args);
    docker::build(&context, &[&reference, &format!("{REPO}:latest")], &args)?;
    check_config(&reference)?;
    Ok(reference)
}

/// `nginx -t` in a throwaway container, with both colors' names resolving
/// (nginx resolves upstream hosts when it loads its configuration).
fn check_config(reference: &str) -> Result<()> {
    run(docker([
        "run",
        "--rm",
        "--network",
        "none",
        "--add-host",
        "app_blue:127.0.0.1",
        "--add-host",
        "app_green:127.0.0.1",
        reference,
        "nginx",
        "-t",
    ]))
    .context("nginx rejects nginx/nginx.conf")?;
    run(docker([
        "run",
        "--rm",
        "--network",
        "none",
        reference,
        "nginx",
        "-t",
        "-c",
        "/etc/nginx/edge.conf",
    ]))
    .context("nginx rejects nginx/edge.conf")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::debian_base::tag_of;

    #[test]
    fn the_base_tag_follows_the_recipe() {
        let tag = BASE.tag();
        assert!(tag.starts_with("bookworm-") && tag.len() == "bookworm-".len() + 16, "{tag}");
        // One trimmed path fewer, or the same parts in another order, is
        // another recipe and so another image.
        let mut recipe = vec![BASE.suite, BASE.packages, "minbase"];
        recipe.extend(TRIM);
        recipe.extend(KEEP_EMPTY);
        recipe.extend(IMPORT_CHANGES);
        assert_eq!(tag_of(BASE.suite, &recipe), tag);
        let fewer: Vec<&str> = recipe.iter().copied().filter(|p| *p != "usr/share/doc").collect();
        assert_ne!(tag_of(BASE.suite, &fewer), tag);
        recipe.swap(0, 1);
        assert_ne!(tag_of(BASE.suite, &recipe), tag);
    }
}
