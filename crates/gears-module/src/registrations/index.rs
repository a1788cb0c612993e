//! Which keyspace registrations a key concerns, without trying each one: every keyspace event
//! (every write) asks, so the cost must not grow with the number of registrations.
//!
//! Exact keys are a hash lookup; prefixes are grouped by length, so a key is looked up once per
//! distinct prefix length; globs (opt-in, rare) are tried one by one. Rebuilt with the registry.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use super::{keys_trigger, Registration};

/// Key bytes → positions of the registrations for them.
type Positions = HashMap<Vec<u8>, Vec<usize>>;

#[derive(Default)]
pub(super) struct KeyIndex {
    exact: Positions,
    /// Prefix length → prefix → registrations.
    prefixes: Vec<(usize, Positions)>,
    globs: Vec<usize>,
}

/// The index of the registry; replaced only while the registry's write lock is held, and read
/// under its read lock ([`super::snapshot`]), so the two always agree.
static INDEX: RwLock<Option<Arc<KeyIndex>>> = RwLock::new(None);

pub(super) fn current() -> Arc<KeyIndex> {
    INDEX
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .unwrap_or_default()
}

/// Rebuilds the index of `list` (the registry, positions as in it).
pub(super) fn rebuild(list: &[Arc<Registration>]) {
    let mut index = KeyIndex::default();
    let mut by_length: HashMap<usize, Positions> = HashMap::new();
    for (position, registration) in list.iter().enumerate() {
        let Some(trigger) = keys_trigger(registration) else {
            continue;
        };
        if trigger.glob {
            index.globs.push(position);
            continue;
        }
        match trigger.prefix.split_last() {
            Some((b'*', prefix)) => by_length
                .entry(prefix.len())
                .or_default()
                .entry(prefix.to_vec())
                .or_default()
                .push(position),
            _ => index
                .exact
                .entry(trigger.prefix.clone())
                .or_default()
                .push(position),
        }
    }
    index.prefixes = by_length.into_iter().collect();
    *INDEX.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(index));
}

/// The positions in `list` of the registrations whose keys include `key`, in registry order.
pub(super) fn matching(list: &[Arc<Registration>], index: &KeyIndex, key: &[u8]) -> Vec<usize> {
    let mut found: Vec<usize> = Vec::new();
    if let Some(positions) = index.exact.get(key) {
        found.extend(positions);
    }
    for (length, prefixes) in &index.prefixes {
        if let Some(positions) = key.get(..*length).and_then(|p| prefixes.get(p)) {
            found.extend(positions);
        }
    }
    for &position in &index.globs {
        if list
            .get(position)
            .and_then(|r| keys_trigger(r))
            .is_some_and(|t| t.matches_key(key))
        {
            found.push(position);
        }
    }
    found.sort_unstable();
    found
}
