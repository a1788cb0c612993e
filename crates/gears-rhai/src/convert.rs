//! Conversions between core [`Record`]s and Rhai [`Dynamic`] values.
//!
//! Core → Rhai: `Nil` → `()`, `Bool` → `bool`, `Integer` → `i64`, `Float` → `f64`, `String` →
//! string, `Bytes` → blob, `List` → array, `Map` → object map (a non-string key becomes its
//! Python `str()`; a map with a key that is not valid UTF-8 becomes an array of `[key, value]`
//! pairs), a key record → `#{key, value, type, event}` (`key` a blob when the name is not valid
//! UTF-8; no `value`/`type` when the value was not read), an error value → its text, a Rhai
//! native → the `Dynamic` it holds.
//!
//! Rhai → core: `()` → `Nil`, `bool`, `i64` → `Integer`, `f64` → `Float`, string and char →
//! `String`, blob → `Bytes`, array → `List`, object map → `Map` (Rhai maps are sorted by key and
//! that order is kept); anything else (a `GearsBuilder`, a function pointer, a range ...) becomes
//! the string of its type name.

use gears_core::{GearsError, Language, NativeValue, Record, Result};
use rhai::{Array, Dynamic, ImmutableString, Map};

/// Wraps a value a Rhai callback returned, so the next Rhai step gets it without conversion.
///
/// `()`, booleans, integers and floats without a tag and not read-only become core records at
/// once: [`to_dynamic`] turns them back into the very same value, and as core records they cost
/// no allocation and convert for free.
pub(crate) fn native(value: Dynamic) -> Record {
    let value = value.flatten();
    if value.tag() == 0 && !value.is_read_only() {
        if let Some(scalar) = scalar(&value) {
            return scalar;
        }
    }
    Record::Native(NativeValue::new(Language::Rhai, value))
}

/// The Rhai value of a record (natives are unwrapped, core records converted).
pub(crate) fn to_dynamic(record: &Record) -> Result<Dynamic> {
    Ok(match record {
        Record::Nil => Dynamic::UNIT,
        Record::Bool(b) => Dynamic::from_bool(*b),
        Record::Integer(i) => Dynamic::from_int(*i),
        Record::Float(f) => Dynamic::from_float(*f),
        Record::String(s) => Dynamic::from(ImmutableString::from(s.as_str())),
        Record::Bytes(bytes) => Dynamic::from_blob(bytes.clone()),
        Record::List(items) => {
            let mut array = Array::with_capacity(items.len());
            for item in items {
                array.push(to_dynamic(item)?);
            }
            Dynamic::from_array(array)
        }
        // Rhai map keys are strings: a map with a key that is not valid UTF-8 (a hash field
        // named b"f\xff") becomes an array of `[key, value]` pairs, keys as blobs, so no two
        // keys are confused and every byte survives.
        Record::Map(entries) if entries.iter().any(|(k, _)| matches!(k, Record::Bytes(_))) => {
            let mut pairs = Array::with_capacity(entries.len());
            for (key, value) in entries {
                pairs.push(Dynamic::from_array(vec![
                    to_dynamic(key)?,
                    to_dynamic(value)?,
                ]));
            }
            Dynamic::from_array(pairs)
        }
        Record::Map(entries) => {
            let mut map = Map::new();
            for (key, value) in entries {
                let key = match key {
                    Record::String(s) => s.as_str().into(),
                    other => gears_core::python_str(&to_core(&to_dynamic(other)?)).into(),
                };
                map.insert(key, to_dynamic(value)?);
            }
            Dynamic::from_map(map)
        }
        Record::Key(key) => {
            let mut map = Map::new();
            map.insert("key".into(), text_or_blob(&key.key));
            if let Some(value) = &key.value {
                map.insert("value".into(), to_dynamic(value)?);
                map.insert(
                    "type".into(),
                    Dynamic::from(ImmutableString::from(key.key_type.as_str())),
                );
            }
            let event = match &key.event {
                Some(event) => Dynamic::from(ImmutableString::from(event.as_str())),
                None => Dynamic::UNIT,
            };
            map.insert("event".into(), event);
            Dynamic::from_map(map)
        }
        Record::Error(text) => Dynamic::from(ImmutableString::from(text.as_str())),
        Record::Native(value) => match value.downcast_ref::<Dynamic>() {
            Some(dynamic) => dynamic.clone(),
            None => {
                return Err(GearsError::Internal(format!(
                    "a {} value reached the Rhai frontend",
                    value.language().name()
                )))
            }
        },
    })
}

/// Bytes as a Rhai string when they are valid UTF-8, as a blob otherwise.
pub(crate) fn text_or_blob(bytes: &[u8]) -> Dynamic {
    match std::str::from_utf8(bytes) {
        Ok(text) => Dynamic::from(ImmutableString::from(text)),
        Err(_) => Dynamic::from_blob(bytes.to_vec()),
    }
}

/// The core record of a Rhai value (deeply).
/// `()`, booleans, integers and floats as core records.
fn scalar(value: &Dynamic) -> Option<Record> {
    if value.is_unit() {
        Some(Record::Nil)
    } else if let Ok(b) = value.as_bool() {
        Some(Record::Bool(b))
    } else if let Ok(i) = value.as_int() {
        Some(Record::Integer(i))
    } else if let Ok(f) = value.as_float() {
        Some(Record::Float(f))
    } else {
        None
    }
}

pub(crate) fn to_core(value: &Dynamic) -> Record {
    to_core_depth(value, 0)
}

/// How deeply a value may nest when it becomes a core record; deeper parts become an error
/// value instead of overflowing the worker's stack.
const MAX_DEPTH: usize = 512;

fn to_core_depth(value: &Dynamic, depth: usize) -> Record {
    if depth > MAX_DEPTH {
        return Record::Error(format!("value nested deeper than {MAX_DEPTH} levels"));
    }
    if value.is_shared() {
        return to_core_depth(&value.flatten_clone(), depth);
    }
    if let Some(scalar) = scalar(value) {
        return scalar;
    }
    if let Ok(c) = value.as_char() {
        return Record::String(c.to_string());
    }
    if let Ok(s) = value.as_immutable_string_ref() {
        return Record::String(s.to_string());
    }
    if let Ok(blob) = value.as_blob_ref() {
        return Record::Bytes(blob.to_vec());
    }
    if let Ok(array) = value.as_array_ref() {
        return Record::List(array.iter().map(|v| to_core_depth(v, depth + 1)).collect());
    }
    if let Ok(map) = value.as_map_ref() {
        return Record::Map(
            map.iter()
                .map(|(k, v)| (Record::String(k.to_string()), to_core_depth(v, depth + 1)))
                .collect(),
        );
    }
    Record::String(type_name(value))
}

/// The user-facing name of a value's type.
pub(crate) fn type_name(value: &Dynamic) -> String {
    let name = value.type_name();
    if name.ends_with("GearsBuilder") {
        "GearsBuilder".to_string()
    } else {
        name.rsplit("::").next().unwrap_or(name).to_string()
    }
}

/// Python-like truthiness of a Rhai value: `()`, `false`, `0`, `0.0`, `""`, `[]`, `#{}` and an
/// empty blob are false; everything else is true.
pub(crate) fn truthy(value: &Dynamic) -> bool {
    if value.is_shared() {
        return truthy(&value.flatten_clone());
    }
    if value.is_unit() {
        return false;
    }
    if let Ok(b) = value.as_bool() {
        return b;
    }
    if let Ok(i) = value.as_int() {
        return i != 0;
    }
    if let Ok(f) = value.as_float() {
        return f != 0.0;
    }
    if let Ok(s) = value.as_immutable_string_ref() {
        return !s.is_empty();
    }
    if let Ok(blob) = value.as_blob_ref() {
        return !blob.is_empty();
    }
    if let Ok(array) = value.as_array_ref() {
        return !array.is_empty();
    }
    if let Ok(map) = value.as_map_ref() {
        return !map.is_empty();
    }
    true
}

/// The bytes of a command argument: strings as is, blobs as their bytes, anything else as its
/// Python `str()` (so `3` → `"3"`, `1.5` → `"1.5"`).
pub(crate) fn to_argument(value: &Dynamic) -> Vec<u8> {
    if let Ok(s) = value.as_immutable_string_ref() {
        return s.as_bytes().to_vec();
    }
    if let Ok(blob) = value.as_blob_ref() {
        return blob.to_vec();
    }
    gears_core::python_str(&to_core(value)).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gears_core::KeyRecord;

    #[test]
    fn core_values_round_trip() {
        let record = Record::List(vec![
            Record::Nil,
            Record::Bool(true),
            Record::Integer(3),
            Record::Float(1.5),
            Record::from("text"),
            Record::Bytes(vec![0xff, 0]),
            Record::Map(vec![
                (Record::from("b"), Record::Integer(2)),
                (Record::from("a"), Record::Integer(1)),
            ]),
        ]);
        let Record::List(items) = to_core(&to_dynamic(&record).unwrap()) else {
            panic!("not a list")
        };
        let Record::List(original) = record else {
            panic!("not a list")
        };
        assert_eq!(items[..6], original[..6]);
        // Rhai maps are sorted by key.
        assert_eq!(
            items[6],
            Record::Map(vec![
                (Record::from("a"), Record::Integer(1)),
                (Record::from("b"), Record::Integer(2)),
            ])
        );
    }

    #[test]
    fn key_records_become_maps() {
        let key = Record::Key(Box::new(KeyRecord {
            key: b"k".to_vec(),
            value: None,
            key_type: "string".into(),
            event: None,
        }));
        let map = to_dynamic(&key).unwrap();
        assert_eq!(
            to_core(&map),
            Record::Map(vec![
                (Record::from("event"), Record::Nil),
                (Record::from("key"), Record::from("k")),
            ])
        );
    }

    #[test]
    fn non_string_map_keys_use_python_str() {
        let record = Record::Map(vec![(Record::Integer(7), Record::Bool(false))]);
        assert_eq!(
            to_core(&to_dynamic(&record).unwrap()),
            Record::Map(vec![(Record::from("7"), Record::Bool(false))])
        );
    }

    #[test]
    fn truthiness_is_python_like() {
        assert!(!truthy(&Dynamic::UNIT));
        assert!(!truthy(&Dynamic::from_bool(false)));
        assert!(!truthy(&Dynamic::from_int(0)));
        assert!(!truthy(&Dynamic::from(String::new())));
        assert!(!truthy(&Dynamic::from_array(Array::new())));
        assert!(truthy(&Dynamic::from("0".to_string())));
        assert!(truthy(&Dynamic::from_float(0.5)));
    }

    #[test]
    fn arguments_use_python_str() {
        assert_eq!(to_argument(&Dynamic::from_int(3)), b"3".to_vec());
        assert_eq!(to_argument(&Dynamic::from_float(14.0)), b"14.0".to_vec());
        assert_eq!(to_argument(&Dynamic::from("x".to_string())), b"x".to_vec());
    }

    #[test]
    fn plain_scalar_results_become_core_records() {
        assert_eq!(native(Dynamic::UNIT), Record::Nil);
        assert_eq!(native(Dynamic::from_bool(true)), Record::Bool(true));
        assert_eq!(native(Dynamic::from_int(7)), Record::Integer(7));
        assert!(matches!(native(Dynamic::from_float(2.0)), Record::Float(f) if f == 2.0));
        let mut tagged = Dynamic::from_int(7);
        tagged.set_tag(3);
        assert!(matches!(native(tagged), Record::Native(_)));
        assert!(matches!(
            native(Dynamic::from("s".to_string())),
            Record::Native(_)
        ));
    }
}
