//! The record on disk (`<state dir>/state.json`) and the API token
//! (`<state dir>/token`, mode 0600, read by the CLI too).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use controller_core::record::Record;

use crate::error::{Error, Result};

pub struct Store {
    path: PathBuf,
}

impl Store {
    pub fn new(state_dir: &Path) -> Store {
        Store { path: state_dir.join("state.json") }
    }

    fn error(&self, message: impl ToString) -> Error {
        Error::Store { path: self.path.display().to_string(), message: message.to_string() }
    }

    /// The saved record; an empty one when there is none. A corrupt file
    /// is kept aside as `state.json.corrupt` and the controller starts
    /// from what it observes.
    pub fn load(&self) -> Result<(Record, Option<String>)> {
        let text = match manifest_file::read_bounded(&self.path, manifest_file::MAX_READ) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Record::default(), None));
            }
            Err(e) => return Err(self.error(e)),
        };
        match serde_json::from_str(&text) {
            Ok(record) => Ok((record, None)),
            Err(e) => {
                let aside = self.path.with_extension("json.corrupt");
                std::fs::rename(&self.path, &aside).map_err(|e| self.error(e))?;
                Ok((Record::default(), Some(format!("{e}; kept as {}", aside.display()))))
            }
        }
    }

    pub fn save(&self, record: &Record) -> Result<()> {
        let json = serde_json::to_vec_pretty(record).map_err(|e| self.error(e))?;
        manifest_file::replace(&self.path, &json).map_err(|e| self.error(e))
    }
}

/// Reads the token, creating a random one (mode 0600) when there is none.
pub fn token(path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use controller_core::clock::Timestamp;

    #[test]
    fn saves_and_loads_and_survives_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert_eq!(store.load().unwrap(), (Record::default(), None));
        let mut r = Record::default();
        let desired = crate::fixtures::desired();
        r.begin(&desired, bluegreen::Color::Blue, None, Timestamp(5));
        store.save(&r).unwrap();
        assert_eq!(store.load().unwrap().0, r);
        std::fs::write(dir.path().join("state.json"), "{not json").unwrap();
        let (loaded, warning) = store.load().unwrap();
        assert_eq!(loaded, Record::default());
        assert!(warning.unwrap().contains("corrupt"));
        assert!(dir.path().join("state.json.corrupt").exists());
    }

    #[test]
    fn the_token_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let first = token(&path).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(token(&path).unwrap(), first);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
