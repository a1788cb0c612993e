//! What `INFO` shows of Gears: the `gears` section, with memory, executions, workers and
//! languages.
//!
//! Redis names a module's sections after the module, `rg` (RedisGears' name, kept so tools that
//! look for RedisGears find Gears): the section is `rg_gears` and its fields start with `rg_`.
//! `INFO rg`, `INFO rg_gears`, `INFO everything` and, through a command filter that renames the
//! argument, `INFO gears` show it.

use std::ffi::{CStr, CString};
use std::os::raw::c_int;

use gears_core::memory::{self, Pool};
use redis_module::{raw, Context};

use crate::executions::{stats, Status};

/// The section's fields, in order.
fn fields(gears: &crate::Gears) -> Vec<(&'static str, i64)> {
    let native = memory::used(Pool::Native).max(0);
    let python = memory::used(Pool::Python).max(0);
    let executions = gears.executions.all();
    let memory_held: i64 = executions
        .iter()
        .filter(|e| e.status() == Status::Running)
        .map(|e| e.control.memory().used().max(0))
        .sum();
    let mut fields = vec![
        ("used_memory", native + python),
        ("used_memory_python", python),
        ("used_memory_native", native),
        ("used_memory_lua", gears_lua::used_memory()),
        ("memory_limit", gears.limits.global() as i64),
        (
            "execution_memory_limit",
            gears.limits.execution(&gears.config) as i64,
        ),
        ("executions", executions.len() as i64),
    ];
    fields.extend(stats::fields(memory_held));
    if crate::cluster::enabled() {
        use std::sync::atomic::Ordering;
        fields.push((
            "cluster_messages_sent",
            crate::cluster::bus::MESSAGES_SENT.load(Ordering::Relaxed) as i64,
        ));
        fields.push((
            "cluster_bytes_sent",
            crate::cluster::bus::BYTES_SENT.load(Ordering::Relaxed) as i64,
        ));
    }
    fields
}

/// The module's `INFO` callback.
unsafe extern "C" fn info(ctx: *mut raw::RedisModuleInfoCtx, _for_crash_report: c_int) {
    let _ = std::panic::catch_unwind(|| {
        let Some(gears) = crate::gears() else {
            return;
        };
        let fields = fields(gears);
        let python_state: &CStr = if gears.python_error.is_none() {
            c"enabled"
        } else {
            c"disabled"
        };
        // SAFETY: the info context Redis passed, used during the callback only.
        unsafe {
            if raw::RedisModule_InfoAddSection.unwrap()(ctx, c"gears".as_ptr())
                != raw::REDISMODULE_OK as c_int
            {
                return;
            }
            for (name, value) in fields {
                let name = CString::new(name).unwrap_or_default();
                raw::RedisModule_InfoAddFieldLongLong.unwrap()(ctx, name.as_ptr(), value);
            }
            raw::RedisModule_InfoAddFieldCString.unwrap()(
                ctx,
                c"python".as_ptr(),
                python_state.as_ptr(),
            );
            stream_lags(ctx);
        }
    });
}

/// The StreamReader registrations shown one by one in `INFO` (more are summed only).
const STREAM_FIELDS: usize = 100;

/// Per StreamReader registration, `stream_<id>:status=OK,backlog=<entries>,last_lag_ms=<ms>,
/// avg_lag_ms=<ms>` (backlog: entries not yet processed); then `stream_backlog`, their sum.
///
/// # Safety
/// `ctx` is the info context of the running callback.
unsafe fn stream_lags(ctx: *mut raw::RedisModuleInfoCtx) {
    let mut total = 0u64;
    for (n, registration) in crate::registrations::all()
        .iter()
        .filter(|r| r.stream.is_some())
        .enumerate()
    {
        let Some(stream) = &registration.stream else {
            continue;
        };
        let backlog = stream.backlog();
        total += backlog;
        if n >= STREAM_FIELDS {
            continue;
        }
        let lag = stream.lag();
        let name = CString::new(format!("stream_{}", registration.id)).unwrap_or_default();
        let status = CString::new(stream.status().name()).unwrap_or_default();
        // SAFETY: the caller's info context; strings live across the calls.
        unsafe {
            raw::RedisModule_InfoBeginDictField.unwrap()(ctx, name.as_ptr());
            raw::RedisModule_InfoAddFieldCString.unwrap()(ctx, c"status".as_ptr(), status.as_ptr());
            raw::RedisModule_InfoAddFieldULongLong.unwrap()(ctx, c"backlog".as_ptr(), backlog);
            raw::RedisModule_InfoAddFieldULongLong.unwrap()(
                ctx,
                c"last_lag_ms".as_ptr(),
                lag.last_ms,
            );
            raw::RedisModule_InfoAddFieldDouble.unwrap()(
                ctx,
                c"avg_lag_ms".as_ptr(),
                lag.average(),
            );
            raw::RedisModule_InfoEndDictField.unwrap()(ctx);
        }
    }
    // SAFETY: as above.
    unsafe {
        raw::RedisModule_InfoAddFieldULongLong.unwrap()(ctx, c"stream_backlog".as_ptr(), total);
    }
}

/// Makes [`info`] the module's `INFO` callback, and `INFO gears` an alias of `INFO rg_gears`.
pub(crate) fn register(ctx: &Context) {
    // SAFETY: registered during load; the filter never unwinds.
    unsafe {
        raw::RedisModule_RegisterInfoFunc.unwrap()(ctx.ctx, Some(info));
        raw::RedisModule_RegisterCommandFilter.unwrap()(
            ctx.ctx,
            Some(info_alias),
            raw::REDISMODULE_CMDFILTER_NOSELF as c_int,
        );
    }
}

/// The argument's bytes (valid while the filter runs).
unsafe fn arg<'a>(fctx: *mut raw::RedisModuleCommandFilterCtx, pos: c_int) -> &'a [u8] {
    // SAFETY: an argument of the filtered command, which outlives the filter call.
    unsafe {
        let string = raw::RedisModule_CommandFilterArgGet.unwrap()(fctx, pos);
        if string.is_null() {
            return &[];
        }
        let mut len = 0usize;
        let ptr = raw::RedisModule_StringPtrLen.unwrap()(string, &mut len);
        std::slice::from_raw_parts(ptr.cast(), len)
    }
}

/// Renames the section `gears` of an `INFO` command to `rg_gears`. Every command passes here:
/// anything but `INFO` is left after one comparison.
unsafe extern "C" fn info_alias(fctx: *mut raw::RedisModuleCommandFilterCtx) {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: the filter context Redis passed, used during the call only.
        unsafe {
            let count = raw::RedisModule_CommandFilterArgsCount.unwrap()(fctx);
            if count < 2 || !arg(fctx, 0).eq_ignore_ascii_case(b"info") {
                return;
            }
            for pos in 1..count {
                if arg(fctx, pos).eq_ignore_ascii_case(b"gears") {
                    let name = b"rg_gears";
                    let replacement = raw::RedisModule_CreateString.unwrap()(
                        std::ptr::null_mut(),
                        name.as_ptr().cast(),
                        name.len(),
                    );
                    raw::RedisModule_CommandFilterArgReplace.unwrap()(fctx, pos, replacement);
                }
            }
        }
    });
}
