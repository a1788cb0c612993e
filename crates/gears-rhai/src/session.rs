//! A compiled script's session and the [`Runtime`] the executor drives inside it.

use std::sync::{Mutex, PoisonError};

use gears_core::{
    CallbackCache, CallbackId, GearsError, Language, NativeValue, Record, Result, Runtime, Session,
    ValueId,
};
use rhai::{Array, Dynamic, Engine, FnPtr, AST, INT};

use crate::convert::{native, to_core, to_dynamic, truthy};
use crate::error::classify;
use crate::state::SharedState;

/// The engine (configured for this script) and the compiled script.
struct Interpreter {
    engine: Engine,
    ast: AST,
}

/// One script's live state: its engine, AST, callbacks and values.
pub struct RhaiSession {
    interpreter: Mutex<Interpreter>,
    state: SharedState,
}

impl RhaiSession {
    pub(crate) fn new(engine: Engine, ast: AST, state: SharedState) -> Self {
        RhaiSession {
            interpreter: Mutex::new(Interpreter { engine, ast }),
            state,
        }
    }
}

impl Session for RhaiSession {
    fn language(&self) -> Language {
        Language::Rhai
    }

    fn enter(&self, f: &mut dyn FnMut(&mut dyn Runtime)) {
        let interpreter = self
            .interpreter
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut runtime = RhaiRuntime {
            engine: &interpreter.engine,
            ast: &interpreter.ast,
            state: &self.state,
            callbacks: CallbackCache::default(),
        };
        f(&mut runtime)
    }

    /// The callback's name: `<function NAME>` for a named function, `<closure>` for an
    /// anonymous one.
    fn describe(&self, callback: CallbackId) -> String {
        match self.state.callback(callback) {
            Ok(f) if f.fn_name().starts_with("anon$") => "<closure>".to_string(),
            Ok(f) => format!("<function {}>", f.fn_name()),
            Err(_) => String::new(),
        }
    }
}

/// The iterator behind a generator reader: the items of the array (or range) the user's
/// function returned, handed out in batches.
struct RhaiGenerator(Mutex<Box<dyn Iterator<Item = Dynamic> + Send>>);

/// The [`Runtime`] of a Rhai session, alive for one [`Session::enter`].
pub(crate) struct RhaiRuntime<'a> {
    engine: &'a Engine,
    ast: &'a AST,
    state: &'a SharedState,
    /// The callbacks used so far in this [`Session::enter`], each with whether it takes no
    /// argument (`register_timer`'s function).
    callbacks: CallbackCache<(FnPtr, bool)>,
}

impl RhaiRuntime<'_> {
    fn callback(&mut self, callback: CallbackId) -> Result<&(FnPtr, bool)> {
        let state = &self.state;
        self.callbacks.get_or_fetch(callback, || {
            Ok((
                state.callback(callback)?,
                state.takes_no_arguments(callback),
            ))
        })
    }
}

impl Runtime for RhaiRuntime<'_> {
    fn call(&mut self, callback: CallbackId, args: &[&Record]) -> Result<Record> {
        let (engine, ast) = (self.engine, self.ast);
        let (function, no_arguments) = self.callback(callback)?;
        let result = match args {
            _ if *no_arguments => function.call::<Dynamic>(engine, ast, ()),
            [a] => function.call::<Dynamic>(engine, ast, (to_dynamic(a)?,)),
            [a, b] => function.call::<Dynamic>(engine, ast, (to_dynamic(a)?, to_dynamic(b)?)),
            _ => {
                let mut values = Vec::with_capacity(args.len());
                for arg in args {
                    values.push(to_dynamic(arg)?);
                }
                function.call::<Dynamic>(engine, ast, values)
            }
        };
        result
            .map(native)
            .map_err(|e| classify(&e, GearsError::Callback))
    }

    fn to_core(&mut self, value: Record) -> Result<Record> {
        if value.contains_native() {
            Ok(to_core(&to_dynamic(&value)?))
        } else {
            Ok(value)
        }
    }

    fn value(&mut self, id: ValueId) -> Result<Record> {
        Ok(native(self.state.value(id)?))
    }

    /// Python-like truthiness, where Rhai's `()` and `false` are false (see
    /// [`crate::convert`]): `0`, `0.0`, `""`, `[]` and `#{}` are false too.
    fn truthy(&mut self, value: &Record) -> Result<bool> {
        match value {
            Record::Native(_) => Ok(truthy(&to_dynamic(value)?)),
            other => Ok(self.to_core(other.clone())?.is_truthy()),
        }
    }

    fn expand_list(&mut self, value: Record) -> Result<std::result::Result<Vec<Record>, Record>> {
        match value {
            Record::Native(ref native_value) => {
                let Some(dynamic) = native_value.downcast_ref::<Dynamic>() else {
                    return Ok(Err(value));
                };
                let dynamic = dynamic.flatten_clone();
                if !dynamic.is_array() {
                    return Ok(Err(value));
                }
                match dynamic.into_array() {
                    Ok(items) => Ok(Ok(items.into_iter().map(native).collect())),
                    Err(_) => Ok(Err(value)),
                }
            }
            Record::List(items) => Ok(Ok(items)),
            other => Ok(Err(other)),
        }
    }

    fn start_generator(&mut self, callback: CallbackId) -> Result<Record> {
        let (engine, ast) = (self.engine, self.ast);
        let (function, _) = self.callback(callback)?;
        let result = function
            .call::<Dynamic>(engine, ast, Array::new())
            .map_err(|e| classify(&e, GearsError::Callback))?
            .flatten();
        let items: Box<dyn Iterator<Item = Dynamic> + Send> = if result.is_array() {
            match result.into_array() {
                Ok(items) => Box::new(items.into_iter()),
                Err(_) => Box::new(std::iter::empty()),
            }
        } else if let Some(range) = result.clone().try_cast::<std::ops::Range<INT>>() {
            Box::new(range.map(Dynamic::from_int))
        } else if let Some(range) = result.clone().try_cast::<std::ops::RangeInclusive<INT>>() {
            Box::new(range.map(Dynamic::from_int))
        } else {
            return Err(GearsError::Callback(format!(
                "generator function must return an array or a range, not {}",
                crate::convert::type_name(&result)
            )));
        };
        Ok(Record::Native(NativeValue::new(
            Language::Rhai,
            RhaiGenerator(Mutex::new(items)),
        )))
    }

    fn next_from_generator(&mut self, generator: &Record, max: usize) -> Result<Vec<Record>> {
        let Record::Native(value) = generator else {
            return Ok(Vec::new());
        };
        let Some(RhaiGenerator(items)) = value.downcast_ref::<RhaiGenerator>() else {
            return Err(GearsError::Internal("not a Rhai generator".into()));
        };
        let mut items = items.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(items.by_ref().take(max).map(native).collect())
    }
}
