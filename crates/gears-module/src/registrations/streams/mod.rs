//! StreamReader registrations: each runs its pipeline over the new entries of the streams it
//! matches, in batches, with at-least-once delivery.
//!
//! **Positions.** A registration reads each stream through a consumer group of its own
//! (`__gears_consumer_group__:<session>:<n>`, consumer `__gears_client__`): two registrations
//! on one stream each see every entry (RedisGears #380 split them, sharing one group). The
//! group lives in the stream, so it is saved with it (RDB, AOF) and replicated. The group is
//! named after the session and the registration's place in its script, so an `UPGRADE` goes
//! on where the old code stopped; `RG.UNREGISTER` destroys it.
//!
//! **Acknowledgements.** A batch is the entries after the group's last delivered id, read
//! straight from the keyspace (the module stream iterator), run as one execution, and
//! acknowledged only when it succeeded (or failed under `onFailedPolicy='continue'`), by moving
//! the group past it (`XGROUP SETID`). The group's position is thus the last entry processed:
//! after a crash, the batch that was in flight runs again; nothing acknowledged runs twice and
//! nothing unacknowledged is lost. The entries never enter the group's pending list (reading
//! with `XREADGROUP` inserted each one there and propagated an `XCLAIM` per entry: most of a
//! batch's reading time). Whenever a registration starts on a stream (registration, the end of
//! loading, promotion to master, unpause, retry), it first runs what its consumer's pending
//! list holds (`XREADGROUP ... 0`: entries an older Gears read and did not acknowledge).
//!
//! **Trimming.** With `trimStream`, the entries every live StreamReader registration on the
//! stream has processed are removed (`XTRIM MINID`), never one another still has to read.
//!
//! **Backpressure.** The stream is the queue: a registration keeps per stream a count of the
//! entries not yet read and a flag, never the entries; a registration that falls behind reads
//! them when it gets to them. Its lag (entries, and ms from an entry's id to its processing)
//! shows in `RG.DUMPREGISTRATIONS` and `INFO`.
//!
//! Threads: events (and so the counts) come on the thread that ran `XADD`, holding the Redis
//! lock; one job at a time per registration and stream reads and runs batches (a worker for
//! `async`, Redis's main thread for `sync`); timers (`duration`, retries) are armed on the main
//! thread.

mod consume;
mod groups;
mod reader;
mod scan;
mod schedule;
mod state;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::thread::ThreadId;
use std::time::Instant;

use gears_core::registration::{RegistrationSpec, StreamTrigger, Trigger};
use redis_module::{raw, Context};

use super::{lock, Registration};

pub(crate) use scan::subscribe;
pub(crate) use schedule::{pause, unpause};
use schedule::{rearm, retry_soon, schedule, stop};
use state::CursorState;
pub(crate) use state::{Cursor, Status, StreamState};

/// The consumer that reads for Gears in each group, as RedisGears named it.
pub(crate) const CONSUMER: &str = "__gears_client__";
/// The start of every Gears group's name, as RedisGears named its one group.
pub(crate) const GROUP_PREFIX: &str = "__gears_consumer_group__";

/// The StreamReader registrations, rebuilt with the registry: events ask on every write.
static STREAM_REGISTRATIONS: RwLock<Option<Arc<Vec<Arc<Registration>>>>> = RwLock::new(None);

/// Rebuilds the list of StreamReader registrations from the registry.
pub(super) fn rebuild(list: &[Arc<Registration>]) {
    let streams: Vec<Arc<Registration>> = list
        .iter()
        .filter(|r| r.stream.is_some())
        .cloned()
        .collect();
    ANY.store(!streams.is_empty(), Ordering::Relaxed);
    *STREAM_REGISTRATIONS
        .write()
        .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(streams));
}

/// True if some StreamReader registration exists (the event callback's fast path).
pub(super) fn any() -> bool {
    ANY.load(Ordering::Relaxed)
}

static ANY: AtomicBool = AtomicBool::new(false);

fn registrations() -> Arc<Vec<Arc<Registration>>> {
    STREAM_REGISTRATIONS
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .unwrap_or_default()
}

/// The trigger of a StreamReader registration.
pub(crate) fn trigger(registration: &Registration) -> Option<&StreamTrigger> {
    match &registration.spec.trigger {
        Trigger::Stream(trigger) => Some(trigger),
        _ => None,
    }
}

/// Names the consumer group of each StreamReader registration of a session's script (all of
/// them, in the script's order): the session and the registration's place in the script.
pub(crate) fn name_groups(session_id: &str, specs: &mut [RegistrationSpec]) {
    for (index, spec) in specs.iter_mut().enumerate() {
        if let Trigger::Stream(trigger) = &mut spec.trigger {
            trigger.group = format!("{GROUP_PREFIX}:{session_id}:{index}");
        }
    }
}

static MAIN_THREAD: OnceLock<ThreadId> = OnceLock::new();

fn on_main_thread() -> bool {
    MAIN_THREAD.get() == Some(&std::thread::current().id())
}

/// A keyspace event, on the thread that raised it (holding the Redis lock), on a master that
/// is not loading.
pub(super) fn on_event(ctx: &Context, event: &str, key: &[u8], db: i32) {
    let list = registrations();
    if list.is_empty() {
        return;
    }
    for registration in list.iter() {
        let (Some(trigger), Some(state)) = (trigger(registration), &registration.stream) else {
            continue;
        };
        if !trigger.matches_key(key) || registration.is_removed() {
            continue;
        }
        match event {
            "xadd" => {
                let Some(cursor) = cursor_for(ctx, registration, state, db, key) else {
                    continue;
                };
                {
                    let mut cursor_state = lock(&cursor.state);
                    if let Some(n) = &mut cursor_state.undelivered {
                        *n += 1;
                    }
                    cursor_state.waiting_since.get_or_insert_with(Instant::now);
                }
                schedule(registration, &cursor, true);
            }
            // The stream is gone (or no longer a stream): so is the registration's place in it.
            "del" | "expired" | "evicted" | "rename_from" | "move_from" | "set" => {
                forget(state, db, key)
            }
            // A client moved or destroyed a group on the stream: a registration whose group it
            // was starts again from the group's new position (to replay the stream, say), or
            // from the start if destroyed (the group is made again). Gears' own moves are not
            // news; another group's are not either.
            "xgroup-setid" | "xgroup-destroy" if !acknowledging() => {
                let Some(cursor) = state.cursor(db, key) else {
                    continue;
                };
                let now = reader::group_position(ctx, key, &trigger.group);
                {
                    let mut cursor_state = lock(&cursor.state);
                    // Compared with what Gears last read from or wrote to the group (not known:
                    // the next batch reads the group's position anyway).
                    let moved = match (&now, &cursor_state.group_seen) {
                        (_, None) => false,
                        (None, Some(_)) => true,
                        (Some(now), Some(seen)) => now != seen,
                    };
                    if !moved {
                        continue;
                    }
                    cursor_state.stream_replaced();
                    cursor_state.flush = true;
                }
                schedule(registration, &cursor, true);
            }
            // A key arrived whole: if a stream, run what it holds; else it has no place in it.
            "rename_to" | "restore" | "copy_to" | "move_to" => {
                if !is_stream(ctx, key) {
                    forget(state, db, key);
                    continue;
                }
                let Some(cursor) = cursor_for(ctx, registration, state, db, key) else {
                    continue;
                };
                {
                    let mut cursor_state = lock(&cursor.state);
                    cursor_state.stream_replaced();
                    cursor_state.flush = true;
                }
                schedule(registration, &cursor, true);
            }
            _ => {}
        }
    }
}

thread_local! {
    /// True while this thread moves or destroys a group for Gears (its event is not news).
    static ACKNOWLEDGING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` (which moves or destroys a group for Gears) with its `xgroup-setid` and
/// `xgroup-destroy` events marked as Gears' own.
pub(super) fn as_acknowledgement<R>(f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            ACKNOWLEDGING.with(|flag| flag.set(false));
        }
    }
    ACKNOWLEDGING.with(|flag| flag.set(true));
    // Cleared even if `f` unwinds: a flag left set would hide clients' group changes.
    let _reset = Reset;
    f()
}

fn acknowledging() -> bool {
    ACKNOWLEDGING.with(|flag| flag.get())
}

/// True if `key` (in the context's database) holds a stream.
fn is_stream(ctx: &Context, key: &[u8]) -> bool {
    let handle = crate::readers::open_key(ctx, key);
    let stream = crate::readers::key_type(handle) as isize == raw::REDISMODULE_KEYTYPE_STREAM;
    crate::readers::close_key(handle);
    stream
}

/// The registration's cursor on a stream, made if new, unless its user may not read the stream
/// through the group (checked once per stream, under the Redis lock).
fn cursor_for(
    ctx: &Context,
    registration: &Registration,
    state: &StreamState,
    db: i32,
    key: &[u8],
) -> Option<Arc<Cursor>> {
    if let Some(cursor) = state.cursor(db, key) {
        return Some(cursor);
    }
    if !may_consume(ctx, registration, key) {
        return None;
    }
    Some(state.add_cursor(Arc::new(Cursor {
        db,
        key: key.to_vec(),
        state: Mutex::new(CursorState::default()),
    })))
}

/// Whether the registration's user may read the stream through its group.
fn may_consume(ctx: &Context, registration: &Registration, key: &[u8]) -> bool {
    let group = trigger(registration).map_or("", |t| t.group.as_str());
    crate::host::may_run(ctx, &registration.user, &reader::xreadgroup(group, key))
}

/// True if the registration's user may read the stream and make and move its group there: a
/// registration that can not make its group never reads, so it holds no trimming back.
fn may_keep_a_group(ctx: &Context, registration: &Registration, key: &[u8]) -> bool {
    let group = trigger(registration).map_or("", |t| t.group.as_str());
    let user = &registration.user;
    may_consume(ctx, registration, key)
        && crate::host::may_run(
            ctx,
            user,
            &[b"XGROUP", b"CREATE", key, group.as_bytes(), b"0"],
        )
        && crate::host::may_run(
            ctx,
            user,
            &[b"XGROUP", b"SETID", key, group.as_bytes(), b"0"],
        )
}

/// Drops `cursor` if its stream is gone (deleted, or replaced by a key of another type) and it
/// is still the registration's cursor there; true if the stream is gone. The caller holds the
/// Redis lock, so no event can come between the check and the removal. A cursor left behind
/// kept its key name for ever (a client adding and deleting streams grew Gears by their names).
fn drop_if_gone(ctx: &Context, state: &StreamState, cursor: &Arc<Cursor>) -> bool {
    if is_stream(ctx, &cursor.key) {
        return false;
    }
    let mut cursors = lock(&state.cursors);
    if let Some(streams) = cursors.get_mut(&cursor.db) {
        if streams
            .get(cursor.key.as_slice())
            .is_some_and(|current| Arc::ptr_eq(current, cursor))
        {
            streams.remove(cursor.key.as_slice());
            if streams.is_empty() {
                cursors.remove(&cursor.db);
            }
        }
    }
    true
}

/// Drops the cursor of a stream that was deleted (one whose job runs counts again instead).
fn forget(state: &StreamState, db: i32, key: &[u8]) {
    let mut cursors = lock(&state.cursors);
    let Some(streams) = cursors.get_mut(&db) else {
        return;
    };
    let Some(cursor) = streams.get(key) else {
        return;
    };
    let mut cursor_state = lock(&cursor.state);
    if cursor_state.busy {
        cursor_state.stream_replaced();
        cursor_state.flush = false;
    } else {
        drop(cursor_state);
        streams.remove(key);
        if streams.is_empty() {
            cursors.remove(&db);
        }
    }
}

pub(super) fn started(added: &[Arc<Registration>]) {
    for registration in added.iter().filter(|r| r.stream.is_some()) {
        scan::restart(registration);
    }
}

/// Registrations that left while their upgrade goes on with their group: the upgrade's jobs
/// on a stream wait until theirs there are over (else the upgrade would read the batch in
/// flight from the group's pending list and run it a second time).
static HANDED_OVER: Mutex<Vec<Arc<Registration>>> = Mutex::new(Vec::new());

/// A registration left: its group is destroyed on its streams unless a live registration (its
/// upgrade) goes on with it.
pub(super) fn retired(registration: &Arc<Registration>) {
    let Some(trigger) = trigger(registration) else {
        return;
    };
    let successors: Vec<Arc<Registration>> = super::all()
        .iter()
        .filter(|r| self::trigger(r).is_some_and(|t| t.group == trigger.group))
        .cloned()
        .collect();
    if !successors.is_empty() {
        let mut handed = lock(&HANDED_OVER);
        handed.retain(|old| old.stream.as_ref().is_some_and(|s| s.any_busy()));
        handed.push(registration.clone());
    }
    // Where the upgrade does not go on with the group (it reads other streams), it goes.
    let same_streams = !successors.is_empty()
        && successors
            .iter()
            .all(|r| self::trigger(r).is_some_and(|t| t.prefix == trigger.prefix));
    if !same_streams {
        scan::destroy_groups(registration, successors);
    }
}

/// True while a registration that left, whose group `registration` goes on with, still runs
/// a job on the stream.
fn predecessor_busy(registration: &Registration, cursor: &Cursor) -> bool {
    let Some(trigger) = trigger(registration) else {
        return false;
    };
    lock(&HANDED_OVER).iter().any(|old| {
        old.id != registration.id
            && self::trigger(old).is_some_and(|t| t.group == trigger.group)
            && old.stream.as_ref().is_some_and(|s| {
                s.cursor(cursor.db, &cursor.key)
                    .is_some_and(|c| lock(&c.state).busy)
            })
    })
}

/// `FLUSHDB`/`FLUSHALL` (`db` -1) and `SWAPDB`: the cursors of those databases go (idle ones;
/// a running one counts again), and every registration looks for its streams again.
pub(crate) fn databases_changed(dbs: &[i32]) {
    for registration in registrations().iter() {
        let Some(state) = &registration.stream else {
            continue;
        };
        {
            let mut cursors = lock(&state.cursors);
            cursors.retain(|db, streams| {
                if !dbs.contains(&-1) && !dbs.contains(db) {
                    return true;
                }
                streams.retain(|_, cursor| {
                    let mut cursor_state = lock(&cursor.state);
                    if cursor_state.busy {
                        cursor_state.stream_replaced();
                        true
                    } else {
                        false
                    }
                });
                !streams.is_empty()
            });
        }
        scan::restart(registration);
    }
}

/// The end of loading (a restart, `DEBUG RELOAD`, a replica's full sync): the streams are as
/// loaded, so every registration counts again and runs its pending entries.
pub(crate) fn after_loading() {
    for registration in registrations().iter() {
        scan::restart(registration);
    }
}

/// The ids' time parts: an entry id `ms-seq`.
fn id_millis(id: &str) -> Option<u64> {
    id.split_once('-').and_then(|(ms, _)| ms.parse().ok())
}

/// The id right after `id` (for `XTRIM MINID`, which keeps ids from it on).
fn next_id(id: &str) -> Option<String> {
    let (ms, seq) = id.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    Some(match seq.checked_add(1) {
        Some(seq) => format!("{ms}-{seq}"),
        None => format!("{}-0", ms.checked_add(1)?),
    })
}

/// Milliseconds since the Unix epoch.
fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(next_id("5-1").as_deref(), Some("5-2"));
        assert_eq!(next_id(&format!("5-{}", u64::MAX)).as_deref(), Some("6-0"));
        assert_eq!(next_id("x"), None);
        assert_eq!(id_millis("1700000000000-3"), Some(1_700_000_000_000));
    }
}
