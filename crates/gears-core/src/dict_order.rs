//! The iteration order of RedisGears 1.2's internal dict (a copy of Redis's `dict.c` hashing with
//! SipHash-1-2 under an all-zero key).
//!
//! RedisGears builds a key record and a hash's value dict by inserting into that dict, and the
//! Python dict it hands to scripts follows the dict's iteration order. `str(record)` is what
//! RedisGears replies by default, so Gears orders the same fields the same way:
//! `{'event': None, 'key': 'user:1', 'type': 'hash', 'value': {'age': '70', 'name': 'Rick'}}`.

/// SipHash with 1 compression round and 2 finalization rounds (Redis's `siphash`), zero key.
pub fn siphash_1_2_zero_key(data: &[u8]) -> u64 {
    let (k0, k1) = (0u64, 0u64);
    let mut v0 = 0x736f6d6570736575u64 ^ k0;
    let mut v1 = 0x646f72616e646f6du64 ^ k1;
    let mut v2 = 0x6c7967656e657261u64 ^ k0;
    let mut v3 = 0x7465646279746573u64 ^ k1;
    macro_rules! round {
        () => {
            v0 = v0.wrapping_add(v1);
            v1 = v1.rotate_left(13);
            v1 ^= v0;
            v0 = v0.rotate_left(32);
            v2 = v2.wrapping_add(v3);
            v3 = v3.rotate_left(16);
            v3 ^= v2;
            v0 = v0.wrapping_add(v3);
            v3 = v3.rotate_left(21);
            v3 ^= v0;
            v2 = v2.wrapping_add(v1);
            v1 = v1.rotate_left(17);
            v1 ^= v2;
            v2 = v2.rotate_left(32);
        };
    }
    let len = data.len();
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let m = u64::from_le_bytes(word);
        v3 ^= m;
        round!();
        v0 ^= m;
    }
    let mut last = (len as u64) << 56;
    for (i, byte) in chunks.remainder().iter().enumerate() {
        last |= (*byte as u64) << (8 * i);
    }
    v3 ^= last;
    round!();
    v0 ^= last;
    v2 ^= 0xff;
    round!();
    round!();
    v0 ^ v1 ^ v2 ^ v3
}

/// A minimal model of Redis's incrementally rehashing dict: only the placement of entries.
struct DictModel {
    tables: [Vec<Vec<usize>>; 2],
    rehash_index: Option<usize>,
    used: [usize; 2],
    hashes: Vec<u64>,
}

impl DictModel {
    fn new() -> Self {
        DictModel {
            tables: [Vec::new(), Vec::new()],
            rehash_index: None,
            used: [0, 0],
            hashes: Vec::new(),
        }
    }

    fn rehash_step(&mut self) {
        let Some(mut index) = self.rehash_index else {
            return;
        };
        let mut empty_visits = 10;
        while index < self.tables[0].len() && self.tables[0][index].is_empty() {
            index += 1;
            empty_visits -= 1;
            if empty_visits == 0 {
                self.rehash_index = Some(index);
                return;
            }
        }
        if index < self.tables[0].len() {
            let chain = std::mem::take(&mut self.tables[0][index]);
            let mask = self.tables[1].len() - 1;
            for entry in chain {
                let slot = (self.hashes[entry] as usize) & mask;
                self.tables[1][slot].insert(0, entry);
                self.used[0] -= 1;
                self.used[1] += 1;
            }
            index += 1;
        }
        if self.used[0] == 0 {
            self.tables[0] = std::mem::take(&mut self.tables[1]);
            self.used = [self.used[1], 0];
            self.rehash_index = None;
        } else {
            self.rehash_index = Some(index);
        }
    }

    fn expand_if_needed(&mut self) {
        if self.rehash_index.is_some() {
            return;
        }
        if self.tables[0].is_empty() {
            self.tables[0] = vec![Vec::new(); 4];
            return;
        }
        if self.used[0] >= self.tables[0].len() {
            let size = (self.used[0] * 2).next_power_of_two();
            self.tables[1] = vec![Vec::new(); size];
            self.rehash_index = Some(0);
        }
    }

    fn add(&mut self, hash: u64) {
        let entry = self.hashes.len();
        self.hashes.push(hash);
        if self.rehash_index.is_some() {
            self.rehash_step();
        }
        self.expand_if_needed();
        let table = if self.rehash_index.is_some() { 1 } else { 0 };
        let mask = self.tables[table].len() - 1;
        self.tables[table][(hash as usize) & mask].insert(0, entry);
        self.used[table] += 1;
    }

    fn order(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.hashes.len());
        for table in &self.tables {
            for chain in table {
                out.extend(chain.iter().copied());
            }
        }
        out
    }
}

/// The order in which RedisGears' dict yields `keys` inserted in the given order (indices into
/// `keys`). Duplicate keys keep their first insertion.
pub fn gears_dict_order<K: AsRef<[u8]>>(keys: &[K]) -> Vec<usize> {
    let mut model = DictModel::new();
    let mut seen = std::collections::HashSet::new();
    let mut indices = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        if seen.insert(key.as_ref()) {
            model.add(siphash_1_2_zero_key(key.as_ref()));
            indices.push(i);
        }
    }
    model
        .order()
        .into_iter()
        .map(|entry| indices[entry])
        .collect()
}

/// Reorders `(key, value)` groups into the order RedisGears' dict yields their keys.
pub fn in_gears_dict_order<K: AsRef<[u8]>, T>(groups: Vec<(K, T)>) -> Vec<(K, T)> {
    let order = gears_dict_order(&groups.iter().map(|(k, _)| k.as_ref()).collect::<Vec<_>>());
    let mut groups: Vec<Option<(K, T)>> = groups.into_iter().map(Some).collect();
    order
        .into_iter()
        .filter_map(|i| groups.get_mut(i).and_then(Option::take))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ordered<'a>(keys: &[&'a str]) -> Vec<&'a str> {
        gears_dict_order(keys)
            .into_iter()
            .map(|i| keys[i])
            .collect()
    }

    #[test]
    fn key_record_fields_follow_redisgears() {
        assert_eq!(
            ordered(&["key", "value", "type", "event"]),
            vec!["event", "key", "type", "value"]
        );
        assert_eq!(ordered(&["key", "event"]), vec!["event", "key"]);
        assert_eq!(ordered(&["id", "value", "key"]), vec!["key", "id", "value"]);
    }

    #[test]
    fn hash_fields_follow_published_outputs() {
        assert_eq!(ordered(&["name", "age"]), vec!["age", "name"]);
        assert_eq!(ordered(&["name", "continent"]), vec!["continent", "name"]);
    }

    #[test]
    fn growing_dicts_keep_every_key_once() {
        let keys: Vec<String> = (0..100).map(|i| format!("field{i}")).collect();
        let mut order = gears_dict_order(&keys);
        order.sort();
        assert_eq!(order, (0..100).collect::<Vec<_>>());
    }
}
