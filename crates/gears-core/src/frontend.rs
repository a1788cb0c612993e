//! The contracts between the core, the language frontends and the Redis host.

use std::sync::Arc;

use crate::error::{GearsError, Result};
use crate::plan::{CallbackId, ExecutionPlan, Language, ValueId};
use crate::record::{GroupKey, Record};
use crate::repr::{python_repr, python_str};

/// Log levels, as RedisGears' `log(msg, level)` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Verbose,
    Notice,
    Warning,
}

impl LogLevel {
    pub fn parse(level: &str) -> Option<LogLevel> {
        match level {
            "debug" => Some(LogLevel::Debug),
            "verbose" => Some(LogLevel::Verbose),
            "notice" => Some(LogLevel::Notice),
            "warning" => Some(LogLevel::Warning),
            _ => None,
        }
    }
}

/// What scripts and readers need from Redis. Implemented by the module (under the Redis lock);
/// tests can implement it over anything.
/// What an execution started by [`RedisAccess::start_execution`] tells its starter when it
/// ends: its outcome, or why it did not run.
pub type ExecutionDone =
    Box<dyn FnOnce(std::result::Result<crate::ExecutionOutcome, String>) + Send>;

pub trait RedisAccess: Send + Sync {
    /// Runs `args[0]` with the remaining arguments and returns the reply as a record; an error
    /// reply is `Err(GearsError::Redis(text))`.
    fn execute(&self, args: &[Vec<u8>]) -> Result<Record>;
    /// Writes a script's message to the Redis log (the module writes it as `GEARS: <message>`,
    /// as RedisGears does).
    fn log(&self, level: LogLevel, message: &str);
    /// `configGet(key)` / `gearsConfigGet(key)`: a setting given to the module that Gears does
    /// not use itself (RedisGears' "extra config"), if set.
    fn gears_config_get(&self, key: &str) -> Option<Record>;
    /// `hashtag()`: a hash tag that maps to a slot of this shard.
    fn hashtag(&self) -> String;
    /// Starts an atomic block: this thread keeps the Redis lock, and the commands it runs do not
    /// take it again, until [`RedisAccess::end_atomic`]. A block inside a block is an error.
    fn begin_atomic(&self) -> Result<()> {
        Err(GearsError::Plan(
            "atomic blocks are not supported here".into(),
        ))
    }
    /// Ends this thread's atomic block, if it has one (idempotent, so it is also a safety net).
    fn end_atomic(&self) {}
    /// Whether a timer (`registerTE`, a TimerReader's `key=`) may take `key`: it holds nothing,
    /// or another timer's lease (which making the session checks again). True while a session
    /// is made again (its key is already there).
    fn timer_key_free(&self, _key: &[u8]) -> Result<bool> {
        Err(GearsError::Plan("timers are not supported here".into()))
    }
    /// `run()` inside a running execution (a step, a timer, a coroutine): starts `plan`, whose
    /// callbacks live in `session`, as an execution of its own on this shard, in the
    /// background, as this host's user; `done` gets its outcome (also when it could not run).
    /// Returns its id.
    fn start_execution(
        &self,
        _plan: crate::ExecutionPlan,
        _session: Arc<dyn Session>,
        _done: ExecutionDone,
    ) -> Result<String> {
        Err(GearsError::Plan(
            "run() can only be called from the top level of a script".into(),
        ))
    }
    /// A new registration id, which `register()` returns (none where the host has no ids).
    fn new_registration_id(&self) -> Option<String> {
        None
    }
    /// `call_next(*args)` in a command hook: runs the hooked command with `args` through the
    /// hooks registered before this one, then the real command, and returns its reply.
    fn call_next(&self, args: &[Vec<u8>]) -> Result<Record> {
        let _ = args;
        Err(no_hook_context())
    }
    /// `override_reply(value)` in a registration run by a hooked command (`commands=[...]`):
    /// the command's client gets `value` instead of the command's own reply (once).
    fn override_reply(&self, value: Record) -> Result<()> {
        let _ = value;
        Err(no_hook_context())
    }
    /// `get_command()`: the arguments of the command that runs this registration.
    fn get_command(&self) -> Result<Vec<Vec<u8>>> {
        Err(no_hook_context())
    }
    /// The execution this thread now runs the session's code for, to run more of that code on
    /// another thread ([`RedisAccess::enter_captured`]): an `async def` callback's coroutine on
    /// the language's event loop. `None` where the host has no such notion.
    fn capture(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        None
    }
    /// Runs the session's calls on this thread for a captured execution until the returned
    /// guard is dropped (on this thread).
    fn enter_captured(
        &self,
        captured: &Arc<dyn std::any::Any + Send + Sync>,
    ) -> Option<Box<dyn std::any::Any>> {
        let _ = captured;
        None
    }
    /// True if this thread may wait for code running on another thread (a coroutine): false
    /// while it holds the Redis lock (a sync run, an atomic block), where that code's commands
    /// could never run.
    fn may_wait(&self) -> bool {
        true
    }
    /// A step's callback returned a coroutine where nothing may wait (a sync run): `Ok` if the
    /// run may instead start again from its beginning in the background (RedisGears moved such
    /// a sync run to the background), which the host then does; the run here stops without
    /// effect. `Err` where it may not (a hook, `MULTI`, Lua), with the reason if there is more
    /// to say (it already wrote).
    fn move_to_background(&self) -> std::result::Result<(), Option<String>> {
        Err(None)
    }
}

/// The error of `call_next`, `override_reply` and `get_command` outside a command hook.
pub fn no_hook_context() -> GearsError {
    GearsError::Redis("Can not get CommandHook ctx".into())
}

/// A scripting language: compiles scripts into plans plus the callbacks those plans reference.
pub trait Frontend: Send + Sync {
    fn language(&self) -> Language;

    /// Compiles a script and runs its top level, which builds zero or more plans (`run()`).
    fn compile(&self, script: &str, redis: Arc<dyn RedisAccess>) -> Result<Compiled>;
}

/// The outcome of compiling a script.
pub struct Compiled {
    /// Owns the script's globals and callbacks.
    pub session: Arc<dyn Session>,
    /// The plans its `run()` calls built, in order.
    pub plans: Vec<ExecutionPlan>,
    /// What its `register()` calls asked for, in order.
    pub registrations: Vec<crate::registration::RegistrationSpec>,
}

/// One script's live state: its globals and the callbacks and values its plans reference.
pub trait Session: Send + Sync {
    fn language(&self) -> Language;

    /// Enters the language (taking its interpreter lock, such as Python's GIL) and runs `f`.
    /// The executor enters once per batch, not once per record.
    fn enter(&self, f: &mut dyn FnMut(&mut dyn Runtime));

    /// A short description of a callback, as `RG.GETEXECUTION` shows a step's argument (a
    /// Python function's `repr()`); empty when the language has none.
    fn describe(&self, callback: CallbackId) -> String {
        let _ = callback;
        String::new()
    }

    /// The profiler of the session's callbacks (`RG.PYPROFILE`), where the language has one.
    /// It may outlive the session (a finished execution keeps what it profiled).
    fn profiler(&self) -> Option<Arc<dyn Profiler>> {
        None
    }
}

/// What a language profiled of one session's callbacks while profiling was on
/// (`ProfileExecutions`): Python's cProfile, shown as pstats text.
pub trait Profiler: Send + Sync {
    /// True once something was profiled (since the start, or since the last [`Profiler::reset`]).
    fn profiled(&self) -> bool;

    /// The statistics as text, sorted by `order` (a column name); `Ok(None)` when nothing was
    /// profiled. Takes the language's interpreter lock: never call it on Redis's main thread.
    fn stats(&self, order: &str) -> std::result::Result<Option<String>, String>;

    /// Forgets everything profiled so far. Never waits for the interpreter lock.
    fn reset(&self);
}

/// The operations the executor needs from a language while inside [`Session::enter`].
///
/// Records passed in may be core or native values of this language; a returned record is
/// usually native. The default methods work on core records, converting natives with
/// [`Runtime::to_core`]; a language overrides them where its own semantics differ.
pub trait Runtime {
    /// Calls a user callback. A language with coroutines (`async def`) waits for one the
    /// callback returns and gives its result.
    fn call(&mut self, callback: CallbackId, args: &[&Record]) -> Result<Record>;

    /// Calls a callback once per record (`map`, `flatmap`, `filter`, `foreach`); a language
    /// with coroutines runs those the calls return concurrently, then gives every result in
    /// order.
    fn call_each(&mut self, callback: CallbackId, records: &[Record]) -> Vec<Result<Record>> {
        records
            .iter()
            .map(|record| self.call(callback, &[record]))
            .collect()
    }

    /// Calls a callback whose result is needed at once (an extractor, a batch reducer): a
    /// coroutine it returns is an error naming `what` (RedisGears 1.2's texts).
    fn call_now(&mut self, callback: CallbackId, args: &[&Record], what: &str) -> Result<Record> {
        let _ = what;
        self.call(callback, args)
    }

    /// Converts a value (deeply) into a core record.
    fn to_core(&mut self, value: Record) -> Result<Record>;

    /// A fresh copy of a user value.
    fn value(&mut self, id: ValueId) -> Result<Record>;

    /// Converts a record the next callback will see into the language's own representation, so
    /// that steps passing the record on (`filter`, `foreach`) hand the converted value to the
    /// following callback instead of converting it again. The default keeps the record as is.
    fn prepare(&mut self, record: Record) -> Result<Record> {
        Ok(record)
    }

    /// The language's truthiness of a value.
    fn truthy(&mut self, value: &Record) -> Result<bool> {
        Ok(self.to_core(value.clone())?.is_truthy())
    }

    /// flatmap: `Ok(items)` when the value is the language's list type, else `Err(value)`.
    fn expand_list(&mut self, value: Record) -> Result<std::result::Result<Vec<Record>, Record>> {
        match self.to_core(value)? {
            Record::List(items) => Ok(Ok(items)),
            other => Ok(Err(other)),
        }
    }

    /// `str(value)`, as the reply of `convertToStr=True` shows it.
    fn to_str(&mut self, value: &Record) -> Result<String> {
        Ok(python_str(&self.to_core(value.clone())?))
    }

    /// The group key of an extractor's result: a string as is, bytes as bytes, anything else
    /// `repr()`'d.
    fn group_key(&mut self, value: Record) -> Result<GroupKey> {
        Ok(match self.to_core(value)? {
            Record::String(s) => GroupKey::Text(s),
            Record::Bytes(b) => GroupKey::Bytes(b),
            other => GroupKey::Text(python_repr(&other)),
        })
    }

    /// Runs `f`, which does not touch the language, with the language released for other
    /// threads meanwhile (Python's GIL): a wait for other shards' records must not hold it.
    fn released(&mut self, f: &mut dyn FnMut()) {
        f()
    }

    /// Starts a generator reader: calls the user's function and returns its iterator.
    fn start_generator(&mut self, callback: CallbackId) -> Result<Record> {
        let _ = callback;
        Err(GearsError::Plan(
            "this language has no generator reader".into(),
        ))
    }

    /// Up to `max` further items of a generator; empty when it is exhausted.
    fn next_from_generator(&mut self, generator: &Record, max: usize) -> Result<Vec<Record>> {
        let _ = (generator, max);
        Ok(Vec::new())
    }
}

/// Callbacks a runtime resolved during one [`Session::enter`], indexed by [`CallbackId`], so that
/// each record does not pay for looking a callback up (and cloning its handle) again.
pub struct CallbackCache<T> {
    slots: Vec<Option<T>>,
}

impl<T> Default for CallbackCache<T> {
    fn default() -> Self {
        CallbackCache { slots: Vec::new() }
    }
}

impl<T> CallbackCache<T> {
    /// The cached callback, fetched with `fetch` the first time.
    pub fn get_or_fetch(
        &mut self,
        callback: CallbackId,
        fetch: impl FnOnce() -> Result<T>,
    ) -> Result<&T> {
        let index = callback.0 as usize;
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, || None);
        }
        let slot = &mut self.slots[index];
        if slot.is_none() {
            *slot = Some(fetch()?);
        }
        slot.as_ref()
            .ok_or_else(|| GearsError::Internal(format!("unknown callback {}", callback.0)))
    }
}
