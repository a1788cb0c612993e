//! The per-script registry the builder functions write into while the script's top level runs,
//! and the session reads from while plans execute.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use gears_core::registration::RegistrationSpec;
use gears_core::{CallbackId, ExecutionPlan, GearsError, Result, ValueId};
use rhai::{Dynamic, FnPtr};

/// The callbacks, values and plans of one script.
#[derive(Default)]
pub(crate) struct ScriptState {
    callbacks: Vec<FnPtr>,
    values: Vec<Dynamic>,
    plans: Vec<ExecutionPlan>,
    registrations: Vec<RegistrationSpec>,
    /// Callbacks called with no argument (`register_timer`'s function), by id.
    no_arguments: Vec<u32>,
    /// True while the top level runs: `run()` is only allowed then.
    compiling: bool,
}

impl ScriptState {
    fn can_run(&self) -> Result<()> {
        if !self.compiling {
            return Err(GearsError::Plan(
                "run() can only be called at the script's top level".into(),
            ));
        }
        if !self.plans.is_empty() {
            return Err(GearsError::Plan(
                "Can not run more then 1 executions in a single script".into(),
            ));
        }
        Ok(())
    }
}

/// A handle on a [`ScriptState`], shared by the engine's registered functions and the session.
#[derive(Clone, Default)]
pub(crate) struct SharedState(Arc<Mutex<ScriptState>>);

impl SharedState {
    pub(crate) fn new_compiling() -> Self {
        let state = SharedState::default();
        state.lock().compiling = true;
        state
    }

    fn lock(&self) -> MutexGuard<'_, ScriptState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn add_callback(&self, callback: FnPtr) -> Result<CallbackId> {
        let mut state = self.lock();
        let id = u32::try_from(state.callbacks.len())
            .map_err(|_| GearsError::Plan("too many callbacks in one script".into()))?;
        state.callbacks.push(callback);
        Ok(CallbackId(id))
    }

    /// Adds a callback that its step calls with no argument (a timer's function).
    pub(crate) fn add_callback_without_arguments(&self, callback: FnPtr) -> Result<CallbackId> {
        let id = self.add_callback(callback)?;
        self.lock().no_arguments.push(id.0);
        Ok(id)
    }

    pub(crate) fn takes_no_arguments(&self, id: CallbackId) -> bool {
        self.lock().no_arguments.contains(&id.0)
    }

    pub(crate) fn add_value(&self, value: Dynamic) -> Result<ValueId> {
        let mut state = self.lock();
        let id = u32::try_from(state.values.len())
            .map_err(|_| GearsError::Plan("too many values in one script".into()))?;
        state.values.push(value);
        Ok(ValueId(id))
    }

    pub(crate) fn callback(&self, id: CallbackId) -> Result<FnPtr> {
        self.lock()
            .callbacks
            .get(id.0 as usize)
            .cloned()
            .ok_or_else(|| GearsError::Internal(format!("unknown callback {}", id.0)))
    }

    /// A fresh copy of a stored value.
    pub(crate) fn value(&self, id: ValueId) -> Result<Dynamic> {
        self.lock()
            .values
            .get(id.0 as usize)
            .map(Dynamic::flatten_clone)
            .ok_or_else(|| GearsError::Internal(format!("unknown value {}", id.0)))
    }

    /// Adds the plan of a `run()` call; only one is allowed per script, at its top level.
    pub(crate) fn add_plan(&self, plan: ExecutionPlan) -> Result<()> {
        let mut state = self.lock();
        state.can_run()?;
        state.plans.push(plan);
        Ok(())
    }

    /// Checks that a `run()` is still allowed (before its arguments register callbacks).
    pub(crate) fn check_can_run(&self) -> Result<()> {
        self.lock().can_run()
    }

    /// Checks that a `register()` is allowed: only at the top level.
    pub(crate) fn check_can_register(&self) -> Result<()> {
        if self.lock().compiling {
            return Ok(());
        }
        Err(GearsError::Plan(
            "register() can only be called at the script's top level".into(),
        ))
    }

    /// Adds the registration a `register()` call asked for.
    pub(crate) fn add_registration(&self, registration: RegistrationSpec) -> Result<()> {
        self.check_can_register()?;
        self.lock().registrations.push(registration);
        Ok(())
    }

    /// Ends the top level: takes the plans and registrations built and forbids further `run()`
    /// and `register()` calls.
    pub(crate) fn finish_compiling(&self) -> (Vec<ExecutionPlan>, Vec<RegistrationSpec>) {
        let mut state = self.lock();
        state.compiling = false;
        (
            std::mem::take(&mut state.plans),
            std::mem::take(&mut state.registrations),
        )
    }
}
