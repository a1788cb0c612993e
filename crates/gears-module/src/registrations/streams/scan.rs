//! Finding the streams a registration matches (`SCAN ... TYPE stream`, a page per hold of the
//! Redis lock, on a worker): to start on them (a new registration, the end of loading, a
//! promotion to master, unpause, retry) or to destroy its group on them (unregistered).

use std::os::raw::c_void;
use std::sync::Arc;

use gears_core::control::ExecutionControl;
use gears_core::{Record, RedisAccess};
use redis_module::{raw, Context};

use super::{may_consume, schedule, trigger, Registration, MAIN_THREAD};
use crate::host::{call_internal, subscribe_server_event, Access, Caller, RedisHost};

/// Keys per `SCAN` page.
const PAGE: &str = "1000";

/// Subscribes to role changes (a replica promoted runs its stream registrations), at load on
/// the main thread.
pub(crate) fn subscribe(ctx: &Context) -> Result<(), String> {
    let _ = MAIN_THREAD.set(std::thread::current().id());
    subscribe_server_event(
        ctx,
        raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED,
        Some(on_role_changed),
        "replication role changes",
    )?;
    subscribe_server_event(
        ctx,
        raw::REDISMODULE_EVENT_FLUSHDB,
        Some(on_databases),
        "flushes",
    )?;
    subscribe_server_event(
        ctx,
        raw::REDISMODULE_EVENT_SWAPDB,
        Some(on_databases),
        "swapdb",
    )
}

/// The data of a flush or swapdb event: its version, then the database numbers.
#[repr(C)]
struct DatabasesInfo {
    version: u64,
    first: i32,
    second: i32,
}

unsafe extern "C" fn on_databases(
    _ctx: *mut raw::RedisModuleCtx,
    event: raw::RedisModuleEvent,
    subevent: u64,
    data: *mut c_void,
) {
    let _ = std::panic::catch_unwind(|| {
        if data.is_null() {
            return;
        }
        // SAFETY: FlushInfo {version, sync, dbnum} and SwapDbInfo {version, dbnum_first,
        // dbnum_second} share this layout.
        let info = unsafe { &*data.cast::<DatabasesInfo>() };
        let dbs = if event.id == raw::REDISMODULE_EVENT_FLUSHDB {
            // After the flush, not before.
            if subevent != raw::REDISMODULE_SUBEVENT_FLUSHDB_END {
                return;
            }
            vec![info.second]
        } else {
            vec![info.first, info.second]
        };
        super::databases_changed(&dbs);
    });
}

unsafe extern "C" fn on_role_changed(
    _ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    if subevent == raw::REDISMODULE_EVENT_REPLROLECHANGED_NOW_MASTER {
        let _ = std::panic::catch_unwind(super::after_loading);
    }
}

/// Starts the registration on every stream it matches: each cursor first runs its group's
/// pending entries, then every entry already there (full batch or not), then follows events.
pub(super) fn restart(registration: &Arc<Registration>) {
    let Some(state) = &registration.stream else {
        return;
    };
    state.recover_all(true);
    let Some(gears) = crate::gears() else {
        return;
    };
    // One queued scan serves every restart until it starts (2,000 FLUSHDBs queued 2,000 scans
    // of the whole keyspace, and the registration's new entries waited minutes behind them).
    if state
        .rescan_queued
        .swap(true, std::sync::atomic::Ordering::AcqRel)
    {
        return;
    }
    let registration = registration.clone();
    gears.workers.submit(move || {
        if let Some(state) = &registration.stream {
            state
                .rescan_queued
                .store(false, std::sync::atomic::Ordering::Release);
        }
        each_stream(&registration, true, |ctx, db, key| {
            let Some(state) = &registration.stream else {
                return;
            };
            let cursor = match state.cursor(db, key) {
                Some(cursor) => cursor,
                None => {
                    if !may_consume(ctx, &registration, key) {
                        return;
                    }
                    state.add_cursor(Arc::new(super::Cursor {
                        db,
                        key: key.to_vec(),
                        state: std::sync::Mutex::new(super::CursorState {
                            flush: true,
                            ..Default::default()
                        }),
                    }))
                }
            };
            schedule(&registration, &cursor, false);
        });
        // Cursors of streams that are gone (deleted while it did not run) start when a new
        // entry arrives; those still there were just scheduled.
        if let Some(state) = &registration.stream {
            for cursor in state.cursors() {
                schedule(&registration, &cursor, false);
            }
        }
    });
}

/// Destroys the registration's group on the streams it matches (it was unregistered), except
/// on those `successors` (its upgrades, which go on with the group) match.
pub(super) fn destroy_groups(registration: &Arc<Registration>, successors: Vec<Arc<Registration>>) {
    let (Some(gears), Some(trigger)) = (crate::gears(), trigger(registration)) else {
        return;
    };
    let group = trigger.group.clone();
    let registration = registration.clone();
    gears.workers.submit(move || {
        let mut streams = Vec::new();
        each_stream(&registration, false, |_, db, key| {
            let kept = successors
                .iter()
                .any(|s| super::trigger(s).is_some_and(|t| t.matches_key(key)));
            if !kept {
                streams.push((db, key.to_vec()))
            }
        });
        for (db, key) in streams {
            let Some(gears) = crate::gears() else {
                return;
            };
            let caller = Caller {
                user: registration.user.clone(),
                db,
            };
            let host = RedisHost::new(
                &caller,
                Access::ReadWrite,
                ExecutionControl::new(gears.execution_limits()),
            );
            let args: Vec<Vec<u8>> = vec![
                b"XGROUP".to_vec(),
                b"DESTROY".to_vec(),
                key,
                group.as_bytes().to_vec(),
            ];
            let _ = super::as_acknowledgement(|| host.execute(&args));
            host.finish();
        }
    });
}

/// Calls `found` under the Redis lock for each stream (database, name) the registration
/// matches, on a master; on a worker thread, a `SCAN` page per hold of the lock. `live`: stop
/// if the registration is removed meanwhile.
fn each_stream(
    registration: &Registration,
    live: bool,
    mut found: impl FnMut(&Context, i32, &[u8]),
) {
    let (Some(gears), Some(trigger)) = (crate::gears(), trigger(registration)) else {
        return;
    };
    let pattern = scan_pattern(&trigger.prefix);
    let control = ExecutionControl::new(gears.execution_limits());
    let host = RedisHost::new(
        &Caller {
            user: registration.user.clone(),
            db: 0,
        },
        Access::ReadOnly,
        control,
    );
    let databases = host.with_lock(|ctx| {
        match call_internal(
            ctx,
            &[b"CONFIG".to_vec(), b"GET".to_vec(), b"databases".to_vec()],
        ) {
            Ok(Record::List(items)) => items
                .get(1)
                .and_then(|v| match v {
                    Record::String(s) => s.parse::<i32>().ok(),
                    Record::Bytes(b) => String::from_utf8_lossy(b).parse::<i32>().ok(),
                    _ => None,
                })
                .unwrap_or(16),
            _ => 16,
        }
    });
    host.finish();
    for db in 0..databases.max(1) {
        let host = RedisHost::new(
            &Caller {
                user: registration.user.clone(),
                db,
            },
            Access::ReadOnly,
            ExecutionControl::new(gears.execution_limits()),
        );
        let mut cursor = b"0".to_vec();
        loop {
            let next = host.with_batch_lock(|ctx| {
                if !super::consume::is_master_now(ctx) || (live && registration.is_removed()) {
                    return None;
                }
                // A database the server does not have here (a cluster: Redis has only 0, Valkey
                // `cluster-databases`) is not selected: the context stays on another one.
                // SAFETY: plain queries of the context's database.
                if unsafe { raw::RedisModule_GetSelectedDb.unwrap()(ctx.ctx) } != db
                    || unsafe { raw::RedisModule_DbSize.unwrap()(ctx.ctx) } == 0
                {
                    return None;
                }
                let page = call_internal(
                    ctx,
                    &[
                        b"SCAN".to_vec(),
                        cursor.clone(),
                        b"MATCH".to_vec(),
                        pattern.clone(),
                        b"COUNT".to_vec(),
                        PAGE.as_bytes().to_vec(),
                        b"TYPE".to_vec(),
                        b"stream".to_vec(),
                    ],
                );
                let Ok(Record::List(mut page)) = page else {
                    return None;
                };
                if page.len() != 2 {
                    return None;
                }
                let keys = page.pop();
                let next = bytes(page.pop()?)?;
                if let Some(Record::List(keys)) = keys {
                    for key in keys {
                        if let Some(key) = bytes(key) {
                            if trigger.matches_key(&key) {
                                found(ctx, db, &key);
                            }
                        }
                    }
                }
                Some(next)
            });
            match next {
                Some(next) if next != b"0" => cursor = next,
                _ => break,
            }
        }
        host.finish();
    }
}

fn bytes(record: Record) -> Option<Vec<u8>> {
    match record {
        Record::String(s) => Some(s.into_bytes()),
        Record::Bytes(b) => Some(b),
        _ => None,
    }
}

/// The `SCAN MATCH` pattern of a prefix (`s*`) or exact name (`s`): glob characters escaped.
fn scan_pattern(prefix: &[u8]) -> Vec<u8> {
    let (literal, star) = match prefix.split_last() {
        Some((b'*', rest)) => (rest, true),
        _ => (prefix, false),
    };
    let mut pattern = Vec::with_capacity(literal.len() + 2);
    for &byte in literal {
        if matches!(byte, b'*' | b'?' | b'[' | b']' | b'\\') {
            pattern.push(b'\\');
        }
        pattern.push(byte);
    }
    if star {
        pattern.push(b'*');
    }
    pattern
}

#[cfg(test)]
mod tests {
    use super::scan_pattern;

    #[test]
    fn patterns_escape_glob_characters() {
        assert_eq!(scan_pattern(b"audit*"), b"audit*");
        assert_eq!(scan_pattern(b"a?b"), b"a\\?b");
        assert_eq!(scan_pattern(b"a[1]*"), b"a\\[1\\]*");
        assert_eq!(scan_pattern(b"*"), b"*");
    }
}
