//! Conversions between core [`Record`]s and Lua values, and from Lua errors to Gears errors.
//!
//! Lua → record is shallow by default ([`to_record`]): nil, booleans, numbers and strings become
//! core records at once; tables, functions, coroutines and userdata stay Lua values, wrapped in
//! a [`LuaNative`] inside [`Record::Native`], so the next Lua step receives them unconverted.
//! [`to_core`] converts deeply, for Rust operators and replies.

use std::cmp::Ordering;

use gears_core::{GearsError, KeyRecord, Language, NativeValue, Record, Result};
use mlua::{Lua, RegistryKey, Table, Value};

/// Deepest table nesting converted or copied; deeper tables (or cycles) are an error.
const MAX_DEPTH: usize = 100;

/// A Lua value kept alive in the Lua registry of the script that produced it.
///
/// A registry key (rather than an `mlua::Value`) is used because it is `Send + Sync`, may be
/// dropped on any thread without touching the Lua state, and does not use a slot of mlua's
/// auxiliary stack, so any number of natives can be alive at once.
pub struct LuaNative(pub(crate) RegistryKey);

/// Wraps a Lua value as a record: primitives become core records, anything else a native.
pub fn to_record(lua: &Lua, value: Value) -> Result<Record> {
    Ok(match value {
        Value::Nil => Record::Nil,
        Value::Boolean(b) => Record::Bool(b),
        Value::Integer(i) => Record::Integer(i),
        Value::Number(f) => Record::Float(f),
        Value::String(s) => Record::from(s.as_bytes().to_vec()),
        other => {
            let key = lua.create_registry_value(other).map_err(internal)?;
            Record::Native(NativeValue::new(Language::Lua, LuaNative(key)))
        }
    })
}

/// The Lua value behind a native record.
pub fn native_to_lua(lua: &Lua, native: &NativeValue) -> Result<Value> {
    match native.downcast_ref::<LuaNative>() {
        Some(LuaNative(key)) if native.language() == Language::Lua => {
            lua.registry_value::<Value>(key).map_err(internal)
        }
        _ => Err(GearsError::Callback(format!(
            "a {} value cannot be passed to Lua",
            native.language().name()
        ))),
    }
}

/// Converts a record (core or native) into a Lua value.
pub fn to_lua(lua: &Lua, record: &Record) -> Result<Value> {
    to_lua_depth(lua, record, 0)
}

fn to_lua_depth(lua: &Lua, record: &Record, depth: usize) -> Result<Value> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    let string = |bytes: &[u8]| lua.create_string(bytes).map(Value::String);
    let value = match record {
        Record::Nil => Value::Nil,
        Record::Bool(b) => Value::Boolean(*b),
        Record::Integer(i) => Value::Integer(*i),
        Record::Float(f) => Value::Number(*f),
        Record::String(s) => string(s.as_bytes()).map_err(internal)?,
        Record::Bytes(b) => string(b).map_err(internal)?,
        Record::Error(e) => string(e.as_bytes()).map_err(internal)?,
        Record::List(items) => {
            let table = lua
                .create_table_with_capacity(items.len(), 0)
                .map_err(internal)?;
            for (i, item) in items.iter().enumerate() {
                let v = to_lua_depth(lua, item, depth + 1)?;
                table.raw_set(i + 1, v).map_err(internal)?;
            }
            Value::Table(table)
        }
        Record::Map(entries) => {
            let table = lua
                .create_table_with_capacity(0, entries.len())
                .map_err(internal)?;
            for (k, v) in entries {
                let k = to_lua_depth(lua, k, depth + 1)?;
                let v = to_lua_depth(lua, v, depth + 1)?;
                table
                    .raw_set(k, v)
                    .map_err(|e| GearsError::Callback(crate::error::message(&e)))?;
            }
            Value::Table(table)
        }
        Record::Key(key) => Value::Table(key_table(lua, key, depth)?),
        Record::Native(native) => native_to_lua(lua, native)?,
    };
    Ok(value)
}

/// `{key=, value=, type=, event=}`; `value` and `type` are absent when the value was not read.
fn key_table(lua: &Lua, key: &KeyRecord, depth: usize) -> Result<Table> {
    let table = lua.create_table_with_capacity(0, 4).map_err(internal)?;
    table.raw_set("key", key.key.as_str()).map_err(internal)?;
    if let Some(value) = &key.value {
        let v = to_lua_depth(lua, value, depth + 1)?;
        table.raw_set("value", v).map_err(internal)?;
        table
            .raw_set("type", key.key_type.as_str())
            .map_err(internal)?;
    }
    if let Some(event) = &key.event {
        table.raw_set("event", event.as_str()).map_err(internal)?;
    }
    Ok(table)
}

/// Converts a record deeply into a core record (no natives left inside).
pub fn to_core(lua: &Lua, record: Record) -> Result<Record> {
    to_core_depth(lua, record, 0)
}

fn to_core_depth(lua: &Lua, record: Record, depth: usize) -> Result<Record> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    Ok(match record {
        Record::Native(native) => {
            let value = native_to_lua(lua, &native)?;
            value_to_core(&value, depth)?
        }
        Record::List(items) => Record::List(
            items
                .into_iter()
                .map(|r| to_core_depth(lua, r, depth + 1))
                .collect::<Result<_>>()?,
        ),
        Record::Map(entries) => Record::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    Ok((
                        to_core_depth(lua, k, depth + 1)?,
                        to_core_depth(lua, v, depth + 1)?,
                    ))
                })
                .collect::<Result<_>>()?,
        ),
        Record::Key(mut key) => {
            if let Some(value) = key.value.take() {
                key.value = Some(to_core_depth(lua, value, depth + 1)?);
            }
            Record::Key(key)
        }
        other => other,
    })
}

/// Converts a Lua value deeply into a core record.
pub fn value_to_core(value: &Value, depth: usize) -> Result<Record> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    Ok(match value {
        Value::Nil => Record::Nil,
        Value::Boolean(b) => Record::Bool(*b),
        Value::Integer(i) => Record::Integer(*i),
        Value::Number(f) => Record::Float(*f),
        Value::String(s) => Record::from(s.as_bytes().to_vec()),
        Value::Table(table) => match sequence(table)? {
            Some(items) => Record::List(
                items
                    .iter()
                    .map(|v| value_to_core(v, depth + 1))
                    .collect::<Result<_>>()?,
            ),
            None => {
                let mut entries = Vec::new();
                for pair in table.clone().pairs::<Value, Value>() {
                    let (k, v) = pair.map_err(internal)?;
                    entries.push((k, v));
                }
                entries.sort_by(|(a, _), (b, _)| compare_keys(a, b));
                Record::Map(
                    entries
                        .iter()
                        .map(|(k, v)| {
                            Ok((value_to_core(k, depth + 1)?, value_to_core(v, depth + 1)?))
                        })
                        .collect::<Result<_>>()?,
                )
            }
        },
        // Functions, coroutines and userdata have no core form: show them as Lua prints them.
        other => Record::String(
            other
                .to_string()
                .unwrap_or_else(|_| other.type_name().to_string()),
        ),
    })
}

/// The elements of `table` if its keys are exactly `1..n` (an empty table is an empty list).
pub fn sequence(table: &Table) -> Result<Option<Vec<Value>>> {
    let mut count = 0usize;
    let mut max = 0i64;
    for pair in table.clone().pairs::<Value, Value>() {
        let (k, _) = pair.map_err(internal)?;
        match k {
            Value::Integer(i) if i >= 1 => max = max.max(i),
            _ => return Ok(None),
        }
        count += 1;
    }
    if usize::try_from(max).ok() != Some(count) {
        return Ok(None);
    }
    let mut items = Vec::with_capacity(count);
    for i in 1..=count {
        items.push(table.raw_get::<Value>(i).map_err(internal)?);
    }
    Ok(Some(items))
}

/// Map key order: strings (bytewise), then numbers (by value), then booleans, then the rest.
fn compare_keys(a: &Value, b: &Value) -> Ordering {
    fn class(v: &Value) -> u8 {
        match v {
            Value::String(_) => 0,
            Value::Integer(_) | Value::Number(_) => 1,
            Value::Boolean(_) => 2,
            _ => 3,
        }
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(&y.as_bytes()),
        (Value::Integer(x), Value::Integer(y)) => x.cmp(y),
        (Value::Boolean(x), Value::Boolean(y)) => x.cmp(y),
        _ if class(a) == 1 && class(b) == 1 => {
            let f = |v: &Value| match v {
                Value::Integer(i) => *i as f64,
                Value::Number(n) => *n,
                _ => 0.0,
            };
            f(a).partial_cmp(&f(b)).unwrap_or(Ordering::Equal)
        }
        _ => class(a).cmp(&class(b)),
    }
}

/// A deep copy of a Lua value: tables are copied (sharing their metatables), anything else is
/// returned as is.
pub fn deep_copy(lua: &Lua, value: &Value, depth: usize) -> Result<Value> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    match value {
        Value::Table(table) => {
            let copy = lua.create_table().map_err(internal)?;
            for pair in table.clone().pairs::<Value, Value>() {
                let (k, v) = pair.map_err(internal)?;
                let k = deep_copy(lua, &k, depth + 1)?;
                let v = deep_copy(lua, &v, depth + 1)?;
                copy.raw_set(k, v).map_err(internal)?;
            }
            if let Some(meta) = table.metatable() {
                copy.set_metatable(Some(meta)).map_err(internal)?;
            }
            Ok(Value::Table(copy))
        }
        other => Ok(other.clone()),
    }
}

fn too_deep() -> GearsError {
    GearsError::Callback(format!(
        "cannot convert a Lua table nested deeper than {MAX_DEPTH} levels (does it contain itself?)"
    ))
}

/// An unexpected failure of the Lua state itself.
pub fn internal(e: mlua::Error) -> GearsError {
    GearsError::Internal(crate::error::message(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(lua: &Lua, code: &str) -> Value {
        lua.load(code).eval::<Value>().unwrap_or(Value::Nil)
    }

    #[test]
    fn tables_become_lists_or_sorted_maps() {
        let lua = Lua::new();
        let v = eval(&lua, "return {1, 2.5, 'x', {}}");
        assert_eq!(
            value_to_core(&v, 0).unwrap(),
            Record::List(vec![
                Record::Integer(1),
                Record::Float(2.5),
                Record::from("x"),
                Record::List(vec![])
            ])
        );
        let v = eval(&lua, "return {b = 1, a = 2, [3] = true, [1] = false}");
        assert_eq!(
            value_to_core(&v, 0).unwrap(),
            Record::Map(vec![
                (Record::from("a"), Record::Integer(2)),
                (Record::from("b"), Record::Integer(1)),
                (Record::Integer(1), Record::Bool(false)),
                (Record::Integer(3), Record::Bool(true)),
            ])
        );
    }

    #[test]
    fn cycles_are_an_error_not_a_crash() {
        let lua = Lua::new();
        let v = eval(&lua, "local t = {} t.self = t return t");
        assert!(value_to_core(&v, 0).is_err());
    }

    #[test]
    fn round_trip_keeps_integer_and_float_apart() {
        let lua = Lua::new();
        let record = Record::List(vec![Record::Integer(14), Record::Float(14.0)]);
        let value = to_lua(&lua, &record).unwrap();
        let back = value_to_core(&value, 0).unwrap();
        let Record::List(items) = back else {
            panic!("not a list")
        };
        assert!(matches!(items[0], Record::Integer(14)));
        assert!(matches!(items[1], Record::Float(f) if f == 14.0));
    }

    #[test]
    fn non_utf8_strings_become_bytes() {
        let lua = Lua::new();
        let v = eval(&lua, "return '\\255\\0'");
        assert_eq!(to_record(&lua, v).unwrap(), Record::Bytes(vec![0xff, 0x00]));
    }
}
