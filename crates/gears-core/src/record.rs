//! The values that flow between the steps of a pipeline.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use crate::plan::Language;

/// One value flowing through a pipeline.
///
/// Records produced by readers and by Rust operators are "core" records. A record produced by a
/// user callback stays in the language's own representation ([`Record::Native`]) so that
/// consecutive steps in one language never convert it; the language's [`crate::Runtime`] turns
/// it into a core record only when a Rust operator or the reply needs to look inside.
#[derive(Clone, Debug)]
pub enum Record {
    Nil,
    Bool(bool),
    Integer(i64),
    Float(f64),
    /// Text (valid UTF-8).
    String(String),
    /// Binary data that is not valid UTF-8.
    Bytes(Vec<u8>),
    List(Vec<Record>),
    /// An ordered map (insertion order is kept, as in a Python dict).
    Map(Vec<(Record, Record)>),
    /// A key read by the KeysReader.
    Key(Box<KeyRecord>),
    /// An error value (a Redis error reply, for example).
    Error(String),
    /// A value owned by a language runtime.
    Native(NativeValue),
}

/// A key record, as the KeysReader yields it: `{'key', 'value', 'type', 'event'}`, or
/// `{'key', 'event'}` when the value was not read.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyRecord {
    /// The key's name, byte for byte (key names need not be UTF-8).
    pub key: Vec<u8>,
    /// `None` when the reader was asked not to read values (`readValue=False`).
    pub value: Option<Record>,
    pub key_type: String,
    pub event: Option<String>,
}

impl KeyRecord {
    /// The record as an ordered map, in the order RedisGears 1.2's dict yields the fields
    /// (`event`, `key`, `type`, `value`; see [`crate::gears_dict_order`]), which is the order
    /// `str(record)` shows.
    pub fn to_map(&self) -> Record {
        let event = match &self.event {
            Some(e) => Record::String(e.clone()),
            None => Record::Nil,
        };
        let mut entries = vec![
            (Record::from("event"), event),
            (Record::from("key"), self.key_record()),
        ];
        if let Some(value) = &self.value {
            entries.push((Record::from("type"), Record::String(self.key_type.clone())));
            entries.push((Record::from("value"), value.clone()));
        }
        Record::Map(entries)
    }

    /// The key's name as a record: a string when it is valid UTF-8, bytes otherwise.
    pub fn key_record(&self) -> Record {
        Record::from(self.key.clone())
    }

    /// The key's name as text, when it is valid UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.key).ok()
    }
}

/// The key of a group (`groupby`, `countby`, `batchgroupby`, `repartition`): an extractor's
/// string result, or bytes (a key name that is not UTF-8), kept apart so that two different keys
/// never fall into one group. Other results are `repr()`'d into text, as in RedisGears.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GroupKey {
    Text(String),
    Bytes(Vec<u8>),
}

impl AsRef<[u8]> for GroupKey {
    fn as_ref(&self) -> &[u8] {
        match self {
            GroupKey::Text(s) => s.as_bytes(),
            GroupKey::Bytes(b) => b,
        }
    }
}

impl GroupKey {
    pub fn into_record(self) -> Record {
        match self {
            GroupKey::Text(s) => Record::String(s),
            GroupKey::Bytes(b) => Record::Bytes(b),
        }
    }
}

/// A language-native value, tagged with the language that owns it.
#[derive(Clone)]
pub struct NativeValue {
    language: Language,
    value: Arc<dyn Any + Send + Sync>,
}

impl NativeValue {
    pub fn new<T: Any + Send + Sync>(language: Language, value: T) -> Self {
        NativeValue {
            language,
            value: Arc::new(value),
        }
    }

    pub fn language(&self) -> Language {
        self.language
    }

    /// The value, if it is a `T`.
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        self.value.downcast_ref::<T>()
    }
}

impl fmt::Debug for NativeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Native({:?})", self.language)
    }
}

impl PartialEq for Record {
    fn eq(&self, other: &Self) -> bool {
        use Record::*;
        match (self, other) {
            (Nil, Nil) => true,
            (Bool(a), Bool(b)) => a == b,
            (Integer(a), Integer(b)) => a == b,
            (Float(a), Float(b)) => a == b,
            (Integer(a), Float(b)) | (Float(b), Integer(a)) => (*a as f64) == *b,
            (String(a), String(b)) => a == b,
            (Bytes(a), Bytes(b)) => a == b,
            (List(a), List(b)) => a == b,
            (Map(a), Map(b)) => a == b,
            (Key(a), Key(b)) => a == b,
            (Error(a), Error(b)) => a == b,
            (Native(a), Native(b)) => Arc::ptr_eq(&a.value, &b.value),
            _ => false,
        }
    }
}

impl From<&str> for Record {
    fn from(s: &str) -> Self {
        Record::String(s.to_string())
    }
}

impl From<String> for Record {
    fn from(s: String) -> Self {
        Record::String(s)
    }
}

impl From<i64> for Record {
    fn from(i: i64) -> Self {
        Record::Integer(i)
    }
}

impl From<f64> for Record {
    fn from(f: f64) -> Self {
        Record::Float(f)
    }
}

impl From<Vec<u8>> for Record {
    /// Bytes that are valid UTF-8 become a string; others stay bytes.
    fn from(bytes: Vec<u8>) -> Self {
        match std::string::String::from_utf8(bytes) {
            Ok(s) => Record::String(s),
            Err(e) => Record::Bytes(e.into_bytes()),
        }
    }
}

impl Record {
    /// Python-like truthiness of a core record. Native values are truthy here; ask the
    /// language's runtime for their real truthiness.
    pub fn is_truthy(&self) -> bool {
        match self {
            Record::Nil => false,
            Record::Bool(b) => *b,
            Record::Integer(i) => *i != 0,
            Record::Float(f) => *f != 0.0,
            Record::String(s) => !s.is_empty(),
            Record::Bytes(b) => !b.is_empty(),
            Record::List(l) => !l.is_empty(),
            Record::Map(m) => !m.is_empty(),
            Record::Key(_) | Record::Error(_) | Record::Native(_) => true,
        }
    }

    /// The value of `field` if this is a map (or key record) that has it.
    pub fn get_field(&self, field: &str) -> Option<Record> {
        match self {
            Record::Map(entries) => entries.iter().find_map(|(k, v)| match k {
                Record::String(s) if s == field => Some(v.clone()),
                _ => None,
            }),
            Record::Key(key) => match field {
                "key" => Some(key.key_record()),
                "value" => key.value.clone(),
                "type" if key.value.is_some() => Some(Record::String(key.key_type.clone())),
                "event" => Some(key.event.clone().map(Record::String).unwrap_or(Record::Nil)),
                _ => None,
            },
            _ => None,
        }
    }

    /// True when the record (or anything inside it) is a native value.
    pub fn contains_native(&self) -> bool {
        match self {
            Record::Native(_) => true,
            Record::List(items) => items.iter().any(Record::contains_native),
            Record::Map(entries) => entries
                .iter()
                .any(|(k, v)| k.contains_native() || v.contains_native()),
            Record::Key(key) => key.value.as_ref().is_some_and(Record::contains_native),
            _ => false,
        }
    }

    /// A `{'key': k, 'value': v}` record, as the group-by operators emit.
    pub fn key_value(key: Record, value: Record) -> Record {
        Record::Map(vec![
            (Record::from("key"), key),
            (Record::from("value"), value),
        ])
    }

    /// The Python type name of a core record, for error texts.
    pub fn type_name(&self) -> &'static str {
        match self {
            Record::Nil => "NoneType",
            Record::Bool(_) => "bool",
            Record::Integer(_) => "int",
            Record::Float(_) => "float",
            Record::String(_) => "str",
            Record::Bytes(_) => "bytes",
            Record::List(_) => "list",
            Record::Map(_) | Record::Key(_) => "dict",
            Record::Error(_) => "error",
            Record::Native(_) => "object",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_record_field_order_matches_redisgears() {
        let key = KeyRecord {
            key: b"user:1".to_vec(),
            value: Some(Record::from("x")),
            key_type: "string".into(),
            event: None,
        };
        let Record::Map(entries) = key.to_map() else {
            panic!("not a map")
        };
        let names: Vec<_> = entries.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(
            names,
            vec![
                Record::from("event"),
                Record::from("key"),
                Record::from("type"),
                Record::from("value")
            ]
        );
    }

    #[test]
    fn key_record_without_value_has_key_and_event_only() {
        let key = KeyRecord {
            key: b"k".to_vec(),
            value: None,
            key_type: "string".into(),
            event: None,
        };
        assert_eq!(
            key.to_map(),
            Record::Map(vec![
                (Record::from("event"), Record::Nil),
                (Record::from("key"), Record::from("k"))
            ])
        );
    }

    #[test]
    fn non_utf8_bytes_stay_bytes() {
        assert_eq!(
            Record::from(vec![0xff, 0x00]),
            Record::Bytes(vec![0xff, 0x00])
        );
        assert_eq!(Record::from(b"abc".to_vec()), Record::from("abc"));
    }

    #[test]
    fn truthiness_follows_python() {
        assert!(!Record::Nil.is_truthy());
        assert!(!Record::Integer(0).is_truthy());
        assert!(!Record::from("").is_truthy());
        assert!(!Record::List(vec![]).is_truthy());
        assert!(Record::from("0").is_truthy());
    }
}
