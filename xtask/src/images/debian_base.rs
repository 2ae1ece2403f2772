//! A Debian root file system made into a base image, offline: no image can
//! be pulled on these machines. A [`Recipe`] says what goes in:
//! `debootstrap --variant=minbase --include=PACKAGES`, then trimmed hard
//! (documentation, locales, perl, apt and its lists) and loaded with
//! `docker import` as `REPO:<suite>-<recipe hash>`. The tag hashes the whole
//! recipe, so the slow bootstrap runs once per machine and again only when
//! the recipe changes. nginx's image and Prometheus's are made this way.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};

use crate::effects::docker::{self, docker};
use crate::effects::process::{cmd, run};
use crate::effects::{deps, paths};

/// What a base image is made of.
pub struct Recipe {
    /// What it is for, in messages and the scratch directory's name.
    pub name: &'static str,
    /// The cached base image's repository.
    pub repo: &'static str,
    pub suite: &'static str,
    /// Comma-separated, as debootstrap's `--include` takes them.
    pub packages: &'static str,
    /// Paths (relative to the root file system) removed after the
    /// bootstrap; a trailing `*` matches a name prefix.
    pub trim: &'static [&'static str],
    /// Directories recreated empty after the trim.
    pub keep_empty: &'static [&'static str],
    /// The imported image's defaults (`docker import --change`).
    pub import_changes: &'static [&'static str],
}

impl Recipe {
    /// The recipe's parts, in the order their hash is taken.
    pub fn parts(&self) -> Vec<&'static str> {
        [self.suite, self.packages, "minbase"]
            .into_iter()
            .chain(self.trim.iter().copied())
            .chain(self.keep_empty.iter().copied())
            .chain(self.import_changes.iter().copied())
            .collect()
    }

    /// The base image's tag: the suite and a hash of the recipe.
    pub fn tag(&self) -> String {
        tag_of(self.suite, &self.parts())
    }

    /// Makes sure the base image exists, bootstrapping it if not; returns
    /// its reference. `mirror` overrides the Debian mirror read from apt's
    /// sources.
    pub fn ensure(&self, mirror: Option<&str>) -> Result<String> {
        let reference = format!("{}:{}", self.repo, self.tag());
        if docker::image_id(&reference)?.is_some() {
            eprintln!("{} base image {reference} is cached", self.name);
            return Ok(reference);
        }
        deps::ensure(deps::NGINX_ROOTFS)?;
        let mirror = match mirror {
            Some(m) => m.to_owned(),
            None => apt_mirror(self.suite)?,
        };
        let rootfs = paths::target().join(format!("images/{}-rootfs", self.name));
        paths::remove_dir_if_present(&rootfs)?;
        fs::create_dir_all(&rootfs)?;
        eprintln!("bootstrapping the {} root file system from {mirror} (minutes)", self.name);
        let mut bootstrap = cmd(
            "debootstrap",
            ["--variant=minbase", &format!("--include={}", self.packages), self.suite],
        );
        bootstrap.arg(&rootfs).arg(&mirror);
        run(bootstrap)?;
        self.trim_in(&rootfs)?;
        self.import(&rootfs, &reference)?;
        paths::remove_dir_if_present(&rootfs)?;
        Ok(reference)
    }

    /// Removes the recipe's `trim` from the root file system, then
    /// recreates `keep_empty`.
    fn trim_in(&self, rootfs: &Path) -> Result<()> {
        for pattern in self.trim {
            for path in expand(rootfs, pattern)? {
                let meta = fs::symlink_metadata(&path)?;
                if meta.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) }
                    .with_context(|| format!("cannot remove {}", path.display()))?;
            }
        }
        for dir in self.keep_empty {
            fs::create_dir_all(rootfs.join(dir))?;
        }
        Ok(())
    }

    /// `tar -C ROOTFS -c . | docker import --change … - REFERENCE`.
    fn import(&self, rootfs: &Path, reference: &str) -> Result<()> {
        eprintln!("$ tar -C {} -c . | docker import - {reference}", rootfs.display());
        let mut tar = cmd("tar", ["--numeric-owner", "-C"])
            .arg(rootfs)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start tar")?;
        let stdout = tar.stdout.take().context("tar has no stdout")?;
        let mut import = docker(["import"]);
        for change in self.import_changes {
            import.args(["--change", change]);
        }
        let status = import
            .args(["-", reference])
            .stdin(stdout)
            .status()
            .context("cannot start `docker import`")?;
        let tar_status = tar.wait()?;
        if !tar_status.success() {
            bail!("tar of the {} root file system failed ({tar_status})", self.name);
        }
        if !status.success() {
            bail!("`docker import` of the {} root file system failed ({status})", self.name);
        }
        Ok(())
    }
}

/// `<suite>-<16 hex digits>`: the hash of the recipe's parts, in order.
pub fn tag_of(suite: &str, parts: &[&str]) -> String {
    format!("{suite}-{:016x}", fnv1a(parts.join("|").as_bytes()))
}

/// FNV-1a, 64 bits: a hash stable across Rust releases (std's is not
/// promised to be), for naming cached images.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

/// The existing paths a trim pattern names.
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

    const TEST: Recipe = Recipe {
        name: "test",
        repo: "taxi/test-base",
        suite: "bookworm",
        packages: "x",
        trim: &["usr/bin/apt*", "usr/share/doc"],
        keep_empty: &["var/log/x"],
        import_changes: &[],
    };

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
    fn the_hash_is_fnv1a() {
        // FNV-1a's published 64-bit test vectors.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn trims_by_name_and_prefix() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for f in ["usr/bin/apt-get", "usr/bin/apt", "usr/bin/bash", "usr/share/doc/x/copyright"] {
            fs::create_dir_all(dir.join(f).parent().unwrap()).unwrap();
            fs::write(dir.join(f), "x").unwrap();
        }
        TEST.trim_in(dir).unwrap();
        assert!(dir.join("usr/bin/bash").exists());
        assert!(!dir.join("usr/bin/apt-get").exists());
        assert!(!dir.join("usr/bin/apt").exists());
        assert!(!dir.join("usr/share/doc").exists());
        assert!(dir.join("var/log/x").is_dir());
    }
}
