//! The on-disk cache of compiled plugins, so that a restart with many plugins does not
//! compile them again.
//!
//! An entry is keyed by the component's SHA-256 and the engine's compatibility hash
//! (wasmtime version, target and every setting that shapes code, such as fuel and
//! epochs): code compiled by another engine is never looked up. Each entry file holds
//! the SHA-256 of its artifact in front of the artifact; an entry whose digest does
//! not match, or that wasmtime refuses, is deleted and compiled again, never
//! trusted. Entries are written to a temporary name and renamed into place, so a
//! crash never leaves a half-written entry under a real name.
//!
//! The directory belongs to the host's user (created 0700): whoever can write there
//! can run code in the host, like whoever can write the plugins themselves.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::IntCounterVec;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Length of the digest in front of each artifact.
const DIGEST_BYTES: usize = 32;
/// File name suffix of entries.
const ENTRY_SUFFIX: &str = "cwasm";

/// Numbers temporary files: plugins load in parallel, and two checks of one file
/// store the same entry at once.
static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

/// What one lookup found; the label values of the lookup counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A valid entry was used.
    Hit,
    /// No entry: the plugin was compiled (and stored).
    Miss,
    /// An entry existed but was damaged: deleted, and the plugin compiled again.
    Corrupt,
}

impl Lookup {
    pub fn label(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Miss => "miss",
            Lookup::Corrupt => "corrupt",
        }
    }
}

/// Why the cache directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot use the compile cache at {path}: {source}")]
pub struct CacheError {
    path: String,
    source: std::io::Error,
}

/// A directory of compiled plugins for one engine.
pub struct CompileCache {
    dir: PathBuf,
    /// The engine's compatibility hash, hex.
    engine_key: String,
    lookups: Option<IntCounterVec>,
}

impl CompileCache {
    /// Opens (creating) the cache at `dir` for `engine`; lookups are counted in
    /// `lookups` (label `result`) when given.
    pub fn open(
        dir: &Path,
        engine: &Engine,
        lookups: Option<IntCounterVec>,
    ) -> Result<CompileCache, CacheError> {
        create_private_dir(dir).map_err(|source| CacheError {
            path: dir.display().to_string(),
            source,
        })?;
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(CompileCache {
            dir: dir.to_owned(),
            engine_key: hex(&hasher.0.finalize()),
            lookups,
        })
    }

    /// The compiled component for `wasm` (whose hex SHA-256 is `sha256`): from the
    /// cache when a valid entry exists, otherwise compiled by `compile` (which gives
    /// the serialized artifact, or why it could not) and stored.
    pub fn get_or_compile<E: From<ArtifactError>>(
        &self,
        engine: &Engine,
        sha256: &str,
        compile: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Component, E> {
        let path = self.entry(sha256);
        let mut lookup = Lookup::Miss;
        if let Ok(bytes) = std::fs::read(&path) {
            match verified(engine, &bytes) {
                Some(component) => {
                    self.count(Lookup::Hit);
                    return Ok(component);
                }
                None => {
                    tracing::warn!(entry = %path.display(), "corrupt compile cache entry; compiling again");
                    let _ = std::fs::remove_file(&path);
                    lookup = Lookup::Corrupt;
                }
            }
        }
        let artifact = compile()?;
        self.count(lookup);
        // Kept only once it loads: an artifact the engine refuses (a component over
        // its share of the pool) is not a cache entry to find corrupt next time.
        let loaded = component(engine, &artifact)?;
        if let Err(e) = self.store(&path, &artifact) {
            // The plugin still runs; only the next start is slower.
            tracing::warn!(entry = %path.display(), error = %e, "cannot write compile cache entry");
        }
        Ok(loaded)
    }

    fn entry(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!(
            "{sha256}-{}.{ENTRY_SUFFIX}",
            &self.engine_key[..16]
        ))
    }

    fn count(&self, lookup: Lookup) {
        if let Some(c) = &self.lookups {
            c.with_label_values(&[lookup.label()]).inc();
        }
    }

    fn store(&self, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
        let digest = Sha256::digest(artifact);
        let n = NEXT_TMP.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("{ENTRY_SUFFIX}.tmp{}-{n}", std::process::id()));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&digest)?;
        file.write_all(artifact)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

/// The component in an entry, if its digest matches and wasmtime accepts it.
fn verified(engine: &Engine, entry: &[u8]) -> Option<Component> {
    if entry.len() <= DIGEST_BYTES {
        return None;
    }
    let (digest, artifact) = entry.split_at(DIGEST_BYTES);
    if Sha256::digest(artifact)[..] != *digest {
        return None;
    }
    component(engine, artifact).ok()
}

/// The component of a serialized artifact that this host's wasmtime produced: a
/// cache entry whose digest matched, or what a compile (in this process or in the
/// host's own compiler child, over a pipe only the host holds) just returned.
pub fn component(engine: &Engine, artifact: &[u8]) -> Result<Component, ArtifactError> {
    // SAFETY: `Component::deserialize` trusts its input to be code wasmtime produced.
    // These bytes are exactly what `precompile_component` wrote, in this process or
    // in the host's own child, handed over directly or through an entry whose SHA-256
    // matches in a directory only the host's user can write; wasmtime itself rejects
    // artifacts of another version or engine configuration.
    #[allow(unsafe_code)]
    let component = unsafe { Component::deserialize(engine, artifact) };
    component.map_err(|e| ArtifactError(format!("{e:#}")))
}

/// Why wasmtime refused a compiled artifact: most often a component over a plugin's
/// share of the pool, which the engine checks as it loads one.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot load the compiled plugin (a plugin may hold at most {cores} core instances, {memories} memories and {tables} tables of the runtime's pool): {0}",
    cores = crate::limits::PLUGIN_CORE_INSTANCES,
    memories = crate::limits::PLUGIN_MEMORIES,
    tables = crate::limits::PLUGIN_TABLES
)]
pub struct ArtifactError(String);

pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Feeds `Hash` output into SHA-256, so the key is stable across processes.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("a SHA-256 has 32 bytes"))
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The default cache directory: `$XDG_CACHE_HOME/healthhost`, else
/// `$HOME/.cache/healthhost`, else a folder under the system's temporary directory.
pub fn default_dir() -> PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(xdg) = env("XDG_CACHE_HOME") {
        PathBuf::from(xdg).join("healthhost")
    } else if let Some(home) = env("HOME") {
        PathBuf::from(home).join(".cache").join("healthhost")
    } else {
        std::env::temp_dir().join("healthhost-cache")
    }
}
