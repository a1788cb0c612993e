//! `gears-module`: the Redis module (`rg`). It owns everything that touches Redis:
//!
//! - `commands/`: the RG commands, each guarded so that no panic crosses into Redis, and what
//!   they declare to Redis (flags, `COMMAND DOCS`, ACL categories);
//! - `config/`: module arguments and `RG.CONFIGGET` / `RG.CONFIGSET`;
//! - `host/`: how an execution reaches Redis: as the user who sent it, in their database, with
//!   the protections of a Lua script;
//! - `readers/`: the keys, keys-only, stream and shards readers, which read in batches under
//!   the Redis lock, yielding only keys the user may read;
//! - the worker pool: scripts compile and executions run on worker threads while the calling
//!   client is blocked, never the server;
//! - `limits`: memory limits and what `INFO` reports about Gears;
//! - `cluster/`: topology, the cluster bus, and executions that run on every shard;
//! - the [`gears_module!`] macro, which makes the Redis module: `libgears.so` is this crate plus
//!   one line (`crates/gears`), and a crate that adds native extensions
//!   ([`gears_core::extension`]) builds its own module the same way, naming them:
//!
//! ```ignore
//! // src/lib.rs of a crate with `crate-type = ["cdylib"]`
//! gears_module::gears_module!(gears_ext_hll::extension(), my_crate::extension());
//! ```
//!
//! The module it builds is Gears with those extensions: same commands, same module name (`rg`),
//! loaded with `--loadmodule` in place of `libgears.so`.

mod cluster;
mod commands;
mod config;
mod executions;
mod guard;
mod host;
mod info;
mod limits;
mod readers;
mod registrations;
mod reply;
mod requirements;
mod resp;
mod workers;

use std::sync::OnceLock;

use redis_module::{raw, Context, RedisError, RedisString, Status};

use crate::config::{
    Config, EXECUTION_THREADS, MAX_EXECUTIONS, MAX_QUEUED_EXECUTIONS, PROFILE_EXECUTIONS,
    PYTHON_ATTEMPT_TRACEBACK, PYTHON_ENABLED, PYTHON_VENV,
};
use crate::executions::{Execution, Executions, TableLimits};
use crate::limits::Limits;
use crate::workers::WorkerPool;

/// The module's global state, built once at load.
pub(crate) struct Gears {
    pub config: Config,
    pub workers: WorkerPool,
    pub executions: Executions,
    pub limits: Limits,
    /// Why Python is unavailable (switched off, or it failed to start).
    pub python_error: Option<String>,
    /// A detached context of the module, so that log lines from worker threads are tagged `<rg>`.
    pub log_context: LogContext,
}

impl Gears {
    /// `Err` with the reason when Python scripts can not run here.
    pub fn python_available(&self) -> Result<(), String> {
        match &self.python_error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Applies settings that take effect when changed (after `RG.CONFIGSET`).
    pub fn apply_config(&self) {
        gears_python::set_attempt_traceback(self.config.flag(PYTHON_ATTEMPT_TRACEBACK));
        gears_python::set_profiling(self.config.flag(PROFILE_EXECUTIONS));
        self.limits.apply(&self.config);
        self.executions.trim(self.max_executions());
    }

    pub fn max_executions(&self) -> usize {
        usize::try_from(self.config.integer(MAX_EXECUTIONS).max(0)).unwrap_or(usize::MAX)
    }

    /// The limits a new execution runs under.
    pub fn execution_limits(&self) -> gears_core::control::Limits {
        self.limits.for_execution(&self.config)
    }

    /// `MaxQueuedExecutions`.
    pub fn max_queued(&self) -> u64 {
        self.config.integer(MAX_QUEUED_EXECUTIONS).max(0) as u64
    }

    /// Creates and queues an execution (see [`Executions::create`]).
    pub fn create_execution(
        &self,
        language: gears_core::Language,
        caller: host::Caller,
        block: Option<&Context>,
    ) -> Result<std::sync::Arc<Execution>, String> {
        let control = gears_core::control::ExecutionControl::new(self.execution_limits());
        self.executions.create(
            language,
            caller,
            control,
            block,
            TableLimits {
                max_executions: self.max_executions(),
                max_queued: self.max_queued(),
                profile: self.config.flag(PROFILE_EXECUTIONS),
            },
        )
    }
}

/// A detached thread-safe context owned by the module for its whole life, used only for
/// `RedisModule_Log`, which is thread-safe.
pub(crate) struct LogContext(pub(crate) *mut redis_module::raw::RedisModuleCtx);

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

/// The module's state, or the error a command replies before the module is loaded.
pub(crate) fn loaded() -> Result<&'static Gears, RedisError> {
    GEARS
        .get()
        .ok_or(RedisError::Str("Gears is not initialised"))
}

/// Installs the module's native extensions; logs and refuses a bad set.
fn install_extensions(ctx: &Context, extensions: Vec<gears_core::extension::Extension>) -> bool {
    let mut registry = gears_core::extension::Registry::new();
    for extension in extensions {
        let line = format!(
            "Gears: extension {} {}: {}",
            extension.name(),
            extension.version(),
            extension.names().collect::<Vec<_>>().join(", ")
        );
        if let Err(e) = registry.add(extension) {
            ctx.log_warning(&format!("Gears: {e}"));
            return false;
        }
        ctx.log_notice(&line);
    }
    if let Err(e) = gears_core::extension::install(registry) {
        ctx.log_warning(&format!("Gears: {e}"));
        return false;
    }
    true
}

fn init(
    ctx: &Context,
    args: &[RedisString],
    extensions: Vec<gears_core::extension::Extension>,
) -> Status {
    if commands::create_commands(ctx.ctx) != raw::Status::Ok as std::os::raw::c_int {
        return Status::Err;
    }
    if !install_extensions(ctx, extensions) {
        return Status::Err;
    }
    let args: Vec<String> = args.iter().map(|a| a.to_string_lossy()).collect();
    let config = match Config::load(&args) {
        Ok(config) => config,
        Err(e) => {
            ctx.log_warning(&format!("Gears: {e}"));
            return Status::Err;
        }
    };
    if let Err(e) = commands::docs::declare(ctx) {
        ctx.log_warning(&format!("Gears: {e}"));
        return Status::Err;
    }
    guard::report_panics_in_the_log();
    gears_python::set_log_sink(Box::new(host::log_line));
    let python_error = if config.flag(PYTHON_ENABLED) {
        let venv = config.text(PYTHON_VENV);
        gears_python::start_interpreter(&gears_python::PythonConfig {
            venv: (!venv.is_empty()).then(|| venv.into()),
            attempt_traceback: config.flag(PYTHON_ATTEMPT_TRACEBACK),
        })
        .err()
        .map(|e| format!("Python is not available: {e}"))
    } else {
        Some("Python is disabled on this server (PythonEnabled 0)".to_string())
    };
    if let Some(e) = &python_error {
        ctx.log_warning(&format!("Gears: {e}"));
    }
    let threads = config.integer(EXECUTION_THREADS) as usize;
    let workers = WorkerPool::new(threads);
    let limits = Limits::new(ctx);
    // SAFETY: a detached context of this module; it lives as long as the module.
    let log_context = LogContext(unsafe {
        redis_module::raw::RedisModule_GetDetachedThreadSafeContext.unwrap()(ctx.ctx)
    });
    let gears = Gears {
        config,
        workers,
        executions: Executions::new(),
        limits,
        python_error,
        log_context,
    };
    gears.apply_config();
    if GEARS.set(gears).is_err() {
        ctx.log_warning("Gears: the module is already loaded");
        return Status::Err;
    }
    info::register(ctx);
    // Gears' loaders check every read (`RedisModule_IsIOError`): a short or corrupt value
    // (a `RESTORE` payload, a damaged RDB) is an error reply or a failed load, not a server
    // panic, which is what Redis does for modules that do not say so.
    // SAFETY: a plain setting of this module, at load.
    unsafe {
        raw::RedisModule_SetModuleOptions.unwrap()(
            ctx.ctx,
            raw::REDISMODULE_OPTIONS_HANDLE_IO_ERRORS as i32,
        )
    };
    if let Err(e) = registrations::subscribe(ctx)
        .and_then(|_| registrations::persist::subscribe(ctx))
        .and_then(|_| registrations::timers::key::create_type(ctx))
        .and_then(|_| registrations::streams::subscribe(ctx))
    {
        ctx.log_warning(&format!("Gears: {e}"));
        return Status::Err;
    }
    cluster::subscribe(ctx);
    if let Err(e) = registrations::hooks::register_filter(ctx) {
        ctx.log_warning(&format!("Gears: {e}"));
        return Status::Err;
    }
    if let Err(e) =
        limits::follow_maxmemory(ctx).and_then(|_| host::command_info::follow_module_changes(ctx))
    {
        ctx.log_warning(&format!("Gears: {e}"));
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

/// Gears allocates with mimalloc, counted (see `gears_core::memory`), not with Redis's
/// allocator: Redis's updates one shared `used_memory` counter on every allocation, and the
/// reader thread and the worker contending on it cost a third of an execution's time. Not with
/// glibc's either: after an execution frees millions of small records, glibc consolidates them
/// at the next large allocation, which took 130 ms inside a reader's hold of the Redis lock.
/// Gears' memory is reported by `INFO` and bounded by `MemoryLimit`.
type Allocator = gears_core::memory::CountingAllocator<mimalloc::MiMalloc>;
const ALLOCATOR: Allocator = gears_core::memory::CountingAllocator(mimalloc::MiMalloc);

/// What the [`gears_module!`] macro expands to uses; not an API.
#[doc(hidden)]
pub mod __private {
    pub use redis_module;
    pub use redis_module::{Context, RedisString, Status};

    pub type Allocator = super::Allocator;
    pub const ALLOCATOR: Allocator = super::ALLOCATOR;

    /// The module's load: its extensions, then the commands, settings and state of Gears.
    pub fn init(
        ctx: &Context,
        args: &[RedisString],
        extensions: Vec<gears_core::extension::Extension>,
    ) -> Status {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            super::init(ctx, args, extensions)
        })) {
            Ok(status) => status,
            Err(_) => {
                ctx.log_warning("Gears: the module failed to load (a panic)");
                Status::Err
            }
        }
    }

    pub fn deinit(ctx: &Context) -> Status {
        super::deinit(ctx)
    }
}

/// Makes the Redis module: Gears with the native extensions given (each an expression of type
/// [`gears_core::extension::Extension`]). Invoke it once, at the root of a `cdylib` crate; the
/// library it builds is loaded with `--loadmodule` like `libgears.so`, with the same module
/// arguments.
///
/// ```ignore
/// gears_module::gears_module!();                             // Gears alone (libgears.so)
/// gears_module::gears_module!(gears_ext_hll::extension());   // Gears + HyperLogLog
/// ```
#[macro_export]
macro_rules! gears_module {
    ($($extension:expr),* $(,)?) => {
        fn __gears_init(
            ctx: &$crate::__private::Context,
            args: &[$crate::__private::RedisString],
        ) -> $crate::__private::Status {
            $crate::__private::init(ctx, args, ::std::vec![$($extension),*])
        }

        fn __gears_deinit(ctx: &$crate::__private::Context) -> $crate::__private::Status {
            $crate::__private::deinit(ctx)
        }

        $crate::__private::redis_module::redis_module! {
            name: "rg",
            version: 1,
            allocator: ($crate::__private::Allocator, $crate::__private::ALLOCATOR),
            data_types: [],
            init: __gears_init,
            deinit: __gears_deinit,
        }
    };
}
