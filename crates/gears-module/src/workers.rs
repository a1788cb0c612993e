//! The execution threads.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use crossbeam_channel::{unbounded, RecvTimeoutError, Sender};

type Job = Box<dyn FnOnce() + Send + 'static>;

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
    sender: Sender<Job>,
}

impl WorkerPool {
    pub fn new(threads: usize) -> Self {
        let (sender, receiver) = unbounded::<Job>();
        for i in 0..threads.max(1) {
            let receiver = receiver.clone();
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
                        match receiver.recv_timeout(wait) {
                            Ok(job) => {
                                // A job answers its own client even when it panics (see
                                // commands::execute); this only keeps the thread alive.
                                let _ = catch_unwind(AssertUnwindSafe(job));
                                used = true;
                            }
                            // Idle after work: return what the jobs freed. Not at once after
                            // each job: a stream of small jobs (a registration's events) would
                            // give pages back and map them again every time.
                            Err(RecvTimeoutError::Timeout) if used => {
                                used = false;
                                collected = FREED_ELSEWHERE.load(Ordering::Relaxed);
                                release_free_memory();
                            }
                            // What this worker allocated may be freed later by another thread
                            // (RG.DROPEXECUTION of a stored reply): mimalloc returns those
                            // pages when this thread collects.
                            Err(RecvTimeoutError::Timeout) => {
                                let freed = FREED_ELSEWHERE.load(Ordering::Relaxed);
                                if freed != collected {
                                    collected = freed;
                                    release_free_memory();
                                }
                            }
                            Err(RecvTimeoutError::Disconnected) => break,
                        }
                    }
                });
            if spawned.is_err() {
                break;
            }
        }
        WorkerPool { sender }
    }

    /// Queues a job. If no worker can take it, the job is dropped unrun.
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) {
        let _ = self.sender.send(Box::new(job));
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
