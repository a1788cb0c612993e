//! Conversions between core [`Record`]s and Lua values, and from Lua errors to Gears errors.
//!
//! Lua → record is shallow by default ([`to_record`]): nil, booleans, numbers and strings become
//! core records at once; tables, functions, coroutines and userdata stay Lua values, wrapped in
//! a [`LuaNative`] inside [`Record::Native`], so the next Lua step receives them unconverted.
//! [`to_core`] converts deeply, for Rust operators and replies.

use std::cmp::Ordering;
use std::ffi::{c_char, c_int};

use gears_core::{GearsError, KeyRecord, Language, NativeValue, Record, Result};
use mlua::{ffi, Lua, RegistryKey, Table, Value};

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
    match record {
        Record::List(_) | Record::Map(_) | Record::Key(_) if raw_buildable(record, 0) => {
            build_raw(lua, record)
        }
        _ => to_lua_depth(lua, record, 0),
    }
}

/// True if [`build_raw`] builds exactly the value [`to_lua_depth`] would, without an error:
/// no natives inside, no map key Lua refuses (nil, NaN), and no nesting beyond [`MAX_DEPTH`].
fn raw_buildable(record: &Record, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    match record {
        Record::Native(_) => false,
        Record::List(items) => items.iter().all(|item| raw_buildable(item, depth + 1)),
        Record::Map(entries) => entries.iter().all(|(k, v)| {
            !matches!(k, Record::Nil)
                && !matches!(k, Record::Float(f) if f.is_nan())
                && raw_buildable(k, depth + 1)
                && raw_buildable(v, depth + 1)
        }),
        Record::Key(key) => match &key.value {
            Some(value) => raw_buildable(value, depth + 1),
            None => true,
        },
        _ => true,
    }
}

/// Builds the Lua value of a core record (one that [`raw_buildable`] accepts) with the raw Lua
/// API, under a single lock of the Lua state.
///
/// Building a record through mlua's safe API costs a lock, stack checks and an auxiliary
/// reference slot for every string and every `raw_set`; for the KeysReader's records that
/// overhead, not Lua, dominated a filter's run time. The tables built here are the very tables
/// [`to_lua_depth`] builds: same capacities, same insertion order, same keys and values.
fn build_raw(lua: &Lua, record: &Record) -> Result<Value> {
    // SAFETY: `exec_raw` runs the closure in protected mode (inside `lua_pcall`) with the state
    // locked, and restores the stack afterwards. The closure only pushes values and sets table
    // fields, growing the stack by at most 3 slots per nesting level, which `luaL_checkstack`
    // guarantees (raising a Lua error, caught by the pcall, if it cannot). A Lua error (out of
    // memory) unwinds by longjmp through `push_raw` frames, which own nothing that needs
    // dropping: they only borrow from `record`. The one value left on the stack is the result.
    unsafe {
        lua.exec_raw::<Value>((), |state| push_raw(state, record))
            .map_err(internal)
    }
}

/// Pushes the Lua value of `record` (see [`build_raw`]).
///
/// # Safety
/// `state` must be a valid Lua state in protected mode, and `record` accepted by
/// [`raw_buildable`].
unsafe fn push_raw(state: *mut ffi::lua_State, record: &Record) {
    fn capacity(n: usize) -> c_int {
        c_int::try_from(n).unwrap_or(c_int::MAX)
    }
    unsafe fn push_bytes(state: *mut ffi::lua_State, bytes: &[u8]) {
        ffi::lua_pushlstring(state, bytes.as_ptr().cast::<c_char>(), bytes.len());
    }
    match record {
        Record::Nil => ffi::lua_pushnil(state),
        Record::Bool(b) => ffi::lua_pushboolean(state, c_int::from(*b)),
        Record::Integer(i) => ffi::lua_pushinteger(state, *i),
        Record::Float(f) => ffi::lua_pushnumber(state, *f),
        Record::String(s) => push_bytes(state, s.as_bytes()),
        Record::Bytes(b) => push_bytes(state, b),
        Record::Error(e) => push_bytes(state, e.as_bytes()),
        Record::List(items) => {
            ffi::luaL_checkstack(state, 3, std::ptr::null());
            ffi::lua_createtable(state, capacity(items.len()), 0);
            for (i, item) in items.iter().enumerate() {
                push_raw(state, item);
                ffi::lua_rawseti(state, -2, i as ffi::lua_Integer + 1);
            }
        }
        Record::Map(entries) => {
            ffi::luaL_checkstack(state, 3, std::ptr::null());
            ffi::lua_createtable(state, 0, capacity(entries.len()));
            for (k, v) in entries {
                push_raw(state, k);
                push_raw(state, v);
                ffi::lua_rawset(state, -3);
            }
        }
        Record::Key(key) => {
            ffi::luaL_checkstack(state, 3, std::ptr::null());
            ffi::lua_createtable(state, 0, 4);
            push_bytes(state, b"key");
            push_bytes(state, &key.key);
            ffi::lua_rawset(state, -3);
            if let Some(value) = &key.value {
                push_bytes(state, b"value");
                push_raw(state, value);
                ffi::lua_rawset(state, -3);
                push_bytes(state, b"type");
                push_bytes(state, key.key_type.as_bytes());
                ffi::lua_rawset(state, -3);
            }
            if let Some(event) = &key.event {
                push_bytes(state, b"event");
                push_bytes(state, event.as_bytes());
                ffi::lua_rawset(state, -3);
            }
        }
        // Not accepted by `raw_buildable`; push nil rather than touch an unknown value.
        Record::Native(_) => ffi::lua_pushnil(state),
    }
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
    table
        .raw_set("key", lua.create_string(&key.key).map_err(internal)?)
        .map_err(internal)?;
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
    // A conversion refused by the state's memory limit stops the execution like any other
    // allocation past it.
    crate::error::classify(&e, GearsError::Internal)
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

    /// A Lua function returning a table's entries in `pairs` order, as `k=v;` text.
    fn dump(lua: &Lua, value: Value) -> Vec<u8> {
        let f: mlua::Function = lua
            .load(
                "return function(t) local out = {} \
                 local function d(x) if type(x) ~= 'table' then return math.type(x) or type(x), tostring(x) end \
                 local parts = {} for k, v in pairs(x) do local _, ks = d(k) local vt, vs = d(v) \
                 parts[#parts + 1] = ks .. '=' .. vt .. ':' .. vs end \
                 return 'table', '{' .. table.concat(parts, ';') .. '}' end \
                 local _, s = d(t) return s end",
            )
            .eval()
            .unwrap();
        f.call::<mlua::LuaString>(value)
            .unwrap()
            .as_bytes()
            .to_vec()
    }

    #[test]
    fn raw_building_matches_the_safe_conversion() {
        let lua = Lua::new();
        let hash = Record::Map(vec![
            (Record::from("name"), Record::from("user1")),
            (Record::from("age"), Record::from("41")),
            (Record::Integer(3), Record::Float(1.5)),
            (Record::Float(2.0), Record::Bool(true)),
            (Record::Bytes(vec![0xff]), Record::Error("ERR x".into())),
        ]);
        let records = vec![
            Record::Key(Box::new(KeyRecord {
                key: b"user:1".to_vec(),
                value: Some(hash.clone()),
                key_type: "hash".into(),
                event: Some("hset".into()),
            })),
            Record::Key(Box::new(KeyRecord {
                key: b"k".to_vec(),
                value: None,
                key_type: "string".into(),
                event: None,
            })),
            Record::List(vec![
                Record::Nil,
                Record::Integer(7),
                hash.clone(),
                Record::List(vec![]),
            ]),
            hash,
        ];
        for record in records {
            assert!(raw_buildable(&record, 0));
            let fast = build_raw(&lua, &record).unwrap();
            let safe = to_lua_depth(&lua, &record, 0).unwrap();
            assert_eq!(dump(&lua, fast), dump(&lua, safe));
        }
    }

    #[test]
    fn records_the_raw_path_refuses_take_the_safe_one() {
        let lua = Lua::new();
        for key in [Record::Nil, Record::Float(f64::NAN)] {
            let record = Record::Map(vec![(key, Record::Integer(1))]);
            assert!(!raw_buildable(&record, 0));
            assert!(to_lua(&lua, &record).is_err());
        }
        let native = to_record(&lua, eval(&lua, "return {5}")).unwrap();
        let record = Record::List(vec![native]);
        assert!(!raw_buildable(&record, 0));
        let value = to_lua(&lua, &record).unwrap();
        assert_eq!(
            value_to_core(&value, 0).unwrap(),
            Record::List(vec![Record::List(vec![Record::Integer(5)])])
        );
        let mut deep = Record::Integer(1);
        for _ in 0..=MAX_DEPTH {
            deep = Record::List(vec![deep]);
        }
        assert!(!raw_buildable(&deep, 0));
        assert!(to_lua(&lua, &deep).is_err());
    }
}
