//! Executions as first-class objects: every `RG.*EXECUTE` creates an [`Execution`] with a
//! RedisGears id (`<40-character shard id>-<seq>`), kept in the [`Executions`] table while it is
//! queued, while it runs, and (for `UNBLOCKING` ones) after it finished, until it is dropped
//! or pushed out by `MaxExecutions`. The commands that list, inspect, wait for, abort and drop
//! executions are in [`commands`]; what `INFO` counts is in [`stats`].

mod clients;
pub(crate) mod commands;
mod finished;
pub(crate) mod stats;

pub(crate) use clients::{admit_explain, forget_explain, watch_explain, CLIENT_GONE};
use clients::{client_disconnected, forget_client, queue_full_error, remember_client, Role};
pub(crate) use finished::Finished;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use gears_core::control::ExecutionControl;
use gears_core::progress::Progress;
use gears_core::{ExecutionPlan, Language, ReplyValue};

use redis_module::Context;

use crate::host::{BlockedReply, Caller};

/// An execution's state, by RedisGears 1.2's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Queued for a worker.
    Created,
    Running,
    Done,
    Aborted,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Done => "done",
            Status::Aborted => "aborted",
        }
    }

    pub fn finished(self) -> bool {
        matches!(self, Status::Done | Status::Aborted)
    }
}

/// The shard id of a server that is not in a cluster, as RedisGears 1.2 writes it.
pub(crate) const STANDALONE_SHARD: &str = "0000000000000000000000000000000000000000";

/// Who waits for an execution to finish.
enum Waiter {
    /// The blocking `RG.*EXECUTE` client: gets the direct reply; the execution is dropped after.
    Client(BlockedReply),
    /// An `RG.GETRESULTSBLOCKING` client: gets `[[results], [errors]]`.
    Results(BlockedReply),
}

struct State {
    status: Status,
    plan: Option<Arc<ExecutionPlan>>,
    /// A description of each step's callback (`GETEXECUTION`'s `arg`), once compiled.
    step_args: Arc<[String]>,
    started: Option<Instant>,
    duration: Option<Duration>,
    finished: Option<Arc<Finished>>,
    waiters: Vec<Waiter>,
    /// True while a blocking client waits: the execution is dropped once it replied.
    blocking: bool,
    /// True once aborted (`RG.ABORTEXECUTION`, its client gone): it ends `aborted`.
    aborted: bool,
    /// What profiling recorded of its script's callbacks (`RG.PYPROFILE <id>`).
    profiler: Option<Arc<dyn gears_core::Profiler>>,
}

/// One execution.
pub(crate) struct Execution {
    pub id: String,
    pub language: Language,
    pub caller: Caller,
    pub registered: bool,
    pub control: Arc<ExecutionControl>,
    pub progress: Arc<Progress>,
    state: Mutex<State>,
}

impl Execution {
    /// A new execution, `created` (queued).
    fn new(
        id: String,
        language: Language,
        caller: Caller,
        registered: bool,
        control: Arc<ExecutionControl>,
        profile: bool,
        blocking: bool,
    ) -> Self {
        Execution {
            id,
            language,
            caller,
            registered,
            control,
            progress: Arc::new(Progress::new(profile)),
            state: Mutex::new(State {
                status: Status::Created,
                plan: None,
                step_args: Arc::from([]),
                started: None,
                duration: None,
                finished: None,
                waiters: Vec::new(),
                blocking,
                aborted: false,
                profiler: None,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn status(&self) -> Status {
        self.state().status
    }

    /// Marks the execution running (it left the queue); false if it was aborted meanwhile.
    pub fn start(&self) -> bool {
        let mut state = self.state();
        if state.status != Status::Created {
            return false;
        }
        stats::dequeued();
        state.status = Status::Running;
        state.started = Some(Instant::now());
        self.control.start_clock();
        for waiter in &state.waiters {
            if let Waiter::Client(client) = waiter {
                client.measure_start();
            }
        }
        true
    }

    /// Records the compiled plan and its steps' descriptions (for `RG.GETEXECUTION`).
    /// The plan and its steps' descriptions (shared with a registration's every run).
    pub fn set_plan(
        &self,
        plan: impl Into<Arc<ExecutionPlan>>,
        step_args: impl Into<Arc<[String]>>,
    ) {
        let mut state = self.state();
        state.plan = Some(plan.into());
        state.step_args = step_args.into();
    }

    /// Keeps what profiling recorded of its script's callbacks, for as long as it is kept.
    pub fn keep_profiler(&self, profiler: Arc<dyn gears_core::Profiler>) {
        self.state().profiler = Some(profiler);
    }

    pub fn profiler(&self) -> Option<Arc<dyn gears_core::Profiler>> {
        self.state().profiler.clone()
    }

    /// Finishes the execution: records what it replies and answers everyone waiting. A blocking
    /// execution leaves the table first, so its client never sees it listed after its reply.
    pub fn finish(&self, finished: Finished) {
        let state = self.state();
        if state.status.finished() {
            return;
        }
        self.complete(state, finished);
    }

    fn complete(&self, mut state: MutexGuard<'_, State>, finished: Finished) {
        let aborted = state.aborted;
        state.status = if aborted {
            Status::Aborted
        } else {
            Status::Done
        };
        state.duration = state.started.map(|s| s.elapsed());
        let waiters = std::mem::take(&mut state.waiters);
        let blocking = std::mem::replace(&mut state.blocking, false);
        let finished = Arc::new(finished);
        state.finished = Some(finished.clone());
        drop(state);
        stats::finished(self, aborted);
        if let Some(gears) = crate::gears() {
            if blocking {
                gears.executions.drop_execution(&self.id);
            } else {
                // Finished, it may now be pushed out by `MaxExecutions`.
                gears.executions.trim(gears.max_executions());
            }
        }
        for waiter in waiters {
            match waiter {
                Waiter::Client(client) => {
                    forget_client(client.id());
                    client.measure_end();
                    finished.reply_direct(client);
                }
                Waiter::Results(client) => {
                    forget_client(client.id());
                    client.reply(&finished.results);
                }
            }
        }
    }

    /// Aborts the execution: a queued one ends at once (its clients get their replies now), a
    /// running one is stopped and ends when its code does.
    pub fn abort(&self, reason: &str) {
        let mut state = self.state();
        if state.status.finished() {
            return;
        }
        state.aborted = true;
        self.control.stop(reason);
        if state.status != Status::Created {
            return;
        }
        stats::dequeued();
        self.complete(state, Finished::stopped(reason))
    }

    /// Adds a `RG.GETRESULTSBLOCKING` client, answered when the execution finishes (at once if
    /// it already did).
    pub fn wait_for_results(self: &Arc<Self>, client: BlockedReply) {
        let mut state = self.state();
        match &state.finished {
            Some(finished) => {
                let reply = finished.results.clone();
                drop(state);
                client.reply(&reply);
            }
            None => {
                remember_client(client.id(), self, Role::ResultsWaiter);
                client.on_disconnect(Some(client_disconnected));
                state.waiters.push(Waiter::Results(client));
            }
        }
    }

    /// A `RG.GETRESULTSBLOCKING` client went away: it waits no more (its blocked-client
    /// handle is released now, not when the execution ends).
    fn forget_results_waiter(&self, client: usize) {
        let mut state = self.state();
        let position = state.waiters.iter().position(
            |waiter| matches!(waiter, Waiter::Results(waiting) if waiting.id() == client),
        );
        let gone = position.map(|i| state.waiters.swap_remove(i));
        drop(state);
        drop(gone);
    }

    /// `[[results], [errors]]` of a finished execution.
    pub fn results(&self) -> Option<Arc<ReplyValue>> {
        self.state().finished.as_ref().map(|f| f.results.clone())
    }

    /// What `RG.GETEXECUTION` shows of the execution.
    pub fn snapshot(&self) -> Snapshot {
        let state = self.state();
        let steps = state
            .plan
            .as_ref()
            .map(|plan| plan.steps.clone())
            .unwrap_or_default();
        Snapshot {
            status: state.status,
            result_count: state.finished.as_ref().map(|f| f.result_count()),
            errors: state
                .finished
                .as_ref()
                .map(|f| f.errors())
                .unwrap_or_default(),
            duration: state
                .duration
                .or_else(|| state.started.map(|s| s.elapsed()))
                .unwrap_or_default(),
            step_durations: self.progress.step_durations(steps.len()),
            steps,
            step_args: state.step_args.to_vec(),
        }
    }
}

/// A copy of what `RG.GETEXECUTION` shows.
pub(crate) struct Snapshot {
    pub status: Status,
    pub result_count: Option<usize>,
    pub errors: Vec<String>,
    pub duration: Duration,
    pub steps: Vec<gears_core::Step>,
    pub step_args: Vec<String>,
    pub step_durations: Vec<Duration>,
}

/// The settings the table applies when it creates an execution.
pub(crate) struct TableLimits {
    pub max_executions: usize,
    pub max_queued: u64,
    /// Measure each step's duration (`ProfileExecutions`).
    pub profile: bool,
}

/// The execution table.
pub(crate) struct Executions {
    table: Mutex<Table>,
    next: AtomicU64,
}

#[derive(Default)]
struct Table {
    /// Ids in creation order. A dropped execution's id stays until the next compaction (so
    /// dropping is O(1)); readers skip ids no longer in `by_id`.
    order: VecDeque<String>,
    /// Its keys are ids Gears made (a client's id only looks up), so a fast hash is safe.
    by_id: HashMap<String, Arc<Execution>, rustc_hash::FxBuildHasher>,
    /// How many of `by_id` are registered executions.
    registered: usize,
}

impl Table {
    fn insert(&mut self, execution: Arc<Execution>) {
        self.registered += usize::from(execution.registered);
        self.order.push_back(execution.id.clone());
        self.by_id.insert(execution.id.clone(), execution);
    }

    fn remove(&mut self, id: &str) -> Option<Arc<Execution>> {
        let removed = self.by_id.remove(id)?;
        self.registered -= usize::from(removed.registered);
        if self.order.len() > 2 * self.by_id.len() + 64 {
            let by_id = &self.by_id;
            self.order.retain(|id| by_id.contains_key(id));
        }
        Some(removed)
    }
}

impl Executions {
    pub fn new() -> Self {
        Executions {
            table: Mutex::new(Table::default()),
            next: AtomicU64::new(1),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates a queued execution; `block` is the context of a blocking command, whose client
    /// waits for the execution (none with `UNBLOCKING`). At most `limits.max_queued`
    /// executions wait for a worker (a full queue is an error, and no client is blocked); at
    /// most `limits.max_executions` are kept, finished ones pushed out oldest first.
    pub fn create(
        &self,
        language: Language,
        caller: Caller,
        control: Arc<ExecutionControl>,
        block: Option<&Context>,
        limits: TableLimits,
    ) -> Result<Arc<Execution>, String> {
        if stats::queued() >= limits.max_queued {
            stats::queue_full();
            return Err(queue_full_error(limits.max_queued));
        }
        let client = match block {
            Some(ctx) => Some(
                BlockedReply::block(ctx, crate::commands::CAN_NOT_BLOCK)
                    .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        let blocking = client.is_some();
        let execution = Arc::new(Execution::new(
            self.next_id(),
            language,
            caller,
            false,
            control,
            limits.profile,
            blocking,
        ));
        if let Some(client) = client {
            remember_client(client.id(), &execution, Role::Caller);
            client.on_disconnect(Some(client_disconnected));
            execution.state().waiters.push(Waiter::Client(client));
        }
        let mut table = self.table();
        table.insert(execution.clone());
        evict(&mut table, limits.max_executions);
        drop(table);
        stats::created(&execution);
        Ok(execution)
    }

    /// Creates the execution of one event of a registration (`registered` = 1), already
    /// running on the calling thread. Registered executions are kept by their registration's
    /// `MaxExecutionsPerRegistration`, not by `MaxExecutions`.
    pub fn create_registered(
        &self,
        language: Language,
        caller: Caller,
        control: Arc<ExecutionControl>,
        profile: bool,
    ) -> Arc<Execution> {
        let execution = Arc::new(Execution::new(
            self.next_id(),
            language,
            caller,
            true,
            control,
            profile,
            false,
        ));
        self.table().insert(execution.clone());
        stats::created(&execution);
        execution.start();
        execution
    }

    /// Makes later ids larger than `id`'s sequence number (a registration made again keeps its
    /// id).
    pub fn bump_past(&self, id: &str) {
        if let Some(seq) = id.rsplit('-').next().and_then(|s| s.parse::<u64>().ok()) {
            self.next
                .fetch_max(seq.saturating_add(1), Ordering::Relaxed);
        }
    }

    /// A new execution id (a registration's id is one, as in RedisGears): `<shard id>-<n>`,
    /// with this node's cluster id in a cluster (ids are then unique cluster-wide), forty
    /// zeros on a single node.
    pub fn next_id(&self) -> String {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        // Made for every event of a registration: no formatting machinery.
        let joined = |shard: &str| {
            let mut id = String::with_capacity(shard.len() + 21);
            id.push_str(shard);
            id.push('-');
            crate::resp::push_decimal(&mut id, seq);
            id
        };
        match crate::cluster::topology::current().filter(|_| crate::cluster::enabled()) {
            Some(topology) if !topology.my_id.is_empty() => joined(&topology.my_id),
            _ => joined(STANDALONE_SHARD),
        }
    }

    /// Creates this shard's part of another shard's execution, under that execution's id,
    /// already running on the calling thread (listed like any execution; aborted with it).
    pub fn create_part(
        &self,
        id: &str,
        language: Language,
        caller: Caller,
        control: Arc<ExecutionControl>,
        limits: TableLimits,
    ) -> Arc<Execution> {
        let execution = Arc::new(Execution::new(
            id.to_string(),
            language,
            caller,
            false,
            control,
            limits.profile,
            false,
        ));
        let mut table = self.table();
        table.insert(execution.clone());
        evict(&mut table, limits.max_executions);
        drop(table);
        stats::created(&execution);
        execution.start();
        execution
    }

    pub fn get(&self, id: &str) -> Option<Arc<Execution>> {
        self.table().by_id.get(id).cloned()
    }

    /// Removes an execution (finished, or never started).
    pub fn drop_execution(&self, id: &str) {
        let dropped = self.table().remove(id);
        if dropped.is_some() {
            drop(dropped);
            crate::workers::memory_freed_elsewhere();
        }
    }

    /// Every execution, in creation order.
    pub fn all(&self) -> Vec<Arc<Execution>> {
        let table = self.table();
        table
            .order
            .iter()
            .filter_map(|id| table.by_id.get(id).cloned())
            .collect()
    }

    /// Drops finished executions beyond `max` (a new `MaxExecutions`).
    pub fn trim(&self, max: usize) {
        evict(&mut self.table(), max);
    }
}

/// Drops the oldest finished executions while there are more than `max` (registered ones are
/// kept by their registration's limit).
fn evict(table: &mut Table, max: usize) {
    let mut excess = table
        .by_id
        .len()
        .saturating_sub(table.registered)
        .saturating_sub(max);
    if excess == 0 {
        return;
    }
    let mut kept = VecDeque::with_capacity(table.order.len());
    for id in std::mem::take(&mut table.order) {
        let Some(execution) = table.by_id.get(&id) else {
            continue; // dropped earlier
        };
        if excess > 0 && !execution.registered && execution.status().finished() {
            table.by_id.remove(&id);
            excess -= 1;
            crate::workers::memory_freed_elsewhere();
        } else {
            kept.push_back(id);
        }
    }
    table.order = kept;
}
