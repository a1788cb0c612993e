//! A compiled script's live state ([`LuaSession`]) and the [`Runtime`] the executor drives.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use gears_core::{
    CallbackCache, CallbackId, GearsError, Language, NativeValue, Record, Result, Runtime, Session,
    ValueId,
};
use mlua::{Function, Lua, MultiValue, Thread, Value};

use crate::convert::{deep_copy, internal, native_to_lua, sequence, to_core, to_lua, to_record};
use crate::state::{lock, SharedState};

/// One script: its Lua state (one globals table) and the callbacks its plans reference.
pub struct LuaSession {
    lua: Mutex<Lua>,
    state: SharedState,
    /// The state's memory as last added to [`used_memory`].
    reported: AtomicI64,
}

/// The memory of every live Lua state, as of the end of each one's last use.
static USED_MEMORY: AtomicI64 = AtomicI64::new(0);

/// The bytes the live Lua states use, sampled when each one was last used (compiled, or left
/// after running callbacks): a state that runs right now counts with its size before the run.
pub fn used_memory() -> i64 {
    USED_MEMORY.load(Ordering::Relaxed).max(0)
}

impl LuaSession {
    pub(crate) fn new(lua: Lua, state: SharedState) -> Self {
        let session = LuaSession {
            lua: Mutex::new(lua),
            state,
            reported: AtomicI64::new(0),
        };
        session.report(&lock(&session.lua));
        session
    }

    /// Brings [`used_memory`] up to date with this state's size.
    fn report(&self, lua: &Lua) {
        let now = i64::try_from(lua.used_memory()).unwrap_or(i64::MAX);
        let before = self.reported.swap(now, Ordering::Relaxed);
        USED_MEMORY.fetch_add(now - before, Ordering::Relaxed);
    }
}

impl Drop for LuaSession {
    fn drop(&mut self) {
        USED_MEMORY.fetch_sub(self.reported.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

impl Session for LuaSession {
    fn language(&self) -> Language {
        Language::Lua
    }

    fn enter(&self, f: &mut dyn FnMut(&mut dyn Runtime)) {
        let lua = lock(&self.lua);
        let mut runtime = LuaRuntime {
            lua: &lua,
            state: &self.state,
            callbacks: CallbackCache::default(),
        };
        f(&mut runtime);
        drop(runtime);
        self.report(&lua);
    }

    /// Where the callback is defined: `<function at script:LINE>` (a Lua function's
    /// `tostring` is only its address).
    fn describe(&self, callback: CallbackId) -> String {
        let _lua = lock(&self.lua);
        let Ok(function) = lock(&self.state).callback(callback) else {
            return String::new();
        };
        match function.info().line_defined {
            Some(line) => format!("<function at script:{line}>"),
            None => "<function>".to_string(),
        }
    }
}

/// The executor's view of a script while its session is entered.
pub struct LuaRuntime<'a> {
    lua: &'a Lua,
    state: &'a SharedState,
    /// The callbacks used so far in this [`Session::enter`].
    callbacks: CallbackCache<Function>,
}

/// A running generator reader: the coroutine, and items already produced but not yet handed out
/// (the elements of a table the function returned).
struct LuaGenerator {
    inner: Mutex<GeneratorState>,
}

struct GeneratorState {
    thread: Option<Thread>,
    pending: VecDeque<Record>,
    /// An error raised after some records of a batch: reported on the next batch, so the
    /// records before it are not lost.
    error: Option<GearsError>,
}

/// The Lua value of a record, which must be a native of this runtime or a core record.
fn lua_value(lua: &Lua, record: &Record) -> Result<Value> {
    match record {
        Record::Native(native) => native_to_lua(lua, native),
        other => to_lua(lua, other),
    }
}

fn callback_error(e: &mlua::Error) -> GearsError {
    crate::error::classify(e, GearsError::Callback)
}

impl LuaRuntime<'_> {
    /// A callback's function, cloned out of the script state once per [`Session::enter`] so the
    /// state lock is not held while user code runs.
    fn callback(&mut self, callback: CallbackId) -> Result<&Function> {
        let state = self.state;
        self.callbacks
            .get_or_fetch(callback, || lock(state).callback(callback))
    }

    /// The records a generator's function returned when it finished.
    fn returned_items(&self, values: MultiValue) -> Result<Vec<Record>> {
        match values.into_iter().next() {
            None | Some(Value::Nil) => Ok(Vec::new()),
            Some(Value::Table(t)) => match sequence(&t)? {
                Some(items) => items.into_iter().map(|v| to_record(self.lua, v)).collect(),
                None => Ok(vec![to_record(self.lua, Value::Table(t))?]),
            },
            Some(other) => Ok(vec![to_record(self.lua, other)?]),
        }
    }
}

impl Runtime for LuaRuntime<'_> {
    fn call(&mut self, callback: CallbackId, args: &[&Record]) -> Result<Record> {
        let lua = self.lua;
        let function = self.callback(callback)?;
        // One and two arguments (the common steps) are pushed straight onto the
        // stack, without the allocation of a `MultiValue`.
        let result: mlua::Result<Value> = match args {
            [a] => function.call(lua_value(lua, a)?),
            [a, b] => function.call((lua_value(lua, a)?, lua_value(lua, b)?)),
            _ => {
                let mut values = MultiValue::with_capacity(args.len());
                for arg in args {
                    values.push_back(lua_value(lua, arg)?);
                }
                function.call(values)
            }
        };
        to_record(lua, result.map_err(|e| callback_error(&e))?)
    }

    fn to_core(&mut self, value: Record) -> Result<Record> {
        to_core(self.lua, value)
    }

    fn value(&mut self, id: ValueId) -> Result<Record> {
        let value = {
            let state = lock(self.state);
            let key = state
                .values
                .get(id.0 as usize)
                .ok_or_else(|| GearsError::Internal(format!("unknown Lua value {}", id.0)))?;
            self.lua.registry_value::<Value>(key).map_err(internal)?
        };
        let copy = deep_copy(self.lua, &value, 0)?;
        to_record(self.lua, copy)
    }

    /// Lua truthiness: only nil and false are false.
    fn truthy(&mut self, value: &Record) -> Result<bool> {
        Ok(!matches!(value, Record::Nil | Record::Bool(false)))
    }

    /// A sequence table (or a core list) expands; anything else is one record.
    fn expand_list(&mut self, value: Record) -> Result<std::result::Result<Vec<Record>, Record>> {
        match value {
            Record::List(items) => Ok(Ok(items)),
            Record::Native(native) => match native_to_lua(self.lua, &native)? {
                Value::Table(t) => match sequence(&t)? {
                    Some(items) => Ok(Ok(items
                        .into_iter()
                        .map(|v| to_record(self.lua, v))
                        .collect::<Result<_>>()?)),
                    None => Ok(Err(Record::Native(native))),
                },
                _ => Ok(Err(Record::Native(native))),
            },
            other => Ok(Err(other)),
        }
    }

    /// Runs the reader function as a coroutine (see the crate docs for the protocol).
    fn start_generator(&mut self, callback: CallbackId) -> Result<Record> {
        let function = self.callback(callback)?.clone();
        let thread = self.lua.create_thread(function).map_err(internal)?;
        Ok(Record::Native(NativeValue::new(
            Language::Lua,
            LuaGenerator {
                inner: Mutex::new(GeneratorState {
                    thread: Some(thread),
                    pending: VecDeque::new(),
                    error: None,
                }),
            },
        )))
    }

    fn next_from_generator(&mut self, generator: &Record, max: usize) -> Result<Vec<Record>> {
        let generator = match generator {
            Record::Native(native) => native.downcast_ref::<LuaGenerator>(),
            _ => None,
        }
        .ok_or_else(|| GearsError::Internal("not a Lua generator".into()))?;
        let mut state = lock(&generator.inner);
        if let Some(error) = state.error.take() {
            return Err(error);
        }
        let mut out = Vec::new();
        while out.len() < max {
            if let Some(item) = state.pending.pop_front() {
                out.push(item);
                continue;
            }
            let Some(thread) = state.thread.clone() else {
                break;
            };
            let values: MultiValue = match thread.resume(()) {
                Ok(values) => values,
                Err(e) => {
                    state.thread = None;
                    if out.is_empty() {
                        return Err(callback_error(&e));
                    }
                    state.error = Some(callback_error(&e));
                    break;
                }
            };
            if thread.is_resumable() {
                // A coroutine.yield(v): one record.
                let first = values.into_iter().next().unwrap_or(Value::Nil);
                out.push(to_record(self.lua, first)?);
            } else {
                // The function returned: its return value holds the last records, if any.
                state.thread = None;
                let items = self.returned_items(values)?;
                state.pending.extend(items);
            }
        }
        Ok(out)
    }
}

/// Keeps the session types honest: everything crossing threads must be `Send + Sync`.
#[allow(dead_code)]
fn assert_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<LuaSession>();
    check::<LuaGenerator>();
    check::<Arc<Mutex<Lua>>>();
}
