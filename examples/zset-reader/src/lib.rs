//! An example Gears extension: **`zset_entries`**, a native reader of a sorted set, and three
//! operators over its entries.
//!
//! ```text
//! RG.PYEXECUTE "GB('zset_entries').native('score_at_least', 50).run('leaderboard')"
//! RG.LUAEXECUTE "GB('zset_entries'):groupby(native('score_bucket', 10), function(k, a, r) return (a or 0) + 1 end):run('leaderboard')"
//! RG.RHAIEXECUTE 'GB("zset_entries").native("entry_member").run("leaderboard", #{batch: 100})'
//! ```
//!
//! - reader `zset_entries`: `run(key, batch=1000)` yields `{'member': m, 'score': s}` for each
//!   entry of the sorted set `key`, lowest score first, `batch` entries per hold of the Redis
//!   lock (`ZRANGE key i j WITHSCORES`, run as the script's user: a user who may not read the key
//!   gets Redis's `NOPERM` error). A missing key yields nothing. In a cluster, the shard that owns
//!   the key reads it. Entries added or removed between two batches may be missed or read twice,
//!   as with `SCAN`.
//! - filter `score_at_least(min)`: the entries whose score is at least `min`.
//! - map `entry_member`: the entry's member.
//! - extractor `score_bucket(width)`: the key `floor(score / width) * width`, as text (`'50'`),
//!   for `groupby`, `countby`, `repartition`, ...

use gears_core::extension::{
    Args, Extension, KeyExtractor, Mapper, NativeOperator, NativeReader, NativeReaderDef,
    Predicate, ReaderHost, Version,
};
use gears_core::{GearsError, GroupKey, Record, Result};

/// The extension: the reader and its three operators.
pub fn extension() -> Extension {
    let v1 = Version::new(1, 0);
    Extension::new("zset", v1)
        .reader(NativeReaderDef::new(
            "zset_entries",
            v1,
            ZSetEntries::from_args,
        ))
        .operator(NativeOperator::filter(
            "score_at_least",
            v1,
            |args: &Args| {
                args.arity(1, 1)?;
                Ok(ScoreAtLeast(number(args, 0)?))
            },
        ))
        .operator(NativeOperator::map("entry_member", v1, |args: &Args| {
            args.arity(0, 0)?;
            Ok(EntryMember)
        }))
        .operator(NativeOperator::extractor(
            "score_bucket",
            v1,
            |args: &Args| {
                args.arity(1, 1)?;
                let width = number(args, 0)?;
                if width <= 0.0 || !width.is_finite() {
                    return Err(args.error("the bucket width must be a positive number"));
                }
                Ok(ScoreBucket(width))
            },
        ))
}

fn number(args: &Args, i: usize) -> Result<f64> {
    match args.get(i) {
        Some(Record::Integer(n)) => Ok(*n as f64),
        Some(Record::Float(f)) => Ok(*f),
        Some(other) => Err(args.error(format!(
            "argument {} must be a number, not {}",
            i + 1,
            other.type_name()
        ))),
        None => Err(args.error(format!("argument {} is missing", i + 1))),
    }
}

/// The reader: one sorted set, `batch` entries at a time.
pub struct ZSetEntries {
    key: Vec<u8>,
    batch: i64,
    next: i64,
    done: bool,
}

impl ZSetEntries {
    pub fn from_args(args: &Args) -> Result<Self> {
        args.only_named(&["batch"])?;
        if args.is_empty() {
            return Err(args.error("give the sorted set's key: run('key')"));
        }
        args.arity(1, 1)?;
        let batch = args.named_integer("batch", 1000)?;
        if !(1..=100_000).contains(&batch) {
            return Err(args.error("batch must be between 1 and 100000"));
        }
        Ok(ZSetEntries {
            key: args.bytes(0)?.to_vec(),
            batch,
            next: 0,
            done: false,
        })
    }
}

impl NativeReader for ZSetEntries {
    fn next_batch(&mut self, host: &dyn ReaderHost) -> Result<Option<Vec<Record>>> {
        if self.done || !host.owns_key(&self.key) {
            return Ok(None);
        }
        let (start, stop) = (
            self.next.to_string(),
            (self.next + self.batch - 1).to_string(),
        );
        let mut reply = Record::Nil;
        host.read(&mut |redis| {
            reply = redis.call(&[
                b"ZRANGE",
                &self.key,
                start.as_bytes(),
                stop.as_bytes(),
                b"WITHSCORES",
            ])?;
            Ok(())
        })?;
        let entries = entries(reply)?;
        self.next += self.batch;
        if (entries.len() as i64) < self.batch {
            self.done = true;
        }
        if entries.is_empty() {
            return Ok(None);
        }
        Ok(Some(entries))
    }
}

/// `{'member', 'score'}` records of a `ZRANGE ... WITHSCORES` reply (a flat RESP2 list, or
/// RESP3 pairs).
fn entries(reply: Record) -> Result<Vec<Record>> {
    let bad = || GearsError::Redis("zset_entries: an unexpected ZRANGE reply".into());
    let Record::List(items) = reply else {
        return Err(bad());
    };
    let mut flat = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Record::List(pair) => flat.extend(pair),
            other => flat.push(other),
        }
    }
    if flat.len() % 2 != 0 {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut flat = flat.into_iter();
    while let (Some(member), Some(score)) = (flat.next(), flat.next()) {
        let score = match score {
            Record::Float(f) => f,
            Record::Integer(i) => i as f64,
            Record::String(s) => s.parse::<f64>().map_err(|_| bad())?,
            _ => return Err(bad()),
        };
        out.push(Record::Map(vec![
            (Record::from("member"), member),
            (Record::from("score"), Record::Float(score)),
        ]));
    }
    Ok(out)
}

fn score_of(record: &Record) -> Result<f64> {
    match record.get_field("score") {
        Some(Record::Float(f)) => Ok(f),
        Some(Record::Integer(i)) => Ok(i as f64),
        _ => Err(GearsError::Callback(
            "the record has no numeric 'score' (a zset_entries record has one)".into(),
        )),
    }
}

pub struct ScoreAtLeast(f64);

impl Predicate for ScoreAtLeast {
    fn test(&mut self, record: &Record) -> Result<bool> {
        Ok(score_of(record)? >= self.0)
    }
}

pub struct EntryMember;

impl Mapper for EntryMember {
    fn map(&mut self, record: Record) -> Result<Record> {
        record.get_field("member").ok_or_else(|| {
            GearsError::Callback(
                "the record has no 'member' (a zset_entries record has one)".into(),
            )
        })
    }
}

pub struct ScoreBucket(f64);

impl KeyExtractor for ScoreBucket {
    fn key(&mut self, record: &Record) -> Result<GroupKey> {
        let bucket = (score_of(record)? / self.0).floor() * self.0;
        Ok(GroupKey::Text(gears_core::python_str(&number_record(
            bucket,
        ))))
    }
}

/// An integral float as an integer record (`50`, not `50.0`).
fn number_record(value: f64) -> Record {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        Record::Integer(value as i64)
    } else {
        Record::Float(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gears_core::extension::{NativeCall, RedisReads, Registry};
    use std::sync::Mutex;

    /// A host over an in-memory sorted set, counting the holds of the lock.
    struct FakeHost {
        entries: Vec<(String, f64)>,
        locks: Mutex<usize>,
        owner: bool,
    }

    struct FakeReads<'a>(&'a FakeHost);

    impl RedisReads for FakeReads<'_> {
        fn call(&mut self, args: &[&[u8]]) -> Result<Record> {
            assert_eq!(args[0], b"ZRANGE");
            let n = |a: &[u8]| std::str::from_utf8(a).unwrap().parse::<usize>().unwrap();
            let (start, stop) = (n(args[2]), n(args[3]));
            let mut out = Vec::new();
            for (member, score) in self.0.entries.iter().skip(start).take(stop + 1 - start) {
                out.push(Record::from(member.as_str()));
                out.push(Record::from(score.to_string()));
            }
            Ok(Record::List(out))
        }
    }

    impl ReaderHost for FakeHost {
        fn read(&self, f: &mut dyn FnMut(&mut dyn RedisReads) -> Result<()>) -> Result<()> {
            *self.locks.lock().unwrap() += 1;
            f(&mut FakeReads(self))
        }
        fn owns_key(&self, _: &[u8]) -> bool {
            self.owner
        }
        fn check(&self) -> Result<()> {
            Ok(())
        }
    }

    fn reader(batch: i64) -> ZSetEntries {
        let named = vec![("batch".to_string(), Record::Integer(batch))];
        let positional = vec![Record::from("lb")];
        ZSetEntries::from_args(&Args::new("zset_entries", &positional, &named)).unwrap()
    }

    fn host(n: usize, owner: bool) -> FakeHost {
        FakeHost {
            entries: (0..n).map(|i| (format!("m{i}"), i as f64 * 10.0)).collect(),
            locks: Mutex::new(0),
            owner,
        }
    }

    #[test]
    fn reads_in_batches_one_lock_each() {
        let host = host(5, true);
        let mut r = reader(2);
        let mut all = Vec::new();
        while let Some(batch) = r.next_batch(&host).unwrap() {
            assert!(batch.len() <= 2);
            all.extend(batch);
        }
        assert_eq!(all.len(), 5);
        assert_eq!(*host.locks.lock().unwrap(), 3);
        assert_eq!(
            all[1],
            Record::Map(vec![
                (Record::from("member"), Record::from("m1")),
                (Record::from("score"), Record::Float(10.0)),
            ])
        );
    }

    #[test]
    fn a_shard_that_does_not_own_the_key_reads_nothing() {
        let host = host(5, false);
        assert_eq!(reader(2).next_batch(&host).unwrap(), None);
        assert_eq!(*host.locks.lock().unwrap(), 0);
    }

    #[test]
    fn operators() {
        let entry = |score: f64| {
            Record::Map(vec![
                (Record::from("member"), Record::from("m")),
                (Record::from("score"), Record::Float(score)),
            ])
        };
        assert!(ScoreAtLeast(50.0).test(&entry(50.0)).unwrap());
        assert!(!ScoreAtLeast(50.0).test(&entry(49.5)).unwrap());
        assert_eq!(EntryMember.map(entry(1.0)).unwrap(), Record::from("m"));
        assert_eq!(
            ScoreBucket(10.0).key(&entry(57.0)).unwrap(),
            GroupKey::Text("50".into())
        );
        assert_eq!(
            ScoreBucket(0.5).key(&entry(1.7)).unwrap(),
            GroupKey::Text("1.5".into())
        );
        assert!(ScoreAtLeast(1.0).test(&Record::from("x")).is_err());
    }

    #[test]
    fn arguments_are_checked() {
        let mut registry = Registry::new();
        registry.add(extension()).unwrap();
        let reader = registry.reader("zset_entries").unwrap();
        let call = |args: Vec<Record>, named: Vec<(String, Record)>| NativeCall {
            name: "zset_entries".into(),
            major: 1,
            args,
            named,
        };
        let err = |c: NativeCall| reader.build(&c).err().unwrap().to_string();
        assert_eq!(
            err(call(vec![], vec![])),
            "zset_entries: give the sorted set's key: run('key')"
        );
        assert_eq!(
            err(call(
                vec![Record::from("k")],
                vec![("bacth".into(), Record::Integer(1))]
            )),
            "zset_entries: unknown option 'bacth'"
        );
        assert_eq!(
            err(call(
                vec![Record::from("k")],
                vec![("batch".into(), Record::Integer(0))]
            )),
            "zset_entries: batch must be between 1 and 100000"
        );
        assert_eq!(
            registry
                .call("score_bucket", vec![Record::Integer(0)])
                .err()
                .unwrap()
                .to_string(),
            "score_bucket: the bucket width must be a positive number"
        );
        assert_eq!(
            registry
                .call("score_at_least", vec![Record::from("x")])
                .err()
                .unwrap()
                .to_string(),
            "score_at_least: argument 1 must be a number, not str"
        );
    }
}
