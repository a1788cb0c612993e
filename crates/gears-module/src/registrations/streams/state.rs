//! A StreamReader registration's state: its status, lag, and one cursor per stream (its
//! position, and what is being read or waits).

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::super::lock;

/// A StreamReader registration's state, as `RG.DUMPREGISTRATIONS` shows it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Status {
    Ok,
    WaitingForRetry,
    Aborted,
    Paused,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::WaitingForRetry => "WAITING_FOR_RETRY_ON_FAILURE",
            Status::Aborted => "ABORTED",
            Status::Paused => "PAUSED",
        }
    }
}

/// Lag samples: from an entry's id (the time `XADD` gave it) to the end of its batch.
#[derive(Default, Clone, Copy)]
pub(crate) struct Lag {
    pub last_ms: u64,
    pub total_ms: u64,
    pub samples: u64,
}

impl Lag {
    pub fn average(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            self.total_ms as f64 / self.samples as f64
        }
    }
}

/// A registration's cursors, by database and stream name (looked up by a borrowed name on
/// every `XADD`).
pub(super) type Cursors = HashMap<i32, HashMap<Vec<u8>, Arc<Cursor>>>;

/// What a StreamReader registration keeps besides the common state of a registration.
pub(crate) struct StreamState {
    pub(super) status: Mutex<Status>,
    /// One cursor per (database, stream) it has seen.
    pub(super) cursors: Mutex<Cursors>,
    pub(super) lag: Mutex<Lag>,
    /// A retry timer is armed.
    pub(super) retrying: AtomicBool,
    /// A scan of the keyspace for its streams is queued and not started: another restart
    /// (every `FLUSHDB` asks for one) needs no other.
    pub(super) rescan_queued: AtomicBool,
}

impl StreamState {
    pub fn new() -> Self {
        StreamState {
            status: Mutex::new(Status::Ok),
            cursors: Mutex::new(HashMap::new()),
            lag: Mutex::new(Lag::default()),
            retrying: AtomicBool::new(false),
            rescan_queued: AtomicBool::new(false),
        }
    }

    pub fn status(&self) -> Status {
        *lock(&self.status)
    }

    pub(super) fn set_status(&self, status: Status) {
        *lock(&self.status) = status;
    }

    pub fn lag(&self) -> Lag {
        *lock(&self.lag)
    }

    pub fn clear_lag(&self) {
        *lock(&self.lag) = Lag::default();
    }

    pub(super) fn record_lag(&self, ms: u64) {
        let mut lag = lock(&self.lag);
        lag.last_ms = ms;
        lag.total_ms = lag.total_ms.saturating_add(ms);
        lag.samples += 1;
    }

    /// Entries of its streams not yet processed: not read yet, or read and running (or waiting
    /// in a stream its user may not read).
    pub fn backlog(&self) -> u64 {
        lock(&self.cursors)
            .values()
            .flat_map(|db| db.values())
            .map(|cursor| {
                let state = lock(&cursor.state);
                let known = state.undelivered.unwrap_or(0) + state.in_flight;
                known.max(state.unreadable.unwrap_or(0))
            })
            .sum()
    }

    /// Makes every cursor recover (its pending entries first) and then run what waits, whole
    /// batch or not; the cursors. `replaced`: the data may have changed under them (loading,
    /// promotion, a flush).
    pub(super) fn recover_all(&self, replaced: bool) -> Vec<Arc<Cursor>> {
        let cursors = self.cursors();
        for cursor in &cursors {
            let mut cursor_state = lock(&cursor.state);
            if replaced {
                cursor_state.stream_replaced();
            }
            cursor_state.undelivered = None;
            cursor_state.flush = true;
        }
        cursors
    }

    /// True if a job runs on one of its streams.
    pub(super) fn any_busy(&self) -> bool {
        self.cursors().iter().any(|c| lock(&c.state).busy)
    }

    pub(super) fn cursors(&self) -> Vec<Arc<Cursor>> {
        lock(&self.cursors)
            .values()
            .flat_map(|db| db.values().cloned())
            .collect()
    }

    /// The cursor of a stream, if the registration has one.
    pub(super) fn cursor(&self, db: i32, key: &[u8]) -> Option<Arc<Cursor>> {
        lock(&self.cursors).get(&db)?.get(key).cloned()
    }

    /// Adds a cursor unless the stream has one already; the stream's cursor.
    pub(super) fn add_cursor(&self, cursor: Arc<Cursor>) -> Arc<Cursor> {
        lock(&self.cursors)
            .entry(cursor.db)
            .or_default()
            .entry(cursor.key.clone())
            .or_insert(cursor)
            .clone()
    }
}

/// A registration's place in one stream.
pub(crate) struct Cursor {
    pub db: i32,
    pub key: Vec<u8>,
    pub(super) state: Mutex<CursorState>,
}

#[derive(Default)]
pub(super) struct CursorState {
    /// Entries added and not yet read by the group; `None`: unknown, the next job first runs
    /// the group's pending entries and counts again.
    pub(super) undelivered: Option<u64>,
    /// Entries read and not yet acknowledged.
    pub(super) in_flight: u64,
    /// Entries waiting in a stream the registration's user may not read (its reads fail),
    /// counted by Gears for the backlog; `None` once a read works.
    pub(super) unreadable: Option<u64>,
    /// A job runs (or is about to) for this stream.
    pub(super) busy: bool,
    /// Run every entry now, full batch or not (entries that were there before the
    /// registration started on the stream).
    pub(super) flush: bool,
    /// When the oldest entry of the incomplete batch arrived (for `duration`).
    pub(super) waiting_since: Option<Instant>,
    /// A `duration` timer is armed.
    pub(super) timer: bool,
    /// Writes were paused: a timer runs the cursor again (nothing else starts it meanwhile).
    pub(super) paused_retry: bool,
    /// The last entry processed (its batch acknowledged), so that the next batch need not ask
    /// the group (`XINFO GROUPS`) and does not run it again if moving the group failed; `None`:
    /// ask the group.
    pub(super) position: Option<String>,
    /// The group's position as Gears last read or set it (`None`: not known). A client's move of
    /// the group shows as a difference (a failed move of Gears' leaves it behind `position`).
    pub(super) group_seen: Option<String>,
    /// Counts the times the stream under the cursor's name may have been replaced (renamed or
    /// restored over, flushed, swapped, reloaded): a batch read before a change is not
    /// acknowledged after it (that would move the new stream's group past entries it never read).
    pub(super) generation: u64,
}

impl CursorState {
    /// The stream under the cursor's name may not be the one it read: forget the position, count
    /// again (recovery), and refuse the acknowledgement of the batch in flight.
    pub(super) fn stream_replaced(&mut self) {
        self.undelivered = None;
        self.position = None;
        self.group_seen = None;
        self.generation += 1;
    }
}
