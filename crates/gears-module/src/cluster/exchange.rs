//! The records of distributed executions in flight: a mailbox per execution that the bus fills
//! (on Redis's main thread) and the execution's worker empties, and [`ClusterExchange`], the
//! `RecordExchange` a shard's executor moves records through.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use gears_core::operators::RecordExchange;
use gears_core::{GearsError, GroupKey, Record, Result};

use super::bus::{ExecutionKey, Message, CHUNK_BYTES};
use super::topology::key_slot;
use crate::host::RedisHost;

/// What arrived for one execution.
#[derive(Default)]
struct MailState {
    /// Records per exchange step.
    records: HashMap<u32, Vec<Record>>,
    /// Per step, the shards that finished sending for it.
    done: HashMap<u32, HashSet<String>>,
    /// Shards whose part is over, with their errors.
    finished: HashMap<String, Vec<String>>,
    /// Shards' answers to a question (`RG.GETEXECUTION ... CLUSTER`).
    parts: HashMap<String, Option<Vec<u8>>>,
    aborted: Option<String>,
    /// When something last arrived (for `ExecutionMaxIdleTime`).
    last: Option<Instant>,
}

pub(crate) struct Mailbox {
    state: Mutex<MailState>,
    arrived: Condvar,
    created: Instant,
}

static MAILBOXES: Mutex<Option<HashMap<ExecutionKey, Arc<Mailbox>>>> = Mutex::new(None);

/// Mailboxes older than this are dropped (messages of an execution that is over).
const STALE: Duration = Duration::from_secs(600);

/// The execution's mailbox, made if new.
pub(crate) fn mailbox(key: &ExecutionKey) -> Arc<Mailbox> {
    let mut boxes = MAILBOXES.lock().unwrap_or_else(PoisonError::into_inner);
    let boxes = boxes.get_or_insert_with(HashMap::new);
    if let Some(found) = boxes.get(key) {
        return found.clone();
    }
    boxes.retain(|_, mailbox| mailbox.created.elapsed() < STALE);
    let mailbox = Arc::new(Mailbox {
        state: Mutex::new(MailState::default()),
        arrived: Condvar::new(),
        created: Instant::now(),
    });
    boxes.insert(key.clone(), mailbox.clone());
    mailbox
}

/// Executions whose part here is over, latest last: a message that arrives for one later (a
/// shard that answered after an abort) is dropped, not kept in a new mailbox.
static FORGOTTEN: Mutex<std::collections::VecDeque<ExecutionKey>> =
    Mutex::new(std::collections::VecDeque::new());

/// How many ended executions [`FORGOTTEN`] remembers.
const FORGOTTEN_MAX: usize = 4096;

/// Drops the execution's mailbox (its part is over).
pub(crate) fn forget(key: &ExecutionKey) {
    if let Some(boxes) = MAILBOXES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_mut()
    {
        boxes.remove(key);
    }
    let mut forgotten = FORGOTTEN.lock().unwrap_or_else(PoisonError::into_inner);
    forgotten.push_back(key.clone());
    while forgotten.len() > FORGOTTEN_MAX {
        forgotten.pop_front();
    }
}

/// The mailbox a message from another shard goes to; `None` for an execution whose part here
/// is over.
pub(crate) fn mailbox_for_message(key: &ExecutionKey) -> Option<Arc<Mailbox>> {
    if FORGOTTEN
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(key)
    {
        return None;
    }
    Some(mailbox(key))
}

impl Mailbox {
    fn change(&self, f: impl FnOnce(&mut MailState)) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state);
        state.last = Some(Instant::now());
        drop(state);
        self.arrived.notify_all();
    }

    pub fn records(&self, step: u32, records: Vec<Record>) {
        self.change(|s| s.records.entry(step).or_default().extend(records));
    }

    pub fn step_done(&self, step: u32, from: String) {
        self.change(|s| {
            s.done.entry(step).or_default().insert(from);
        });
    }

    pub fn finished(&self, from: String, errors: Vec<String>) {
        self.change(|s| {
            s.finished.insert(from, errors);
        });
    }

    pub fn part(&self, from: String, plan: Option<Vec<u8>>) {
        self.change(|s| {
            s.parts.insert(from, plan);
        });
    }

    /// Waits for every shard's answer (at most `idle`); the answers that came.
    pub fn wait_parts(
        &self,
        shards: &[String],
        idle: Duration,
    ) -> HashMap<String, Option<Vec<u8>>> {
        let result = self.wait(idle, |s| {
            shards
                .iter()
                .filter(|id| !s.parts.contains_key(*id))
                .cloned()
                .collect()
        });
        match result {
            Ok(mut state) => std::mem::take(&mut state.parts),
            Err(_) => std::mem::take(
                &mut self
                    .state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .parts,
            ),
        }
    }

    pub fn abort(&self, reason: String) {
        self.change(|s| {
            s.aborted.get_or_insert(reason);
        });
    }

    /// Waits until `ready` holds, an abort, the execution's stop, or `idle` with nothing
    /// arriving (an error naming the shards still awaited).
    fn wait(
        &self,
        idle: Duration,
        waiting_for: impl Fn(&MailState) -> Vec<String>,
    ) -> Result<std::sync::MutexGuard<'_, MailState>> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let started = Instant::now();
        loop {
            if let Some(reason) = &state.aborted {
                // Reported once, by the wait that found it.
                return Err(GearsError::Stopped(reason.clone()));
            }
            let missing = waiting_for(&state);
            if missing.is_empty() {
                return Ok(state);
            }
            gears_core::control::check_current()?;
            let since = state.last.map_or(started, |last| last.max(started));
            if since.elapsed() >= idle {
                // The execution is over for every later wait too.
                let reason = format!(
                    "Execution max idle reached (no answer from shard {})",
                    missing.join(", ")
                );
                state.aborted = Some(reason.clone());
                return Err(GearsError::Redis(reason));
            }
            let (next, _) = self
                .arrived
                .wait_timeout(state, Duration::from_millis(50))
                .unwrap_or_else(PoisonError::into_inner);
            state = next;
        }
    }

    /// The reason the execution was aborted, if it was.
    pub fn aborted(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .aborted
            .clone()
    }

    /// Waits until every shard in `shards` has finished its part; their errors.
    pub fn wait_finished(&self, shards: &[String], idle: Duration) -> Result<Vec<String>> {
        let state = self.wait(idle, |s| {
            shards
                .iter()
                .filter(|id| !s.finished.contains_key(*id))
                .cloned()
                .collect()
        })?;
        Ok(shards
            .iter()
            .flat_map(|id| state.finished.get(id).cloned().unwrap_or_default())
            .collect())
    }
}

/// One shard's side of a distributed execution's exchanges.
pub(crate) struct ClusterExchange {
    pub key: ExecutionKey,
    pub me: String,
    /// Every shard taking part (this one included).
    pub shards: Vec<String>,
    /// Slot ranges and owners, as the initiator saw them.
    pub slots: Vec<(u16, u16, String)>,
    pub host: Arc<RedisHost>,
    pub mailbox: Arc<Mailbox>,
    pub idle: Duration,
    /// The exchange steps that are `collect` (the others repartition).
    pub collects: HashSet<u32>,
}

impl ClusterExchange {
    /// One shard's side of the execution `key` (`me` is this node): the shards taking part and
    /// the slot map, as the initiator saw them.
    pub fn new(
        key: ExecutionKey,
        me: &str,
        (shards, slots): (Vec<String>, Vec<(u16, u16, String)>),
        host: Arc<RedisHost>,
        plan: &gears_core::ExecutionPlan,
    ) -> Arc<Self> {
        Arc::new(ClusterExchange {
            mailbox: mailbox(&key),
            key,
            me: me.to_string(),
            shards,
            slots,
            host,
            idle: super::idle(),
            collects: super::collects(plan),
        })
    }

    fn others(&self) -> impl Iterator<Item = &String> {
        self.shards.iter().filter(move |s| **s != self.me)
    }

    /// Sends a message to a shard (this one: straight into the mailbox).
    fn send(&self, target: &str, message: Message) -> Result<()> {
        if target == self.me {
            super::deliver(&self.mailbox, message);
            return Ok(());
        }
        let sent = self
            .host
            .with_lock(|ctx| super::bus::send(ctx, target, &message));
        if sent {
            Ok(())
        } else {
            Err(GearsError::Redis(format!(
                "ERR could not send to shard {target} (cluster bus)"
            )))
        }
    }

    /// Sends `records` to `target` in chunks.
    fn send_records(&self, target: &str, step: usize, records: Vec<Record>) -> Result<()> {
        if target == self.me {
            self.mailbox.records(step as u32, records);
            return Ok(());
        }
        let mut chunk = Vec::new();
        let mut buffer = Vec::new();
        let flush = |chunk: &mut Vec<Record>, buffer: &mut Vec<u8>| -> Result<()> {
            buffer.clear();
            gears_core::wire::encode_records(chunk, buffer)?;
            chunk.clear();
            self.send(
                target,
                Message::Records {
                    key: self.key.clone(),
                    step: step as u32,
                    from: self.me.clone(),
                    records: std::mem::take(buffer),
                },
            )
        };
        let mut size = 0;
        for record in records {
            size += approximate_size(&record);
            chunk.push(record);
            if size >= CHUNK_BYTES {
                flush(&mut chunk, &mut buffer)?;
                size = 0;
            }
        }
        if !chunk.is_empty() {
            flush(&mut chunk, &mut buffer)?;
        }
        Ok(())
    }

    fn owner(&self, key: &GroupKey) -> &str {
        let slot = key_slot(key.as_ref());
        self.slots
            .iter()
            .find(|(a, b, _)| (*a..=*b).contains(&slot))
            .map(|(_, _, id)| id.as_str())
            .unwrap_or(self.me.as_str())
    }

    fn initiator(&self) -> &str {
        &self.key.initiator
    }
}

/// About how many bytes a record takes on the wire.
fn approximate_size(record: &Record) -> usize {
    match record {
        Record::String(s) => s.len() + 9,
        Record::Bytes(b) => b.len() + 9,
        Record::List(items) => 9 + items.iter().map(approximate_size).sum::<usize>(),
        Record::Map(pairs) => {
            9 + pairs
                .iter()
                .map(|(k, v)| approximate_size(k) + approximate_size(v))
                .sum::<usize>()
        }
        Record::Key(key) => key.key.len() + 32 + key.value.as_ref().map_or(0, approximate_size),
        Record::Error(e) => e.len() + 9,
        _ => 9,
    }
}

impl RecordExchange for ClusterExchange {
    fn collect(&self, step: usize, records: Vec<Record>) -> Result<Vec<Record>> {
        if self.me == self.initiator() {
            return Ok(records);
        }
        self.send_records(&self.key.initiator.clone(), step, records)?;
        Ok(Vec::new())
    }

    fn repartition(&self, step: usize, records: Vec<(GroupKey, Record)>) -> Result<Vec<Record>> {
        let mut by_shard: HashMap<String, Vec<Record>> = HashMap::new();
        let mut here = Vec::new();
        for (key, record) in records {
            let owner = self.owner(&key);
            if owner == self.me {
                here.push(record);
            } else {
                by_shard.entry(owner.to_string()).or_default().push(record);
            }
        }
        for (shard, records) in by_shard {
            self.send_records(&shard, step, records)?;
        }
        Ok(here)
    }

    fn finish(&self, step: usize) -> Result<Vec<Record>> {
        let step = step as u32;
        let collect = self.collects.contains(&step);
        // Everyone who receives records of this step learns that this shard is done with it.
        let targets: Vec<String> = if collect {
            if self.me == self.initiator() {
                Vec::new()
            } else {
                vec![self.key.initiator.clone()]
            }
        } else {
            self.others().cloned().collect()
        };
        for target in targets {
            self.send(
                &target,
                Message::StepDone {
                    key: self.key.clone(),
                    step,
                    from: self.me.clone(),
                },
            )?;
        }
        if collect && self.me != self.initiator() {
            return Ok(Vec::new());
        }
        let others: Vec<String> = self.others().cloned().collect();
        let mut state = self.mailbox.wait(self.idle, |s| {
            others
                .iter()
                .filter(|id| {
                    !s.done.get(&step).is_some_and(|d| d.contains(*id))
                        && !s.finished.contains_key(*id)
                })
                .cloned()
                .collect()
        })?;
        Ok(state.records.remove(&step).unwrap_or_default())
    }
}
