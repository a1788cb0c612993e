//! `gears-lua`: the Lua 5.4 frontend of Gears (through mlua).
//!
//! [`LuaFrontend::compile`] gives every script a fresh, sandboxed Lua state (its own globals
//! table), runs the script's top level, and returns the plans its `run()` call built, together
//! with a [`LuaSession`] that owns the state and the callbacks those plans reference.
//!
//! ```lua
//! GB('KeysReader')
//!   :filter(function(x) return tonumber(x.value.age) > 35 end)
//!   :map(function(x) return x.key end)
//!   :run('user:*')
//! ```
//!
//! Design notes:
//! - Every builder operation lowers through [`gears_core::PlanBuilder`], so Lua plans are the
//!   same plans the Python and Rhai frontends build.
//! - A callback's result stays a Lua value: nil, booleans, numbers and strings become core
//!   records at once (they convert losslessly); tables, functions and coroutines are kept in the
//!   Lua registry and travel as [`gears_core::Record::Native`] holding a [`LuaNative`], so the
//!   next Lua step receives the very same table.
//! - The generator reader (`GB('PythonReader'):run(fn)`) runs `fn` as a coroutine: each
//!   `coroutine.yield(v)` produces the record `v`; when `fn` returns, a returned sequence table
//!   contributes its elements (so `return {1, 2, 3}` works without yields), any other non-nil
//!   return value is one last record.
//! - Errors: compile and top-level errors are [`gears_core::GearsError::Script`], callback
//!   errors [`gears_core::GearsError::Callback`]; texts are `script:LINE: message` for Lua
//!   errors, without tracebacks.
//!
//! The user-facing reference is `docs/api-lua.md`.

mod builder;
mod convert;
mod error;
mod globals;
mod patterns;
mod session;
mod state;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};

use gears_core::{Compiled, Frontend, GearsError, Language, RedisAccess, Result};
use mlua::chunk::ChunkMode;

pub use convert::LuaNative;
pub use session::{used_memory, LuaRuntime, LuaSession};

use crate::state::{lock, ScriptState};

/// The chunk name of user scripts: errors read `script:LINE: message`.
const CHUNK_NAME: &str = "=script";

/// The Lua frontend.
#[derive(Default)]
pub struct LuaFrontend;

impl LuaFrontend {
    pub fn new() -> Self {
        LuaFrontend
    }
}

impl Frontend for LuaFrontend {
    fn language(&self) -> Language {
        Language::Lua
    }

    fn compile(&self, script: &str, redis: Arc<dyn RedisAccess>) -> Result<Compiled> {
        let state = Arc::new(Mutex::new(ScriptState {
            compiling: true,
            ..ScriptState::default()
        }));
        let lua = globals::new_state(redis, state.clone())
            .map_err(|e| GearsError::Internal(error::message(&e)))?;
        let outcome = lua
            .load(script)
            .set_name(CHUNK_NAME)
            .set_mode(ChunkMode::Text)
            .exec();
        let (plans, registrations) = {
            let mut state = lock(&state);
            state.compiling = false;
            (
                std::mem::take(&mut state.plans),
                std::mem::take(&mut state.registrations),
            )
        };
        outcome.map_err(|e| error::classify(&e, GearsError::Script))?;
        Ok(Compiled {
            session: Arc::new(LuaSession::new(lua, state)),
            plans,
            registrations,
        })
    }
}
