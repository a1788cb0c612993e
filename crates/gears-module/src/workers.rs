//! The execution threads.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The jobs waiting for a worker. A mutex and a condition variable, not a channel: waiting
/// workers sleep at once (a channel's receivers spin and yield before they park, and with
/// frequent small jobs, a registration's batches, that spinning took a tenth of the workers'
/// CPU from Redis's own threads on a small machine).
#[derive(Default)]
struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    ready: Condvar,
}

impl Queue {
    fn push(&self, job: Job) {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(job);
        self.ready.notify_one();
    }

    fn waiting(&self) -> bool {
        !self
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// The next job, or `None` after `wait` with none.
    fn pop(&self, wait: Duration) -> Option<Job> {
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(job) = jobs.pop_front() {
            return Some(job);
        }
        let (mut jobs, _) = self
            .ready
            .wait_timeout_while(jobs, wait, |jobs| jobs.is_empty())
            .unwrap_or_else(PoisonError::into_inner);
        jobs.pop_front()
    }
}

/// Counts the times another thread freed what workers allocated (a dropped execution).
static FREED_ELSEWHERE: AtomicU64 = AtomicU64::new(0);

/// Tells idle workers that memory they allocated was freed by another thread: they return it
/// to the system within [`IDLE_RELEASE`].
pub(crate) fn memory_freed_elsewhere() {
    FREED_ELSEWHERE.fetch_add(1, Ordering::Relaxed);
}

/// How long a worker stays idle after a job before it returns the memory the job freed.
const IDLE_COLLECT: std::time::Duration = std::time::Duration::from_millis(20);

/// How long a worker waits idle before it returns the memory freed for it meanwhile.
const IDLE_RELEASE: std::time::Duration = std::time::Duration::from_secs(1);

/// Stack size of an execution thread.
const WORKER_STACK: usize = 64 * 1024 * 1024;

/// A fixed pool of worker threads fed by a channel.
pub(crate) struct WorkerPool {
    queue: Arc<Queue>,
}

impl WorkerPool {
    pub fn new(threads: usize) -> Self {
        let queue = Arc::new(Queue::default());
        for i in 0..threads.max(1) {
            let receiver = queue.clone();
            let spawned = thread::Builder::new()
                .name(format!("gears-worker-{i}"))
                // Scripts recurse (Python, Lua, Rhai and conversions of nested values); a
                // generous stack costs only the pages actually touched.
                .stack_size(WORKER_STACK)
                .spawn(move || {
                    gears_python::keep_thread_state();
                    // The count of memory freed elsewhere this worker has collected.
                    let mut collected = FREED_ELSEWHERE.load(Ordering::Relaxed);
                    // True after a job until the worker has been idle for IDLE_COLLECT.
                    let mut used = false;
                    loop {
                        let wait = if used { IDLE_COLLECT } else { IDLE_RELEASE };
                        match receiver.pop(wait) {
                            Some(job) => {
                                // A job answers its own client even when it panics (see
                                // commands::execute); this only keeps the thread alive.
                                let _ = catch_unwind(AssertUnwindSafe(job));
                                used = true;
                            }
                            // Idle after work: return what the jobs freed. Not at once after
                            // each job: a stream of small jobs (a registration's events) would
                            // give pages back and map them again every time.
                            None if used => {
                                used = false;
                                collected = FREED_ELSEWHERE.load(Ordering::Relaxed);
                                release_free_memory();
                            }
                            // What this worker allocated may be freed later by another thread
                            // (RG.DROPEXECUTION of a stored reply): mimalloc returns those
                            // pages when this thread collects.
                            None => {
                                let freed = FREED_ELSEWHERE.load(Ordering::Relaxed);
                                if freed != collected {
                                    collected = freed;
                                    release_free_memory();
                                }
                            }
                        }
                    }
                });
            if spawned.is_err() {
                break;
            }
        }
        WorkerPool { queue }
    }

    /// Queues a job for the next free worker.
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) {
        self.queue.push(Box::new(job));
    }

    /// True if jobs wait for a worker (a long job lets them go first).
    pub fn jobs_waiting(&self) -> bool {
        self.queue.waiting()
    }
}

/// Runs a shard's part of another shard's execution on a thread of its own, not on a worker:
/// parts wait for records from the other shards, whose own executions may hold every worker
/// there while they wait for this shard's part (a pool could starve both ways).
pub(crate) fn spawn_part(job: impl FnOnce() + Send + 'static) {
    let spawned = thread::Builder::new()
        .name("gears-part".into())
        .stack_size(WORKER_STACK)
        .spawn(move || {
            let _ = catch_unwind(AssertUnwindSafe(job));
            release_free_memory();
        });
    if let Err(e) = spawned {
        crate::host::log_line(
            gears_core::LogLevel::Warning,
            &format!("could not start a thread for an execution's part: {e}"),
        );
    }
}

/// Gives the memory this worker freed back to the system, once it has nothing more to do.
/// mimalloc keeps a thread's freed pages for its next allocations, so without this an idle
/// worker would hold what its last execution used (hundreds of megabytes after a big key).
///
/// What the server itself allocated on this thread (replies of commands, key reads) is the
/// server allocator's: jemalloc returns it; glibc's malloc (a server built with
/// `MALLOC=libc`) keeps it in a per-thread arena, and `malloc_trim` would walk the server's
/// whole heap with its lock held (65 ms with 230 MB of keys, every PING waiting), so it is
/// not called (docs/operating.md).
fn release_free_memory() {
    // SAFETY: collects this thread's own heap.
    unsafe { libmimalloc_sys::mi_collect(true) };
}
