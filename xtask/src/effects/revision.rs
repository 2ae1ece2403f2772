//! The source revision an image is built from, and the tag that names it.
//!
//! Images are tagged with the full commit sha so a running container says
//! exactly which source it came from; a work tree with uncommitted changes
//! gets `-dirty` appended, so a tag never claims a commit it does not hold.

use std::process::Command;

use anyhow::{Context, Result};

use crate::effects::paths;
use crate::effects::process::{cmd, output};

/// The commit the work tree is at, and whether it has changes on top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub commit: String,
    pub dirty: bool,
    /// The commit's time, RFC 3339.
    pub committed_at: String,
}

impl Revision {
    /// Reads the revision of the workspace's git work tree.
    pub fn current() -> Result<Revision> {
        let commit = output(git(["rev-parse", "--verify", "HEAD"]))
            .context("cannot read the git commit of the work tree")?;
        // Untracked files count (a new source file changes the build);
        // ignored ones (target/, artifacts/) do not.
        let dirty = !output(git(["status", "--porcelain"]))?.is_empty();
        let committed_at = output(git(["show", "-s", "--format=%cI", "HEAD"]))?;
        Ok(Revision { commit, dirty, committed_at })
    }

    /// The image tag: the full sha, plus `-dirty` for uncommitted changes.
    pub fn tag(&self) -> String {
        if self.dirty { format!("{}-dirty", self.commit) } else { self.commit.clone() }
    }
}

/// Where the repository lives, for the `org.opencontainers.image.source`
/// label, when the work tree has an `origin` remote.
pub fn source_url() -> Option<String> {
    output(git(["remote", "get-url", "origin"])).ok().filter(|u| !u.is_empty())
}

/// A `git` command run in the workspace root.
fn git<const N: usize>(args: [&str; N]) -> Command {
    let mut c = cmd("git", args);
    c.current_dir(paths::root());
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_trees_are_tagged_as_such() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let at = "2026-01-01T00:00:00Z".to_owned();
        let clean = Revision { commit: sha.into(), dirty: false, committed_at: at.clone() };
        assert_eq!(clean.tag(), sha);
        let dirty = Revision { commit: sha.into(), dirty: true, committed_at: at };
        assert_eq!(dirty.tag(), format!("{sha}-dirty"));
    }

    #[test]
    fn reads_this_work_tree() {
        let rev = Revision::current().unwrap();
        assert_eq!(rev.commit.len(), 40, "{rev:?}");
        assert!(rev.commit.chars().all(|c| c.is_ascii_hexdigit()), "{rev:?}");
        assert!(rev.committed_at.starts_with("20"), "{rev:?}");
    }
}
