//! One compiled copy per distinct component: checks whose plugin bytes are identical
//! (the same SHA-256) share one pre-instantiated component, whatever their settings,
//! grants and limits differ in. The first load of those bytes compiles them (or reads
//! the compile cache) while the others wait for it; the copy lives as long as a check
//! uses it, so a reload of one check never disturbs the others sharing its old bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::state::RunState;
use crate::capabilities::bindings::CheckPre;

/// A component's compiled, pre-instantiated code, shared by every check running it.
pub type SharedPre = Arc<CheckPre<RunState>>;

/// Where one component's copy is, locked while its bytes load.
type Slot = Arc<Mutex<Weak<CheckPre<RunState>>>>;

/// The copies in use, by SHA-256.
#[derive(Default)]
pub(super) struct Distinct {
    slots: Mutex<HashMap<String, Slot>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Distinct {
    /// The copy of the component `sha256`, from a check already running it or made by
    /// `load` (once, however many loads of it run at the same time).
    pub(super) fn get_or_load<E>(
        &self,
        sha256: &str,
        load: impl FnOnce() -> Result<CheckPre<RunState>, E>,
    ) -> Result<SharedPre, E> {
        let slot = {
            let mut slots = lock(&self.slots);
            if !slots.contains_key(sha256) {
                // Forget the components no check runs any more, nor any load awaits.
                slots
                    .retain(|_, slot| Arc::strong_count(slot) > 1 || lock(slot).strong_count() > 0);
            }
            slots.entry(sha256.to_owned()).or_default().clone()
        };
        let mut held = lock(&slot);
        if let Some(pre) = held.upgrade() {
            return Ok(pre);
        }
        let pre = Arc::new(load()?);
        *held = Arc::downgrade(&pre);
        Ok(pre)
    }

    /// How many distinct components are loaded now.
    pub(super) fn count(&self) -> usize {
        lock(&self.slots)
            .values()
            .filter(|slot| lock(slot).strong_count() > 0)
            .count()
    }
}
