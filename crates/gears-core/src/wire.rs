//! A compact binary form of core records, for moving them between shards.
//!
//! Tags: 0 nil, 1 bool, 2 integer, 3 float, 4 string, 5 bytes, 6 list, 7 map, 8 key record,
//! 9 error; lengths and integers are little-endian. Native values (a language's objects) are
//! converted to core records before they travel.

use crate::error::{GearsError, Result};
use crate::record::{KeyRecord, Record};

/// How deep records may nest on the wire (deeper ones were refused where they were made).
const MAX_DEPTH: usize = 1024;

/// Appends `records` (core records only) to `out`.
pub fn encode_records(records: &[Record], out: &mut Vec<u8>) -> Result<()> {
    put_len(out, records.len());
    for record in records {
        encode(record, out, 0)?;
    }
    Ok(())
}

/// The records of [`encode_records`]' output.
pub fn decode_records(mut input: &[u8]) -> Result<Vec<Record>> {
    let count = take_len(&mut input)?;
    let mut records = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        records.push(decode(&mut input, 0)?);
    }
    Ok(records)
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&(len as u64).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn put_option_text(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => out.push(0),
        Some(text) => {
            out.push(1);
            put_bytes(out, text.as_bytes());
        }
    }
}

fn encode(record: &Record, out: &mut Vec<u8>, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(GearsError::Internal(
            "record nested too deep to send".into(),
        ));
    }
    match record {
        Record::Nil => out.push(0),
        Record::Bool(b) => {
            out.push(1);
            out.push(u8::from(*b));
        }
        Record::Integer(i) => {
            out.push(2);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Record::Float(f) => {
            out.push(3);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Record::String(s) => {
            out.push(4);
            put_bytes(out, s.as_bytes());
        }
        Record::Bytes(b) => {
            out.push(5);
            put_bytes(out, b);
        }
        Record::List(items) => {
            out.push(6);
            put_len(out, items.len());
            for item in items {
                encode(item, out, depth + 1)?;
            }
        }
        Record::Map(pairs) => {
            out.push(7);
            put_len(out, pairs.len());
            for (k, v) in pairs {
                encode(k, out, depth + 1)?;
                encode(v, out, depth + 1)?;
            }
        }
        Record::Key(key) => {
            out.push(8);
            put_bytes(out, &key.key);
            match &key.value {
                None => out.push(0),
                Some(value) => {
                    out.push(1);
                    encode(value, out, depth + 1)?;
                }
            }
            put_bytes(out, key.key_type.as_bytes());
            put_option_text(out, key.event.as_deref());
        }
        Record::Error(e) => {
            out.push(9);
            put_bytes(out, e.as_bytes());
        }
        Record::Native(_) => {
            return Err(GearsError::Internal(
                "a language value must be converted before it is sent".into(),
            ))
        }
    }
    Ok(())
}

fn short() -> GearsError {
    GearsError::Internal("truncated records from another shard".into())
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
    if input.len() < n {
        return Err(short());
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

fn take_u8(input: &mut &[u8]) -> Result<u8> {
    Ok(take(input, 1)?[0])
}

fn take_8(input: &mut &[u8]) -> Result<[u8; 8]> {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(take(input, 8)?);
    Ok(bytes)
}

fn take_len(input: &mut &[u8]) -> Result<usize> {
    let len = u64::from_le_bytes(take_8(input)?);
    // A length can not be more than what is left.
    if len > input.len() as u64 {
        return Err(short());
    }
    Ok(len as usize)
}

fn take_bytes(input: &mut &[u8]) -> Result<Vec<u8>> {
    let len = take_len(input)?;
    Ok(take(input, len)?.to_vec())
}

fn take_text(input: &mut &[u8]) -> Result<String> {
    String::from_utf8(take_bytes(input)?)
        .map_err(|_| GearsError::Internal("invalid text from another shard".into()))
}

fn decode(input: &mut &[u8], depth: usize) -> Result<Record> {
    if depth > MAX_DEPTH {
        return Err(GearsError::Internal("record nested too deep".into()));
    }
    Ok(match take_u8(input)? {
        0 => Record::Nil,
        1 => Record::Bool(take_u8(input)? != 0),
        2 => Record::Integer(i64::from_le_bytes(take_8(input)?)),
        3 => Record::Float(f64::from_le_bytes(take_8(input)?)),
        4 => Record::String(take_text(input)?),
        5 => Record::Bytes(take_bytes(input)?),
        6 => {
            let count = take_len(input)?;
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                items.push(decode(input, depth + 1)?);
            }
            Record::List(items)
        }
        7 => {
            let count = take_len(input)?;
            let mut pairs = Vec::with_capacity(count);
            for _ in 0..count {
                let k = decode(input, depth + 1)?;
                let v = decode(input, depth + 1)?;
                pairs.push((k, v));
            }
            Record::Map(pairs)
        }
        8 => {
            let key = take_bytes(input)?;
            let value = match take_u8(input)? {
                0 => None,
                _ => Some(decode(input, depth + 1)?),
            };
            let key_type = take_text(input)?;
            let event = match take_u8(input)? {
                0 => None,
                _ => Some(take_text(input)?),
            };
            Record::Key(Box::new(KeyRecord {
                key,
                value,
                key_type,
                event,
            }))
        }
        9 => Record::Error(take_text(input)?),
        _ => {
            return Err(GearsError::Internal(
                "unknown record from another shard".into(),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let records = vec![
            Record::Nil,
            Record::Bool(true),
            Record::Integer(-7),
            Record::Float(1.5),
            Record::String("é".into()),
            Record::Bytes(vec![0, 255]),
            Record::List(vec![
                Record::Integer(1),
                Record::Map(vec![(Record::from("a"), Record::Nil)]),
            ]),
            Record::Key(Box::new(KeyRecord {
                key: b"k\xff".to_vec(),
                value: Some(Record::String("v".into())),
                key_type: "string".into(),
                event: None,
            })),
            Record::Error("ERR x".into()),
        ];
        let mut out = Vec::new();
        encode_records(&records, &mut out).unwrap();
        assert_eq!(decode_records(&out).unwrap(), records);
        assert!(decode_records(&out[..out.len() - 1]).is_err());
        assert!(decode_records(&[255; 8]).is_err());
    }
}
