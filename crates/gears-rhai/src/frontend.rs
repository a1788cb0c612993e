//! The Rhai [`Frontend`]: compiles a script with an engine configured for it and runs its top
//! level, which builds the plans.

use std::sync::Arc;

use gears_core::{Compiled, Frontend, GearsError, Language, RedisAccess, Result};
use rhai::module_resolvers::DummyModuleResolver;
use rhai::Engine;

use crate::error::{classify, describe_parse};
use crate::session::RhaiSession;
use crate::state::SharedState;

/// Compiles Rhai scripts into plans.
#[derive(Default, Clone, Copy, Debug)]
pub struct RhaiFrontend;

impl RhaiFrontend {
    pub fn new() -> Self {
        RhaiFrontend
    }
}

/// A sandboxed engine for one script: no module can be imported (the resolver loads nothing),
/// `eval` is disabled, `print`/`debug` go to the Redis log, and the Gears API is registered.
fn new_engine(state: &SharedState, redis: &Arc<dyn RedisAccess>) -> Engine {
    let mut engine = Engine::new();
    engine.set_module_resolver(DummyModuleResolver::new());
    engine.disable_symbol("eval");
    crate::limits::apply(&mut engine);
    crate::builder::register(&mut engine, state);
    crate::globals::register(&mut engine, redis);
    crate::globals::register_timer(&mut engine, state, redis);
    engine
}

impl Frontend for RhaiFrontend {
    fn language(&self) -> Language {
        Language::Rhai
    }

    fn compile(&self, script: &str, redis: Arc<dyn RedisAccess>) -> Result<Compiled> {
        let state = SharedState::new_compiling();
        let engine = new_engine(&state, &redis);
        let ast = engine
            .compile(script)
            .map_err(|e| GearsError::Script(describe_parse(&e)))?;
        let outcome = engine.run_ast(&ast);
        let (plans, registrations) = state.finish_compiling();
        outcome.map_err(|e| classify(&e, GearsError::Script))?;
        Ok(Compiled {
            session: Arc::new(RhaiSession::new(engine, ast, state)),
            plans,
            registrations,
        })
    }
}
