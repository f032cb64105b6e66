//! One plugin to load ([`Load`]): a check of the config file, or a file of the plugins
//! folder with the check its grant file makes; the entry it shows while it loads, and
//! reading its file (the compile is the `Loader`'s, in `dropins`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{CheckConfig, Source};
use crate::health::Entry;
use crate::health::folder::Found;
use crate::runtime::{LoadError, read_plugin};

/// Numbers the loads, so that an entry takes only the result of its newest one.
static NEXT_LOAD: AtomicU64 = AtomicU64::new(1);

/// One plugin to load: a check of the config file or a file of the plugins folder.
pub struct Load {
    pub name: String,
    pub(super) what: What,
    /// Whether the check is critical, as far as is known before it loads.
    critical: bool,
    /// The entry before this load: what keeps running if it fails.
    pub(super) previous: Option<Entry>,
    pub(super) id: u64,
    /// The verified component of a plugin by OCI reference, once fetched.
    pub(super) fetched: Option<crate::oci::Fetched>,
}

pub(super) enum What {
    Config(Box<CheckConfig>),
    /// A file of the folder, with the check its grant file makes (read once, when the
    /// folder was scanned), or why there is none.
    Folder(Found, Result<Box<CheckConfig>, Arc<LoadError>>),
}

impl Load {
    pub(super) fn new(name: String, what: What, critical: bool, previous: Option<Entry>) -> Load {
        Load {
            name,
            what,
            critical,
            previous,
            id: NEXT_LOAD.fetch_add(1, Ordering::Relaxed),
            fetched: None,
        }
    }

    /// The entry while this load runs: the previous version keeps running, if any.
    pub(super) fn pending(&self) -> Entry {
        let (source, file) = match &self.what {
            What::Config(c) => (Source::Config, c.plugin.clone()),
            What::Folder(f, _) => (Source::Folder, f.wasm.clone()),
        };
        match &self.previous {
            Some(previous) => Entry {
                loading: Some(self.id),
                ..previous.clone()
            },
            None => Entry {
                source,
                file,
                critical: self.critical,
                check: None,
                load_error: None,
                loading: Some(self.id),
            },
        }
    }

    /// The OCI reference of the check's plugin, if it has one.
    pub(super) fn oci(&self) -> Option<&crate::oci::Reference> {
        match &self.what {
            What::Config(c) | What::Folder(_, Ok(c)) => c.oci.as_ref(),
            What::Folder(_, Err(_)) => None,
        }
    }

    /// Reads the plugin (blocking I/O, no compile permit: a file that is slow to read
    /// holds up no other): the check and its component.
    pub(super) fn read(&self) -> Result<(CheckConfig, Vec<u8>), Arc<LoadError>> {
        let mut check = match &self.what {
            What::Config(check) | What::Folder(_, Ok(check)) => (**check).clone(),
            What::Folder(_, Err(e)) => return Err(e.clone()),
        };
        // A plugin by OCI reference is read from the cache, checked against the
        // digest its verified manifest names (or the config's own pin), and runs as
        // the reference pinned to the digest that was verified.
        let (path, pin) = match &self.fetched {
            Some(f) => {
                if let Some(pinned) = check.oci.as_ref().map(|r| r.pinned(&f.digest)) {
                    check.plugin = pinned.to_string().into();
                    check.oci = Some(pinned);
                }
                (&f.path, check.sha256.as_deref().or(Some(&f.sha256)))
            }
            None => (&check.plugin, check.sha256.as_deref()),
        };
        let wasm = read_plugin(&self.name, path, pin).map_err(Arc::new)?;
        Ok((check, wasm))
    }

    /// The plugin file's size, to compile small plugins first: a folder's file was
    /// measured when it was scanned, a config's is looked up (an OCI plugin's once
    /// fetched; 0 before).
    pub(super) fn size(&self) -> u64 {
        match &self.what {
            What::Config(c) => self
                .fetched
                .as_ref()
                .map_or(&c.plugin, |f| &f.path)
                .metadata()
                .map_or(0, |m| m.len()),
            What::Folder(f, _) => f.print.0.len,
        }
    }
}
