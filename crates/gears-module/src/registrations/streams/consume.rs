//! A job on one registration's cursor in one stream: recover the group's pending entries if
//! needed, then run batches while one is ready; acknowledge and trim what succeeded; apply
//! `onFailedPolicy` to what failed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gears_core::control::ExecutionControl;
use gears_core::registration::{OnFailed, StreamTrigger};
use gears_core::{ExecutionMode, ExecutionOutcome, GearsError, Record, RecordReader, RedisAccess};

use redis_module::{raw, Context};

use super::groups::{groups, parse_groups, text};
use super::reader::{Batch, GroupReader, Source};
use super::{
    id_millis, lock, next_id, now_millis, rearm, stop, trigger, Cursor, Registration, Status,
};
use crate::host::{call_internal, Access, Caller, RedisHost, SyncRun};
use crate::readers::{count_after, parse_stream_id};

/// Batches one job runs before it lets other jobs have the worker (`async`) or the main thread
/// (`sync`).
const BATCHES_PER_JOB: usize = 16;
/// Ids per `XACK`.
const ACK_CHUNK: usize = 1000;

/// How a batch ended, for the job.
enum Ended {
    /// Nothing to read.
    Empty,
    /// Ran (and was acknowledged or not): go on.
    Ran,
    /// The group is gone (the stream was deleted, flushed or made again, or the group
    /// destroyed): the cursor recovers (makes the group again) at its next turn.
    NoGroup,
    /// The job stops: the registration stopped, or the stream can not be read.
    Stop,
}

/// Runs the cursor's ready batches; clears `busy` when done and lets the cursor run again if
/// more became ready.
pub(super) fn job(registration: &Arc<Registration>, cursor: &Arc<Cursor>) {
    let access = Access::ReadWrite;
    let sync = registration.mode() == ExecutionMode::Sync;
    // A sync job runs on Redis's main thread, which holds the lock.
    let _sync = sync.then(SyncRun::enter);
    if !sync {
        crate::executions::stats::worker_busy();
    }
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_batches(registration, cursor, access)
    }));
    if outcome.is_err() {
        lock(&cursor.state).undelivered = None;
    }
    lock(&cursor.state).busy = false;
    if !sync {
        crate::executions::stats::worker_free();
    }
    rearm(registration, cursor);
}

fn run_batches(registration: &Arc<Registration>, cursor: &Arc<Cursor>, access: Access) {
    let Some(trigger) = trigger(registration) else {
        return;
    };
    for _ in 0..BATCHES_PER_JOB {
        if !may_run(registration) {
            return;
        }
        let recover = lock(&cursor.state).undelivered.is_none();
        if recover {
            if !recover_pending(registration, trigger, cursor, access) {
                return;
            }
            continue;
        }
        {
            let mut state = lock(&cursor.state);
            let waited = state
                .waiting_since
                .is_some_and(|t| t.elapsed() >= Duration::from_millis(trigger.duration_ms));
            let ready = match state.undelivered {
                Some(0) | None => false,
                Some(n) => state.flush || n >= trigger.batch || (trigger.duration_ms > 0 && waited),
            };
            if !ready {
                state.flush = false;
                return;
            }
        }
        match run_batch(registration, trigger, cursor, Source::New, access) {
            Ended::Ran => {}
            Ended::NoGroup => no_group(cursor),
            Ended::Empty => {
                lock(&cursor.state).flush = false;
                return;
            }
            Ended::Stop => return,
        }
    }
}

/// The group (or its stream) is gone: the cursor recovers (makes it again) at its next turn.
fn no_group(cursor: &Cursor) {
    let mut state = lock(&cursor.state);
    state.undelivered = None;
    state.position = None;
    state.group_seen = None;
}

/// True while the registration may run batches: live, status OK, on a master.
fn may_run(registration: &Registration) -> bool {
    let running = registration
        .stream
        .as_ref()
        .is_some_and(|s| s.status() == Status::Ok);
    running && !registration.is_removed() && is_master()
}

/// True on a master that is not loading (a hint outside the lock: a write on a replica is
/// refused anyway).
fn is_master() -> bool {
    crate::gears().is_some_and(|gears| is_master_now(&Context::new(gears.log_context.0)))
}

/// True on a master that is not loading.
pub(super) fn is_master_now(ctx: &Context) -> bool {
    // SAFETY: a plain query of the server's role.
    let flags = unsafe { raw::RedisModule_GetContextFlags.unwrap()(ctx.ctx) } as u32;
    flags & raw::REDISMODULE_CTX_FLAGS_MASTER != 0
        && flags & raw::REDISMODULE_CTX_FLAGS_LOADING == 0
}

/// A host for the registration's own stream commands (the group, acknowledgements, trimming),
/// as its user.
fn bookkeeping_host(registration: &Registration, cursor: &Cursor) -> Option<RedisHost> {
    let gears = crate::gears()?;
    let caller = Caller {
        user: registration.user.clone(),
        db: cursor.db,
    };
    let control = ExecutionControl::new(gears.execution_limits());
    Some(RedisHost::new(&caller, Access::ReadWrite, control))
}

fn command(words: &[&[u8]]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.to_vec()).collect()
}

/// Makes sure the group exists (at the stream's start: entries already there are processed),
/// runs the group's pending entries, then counts the entries not yet read. False: the job
/// stops (the stream is gone or may not be read, or a batch stopped the registration).
fn recover_pending(
    registration: &Arc<Registration>,
    trigger: &StreamTrigger,
    cursor: &Arc<Cursor>,
    access: Access,
) -> bool {
    let Some(host) = bookkeeping_host(registration, cursor) else {
        return false;
    };
    let key = cursor.key.as_slice();
    let group = trigger.group.as_bytes();
    let created = host.execute(&command(&[b"XGROUP", b"CREATE", key, group, b"0"]));
    host.finish();
    match created {
        // A new group, at the stream's start.
        Ok(_) => {
            let mut state = lock(&cursor.state);
            state.position = None;
            state.group_seen = None;
        }
        Err(GearsError::Redis(e)) if e.starts_with("BUSYGROUP") => {}
        Err(e) => {
            let error = e.to_string();
            // Writes paused (CLIENT PAUSE, a failover): again once they may be.
            if paused(&error) {
                super::retry_soon(registration, cursor);
                return false;
            }
            // No stream (deleted meanwhile, or another type now): the cursor goes (an XADD
            // makes a new one). Else the user may no longer create the group.
            let gone = match (&registration.stream, bookkeeping_host(registration, cursor)) {
                (Some(state), Some(host)) => {
                    let gone = host.with_lock(|ctx| super::drop_if_gone(ctx, state, cursor));
                    host.finish();
                    gone
                }
                _ => false,
            };
            if !gone {
                registration.record_run(Duration::ZERO, Some(error), false);
                note_unreadable(registration, trigger, cursor);
            }
            lock(&cursor.state).undelivered = Some(0);
            return false;
        }
    }
    // At most a job's worth of batches: a pipeline that puts entries back in the pending list
    // (it reads the group, or restores its stream with them) would otherwise hold a sync job
    // on the main thread for ever. The job ends, and the cursor, still to recover, runs again
    // at the next turn (clients are served in between).
    let mut batches = 0;
    loop {
        if !may_run(registration) {
            return false;
        }
        if batches == BATCHES_PER_JOB {
            return false;
        }
        batches += 1;
        match run_batch(registration, trigger, cursor, Source::Pending, access) {
            Ended::Ran => continue,
            Ended::Empty => break,
            // Destroyed meanwhile: made again at the job's next turn (at most a few per job).
            Ended::NoGroup => {
                no_group(cursor);
                return true;
            }
            Ended::Stop => return false,
        }
    }
    let Some(host) = bookkeeping_host(registration, cursor) else {
        return false;
    };
    // Counted under the lock, so that the events after it add to the right count.
    let counted = host.with_lock(|ctx| {
        let count = undelivered(ctx, &host, key, &trigger.group);
        if let Some(count) = count {
            let mut state = lock(&cursor.state);
            state.undelivered = Some(count);
            state.unreadable = None;
            if count > 0 && state.waiting_since.is_none() {
                state.waiting_since = Some(std::time::Instant::now());
            }
        }
        count
    });
    host.finish();
    counted.is_some()
}

/// The most entries counted one by one at a recovery (a larger backlog counts as this many, and
/// is counted again once they are read).
const COUNT_CAP: u64 = 10_000;

/// The entries after the group's position: its `lag` (`XINFO GROUPS`) when the server can
/// tell, else counted (the group moves with `XGROUP SETID`, after which the server can tell
/// only at the stream's ends); the stream's length without the group. The caller holds the lock.
fn undelivered(ctx: &Context, host: &RedisHost, key: &[u8], group: &str) -> Option<u64> {
    count_waiting(ctx, key, group, &|args: &[Vec<u8>]| host.execute(args))
}

/// [`undelivered`], with the commands run by `call`.
fn count_waiting(
    ctx: &Context,
    key: &[u8],
    group: &str,
    call: &dyn Fn(&[Vec<u8>]) -> gears_core::Result<Record>,
) -> Option<u64> {
    let groups = parse_groups(call(&command(&[b"XINFO", b"GROUPS", key])).ok()?);
    match groups.iter().find(|g| g.name == group) {
        Some(info) => match info.lag {
            Some(lag) => Some(lag.max(0) as u64),
            None => {
                let after = parse_stream_id(&info.last_delivered)?;
                Some(count_after(ctx, key, after, COUNT_CAP))
            }
        },
        None => match call(&command(&[b"XLEN", key])).ok()? {
            Record::Integer(n) => Some(n.max(0) as u64),
            _ => None,
        },
    }
}

/// The registration's user may not read or group the stream: counts what waits in it as Gears
/// itself, for the backlog INFO shows (the cursor's own count stays unknown or zero, so that
/// it tries again only when entries arrive).
fn note_unreadable(registration: &Registration, trigger: &StreamTrigger, cursor: &Cursor) {
    let Some(host) = bookkeeping_host(registration, cursor) else {
        return;
    };
    let key = cursor.key.as_slice();
    let waiting = host.with_lock(|ctx| {
        count_waiting(ctx, key, &trigger.group, &|args: &[Vec<u8>]| {
            call_internal(ctx, args)
        })
    });
    host.finish();
    lock(&cursor.state).unreadable = waiting;
}

/// Reads one batch and runs it as one execution; acknowledges it, or applies the failure
/// policy.
fn run_batch(
    registration: &Arc<Registration>,
    trigger: &StreamTrigger,
    cursor: &Arc<Cursor>,
    source: Source,
    access: Access,
) -> Ended {
    let caller = Caller {
        user: registration.user.clone(),
        db: cursor.db,
    };
    let batch = Arc::new(Mutex::new(Batch::default()));
    let opened = batch.clone();
    let opened_error = batch.clone();
    // The group is read as the registration's user with full access, whatever the pipeline's
    // commands may do (inside a notification on Redis 7.0 they may not write).
    let Some(reading) = bookkeeping_host(registration, cursor).map(Arc::new) else {
        return Ended::Stop;
    };
    let outcome = super::super::run::execute_reader(registration, caller, None, access, |_| {
        match GroupReader::open(
            reading.clone(),
            cursor.clone(),
            &trigger.group,
            source,
            trigger.batch,
            opened,
        ) {
            Ok(Some(reader)) => Some(Ok(Box::new(reader) as Box<dyn RecordReader>)),
            Ok(None) => None,
            // Not a batch: no execution for it (see below).
            Err(e) => {
                lock(&opened_error).read_error = Some(e.to_string());
                None
            }
        }
    });
    reading.finish();
    let ids = std::mem::take(&mut lock(&batch).ids);
    let generation = lock(&batch).generation;
    let no_group = lock(&batch).no_group;
    let read_error = lock(&batch).read_error.take();
    let outcome = match outcome {
        None if no_group => return Ended::NoGroup,
        None => {
            if let Some(error) = read_error {
                lock(&cursor.state).undelivered = None;
                if paused(&error) {
                    // Writes paused: again once they may be, not a failure.
                    super::retry_soon(registration, cursor);
                } else {
                    // The user may no longer read the stream: counted once as a failure; the
                    // cursor tries again when entries arrive.
                    registration.record_run(Duration::ZERO, Some(error), false);
                    note_unreadable(registration, trigger, cursor);
                }
                return Ended::Stop;
            }
            return Ended::Empty;
        }
        Some(outcome) => outcome,
    };
    lock(&cursor.state).unreadable = None;
    let read = ids.len() as u64;
    let release = |cursor: &Cursor| {
        if source == Source::New {
            let mut state = lock(&cursor.state);
            state.in_flight = state.in_flight.saturating_sub(read);
        }
    };
    // An aborted run (`RG.ABORTEXECUTION`) ends with an error too: a failure like any other.
    let error = first_error(&outcome);
    match &error {
        None => {}
        Some(error) if error.starts_with("PAUSE") => {
            release(cursor);
            stop(registration, Status::Paused);
            return Ended::Stop;
        }
        Some(_) => match trigger.on_failed {
            OnFailed::Continue => {}
            OnFailed::Abort => {
                release(cursor);
                stop(registration, Status::Aborted);
                return Ended::Stop;
            }
            OnFailed::Retry => {
                release(cursor);
                stop(registration, Status::WaitingForRetry);
                return Ended::Stop;
            }
        },
    }
    if error.is_none() {
        lock(&registration.stats).last_error = None;
    }
    if let Some(state) = &registration.stream {
        let first = ids.first().and_then(|id| id_millis(id));
        // Entries with ids from `XADD *` (the time they were added); not explicit small ids.
        if let (Source::New, Some(first)) = (source, first) {
            let now = now_millis();
            if first > 1_000_000_000_000 && first <= now {
                state.record_lag(now - first);
            }
        }
    }
    let ran_well = error.is_none();
    let done = acknowledge_and_trim(
        registration,
        trigger,
        cursor,
        source,
        &ids,
        generation,
        ran_well,
    );
    release(cursor);
    if done {
        Ended::Ran
    } else {
        Ended::Stop
    }
}

/// True for the refusal of a write while clients are paused (a sync job can not wait).
fn paused(error: &str) -> bool {
    error.contains("writes are paused")
}

/// The batch's first error (a failed read, or an error record of its run).
fn first_error(outcome: &Result<ExecutionOutcome, String>) -> Option<String> {
    match outcome {
        Err(error) => Some(error.clone()),
        Ok(outcome) => outcome.errors.first().cloned(),
    }
}

/// How acknowledging a batch of new entries went.
enum Acked {
    Done,
    /// The stream under the name was replaced while the batch ran (renamed or restored over,
    /// flushed, swapped, reloaded): its group is not moved (a recovery runs that stream from
    /// its own position).
    Replaced,
    /// The group or the stream is gone.
    Gone,
    Failed(String),
}

/// Acknowledges the batch's ids (new entries: the group moves past the last one; pending
/// ones: `XACK`), then trims the stream (with `trimStream`) up to what every StreamReader
/// registration on it has processed: all in one hold of the lock, and not at all if the stream
/// under the name was replaced since the batch was read. False if the stream can not be written.
fn acknowledge_and_trim(
    registration: &Registration,
    trigger: &StreamTrigger,
    cursor: &Cursor,
    source: Source,
    ids: &[String],
    generation: u64,
    ran_well: bool,
) -> bool {
    let Some(last) = ids.last() else {
        return true;
    };
    let Some(host) = bookkeeping_host(registration, cursor) else {
        return false;
    };
    let key = cursor.key.as_slice();
    let group = trigger.group.as_bytes();
    let gone =
        |error: &str| error.starts_with("NOGROUP") || error.contains("requires the key to exist");
    // Checked, acknowledged, remembered and trimmed in one hold of the lock: no replacement of
    // the stream can come between.
    let acked = host.with_lock_unpaused(|_| {
        if lock(&cursor.state).generation != generation {
            return Acked::Replaced;
        }
        let acked = match source {
            Source::New => {
                let setid = command(&[b"XGROUP", b"SETID", key, group, last.as_bytes()]);
                match super::as_acknowledgement(|| host.execute(&setid)) {
                    Ok(_) => Acked::Done,
                    Err(e) if gone(&e.to_string()) => Acked::Gone,
                    Err(e) => Acked::Failed(e.to_string()),
                }
            }
            Source::Pending => {
                let mut acked = Acked::Done;
                for chunk in ids.chunks(ACK_CHUNK) {
                    let mut args = command(&[b"XACK", key, group]);
                    args.extend(chunk.iter().map(|id| id.as_bytes().to_vec()));
                    if let Err(e) = host.execute(&args) {
                        let error = e.to_string();
                        acked = if gone(&error) {
                            Acked::Gone
                        } else {
                            Acked::Failed(error)
                        };
                        break;
                    }
                }
                acked
            }
        };
        match &acked {
            Acked::Done => {
                if source == Source::New {
                    let mut state = lock(&cursor.state);
                    state.position = Some(last.clone());
                    state.group_seen = Some(last.clone());
                }
                if trigger.trim {
                    if let Some(min) = trim_point(&host, registration, cursor, trigger, last) {
                        let _ = host.execute(&command(&[b"XTRIM", key, b"MINID", min.as_bytes()]));
                    }
                }
            }
            Acked::Gone => {
                // Destroyed (or the stream deleted) while the batch ran: it starts over.
                let mut state = lock(&cursor.state);
                state.undelivered = None;
                state.position = None;
                state.group_seen = None;
            }
            // The batch ran: the next one starts after it (not again in a loop); the group
            // catches up at the next acknowledgement that succeeds (a restart before that runs
            // these entries again: at least once).
            Acked::Failed(_) if source == Source::New => {
                lock(&cursor.state).position = Some(last.clone());
            }
            Acked::Failed(_) | Acked::Replaced => {}
        }
        acked
    });
    host.finish();
    match acked {
        Acked::Done | Acked::Replaced | Acked::Gone => true,
        Acked::Failed(error) => {
            registration.acknowledgement_failed(error, ran_well);
            false
        }
    }
}

/// The first id to keep: after `last` (this registration processed everything up to it), or
/// earlier if another live StreamReader registration on the stream has not got as far (its
/// first pending entry, else the entry after its last read). `None`: keep everything (another
/// registration has not started on the stream).
fn trim_point(
    host: &RedisHost,
    registration: &Registration,
    cursor: &Cursor,
    trigger: &StreamTrigger,
    last: &str,
) -> Option<String> {
    let mine = next_id(last)?;
    // The other live registrations on this stream whose user may read it and keep a group
    // there (one whose user may not, or no longer exists, holds nothing back: its cursor may
    // date from before, and a registration that can not make its group never reads).
    let candidates: Vec<Arc<Registration>> = super::super::all()
        .iter()
        .filter(|r| !r.is_removed() && r.id != registration.id)
        .filter(|r| {
            super::trigger(r)
                .is_some_and(|t| t.group != trigger.group && t.matches_key(&cursor.key))
        })
        .cloned()
        .collect();
    let others: Vec<String> = if candidates.is_empty() {
        Vec::new()
    } else {
        host.with_lock(|ctx| {
            candidates
                .iter()
                .filter(|r| super::may_keep_a_group(ctx, r, &cursor.key))
                .filter_map(|r| super::trigger(r).map(|t| t.group.clone()))
                .collect()
        })
    };
    if others.is_empty() {
        return Some(mine);
    }
    let key = cursor.key.as_slice();
    let positions = groups(host, key)?;
    let mut keep = mine;
    for group in &others {
        let position = positions.iter().find(|g| &g.name == group)?;
        let (pending, delivered) = (&position.pending, &position.last_delivered);
        let first_needed = if *pending > 0 {
            // XPENDING's summary: [count, smallest id, largest id, consumers].
            match host.execute(&command(&[b"XPENDING", key, group.as_bytes()])) {
                Ok(Record::List(summary)) => summary.get(1).and_then(text)?,
                _ => return None,
            }
        } else {
            next_id(delivered)?
        };
        if compare_ids(&first_needed, &keep).is_lt() {
            keep = first_needed;
        }
    }
    Some(keep)
}

fn compare_ids(a: &str, b: &str) -> std::cmp::Ordering {
    let parse = |id: &str| -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
    };
    parse(a).cmp(&parse(b))
}
