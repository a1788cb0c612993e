//! `gears-module`: the Redis module (`rg`). It owns everything that touches Redis:
//!
//! - the commands (`RG.PYEXECUTE`, `RG.LUAEXECUTE`, `RG.RHAIEXECUTE`, `RG.EXPLAIN`), each
//!   guarded so that no panic crosses into Redis;
//! - the worker pool: scripts compile and executions run on worker threads while the calling
//!   client is blocked, never the server;
//! - the readers (keys, keys-only, stream, shards), which read in batches under the Redis lock;
//! - [`host::RedisHost`], the `RedisAccess` the core and the languages call Redis through.

mod commands;
mod config;
mod glob;
mod guard;
mod host;
mod readers;
mod reply;
mod workers;

use std::sync::OnceLock;

use redis_module::{redis_module, Context, RedisString, Status};

use crate::config::GearsConfig;
use crate::workers::WorkerPool;

/// The module's global state, built once at load.
pub(crate) struct Gears {
    pub config: GearsConfig,
    pub workers: WorkerPool,
    /// Why Python is unavailable, if it failed to start.
    pub python_error: Option<String>,
    /// A detached context of the module, so that log lines from worker threads are tagged `<rg>`.
    pub log_context: LogContext,
}

/// A detached thread-safe context owned by the module for its whole life, used only for
/// `RedisModule_Log`, which is thread-safe.
pub(crate) struct LogContext(*mut redis_module::raw::RedisModuleCtx);

// SAFETY: only passed to RedisModule_Log, which may be called from any thread.
unsafe impl Send for LogContext {}
unsafe impl Sync for LogContext {}

impl LogContext {
    pub fn log(&self, level: redis_module::logging::RedisLogLevel, message: &str) {
        Context::new(self.0).log(level, message);
    }
}

static GEARS: OnceLock<Gears> = OnceLock::new();

pub(crate) fn gears() -> Option<&'static Gears> {
    GEARS.get()
}

fn init(ctx: &Context, args: &[RedisString]) -> Status {
    let args: Vec<String> = args.iter().map(|a| a.to_string_lossy()).collect();
    let config = match GearsConfig::parse(&args) {
        Ok(config) => config,
        Err(e) => {
            ctx.log_warning(&format!("Gears: {e}"));
            return Status::Err;
        }
    };
    let python_error = gears_python::start_interpreter(&gears_python::PythonConfig {
        venv: config.python_venv.clone(),
        attempt_traceback: config.python_attempt_traceback,
    })
    .err()
    .map(|e| e.to_string());
    if let Some(e) = &python_error {
        ctx.log_warning(&format!("Gears: Python is not available: {e}"));
    }
    let workers = WorkerPool::new(config.execution_threads);
    // SAFETY: a detached context of this module; it lives as long as the module.
    let log_context = LogContext(unsafe {
        redis_module::raw::RedisModule_GetDetachedThreadSafeContext.unwrap()(ctx.ctx)
    });
    let threads = config.execution_threads;
    if GEARS
        .set(Gears {
            config,
            workers,
            python_error,
            log_context,
        })
        .is_err()
    {
        ctx.log_warning("Gears: the module is already loaded");
        return Status::Err;
    }
    ctx.log_notice(&format!("Gears loaded with {threads} execution threads"));
    Status::Ok
}

fn deinit(ctx: &Context) -> Status {
    // CPython can not be shut down and started again in one process.
    ctx.log_warning("Gears: the module can not be unloaded once the Python interpreter runs");
    Status::Err
}

/// Gears allocates with the system allocator, not Redis's: Redis's allocator updates one shared
/// `used_memory` counter on every allocation, and the reader thread and the worker contending on
/// it cost a third of an execution's time. Gears' memory (like the embedded interpreters') is
/// therefore not part of `used_memory`.
type Allocator = std::alloc::System;
const ALLOCATOR: Allocator = std::alloc::System;

redis_module! {
    name: "rg",
    version: 1,
    allocator: (Allocator, ALLOCATOR),
    data_types: [],
    init: init,
    deinit: deinit,
    commands: [
        ["RG.PYEXECUTE", commands::py_execute, "readonly", 0, 0, 0, ""],
        ["RG.LUAEXECUTE", commands::lua_execute, "readonly", 0, 0, 0, ""],
        ["RG.RHAIEXECUTE", commands::rhai_execute, "readonly", 0, 0, 0, ""],
        ["RG.EXPLAIN", commands::explain, "readonly", 0, 0, 0, ""],
    ],
}
