//! `healthhost.lock`, beside the config: the digest each OCI tag resolved to when it
//! was locked, as Cargo.lock pins versions. `healthhost lock` writes it; `serve` runs
//! what it pins and refuses a tag it lacks (unless `--update-lock`), so a tag moved in
//! the registry changes nothing until someone locks again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::reference::{Reference, valid_digest};

/// The lock file's name.
pub const FILE_NAME: &str = "healthhost.lock";
/// The format's version, written in the file.
const VERSION: u32 = 1;
const HEADER: &str = "# Written by `healthhost lock`: the digest each OCI plugin tag resolved to.\n\
# `serve` runs these digests, never the tags again. Commit it beside the config.\n";

/// Why the lock file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: {why}")]
    Invalid { path: String, why: String },
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    #[serde(default)]
    plugin: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    reference: String,
    digest: String,
}

/// The pins: a tag reference (without digest), as written, to its digest.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Lock {
    pins: BTreeMap<String, String>,
}

/// The lock file beside `config`.
pub fn path_for(config: &Path) -> PathBuf {
    config.parent().unwrap_or(Path::new(".")).join(FILE_NAME)
}

/// The key a tag reference is pinned under: the reference without any digest.
fn key(reference: &Reference) -> String {
    Reference {
        digest: None,
        ..reference.clone()
    }
    .to_string()
}

impl Lock {
    /// Reads `path`; a missing file is an empty lock.
    pub fn read(path: &Path) -> Result<Lock, LockError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Lock::default()),
            Err(error) => {
                return Err(LockError::Io {
                    path: path.display().to_string(),
                    error,
                });
            }
        };
        let invalid = |why: String| LockError::Invalid {
            path: path.display().to_string(),
            why,
        };
        let file: File = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if file.version != VERSION {
            return Err(invalid(format!(
                "version {} (this healthhost reads version {VERSION})",
                file.version
            )));
        }
        let mut pins = BTreeMap::new();
        for entry in file.plugin {
            let reference = Reference::parse(&entry.reference).map_err(invalid)?;
            if !valid_digest(&entry.digest) {
                return Err(invalid(format!(
                    "'{}' is not a sha256 digest",
                    entry.digest
                )));
            }
            pins.insert(key(&reference), entry.digest);
        }
        Ok(Lock { pins })
    }

    /// The digest `reference` is pinned to: its own digest, else the lock's for its
    /// tag.
    pub fn digest(&self, reference: &Reference) -> Option<String> {
        reference
            .digest
            .clone()
            .or_else(|| self.pins.get(&key(reference)).cloned())
    }

    pub fn set(&mut self, reference: &Reference, digest: &str) {
        self.pins.insert(key(reference), digest.to_owned());
    }

    /// Keeps only the pins of `references`.
    pub fn retain(&mut self, references: &[&Reference]) {
        let keep: std::collections::BTreeSet<String> = references.iter().map(|r| key(r)).collect();
        self.pins.retain(|k, _| keep.contains(k));
    }

    /// Writes the lock to `path` (a temporary file renamed over it).
    pub fn write(&self, path: &Path) -> Result<(), LockError> {
        let file = File {
            version: VERSION,
            plugin: self
                .pins
                .iter()
                .map(|(reference, digest)| Entry {
                    reference: reference.clone(),
                    digest: digest.clone(),
                })
                .collect(),
        };
        let text = format!("{HEADER}{}", toml::to_string(&file).expect("plain TOML"));
        let tmp = path.with_extension("lock.tmp");
        let io = |error| LockError::Io {
            path: path.display().to_string(),
            error,
        };
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn pins_round_trip_and_a_digest_reference_needs_none() {
        let dir = std::env::temp_dir().join(format!("hh-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(FILE_NAME);
        let tag = Reference::parse("oci://r:5000/checks/x:1").unwrap();
        let mut lock = Lock::read(&path).unwrap();
        assert_eq!(lock.digest(&tag), None);
        lock.set(&tag, D);
        lock.write(&path).unwrap();
        let read = Lock::read(&path).unwrap();
        assert_eq!(read.digest(&tag).as_deref(), Some(D));
        let pinned = Reference::parse(&format!("oci://r:5000/checks/y@{D}")).unwrap();
        assert_eq!(Lock::default().digest(&pinned).as_deref(), Some(D));

        std::fs::write(&path, "version = 2\n").unwrap();
        let error = Lock::read(&path).unwrap_err().to_string();
        assert!(error.contains("version 2"), "{error}");
        std::fs::write(
            &path,
            "version = 1\n[[plugin]]\nreference = \"oci://r/x:1\"\ndigest = \"md5:1\"\n",
        )
        .unwrap();
        let error = Lock::read(&path).unwrap_err().to_string();
        assert!(error.contains("'md5:1' is not a sha256 digest"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
