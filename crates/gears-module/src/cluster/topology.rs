//! The cluster as Gears sees it: this node's id, and the masters that own slots with their
//! slot ranges, read from Redis itself (`CLUSTER SLOTS`) at start and every second after, so a
//! new node, a failover or a resharding is followed with no command (RedisGears 1.2 needed
//! `RG.REFRESHCLUSTER` on every node, #1082).

use std::sync::{Arc, PoisonError, RwLock};

use gears_core::Record;
use redis_module::{raw, Context};

use crate::host::call_internal;

/// A master that owns slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Shard {
    pub id: String,
    pub ip: String,
    pub port: i64,
    /// Slot ranges, inclusive.
    pub ranges: Vec<(u16, u16)>,
}

/// The cluster: this node and the shards.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Topology {
    pub my_id: String,
    pub shards: Vec<Shard>,
}

impl Topology {
    /// True if this node is a master that owns slots.
    pub fn i_am_a_shard(&self) -> bool {
        self.shards.iter().any(|s| s.id == self.my_id)
    }
}

static TOPOLOGY: RwLock<Option<Arc<Topology>>> = RwLock::new(None);

/// The topology last read (`None`: not a cluster, or not read yet).
pub(crate) fn current() -> Option<Arc<Topology>> {
    TOPOLOGY
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Reads the topology from Redis (on the main thread, or holding the lock).
pub(crate) fn refresh(ctx: &Context) {
    let Some(topology) = read(ctx) else {
        return;
    };
    let mut current = TOPOLOGY.write().unwrap_or_else(PoisonError::into_inner);
    if current.as_deref() != Some(&topology) {
        *current = Some(Arc::new(topology));
    }
}

fn text(record: &Record) -> Option<String> {
    match record {
        Record::String(s) => Some(s.clone()),
        Record::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

fn read(ctx: &Context) -> Option<Topology> {
    // SAFETY: returns this node's id (a static buffer of the server), or null.
    let my_id = unsafe {
        let id = raw::RedisModule_GetMyClusterID?();
        if id.is_null() {
            return None;
        }
        let bytes =
            std::slice::from_raw_parts(id.cast::<u8>(), raw::REDISMODULE_NODE_ID_LEN as usize);
        String::from_utf8_lossy(bytes).into_owned()
    };
    let Ok(Record::List(ranges)) = call_internal(ctx, &[b"CLUSTER".to_vec(), b"SLOTS".to_vec()])
    else {
        return None;
    };
    let mut shards: Vec<Shard> = Vec::new();
    for range in ranges {
        let Record::List(items) = range else { continue };
        let (Some(Record::Integer(start)), Some(Record::Integer(end)), Some(Record::List(master))) =
            (items.first(), items.get(1), items.get(2))
        else {
            continue;
        };
        let (Some(ip), Some(Record::Integer(port)), Some(id)) = (
            master.first().and_then(text),
            master.get(1),
            master.get(2).and_then(text),
        ) else {
            continue;
        };
        let range = (*start as u16, *end as u16);
        match shards.iter_mut().find(|s| s.id == id) {
            Some(shard) => shard.ranges.push(range),
            None => shards.push(Shard {
                id,
                ip,
                port: *port,
                ranges: vec![range],
            }),
        }
    }
    shards.sort_by(|a, b| a.id.cmp(&b.id));
    Some(Topology { my_id, shards })
}

/// The hash slot of a key (CRC16 of the key, or of its `{hash tag}`), as Redis Cluster computes
/// it.
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            key[open + 1..]
                .iter()
                .position(|&b| b == b'}')
                .filter(|&len| len > 0)
                .map(|len| &key[open + 1..open + 1 + len])
        })
        .unwrap_or(key);
    crc16(tagged) & 16383
}

/// CRC16-CCITT (XModem), Redis Cluster's key hash.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= (byte as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// `hashtag()`: a hash tag that maps to a slot of this shard (its first slot), so a script can
/// name keys that live here (`'counter{%s}' % hashtag()`). Standalone (and before the topology
/// is known): `06S`, RedisGears' tag of slot 0.
pub(crate) fn my_hashtag() -> String {
    let first = current().filter(|_| super::enabled()).and_then(|topology| {
        topology
            .shards
            .iter()
            .find(|s| s.id == topology.my_id)
            .and_then(|s| s.ranges.iter().map(|(start, _)| *start).min())
    });
    match first {
        Some(slot) => tag_for_slot(slot),
        None => "06S".to_string(),
    }
}

/// The first short alphanumeric tag (by length, then `0-9A-Za-z` order) whose slot is `slot`;
/// each slot has one of at most 3 characters in practice (238,328 of them for 16,384 slots),
/// and a 4th is tried for certainty. Found once per slot, then remembered.
pub(crate) fn tag_for_slot(slot: u16) -> String {
    static FOUND: std::sync::Mutex<Vec<(u16, String)>> = std::sync::Mutex::new(Vec::new());
    let mut found = FOUND.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, tag)) = found.iter().find(|(s, _)| *s == slot) {
        return tag.clone();
    }
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut tag = None;
    'search: for len in 1..=4u32 {
        let total = (ALPHABET.len() as u64).pow(len);
        let mut candidate = vec![0u8; len as usize];
        for mut n in 0..total {
            for at in (0..len as usize).rev() {
                candidate[at] = ALPHABET[(n % ALPHABET.len() as u64) as usize];
                n /= ALPHABET.len() as u64;
            }
            if key_slot(&candidate) == slot {
                tag = Some(String::from_utf8_lossy(&candidate).into_owned());
                break 'search;
            }
        }
    }
    let tag = tag.unwrap_or_else(|| "06S".to_string());
    if found.len() > 64 {
        found.clear();
    }
    found.push((slot, tag.clone()));
    tag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_as_redis_computes_them() {
        // CLUSTER KEYSLOT values.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(key_slot(b"{}x"), key_slot(b"{}x"));
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    #[test]
    fn every_slot_has_a_short_tag_of_its_own() {
        for slot in [0u16, 1, 5461, 10923, 16383] {
            let tag = tag_for_slot(slot);
            assert!(tag.len() <= 3, "{tag}");
            assert_eq!(key_slot(tag.as_bytes()), slot);
            assert_eq!(key_slot(format!("counter{{{tag}}}").as_bytes()), slot);
        }
    }
}
