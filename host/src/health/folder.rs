//! The plugins folder on disk: which files make which dropped-in checks, and what
//! changed since the last scan. Every `NAME.wasm` is a check named `NAME`, with
//! `NAME.toml` beside it as its grant file; a `NAME.toml` with no `.wasm` beside it
//! that names `plugin = "oci://…"` is a check whose plugin comes from a registry. A
//! file is loaded once it has not changed for the scan's settle time (so a file being
//! copied in is not loaded half-written; renaming a finished file in is instant), and
//! again whenever its size or modification time, or its grant file's, changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{CheckConfig, Config, Source};
use crate::health::CheckSet;
use crate::health::load::{Load, What};
use crate::runtime::LoadError;

/// Size and modification time: what tells a changed file from the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fingerprint {
    pub(super) len: u64,
    modified: SystemTime,
}

impl Fingerprint {
    fn of(path: &Path) -> Option<Fingerprint> {
        let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
        Some(Fingerprint {
            len: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        })
    }

    fn settled(&self, settle: Duration) -> bool {
        self.modified.elapsed().is_ok_and(|age| age >= settle)
    }
}

/// One dropped-in check as found on disk.
#[derive(Debug, Clone)]
pub(super) struct Found {
    /// The plugin file: the `.wasm`, or the grant file of a plugin by OCI reference.
    pub(super) wasm: PathBuf,
    pub(super) grants: PathBuf,
    /// The plugin file's and the grant file's fingerprints.
    pub(super) print: (Fingerprint, Option<Fingerprint>),
    /// Whether the grant file names the plugin (`plugin = "oci://…"`, no `.wasm`).
    pub(super) by_reference: bool,
}

/// The largest `.toml` without a `.wasm` read to see whether it names an OCI plugin:
/// a grant file is a few lines, and a scan reads these every `watch_interval`.
const MAX_GRANT_BYTES: u64 = 64 << 10;

/// What a scan learned of each `.toml` with no `.wasm` beside it, by fingerprint, so
/// that an unchanged one is not read again.
type Lone = BTreeMap<PathBuf, (Fingerprint, bool)>;

/// The checks the files of `dir` make, by name: each `*.wasm` with its grant file, and
/// each grant file alone that names an OCI plugin; a folder that does not exist holds
/// none.
fn scan_folder(dir: &Path, lone: &mut Lone) -> std::io::Result<BTreeMap<String, Found>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e),
    };
    let (mut found, mut grant_files) = (BTreeMap::new(), Vec::new());
    for entry in entries {
        let path = entry?.path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            continue;
        };
        match path.extension().and_then(|e| e.to_str()) {
            Some("wasm") => {
                let Some(print) = Fingerprint::of(&path) else {
                    continue;
                };
                let grants = path.with_extension("toml");
                let found_file = Found {
                    print: (print, Fingerprint::of(&grants)),
                    wasm: path,
                    grants,
                    by_reference: false,
                };
                found.insert(stem, found_file);
            }
            Some("toml") => grant_files.push((stem, path)),
            _ => {}
        }
    }
    let mut seen = Lone::new();
    for (stem, path) in grant_files {
        let Some(print) = Fingerprint::of(&path) else {
            continue;
        };
        if found.contains_key(&stem) || print.len > MAX_GRANT_BYTES {
            continue;
        }
        let named = match lone.get(&path) {
            Some((p, named)) if *p == print => *named,
            _ => names_a_reference(&path),
        };
        seen.insert(path.clone(), (print, named));
        if named {
            let found_file = Found {
                wasm: path.clone(),
                grants: path,
                print: (print, Some(print)),
                by_reference: true,
            };
            found.insert(stem, found_file);
        }
    }
    *lone = seen;
    Ok(found)
}

/// Whether a grant file with no `.wasm` beside it names its plugin: it parses and has
/// a `plugin` key, or it does not parse but mentions `oci://` (so that its mistakes are
/// reported, while a grant file written before its `.wasm` is copied in waits quietly).
fn names_a_reference(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    match text.parse::<toml::Table>() {
        Ok(table) => table.contains_key("plugin"),
        Err(_) => text.contains(crate::oci::reference::SCHEME),
    }
}

/// The plugins folder of one config, and what was last attempted from it.
pub struct Folder {
    config: Arc<Config>,
    /// The fingerprints each check's last load attempt saw.
    seen: BTreeMap<String, (Fingerprint, Option<Fingerprint>)>,
    /// The grant files without a `.wasm` the last scan read.
    lone: Lone,
    /// The lock file that pins OCI tags, and its fingerprint at the last scan: when it
    /// changes (`healthhost lock` ran), grant files by reference whose load failed are
    /// loaded again.
    lock: Option<(PathBuf, Option<Fingerprint>)>,
}

/// How a scan treats files.
#[derive(Debug, Clone, Copy)]
pub struct Scan {
    /// Load files whose last attempt failed even if they did not change (SIGHUP).
    pub retry_failed: bool,
    /// How long a file must be unchanged to be loaded.
    pub settle: Duration,
}

impl Folder {
    /// The plugins folder of `config`, and the lock file that pins its OCI tags.
    pub fn new(config: Arc<Config>, lock: Option<PathBuf>) -> Folder {
        Folder {
            config,
            seen: BTreeMap::new(),
            lone: Lone::new(),
            lock: lock.map(|path| (path, None)),
        }
    }

    /// Whether the lock file changed since the last call.
    fn lock_changed(&mut self) -> bool {
        let Some((path, print)) = &mut self.lock else {
            return false;
        };
        let now = Fingerprint::of(path);
        std::mem::replace(print, now) != now
    }

    /// The set that follows `current` given the folder's contents now, with the files
    /// to load marked loading, and their loads; `None` when nothing changed.
    pub fn scan(&mut self, current: &CheckSet, scan: Scan) -> Option<(CheckSet, Vec<Load>)> {
        let lock_changed = self.lock_changed();
        let dir = &self.config.plugins_dir;
        let found = match scan_folder(dir, &mut self.lone) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(folder = %dir.display(), error = %e, "cannot read the plugins folder; keeping the current checks");
                return None;
            }
        };
        let mut next = CheckSet::default();
        let mut removed = false;
        for (name, entry) in &current.entries {
            if entry.source == Source::Config {
                next.entries.insert(name.clone(), entry.clone());
            } else if !found.contains_key(name) {
                tracing::info!(check = %name, "plugin file removed; check removed");
                removed = true;
            }
        }
        self.seen.retain(|name, _| found.contains_key(name));

        let mut to_load = Vec::new();
        for (name, file) in found {
            if next.entries.contains_key(&name) {
                let message = format!(
                    "a check named '{name}' is defined in the config file; rename this file"
                );
                if self.seen.insert(name, file.print) != Some(file.print) {
                    tracing::warn!(file = %file.wasm.display(), "{message}");
                }
                next.rejected.insert(file.wasm, message);
                continue;
            }
            let previous = current.entries.get(&name).cloned();
            let unchanged = self.seen.get(&name) == Some(&file.print);
            let failed = previous.as_ref().is_some_and(|e| e.load_error.is_some());
            let retry = scan.retry_failed || (lock_changed && file.by_reference);
            let settled = file.print.0.settled(scan.settle)
                && file.print.1.is_none_or(|p| p.settled(scan.settle));
            if (unchanged && !(retry && failed)) || !settled {
                if let Some(previous) = previous {
                    next.entries.insert(name, previous);
                }
                continue;
            }
            to_load.push((name, file, previous));
        }
        if to_load.is_empty() && !removed && next.rejected == current.rejected {
            return None;
        }
        let loads: Vec<Load> = to_load
            .into_iter()
            .map(|(name, file, previous)| {
                self.seen.insert(name.clone(), file.print);
                // Critical as its grant file says, so that readiness waits for it.
                let check = load_grants(&self.config, &name, &file)
                    .map(Box::new)
                    .map_err(Arc::new);
                let critical = match &check {
                    Ok(c) => c.critical,
                    Err(_) => previous.as_ref().is_some_and(|p| p.critical),
                };
                Load::new(name, What::Folder(file, check), critical, previous)
            })
            .collect();
        for load in &loads {
            next.entries.insert(load.name.clone(), load.pending());
        }
        Some((next, loads))
    }
}

/// The OCI references the grant files of `config`'s plugins folder name (for
/// `healthhost lock` and `mirror`); a grant file with problems is skipped with a
/// warning, as its load would report them.
pub fn references(config: &Config) -> Vec<crate::oci::Reference> {
    let found = scan_folder(&config.plugins_dir, &mut Lone::new()).unwrap_or_default();
    found
        .iter()
        .filter(|(_, file)| file.by_reference)
        .filter_map(|(name, file)| match load_grants(config, name, file) {
            Ok(check) => check.oci,
            Err(error) => {
                tracing::warn!(file = %file.grants.display(), %error, "skipping this grant file");
                None
            }
        })
        .collect()
}

/// The check a dropped-in file makes under its grant file (if any).
fn load_grants(config: &Config, name: &str, file: &Found) -> Result<CheckConfig, LoadError> {
    let text =
        match file.print.1 {
            Some(_) => Some(std::fs::read_to_string(&file.grants).map_err(|error| {
                LoadError::GrantRead {
                    path: file.grants.display().to_string(),
                    error,
                }
            })?),
            None => None,
        };
    config
        .drop_in(
            name,
            (!file.by_reference).then(|| file.wasm.clone()),
            text.as_deref(),
            |v| std::env::var(v).ok(),
        )
        .map_err(|problems| {
            let at = file.grants.display();
            let located: Vec<String> = problems.iter().map(|p| format!("{at}:{p}")).collect();
            LoadError::Grants {
                problems: located.join("; "),
            }
        })
}
