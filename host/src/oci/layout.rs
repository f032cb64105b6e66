//! A folder in the OCI image layout format (`oci-layout`, `index.json`,
//! `blobs/sha256/HEX`): the host's cache of pulled artifacts and signatures, and the
//! mirror folder `healthhost mirror` writes for air-gapped hosts. Blobs are
//! content-addressed and checked against their digest on every read; names in
//! `index.json` (`org.opencontainers.image.ref.name`) are full references, like
//! `registry:5000/checks/x:sha256-HEX.sig`, so one folder holds many repositories.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::reference::valid_digest;
use crate::cache::hex;

/// The annotation naming an entry of `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The media type of `index.json` itself.
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The largest `index.json` read: about 20,000 entries, far beyond any config's plugins.
const MAX_INDEX_BYTES: u64 = 8 << 20;

/// Numbers temporary files, so concurrent writers in one process never share one.
static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

/// An OCI descriptor: what a manifest or an index points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// One layout folder.
#[derive(Debug)]
pub struct Layout {
    root: PathBuf,
    /// Serializes this process's updates of `index.json`.
    index: Mutex<()>,
    /// Whether a blob that fails its digest is deleted (the cache's are; a mirror
    /// folder, the operator's, is only read).
    owned: bool,
}

/// The outcome of reading a blob.
#[derive(Debug)]
pub enum Read {
    Found(Vec<u8>),
    Missing,
    /// The file's content does not hash to its name (it was removed).
    Corrupt,
}

impl Layout {
    /// Opens `root`, creating it (private to this user) as an empty layout if needed.
    pub fn create(root: &Path) -> std::io::Result<Layout> {
        crate::cache::create_private_dir(&root.join("blobs").join("sha256"))?;
        let marker = root.join("oci-layout");
        if !marker.exists() {
            write_atomic(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        Ok(Layout {
            root: root.to_owned(),
            index: Mutex::new(()),
            owned: true,
        })
    }

    /// Opens an existing layout (a mirror), which must have its `oci-layout` file.
    pub fn existing(root: &Path) -> std::io::Result<Layout> {
        let marker = root.join("oci-layout");
        if !marker.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "{} is not an OCI image layout (no oci-layout file)",
                    root.display()
                ),
            ));
        }
        Ok(Layout {
            root: root.to_owned(),
            index: Mutex::new(()),
            owned: false,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `digest` lives. Only a well-formed `sha256:HEX` names a file:
    /// a digest from a hostile `index.json` or manifest cannot reach outside `blobs/`.
    pub fn blob_path(&self, digest: &str) -> std::io::Result<PathBuf> {
        if !valid_digest(digest) {
            let why = format!("'{digest}' is not a sha256 digest");
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, why));
        }
        let hex = digest.trim_start_matches("sha256:");
        Ok(self.root.join("blobs").join("sha256").join(hex))
    }

    /// The blob `digest`, if present, intact and at most `max` bytes.
    pub fn read(&self, digest: &str, max: u64) -> std::io::Result<Read> {
        self.scan(digest, max, true)
    }

    /// Whether the blob `digest` is present, intact and at most `max` bytes, read
    /// through its hash without holding it in memory.
    pub fn intact(&self, digest: &str, max: u64) -> std::io::Result<bool> {
        Ok(matches!(self.scan(digest, max, false)?, Read::Found(_)))
    }

    /// Reads the blob `digest` through SHA-256, keeping its bytes when `keep` (else
    /// `Found` holds none). A blob of the cache that fails is removed, so a fetch
    /// replaces it.
    fn scan(&self, digest: &str, max: u64, keep: bool) -> std::io::Result<Read> {
        let path = self.blob_path(digest)?;
        let mut file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Read::Missing),
            Err(e) => return Err(e),
        };
        let (mut hasher, mut bytes, mut len) = (Sha256::new(), Vec::new(), 0u64);
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            let n = std::io::Read::read(&mut file, &mut chunk)?;
            if n == 0 || len > max {
                break;
            }
            len += n as u64;
            hasher.update(&chunk[..n]);
            if keep {
                bytes.extend_from_slice(&chunk[..n]);
            }
        }
        if len > max || format!("sha256:{}", hex(&hasher.finalize())) != digest {
            if self.owned {
                let _ = std::fs::remove_file(&path);
            }
            return Ok(Read::Corrupt);
        }
        Ok(Read::Found(bytes))
    }

    /// Stores `bytes` as the blob `digest`, which must be their digest.
    pub fn write(&self, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
        let actual = sha256(bytes);
        if actual != digest {
            return Err(std::io::Error::other(format!(
                "refusing to store bytes as {digest}: their digest is {actual}"
            )));
        }
        let path = self.blob_path(digest)?;
        if path.is_file() {
            return Ok(());
        }
        write_atomic(&path, bytes)
    }

    /// The descriptor named `name` in `index.json`.
    pub fn lookup(&self, name: &str) -> std::io::Result<Option<Descriptor>> {
        let index = self.read_index()?;
        Ok(index
            .manifests
            .into_iter()
            .find(|d| d.annotations.get(REF_NAME).is_some_and(|n| n == name)))
    }

    /// Names `descriptor` `name` in `index.json`, replacing what had that name.
    pub fn tag(&self, name: &str, mut descriptor: Descriptor) -> std::io::Result<()> {
        let _guard = self.index.lock().unwrap_or_else(|e| e.into_inner());
        let mut index = self.read_index()?;
        descriptor
            .annotations
            .insert(REF_NAME.to_owned(), name.to_owned());
        if index.manifests.contains(&descriptor) {
            // Named so already: every start tags what it verifies, and writes nothing.
            return Ok(());
        }
        index
            .manifests
            .retain(|d| d.annotations.get(REF_NAME).is_none_or(|n| n != name));
        index.manifests.push(descriptor);
        index.schema_version = 2;
        index.media_type = Some(INDEX_MEDIA_TYPE.to_owned());
        let json = serde_json::to_vec_pretty(&index).expect("plain JSON");
        write_atomic(&self.root.join("index.json"), &json)
    }

    fn read_index(&self) -> std::io::Result<Index> {
        let path = self.root.join("index.json");
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Index::default()),
            Err(e) => return Err(e),
        };
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_INDEX_BYTES), &mut bytes)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })
    }
}

/// `sha256:` and the lower-case hex SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader never
/// sees half a file and a crash leaves none.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let n = NEXT_TMP.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp{}-{n}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_checked_on_read_and_names_replace() {
        let dir = std::env::temp_dir().join(format!("hh-layout-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let layout = Layout::create(&dir).unwrap();
        let digest = sha256(b"hello");
        assert!(layout.write(&sha256(b"other"), b"hello").is_err());
        assert!(layout.read("sha256:../../oci-layout", 5).is_err());
        layout.write(&digest, b"hello").unwrap();
        assert!(matches!(layout.read(&digest, 5).unwrap(), Read::Found(b) if b == b"hello"));
        assert!(matches!(layout.read(&digest, 4).unwrap(), Read::Corrupt));
        layout.write(&digest, b"hello").unwrap();
        std::fs::write(layout.blob_path(&digest).unwrap(), b"hellO").unwrap();
        assert!(matches!(layout.read(&digest, 5).unwrap(), Read::Corrupt));
        assert!(matches!(layout.read(&digest, 5).unwrap(), Read::Missing));

        let d = |digest: &str| Descriptor {
            media_type: "m".into(),
            digest: digest.into(),
            size: 1,
            annotations: Default::default(),
        };
        layout.tag("r/x:1", d("sha256:a")).unwrap();
        layout.tag("r/x:2", d("sha256:b")).unwrap();
        layout.tag("r/x:1", d("sha256:c")).unwrap();
        assert_eq!(layout.lookup("r/x:1").unwrap().unwrap().digest, "sha256:c");
        assert_eq!(layout.lookup("r/x:2").unwrap().unwrap().digest, "sha256:b");
        assert!(layout.lookup("r/x:3").unwrap().is_none());
        // A mirror folder is only read: an altered blob is refused, not deleted.
        let mirror = Layout::existing(&dir).unwrap();
        std::fs::write(mirror.blob_path(&digest).unwrap(), b"hellO").unwrap();
        assert!(matches!(mirror.read(&digest, 5).unwrap(), Read::Corrupt));
        assert!(mirror.blob_path(&digest).unwrap().is_file());
        assert!(Layout::existing(&dir.join("blobs")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
