//! What one script owns besides its Lua state: the callbacks and values its plans reference,
//! and the plans its top level built.

use std::sync::{Arc, Mutex, MutexGuard};

use gears_core::{CallbackId, ExecutionPlan, GearsError, Result, ValueId};
use mlua::{Function, RegistryKey};

/// Shared between the builder functions (while the top level runs) and the session.
pub type SharedState = Arc<Mutex<ScriptState>>;

#[derive(Default)]
pub struct ScriptState {
    /// `CallbackId(i)` is `callbacks[i]`.
    pub callbacks: Vec<Function>,
    /// `ValueId(i)` is `values[i]` (an `aggregate` zero, for example).
    pub values: Vec<RegistryKey>,
    /// The plans built by `run()`.
    pub plans: Vec<ExecutionPlan>,
    /// The registrations `register()` asked for.
    pub registrations: Vec<gears_core::registration::RegistrationSpec>,
    /// True while the script's top level runs; `run()` is refused afterwards.
    pub compiling: bool,
}

impl ScriptState {
    pub fn add_callback(&mut self, f: Function) -> Result<CallbackId> {
        let id = u32::try_from(self.callbacks.len())
            .map_err(|_| GearsError::Plan("too many callbacks in one script".into()))?;
        self.callbacks.push(f);
        Ok(CallbackId(id))
    }

    pub fn add_value(&mut self, key: RegistryKey) -> Result<ValueId> {
        let id = u32::try_from(self.values.len())
            .map_err(|_| GearsError::Plan("too many values in one script".into()))?;
        self.values.push(key);
        Ok(ValueId(id))
    }

    pub fn callback(&self, id: CallbackId) -> Result<Function> {
        self.callbacks
            .get(id.0 as usize)
            .cloned()
            .ok_or_else(|| GearsError::Internal(format!("unknown Lua callback {}", id.0)))
    }
}

/// Locks a mutex, ignoring poisoning (a panic elsewhere must not make the script unusable).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
