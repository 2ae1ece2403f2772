//! The nginx image, built offline from Debian's packages.
//!
//! No image can be pulled on these machines, so the base is a Debian root
//! file system made here: `debootstrap --variant=minbase
//! --include=nginx-light`, trimmed hard (documentation, locales, perl, apt
//! and its lists), and loaded with `docker import` as
//! `taxi/nginx-base:<suite>-<recipe hash>`. The tag hashes the whole recipe,
//! so the slow bootstrap runs once per machine and again only when the
//! recipe changes. The project image, `taxi/nginx:<revision>`, adds
//! `nginx/nginx.conf` and the upstream files on top, and its configuration
//! is checked with `nginx -t` before it is accepted.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};

use crate::effects::docker::{self, docker};
use crate::effects::process::{cmd, run};
use crate::effects::{deps, paths};
use crate::images;

/// The cached base image's repository.
pub const BASE_REPO: &str = "taxi/nginx-base";
/// The project's nginx image repository (local only: the stack runs it
/// from the Docker image store; only the service image travels through the
/// registry).
pub const REPO: &str = "taxi/nginx";

const SUITE: &str = "bookworm";
const PACKAGES: &str = "nginx-light";
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

/// `<suite>-<16 hex digits>`: the hash of the recipe's parts, in order.
fn tag_of(recipe: &[&str]) -> String {
    format!("{SUITE}-{:016x}", fnv1a(recipe.join("|").as_bytes()))
}

/// FNV-1a, 64 bits: a hash stable across Rust releases (std's is not
/// promised to be), for naming cached images.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

/// Makes sure the base image exists, bootstrapping it if not; returns its
/// reference. `mirror` overrides the Debian mirror read from apt's sources.
pub fn ensure_base(mirror: Option<&str>) -> Result<String> {
    let reference = format!("{BASE_REPO}:{}", base_tag());
    if docker::image_id(&reference)?.is_some() {
        eprintln!("nginx base image {reference} is cached");
        return Ok(reference);
    }
    deps::ensure(deps::NGINX_ROOTFS)?;
    let mirror = match mirror {
        Some(m) => m.to_owned(),
        None => apt_mirror(SUITE)?,
    };
    let rootfs = paths::target().join("images/nginx-rootfs");
    paths::remove_dir_if_present(&rootfs)?;
    fs::create_dir_all(&rootfs)?;
    eprintln!("bootstrapping the nginx root file system from {mirror} (about a minute or three)");
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
    let dir = rootfs.join(dir);
    let mut found = Vec::new();
    if let Ok(entries) = fs::read_dir(&dir) {
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
        bail!("tar of the nginx root file system failed ({tar_status})");
    }
    if !status.success() {
        bail!("`docker import` of the nginx root file system failed ({status})");
    }
    Ok(())
}

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

/// The Debian mirror apt uses on this machine for `suite`, read from
/// /etc/apt/sources.list and /etc/apt/sources.list.d/ (one-line `.list`
/// and deb822 `.sources` files), so no mirror is named in the repository.
pub fn apt_mirror(suite: &str) -> Result<String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else { continue };
        let found = match file.extension().and_then(|e| e.to_str()) {
            Some("sources") => mirror_in_deb822(&text, suite),
            _ if file.ends_with("sources.list")
                || file.extension().is_some_and(|e| e == "list") =>
            {
                mirror_in_one_line(&text, suite)
            }
            _ => None,
        };
        if let Some(uri) = found {
            return Ok(uri);
        }
    }
    bail!(
        "no Debian mirror for `{suite}` in /etc/apt/sources.list or /etc/apt/sources.list.d/; \
         pass one with --debian-mirror (or DEBIAN_MIRROR)"
    )
}

/// A `deb [options] URI SUITE COMPONENTS…` line for `suite`.
fn mirror_in_one_line(text: &str, suite: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("").trim();
        let rest = line.strip_prefix("deb ")?.trim_start();
        let rest = if rest.starts_with('[') { rest.split_once(']')?.1 } else { rest };
        let mut words = rest.split_whitespace();
        let (uri, line_suite) = (words.next()?, words.next()?);
        (line_suite == suite).then(|| uri.to_owned())
    })
}

/// A deb822 stanza with `Types: deb`, `suite` among its `Suites`, and not
/// `Enabled: no`.
fn mirror_in_deb822(text: &str, suite: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        let enabled = field("Enabled").is_none_or(|v| !v.eq_ignore_ascii_case("no"));
        let is_deb = field("Types")?.split_whitespace().any(|t| t == "deb");
        let has_suite = field("Suites")?.split_whitespace().any(|s| s == suite);
        if !(enabled && is_deb && has_suite) {
            return None;
        }
        field("URIs")?.split_whitespace().next().map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_mirror_in_deb822_sources() {
        let text = "Types: deb\n# a comment\nURIs: http://mirror.example/debian\n\
                    Suites: bookworm bookworm-updates\nComponents: main\n\n\
                    Types: deb\nURIs: http://security.example/debian-security\n\
                    Suites: bookworm-security\nComponents: main\n";
        assert_eq!(
            mirror_in_deb822(text, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            mirror_in_deb822(text, "bookworm-security").as_deref(),
            Some("http://security.example/debian-security")
        );
        assert_eq!(mirror_in_deb822(text, "trixie"), None);
    }

    #[test]
    fn skips_disabled_and_source_stanzas() {
        let text = "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n\
                    Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\n\n\
                    Types: deb deb-src\nURIs: http://on.example/debian\nSuites: bookworm\n";
        assert_eq!(mirror_in_deb822(text, "bookworm").as_deref(), Some("http://on.example/debian"));
    }

    #[test]
    fn finds_the_mirror_in_one_line_sources() {
        let text = "# deb http://commented.example/debian bookworm main\n\
                    deb-src http://src.example/debian bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main\n";
        assert_eq!(
            mirror_in_one_line(text, "bookworm").as_deref(),
            Some("http://m.example/debian")
        );
        assert_eq!(mirror_in_one_line(text, "bullseye"), None);
    }

    #[test]
    fn the_base_tag_follows_the_recipe() {
        // FNV-1a's published 64-bit test vectors.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);

        let tag = base_tag();
        assert!(tag.starts_with("bookworm-") && tag.len() == "bookworm-".len() + 16, "{tag}");
        // One trimmed path fewer, or the same parts in another order, is
        // another recipe and so another image.
        let mut recipe = vec![SUITE, PACKAGES, "minbase"];
        recipe.extend(TRIM);
        recipe.extend(KEEP_EMPTY);
        recipe.extend(IMPORT_CHANGES);
        assert_eq!(tag_of(&recipe), tag);
        let fewer: Vec<&str> = recipe.iter().copied().filter(|p| *p != "usr/share/doc").collect();
        assert_ne!(tag_of(&fewer), tag);
        recipe.swap(0, 1);
        assert_ne!(tag_of(&recipe), tag);
    }

    #[test]
    fn trims_by_name_and_prefix() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for f in ["usr/bin/apt-get", "usr/bin/apt", "usr/bin/bash", "usr/share/doc/x/copyright"] {
            fs::create_dir_all(dir.join(f).parent().unwrap()).unwrap();
            fs::write(dir.join(f), "x").unwrap();
        }
        trim(dir).unwrap();
        assert!(dir.join("usr/bin/bash").exists());
        assert!(!dir.join("usr/bin/apt-get").exists());
        assert!(!dir.join("usr/bin/apt").exists());
        assert!(!dir.join("usr/share/doc").exists());
        assert!(dir.join("var/log/nginx").is_dir());
    }
}
