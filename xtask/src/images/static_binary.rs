//! The project's binaries linked statically (static-pie), so a `FROM
//! scratch` image can run them: the service and the controller.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::effects::paths;
use crate::effects::process::{cmd, run};

/// The Rust target the images' binaries are built for: static glibc
/// (static-pie).
const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

/// `RUSTFLAGS="-C target-feature=+crt-static" cargo build --release
/// --target x86_64-unknown-linux-gnu -p <package>…`, then checks each
/// binary really needs no dynamic loader (a `scratch` image has none).
/// Returns the binaries' paths, one per package (each package's binary
/// has its name).
pub fn build(packages: &[&str]) -> Result<Vec<PathBuf>> {
    let mut flags = std::env::var("RUSTFLAGS").unwrap_or_default();
    if !flags.contains("crt-static") {
        flags = format!("{flags} -C target-feature=+crt-static").trim().to_owned();
    }
    let mut c = cmd("cargo", ["build", "--release", "--target", STATIC_TARGET]);
    for package in packages {
        c.args(["-p", package]);
    }
    c.env("RUSTFLAGS", &flags).current_dir(paths::root());
    run(c)?;
    let mut binaries = Vec::new();
    for package in packages {
        let binary = path(package);
        let bytes =
            fs::read(&binary).with_context(|| format!("cannot read {}", binary.display()))?;
        if elf_needs_interpreter(&bytes)? {
            bail!("{} is dynamically linked; a scratch image cannot run it", binary.display());
        }
        binaries.push(binary);
    }
    Ok(binaries)
}

/// Where [`build`] leaves a package's static binary.
pub fn path(package: &str) -> PathBuf {
    paths::cargo_target().join(STATIC_TARGET).join("release").join(package)
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
}
