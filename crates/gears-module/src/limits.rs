//! Gears' memory limits.
//!
//! `MemoryLimit` bounds all of Gears (the Python heap, Lua and Rhai states, records held by
//! executions); `ExecutionMemoryLimit` bounds one execution. Both default to automatic (0): the
//! server's `maxmemory` when it has one (Gears may then use as much memory as the data set, so
//! a server sized for twice its `maxmemory` stays safe), otherwise half of the machine's
//! memory. Gears follows `CONFIG SET maxmemory` as it happens.

use std::os::raw::c_void;
use std::sync::atomic::{AtomicU64, Ordering};

use gears_core::memory;
use redis_module::{raw, Context};

use crate::config::{
    Config, ATOMIC_BLOCK_MAX_TIME, EXECUTION_MAX_ERRORS, EXECUTION_MAX_RECORDS,
    EXECUTION_MAX_REPLY_SIZE, EXECUTION_MAX_RUN_TIME, EXECUTION_MEMORY_LIMIT, MEMORY_LIMIT,
};

/// The memory limits in force.
pub(crate) struct Limits {
    /// The server's `maxmemory` (0: none).
    maxmemory: AtomicU64,
    /// The effective `MemoryLimit`, in bytes.
    global: AtomicU64,
}

impl Limits {
    pub fn new(ctx: &Context) -> Self {
        Limits {
            maxmemory: AtomicU64::new(read_maxmemory(ctx)),
            global: AtomicU64::new(0),
        }
    }

    /// Recomputes the effective limits from the settings and `maxmemory`.
    pub fn apply(&self, config: &Config) {
        let configured = config.integer(MEMORY_LIMIT).max(0) as u64;
        let global = if configured > 0 {
            configured
        } else {
            match self.maxmemory.load(Ordering::Relaxed) {
                0 => physical_memory() / 2,
                maxmemory => maxmemory,
            }
        };
        self.global.store(global, Ordering::Relaxed);
        memory::set_global_limit(global);
    }

    /// The effective `MemoryLimit`.
    pub fn global(&self) -> u64 {
        self.global.load(Ordering::Relaxed)
    }

    /// The effective `ExecutionMemoryLimit`.
    pub fn execution(&self, config: &Config) -> u64 {
        match config.integer(EXECUTION_MEMORY_LIMIT).max(0) as u64 {
            0 => self.global(),
            limit => limit,
        }
    }

    pub fn for_execution(&self, config: &Config) -> gears_core::control::Limits {
        let count = |name| config.integer(name).max(0) as u64;
        gears_core::control::Limits {
            atomic_max: config.duration(ATOMIC_BLOCK_MAX_TIME),
            memory: self.execution(config),
            timeout: config.duration(EXECUTION_MAX_RUN_TIME),
            max_records: count(EXECUTION_MAX_RECORDS),
            max_reply_bytes: count(EXECUTION_MAX_REPLY_SIZE),
            max_errors: count(EXECUTION_MAX_ERRORS),
        }
    }
}

/// The machine's physical memory in bytes.
fn physical_memory() -> u64 {
    // SAFETY: plain sysconf queries.
    let (pages, page_size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (pages.max(0) as u64).saturating_mul(page_size.max(0) as u64)
}

/// `CONFIG GET maxmemory`, in bytes.
fn read_maxmemory(ctx: &Context) -> u64 {
    match crate::host::call_internal(
        ctx,
        &[b"CONFIG".to_vec(), b"GET".to_vec(), b"maxmemory".to_vec()],
    ) {
        Ok(gears_core::Record::List(pair)) => match pair.get(1) {
            Some(gears_core::Record::String(value)) => value.parse().unwrap_or(0),
            _ => 0,
        },
        _ => 0,
    }
}

unsafe extern "C" fn config_changed(
    ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    _subevent: u64,
    _data: *mut c_void,
) {
    let _ = std::panic::catch_unwind(|| {
        if let Some(gears) = crate::gears() {
            let ctx = Context::new(ctx);
            gears
                .limits
                .maxmemory
                .store(read_maxmemory(&ctx), Ordering::Relaxed);
            gears.limits.apply(&gears.config);
        }
    });
}

/// Follows `CONFIG SET` of `maxmemory` (the config-change server event).
pub(crate) fn follow_maxmemory(ctx: &Context) -> Result<(), String> {
    crate::host::subscribe_server_event(
        ctx,
        raw::REDISMODULE_EVENT_CONFIG,
        Some(config_changed),
        "configuration changes",
    )
}
