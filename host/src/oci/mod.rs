//! Plugins by OCI reference (`plugin = "oci://REGISTRY/REPOSITORY:TAG"`): the store
//! that turns a pinned reference into a verified component file. A reference is
//! pinned to a manifest digest (its own, or the lock file's for its tag); that digest's
//! manifest, its cosign signatures and its one Wasm layer come from the cache, the
//! mirror folder, or the registry (retried with backoff), in that order, each checked
//! against its digest, and the signatures against the `[trust]` policy before the
//! layer is handed on to compile. Everything fetched is kept in the cache, an OCI
//! image layout, so a restart without the registry verifies and loads from it.
//! `push` and `sign` (in `publish`) are the authors' side, `mirror` the air-gapped
//! operators'.

pub mod artifact;
pub mod client;
pub mod cosign;
pub mod keyless;
pub mod layout;
pub mod lock;
mod publish;
pub mod reference;
pub mod settings;
mod signatures;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use p256::ecdsa::VerifyingKey;

use artifact::{MAX_PLUGIN_BYTES, MAX_SMALL_BLOB_BYTES, Manifest};
use client::{Client, ClientError, MAX_MANIFEST_BYTES};
use keyless::Sigstore;
use layout::{Descriptor, Layout, Read};
pub use reference::Reference;
use settings::{OciConfig, TrustConfig};
pub use signatures::Signer;

/// Attempts of one registry request that fails for a reason that may pass (the
/// network, a timeout, a 5xx), and the first pause between them (doubled each time).
const PULL_ATTEMPTS: u32 = 3;
const PULL_BACKOFF: Duration = Duration::from_secs(1);
/// While `serve` waits for a registry it cannot reach (and a plugin the cache and the
/// mirror lack), the pause between rounds of pulls: from 5 s, doubling, at most 5
/// minutes, so a registry's outage at start-up costs the check its load only until
/// the registry is back, and a host never hammers it.
const WAIT_FIRST: Duration = Duration::from_secs(5);
const WAIT_MAX: Duration = Duration::from_secs(300);

/// Why an OCI plugin cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error(transparent)]
    Registry(#[from] ClientError),
    #[error(
        "{reference}: no [trust] entry covers this repository, so it is refused as unsigned; \
         add [trust.\"{prefix}\"] with keys = [\"PUBLIC_KEY.pub\"] (or unsafe_allow_unsigned = true)"
    )]
    Untrusted { reference: String, prefix: String },
    #[error(
        "{reference}: the tag is not in {lock}; run `healthhost lock` (or serve with --update-lock)"
    )]
    Unlocked { reference: String, lock: String },
    #[error("{reference}: the registry has no such manifest")]
    NotFound { reference: String },
    #[error("{reference}: not a Wasm component artifact: {why}")]
    NotWasm { reference: String, why: String },
    #[error(
        "{reference}: unsigned: no signature ({tag}, or an OCI referrer) in the registry, the mirror or the cache; sign it with `healthhost sign`"
    )]
    Unsigned { reference: String, tag: String },
    #[error(
        "{reference}: no signature verifies with the keys or identities of [trust.\"{prefix}\"]: {reasons}"
    )]
    Signature {
        reference: String,
        prefix: String,
        reasons: String,
    },
    #[error("{path}: {error}")]
    Store { path: String, error: std::io::Error },
    #[error("{path}: {error}")]
    Key {
        path: String,
        error: cosign::KeyError,
    },
    #[error("{path}: {error}")]
    Root {
        path: String,
        error: keyless::RootError,
    },
    #[error(transparent)]
    Lock(#[from] lock::LockError),
}

impl OciError {
    /// Whether it may pass: the registry could not be reached or failed for now.
    pub fn transient(&self) -> bool {
        matches!(self, OciError::Registry(e) if e.transient())
    }
}

/// A verified plugin, ready to read and compile.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The component file (in the cache).
    pub path: PathBuf,
    /// The component's SHA-256, lower-case hex, which reading it checks again.
    pub sha256: String,
    /// The manifest digest that was verified.
    pub digest: String,
    /// Who signed it; `None` when its trust entry allows unsigned plugins.
    pub signed_by: Option<Signer>,
}

/// A trust entry with its keys read.
struct Trust {
    config: TrustConfig,
    keys: Vec<(PathBuf, VerifyingKey)>,
}

/// The store of OCI plugins: the config's registries and trust policy, the cache, and
/// the mirror folder if any.
pub struct Oci {
    config: OciConfig,
    trust: Vec<Trust>,
    /// The trust root of keyless signatures.
    sigstore: Sigstore,
    /// Shared with the blocking threads that check large blobs.
    cache: Arc<Layout>,
    mirror: Option<Layout>,
    clients: Mutex<BTreeMap<String, Arc<Client>>>,
    /// Whether [`Oci::fetch_waiting`] waits out an unreachable registry (`serve`) or
    /// fails at once (`validate`, `list`).
    wait: bool,
    /// The lock file that pins the tags of dropped-in checks (read at each load).
    lock: Option<PathBuf>,
    /// Whether [`Oci::pin`] adds a tag the lock lacks.
    update_lock: bool,
    /// Held while the lock file is rewritten.
    lock_writes: tokio::sync::Mutex<()>,
}

impl Oci {
    /// Opens the store with the cache at `cache_dir` (created if needed), reading
    /// every trusted key; an error names the file that cannot be used.
    pub fn open(config: &OciConfig, cache_dir: &Path) -> Result<Oci, OciError> {
        let store = |path: &Path| {
            let path = path.display().to_string();
            move |error| OciError::Store { path, error }
        };
        let cache = Layout::create(cache_dir).map_err(store(cache_dir))?;
        let mirror = match &config.mirror {
            Some(dir) => Some(Layout::existing(dir).map_err(store(dir))?),
            None => None,
        };
        let mut sigstore = Sigstore::default();
        let root = |path: &PathBuf| {
            let path = path.display().to_string();
            move |error| OciError::Root { path, error }
        };
        for path in &config.fulcio_roots {
            let text = std::fs::read_to_string(path).map_err(store(path))?;
            sigstore.add_roots(&text).map_err(root(path))?;
        }
        for path in &config.rekor_keys {
            let text = std::fs::read_to_string(path).map_err(store(path))?;
            sigstore.add_log(&text).map_err(root(path))?;
        }
        let mut trust = Vec::new();
        for entry in &config.trust {
            let mut keys = Vec::new();
            for path in &entry.keys {
                let text = std::fs::read_to_string(path).map_err(store(path))?;
                let key = cosign::open_public(&text).map_err(|error| OciError::Key {
                    path: path.display().to_string(),
                    error,
                })?;
                keys.push((path.clone(), key));
            }
            trust.push(Trust {
                config: entry.clone(),
                keys,
            });
        }
        let oci = Oci {
            config: config.clone(),
            trust,
            sigstore,
            cache: Arc::new(cache),
            mirror,
            clients: Mutex::new(BTreeMap::new()),
            wait: false,
            lock: None,
            update_lock: false,
            lock_writes: tokio::sync::Mutex::new(()),
        };
        // Each configured registry's client now, so that a bad `ca` is an error at
        // start, not at the first pull.
        for registry in config.registries.keys() {
            oci.client(registry)?;
        }
        Ok(oci)
    }

    /// The store, waiting out unreachable registries in [`Oci::fetch_waiting`].
    pub fn waiting(self) -> Oci {
        Oci { wait: true, ..self }
    }

    /// The store, pinning references by the lock file at `path` in [`Oci::pin`], and
    /// with `update` resolving and adding a tag the lock lacks (`serve --update-lock`).
    pub fn with_lock(self, path: PathBuf, update: bool) -> Oci {
        Oci {
            lock: Some(path),
            update_lock: update,
            ..self
        }
    }

    /// The lock file [`Oci::pin`] reads, if any.
    pub fn lock_path(&self) -> Option<&Path> {
        self.lock.as_deref()
    }

    /// `reference` pinned to its digest: its own, else the lock file's for its tag,
    /// read now (so that `healthhost lock` run while `serve` runs pins a dropped-in
    /// check's tag at its next load); a tag the lock lacks is refused, or resolved now
    /// and added to the lock when the store updates it.
    pub async fn pin(&self, reference: &Reference) -> Result<Reference, OciError> {
        if let Some(digest) = &reference.digest {
            return Ok(reference.pinned(digest));
        }
        let path = self.lock.clone().unwrap_or_default();
        if let Some(digest) = lock::Lock::read(&path)?.digest(reference) {
            return Ok(reference.pinned(&digest));
        }
        if !self.update_lock {
            return Err(OciError::Unlocked {
                reference: reference.to_string(),
                lock: path.display().to_string(),
            });
        }
        let digest = self.resolve(reference).await?;
        // Read again under the lock: another load may have added its tag meanwhile.
        let _writing = self.lock_writes.lock().await;
        let mut pins = lock::Lock::read(&path)?;
        pins.set(reference, &digest);
        pins.write(&path)?;
        tracing::info!("pinned {reference} to {digest} in {}", path.display());
        Ok(reference.pinned(&digest))
    }

    /// `reference` pinned ([`Oci::pin`]) and fetched ([`Oci::fetch`]), tried again
    /// after a pause while the registry cannot be reached, the store waits (see
    /// [`Oci::waiting`]) and `wanted` says so.
    pub async fn fetch_waiting(
        &self,
        reference: &Reference,
        wanted: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<Fetched, OciError> {
        let mut pause = WAIT_FIRST;
        loop {
            let fetched = async { self.fetch(&self.pin(reference).await?).await };
            match fetched.await {
                Err(e) if self.wait && e.transient() && wanted() => {
                    tracing::warn!("{e}; trying {reference} again in {pause:?}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(WAIT_MAX);
                }
                other => return other,
            }
        }
    }

    fn client(&self, registry: &str) -> Result<Arc<Client>, ClientError> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(registry) {
            return Ok(client.clone());
        }
        let client = Arc::new(Client::new(registry, self.config.settings(registry))?);
        clients.insert(registry.to_owned(), client.clone());
        Ok(client)
    }

    /// The trust entry with the longest prefix covering `reference`.
    fn trust(&self, reference: &Reference) -> Result<&Trust, OciError> {
        let path = reference.repository_path();
        self.trust
            .iter()
            .filter(|t| {
                let prefix = t.config.prefix.trim_end_matches('/');
                path == prefix || path.starts_with(&format!("{prefix}/"))
            })
            .max_by_key(|t| t.config.prefix.len())
            .ok_or_else(|| OciError::Untrusted {
                reference: reference.to_string(),
                prefix: path,
            })
    }

    /// Runs `request` against the registry, again after a pause while it fails for a
    /// reason that may pass.
    async fn remote<T, F: Future<Output = Result<T, ClientError>>>(
        &self,
        request: impl Fn() -> F,
    ) -> Result<T, ClientError> {
        let mut pause = PULL_BACKOFF;
        let mut attempt = 1;
        loop {
            match request().await {
                Err(e) if e.transient() && attempt < PULL_ATTEMPTS => {
                    tracing::warn!(error = %e, "registry request failed; trying again in {pause:?}");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// The blob `digest` from the cache or the mirror, if either has it intact.
    fn local(&self, digest: &str, max: u64) -> Result<Option<Vec<u8>>, OciError> {
        if let Read::Found(bytes) = stored(&self.cache, self.cache.read(digest, max))? {
            return Ok(Some(bytes));
        }
        if let Some(mirror) = &self.mirror
            && let Read::Found(bytes) = stored(mirror, mirror.read(digest, max))?
        {
            stored(&self.cache, self.cache.write(digest, &bytes))?;
            return Ok(Some(bytes));
        }
        Ok(None)
    }

    /// The blob `digest` of `reference`'s repository: local, else pulled and cached.
    async fn blob(
        &self,
        reference: &Reference,
        digest: &str,
        max: u64,
    ) -> Result<Vec<u8>, OciError> {
        if let Some(bytes) = self.local(digest, max)? {
            return Ok(bytes);
        }
        let client = self.client(&reference.registry)?;
        let bytes = self
            .remote(|| client.blob(&reference.repository, digest, max))
            .await?;
        stored(&self.cache, self.cache.write(digest, &bytes))?;
        Ok(bytes)
    }

    /// The manifest `digest` of `reference`'s repository: local, else pulled and cached.
    async fn manifest(&self, reference: &Reference, digest: &str) -> Result<Vec<u8>, OciError> {
        if let Some(bytes) = self.local(digest, MAX_MANIFEST_BYTES)? {
            return Ok(bytes);
        }
        Ok(self.pull_manifest(reference, digest).await?.bytes)
    }

    /// The manifest `target` (a tag or a digest) of `reference`'s repository, pulled
    /// from the registry and kept in the cache.
    async fn pull_manifest(
        &self,
        reference: &Reference,
        target: &str,
    ) -> Result<client::Manifest, OciError> {
        let client = self.client(&reference.registry)?;
        let manifest = self
            .remote(|| client.manifest(&reference.repository, target))
            .await?
            .ok_or_else(|| OciError::NotFound {
                reference: reference.to_string(),
            })?;
        stored(
            &self.cache,
            self.cache.write(&manifest.digest, &manifest.bytes),
        )?;
        Ok(manifest)
    }

    /// The digest `reference`'s tag points at in the registry now (a digest reference
    /// is its own), after checking it is a Wasm component artifact.
    pub async fn resolve(&self, reference: &Reference) -> Result<String, OciError> {
        if let Some(digest) = &reference.digest {
            return Ok(digest.clone());
        }
        let manifest = self.pull_manifest(reference, reference.target()).await?;
        self.wasm_layer(reference, &manifest.bytes)?;
        Ok(manifest.digest)
    }

    fn wasm_layer(&self, reference: &Reference, manifest: &[u8]) -> Result<Manifest, OciError> {
        let not_wasm = |why: String| OciError::NotWasm {
            reference: reference.to_string(),
            why,
        };
        let manifest = Manifest::parse(manifest).map_err(not_wasm)?;
        manifest.wasm_layer().map_err(|e| not_wasm(e.to_owned()))?;
        Ok(manifest)
    }

    /// Fetches and verifies the pinned `reference` (its digest set): its manifest, its
    /// signatures as its trust entry requires, and its component, all into the cache.
    pub async fn fetch(&self, reference: &Reference) -> Result<Fetched, OciError> {
        let digest = reference.digest.clone().unwrap_or_default();
        let trust = self.trust(reference)?;
        let bytes = self.manifest(reference, &digest).await?;
        let manifest = self.wasm_layer(reference, &bytes)?;
        let signed_by = if trust.config.allow_unsigned {
            None
        } else {
            Some(self.verify(reference, &digest, trust).await?)
        };
        self.blob(reference, &manifest.config.digest, MAX_SMALL_BLOB_BYTES)
            .await?;
        let layer = &manifest.layers[0];
        // A cached component is checked without holding it, on a blocking thread (it
        // may be large, and loads run beside the HTTP server); one that fails, or is
        // missing, comes from the mirror or the registry.
        let (cache, digest_of_layer) = (self.cache.clone(), layer.digest.clone());
        let intact =
            tokio::task::spawn_blocking(move || cache.intact(&digest_of_layer, MAX_PLUGIN_BYTES))
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        if !stored(&self.cache, intact)? {
            self.blob(reference, &layer.digest, MAX_PLUGIN_BYTES)
                .await?;
        }
        let name = format!("{}@{digest}", reference.repository_path());
        stored(
            &self.cache,
            self.cache.tag(&name, manifest_descriptor(&digest, &bytes)),
        )?;
        Ok(Fetched {
            path: stored(&self.cache, self.cache.blob_path(&layer.digest))?,
            sha256: layer.digest.trim_start_matches("sha256:").to_owned(),
            digest,
            signed_by,
        })
    }

    /// Copies the verified, pinned `reference` (fetched first) with its signatures
    /// from the cache into the layout `mirror`.
    pub async fn mirror(
        &self,
        reference: &Reference,
        mirror: &Layout,
    ) -> Result<Fetched, OciError> {
        let fetched = self.fetch(reference).await?;
        let path = reference.repository_path();
        let copy = |digest: &str, max: u64| -> Result<Vec<u8>, OciError> {
            let bytes = self.local(digest, max)?.unwrap_or_default();
            stored(mirror, mirror.write(digest, &bytes))?;
            Ok(bytes)
        };
        let bytes = copy(&fetched.digest, MAX_MANIFEST_BYTES)?;
        let manifest = self.wasm_layer(reference, &bytes)?;
        copy(&manifest.config.digest, MAX_SMALL_BLOB_BYTES)?;
        copy(&manifest.layers[0].digest, MAX_PLUGIN_BYTES)?;
        let descriptor = manifest_descriptor(&fetched.digest, &bytes);
        stored(
            mirror,
            mirror.tag(&format!("{path}@{}", fetched.digest), descriptor.clone()),
        )?;
        if let Some(tag) = &reference.tag {
            stored(mirror, mirror.tag(&format!("{path}:{tag}"), descriptor))?;
        }
        let name = format!("{path}:{}", artifact::signature_tag(&fetched.digest));
        if let Some(found) = stored(&self.cache, self.cache.lookup(&name))? {
            let signatures = copy(&found.digest, MAX_MANIFEST_BYTES)?;
            for (layer, _) in Manifest::parse(&signatures)
                .iter()
                .flat_map(artifact::signatures)
            {
                copy(&layer.digest, MAX_SMALL_BLOB_BYTES)?;
            }
            stored(mirror, mirror.tag(&name, found))?;
        }
        Ok(fetched)
    }
}

/// `result` of an operation on `layout`, its error naming the layout's folder.
fn stored<T>(layout: &Layout, result: std::io::Result<T>) -> Result<T, OciError> {
    result.map_err(|error| OciError::Store {
        path: layout.root().display().to_string(),
        error,
    })
}

fn manifest_descriptor(digest: &str, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: artifact::MANIFEST_MEDIA_TYPE.to_owned(),
        digest: digest.to_owned(),
        size: bytes.len() as u64,
        annotations: BTreeMap::new(),
    }
}
