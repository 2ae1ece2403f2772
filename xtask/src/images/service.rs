//! The service image: the statically linked `service` binary
//! ([`super::static_binary`]) and the model artifact it serves.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::effects::docker;

pub fn build_image(
    binary: &Path,
    model: &Path,
    reference: &str,
    build_args: &[(&str, String)],
) -> Result<()> {
    let context = super::fresh_context("service")?;
    super::copy_with_mode(binary, &context.join("service"), 0o755)?;
    super::copy_with_mode(model, &context.join("model.json"), 0o644)?;
    docker::build(&context, &[reference], build_args)
}

/// The file's sha256, hex, read in a stream.
pub fn sha256_of(path: &Path) -> Result<String> {
    let mut file =
        fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(format!("{:x}", hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_a_file_as_sha256sum_does() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("abc");
        fs::write(&file, "abc").unwrap();
        assert_eq!(
            sha256_of(&file).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(sha256_of(&dir.path().join("missing")).is_err());
    }
}
