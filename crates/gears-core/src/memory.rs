//! Memory accounting: how much Gears holds, in total and per execution.
//!
//! Two pools are counted: [`Pool::Native`] is everything allocated through the Rust global
//! allocator of the module ([`CountingAllocator`]): records, plans, and the Lua and Rhai
//! interpreters, whose allocators are Rust's; [`Pool::Python`] is what the embedded CPython
//! allocates, reported by the Python frontend's allocator hooks.
//!
//! Totals are kept in per-thread shards (cache-line sized atomics) so that threads allocating at
//! once do not contend on one counter. While a thread works for an execution it carries that
//! execution's [`MemoryMeter`] (see [`MeterScope`]); its allocations and frees are also charged
//! there. The attribution is approximate by design (a free on another execution's thread is
//! charged to that execution), so meters are used for limits, never for bookkeeping.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Where an allocation was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// The Rust global allocator (records, Lua, Rhai, Gears itself).
    Native,
    /// The embedded CPython's allocators.
    Python,
}

const SHARDS: usize = 16;

#[repr(align(64))]
struct Shard(AtomicI64);

/// A byte counter split into per-thread shards.
struct ShardedCounter {
    shards: [Shard; SHARDS],
}

impl ShardedCounter {
    const fn new() -> Self {
        ShardedCounter {
            shards: [const { Shard(AtomicI64::new(0)) }; SHARDS],
        }
    }

    fn add(&self, delta: i64) {
        self.shards[shard_index()]
            .0
            .fetch_add(delta, Ordering::Relaxed);
    }

    fn total(&self) -> i64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum()
    }
}

static NATIVE: ShardedCounter = ShardedCounter::new();
static PYTHON: ShardedCounter = ShardedCounter::new();
/// Bytes ever allocated, per pool.
static NATIVE_ALLOCATED: ShardedCounter = ShardedCounter::new();
static PYTHON_ALLOCATED: ShardedCounter = ShardedCounter::new();
/// The most seen held at once, per pool (sampled, see [`sample`]).
static NATIVE_PEAK: AtomicI64 = AtomicI64::new(0);
static PYTHON_PEAK: AtomicI64 = AtomicI64::new(0);
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);
/// The most memory all of Gears may hold (0: no limit).
static GLOBAL_LIMIT: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    /// What this thread charged and has not yet added to the shared counters, and the meter it
    /// charges (one thread-local: in a module, each is a call to find it).
    static PENDING: Pending = const { Pending::new() };
}

/// A thread's charges not yet added to Gears' shared totals and to its execution's meter:
/// allocations are counted in plain thread-local arithmetic and reach the atomics once they add
/// up to [`FLUSH_BYTES`] (an atomic add per allocation cost a worker running a registration a
/// seventh of its time, and a sync registration a twentieth of the server's). Reads by the
/// charging thread include its pending bytes, so its own figures (and its limit checks) stay
/// exact; other threads see each thread's figure at most [`FLUSH_BYTES`] behind. Each field is
/// its own cell, changed in place (copying the whole struct in and out of one cell stalled on
/// every allocation).
struct Pending {
    native: Cell<i64>,
    native_allocated: Cell<i64>,
    python: Cell<i64>,
    python_allocated: Cell<i64>,
    /// The meter of the execution this thread works for (null: none). Kept alive by the
    /// [`MeterScope`] that set it.
    meter: Cell<*const MemoryMeter>,
    /// Charged to `meter` and not yet added to it.
    meter_owed: Cell<i64>,
}

impl Pending {
    const fn new() -> Self {
        Pending {
            native: Cell::new(0),
            native_allocated: Cell::new(0),
            python: Cell::new(0),
            python_allocated: Cell::new(0),
            meter: Cell::new(std::ptr::null()),
            meter_owed: Cell::new(0),
        }
    }

    /// Adds what this thread owes its meter to it.
    fn settle_meter(&self) {
        let owed = self.meter_owed.replace(0);
        let meter = self.meter.get();
        if owed != 0 && !meter.is_null() {
            // SAFETY: the pointer is set by a MeterScope that keeps the meter alive.
            unsafe { (*meter).used.fetch_add(owed, Ordering::Relaxed) };
        }
    }
}

/// How far a thread's charges may run ahead of the shared counters.
const FLUSH_BYTES: i64 = 16 << 10;

/// Adds a thread's pending charges to the shared counters.
fn flush(pending: &Pending) {
    let take = |cell: &Cell<i64>| cell.replace(0);
    let native = take(&pending.native);
    if native != 0 {
        NATIVE.add(native);
    }
    let native_allocated = take(&pending.native_allocated);
    if native_allocated != 0 {
        NATIVE_ALLOCATED.add(native_allocated);
    }
    let python = take(&pending.python);
    if python != 0 {
        PYTHON.add(python);
    }
    let python_allocated = take(&pending.python_allocated);
    if python_allocated != 0 {
        PYTHON_ALLOCATED.add(python_allocated);
    }
}

/// This thread's pending charges: (native, native allocated, python, python allocated).
fn pending() -> (i64, i64, i64, i64) {
    PENDING
        .try_with(|p| {
            (
                p.native.get(),
                p.native_allocated.get(),
                p.python.get(),
                p.python_allocated.get(),
            )
        })
        .unwrap_or_default()
}

fn shard_index() -> usize {
    SHARD
        .try_with(|shard| {
            let mut index = shard.get();
            if index == usize::MAX {
                index = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
                shard.set(index);
            }
            index
        })
        .unwrap_or(0)
}

/// Records `delta` bytes allocated (positive) or freed (negative) in `pool`, and charges the
/// meter of the execution this thread works for. Safe to call from an allocator: it never
/// allocates.
pub fn charge(pool: Pool, delta: i64) {
    let counted = PENDING.try_with(|pending| {
        let (held, allocated) = match pool {
            Pool::Native => (&pending.native, &pending.native_allocated),
            Pool::Python => (&pending.python, &pending.python_allocated),
        };
        let held = held.get() + delta;
        pending_set(pool, pending, held);
        let mut large = held.abs() >= FLUSH_BYTES;
        if delta > 0 {
            let total = allocated.get() + delta;
            allocated.set(total);
            large |= total >= FLUSH_BYTES;
        }
        if large {
            flush(pending);
        }
        if !pending.meter.get().is_null() {
            let owed = pending.meter_owed.get() + delta;
            pending.meter_owed.set(owed);
            if owed.abs() >= FLUSH_BYTES {
                pending.settle_meter();
            }
        }
    });
    if counted.is_err() {
        // The thread is exiting: count directly.
        match pool {
            Pool::Native => NATIVE.add(delta),
            Pool::Python => PYTHON.add(delta),
        }
    }
}

fn pending_set(pool: Pool, pending: &Pending, held: i64) {
    match pool {
        Pool::Native => pending.native.set(held),
        Pool::Python => pending.python.set(held),
    }
}

/// Bytes held in `pool` (it may read slightly negative when memory allocated before counting
/// started is freed).
pub fn used(pool: Pool) -> i64 {
    let (native, _, python, _) = pending();
    match pool {
        Pool::Native => NATIVE.total() + native,
        Pool::Python => PYTHON.total() + python,
    }
}

/// A pool's figures, as `RG.PYSTATS` reports Python's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes ever allocated.
    pub total_allocated: i64,
    /// The most bytes held at once among the samples taken (every few milliseconds while
    /// executions run, and at each read).
    pub peak: i64,
    /// Bytes held now.
    pub current: i64,
}

/// Samples a pool (updating its peak) and returns its figures.
pub fn sample(pool: Pool) -> PoolStats {
    let (allocated, peak) = match pool {
        Pool::Native => (&NATIVE_ALLOCATED, &NATIVE_PEAK),
        Pool::Python => (&PYTHON_ALLOCATED, &PYTHON_PEAK),
    };
    let current = used(pool).max(0);
    let peak = peak.fetch_max(current, Ordering::Relaxed).max(current);
    let (_, native_allocated, _, python_allocated) = pending();
    let own = match pool {
        Pool::Native => native_allocated,
        Pool::Python => python_allocated,
    };
    PoolStats {
        total_allocated: allocated.total() + own,
        peak,
        current,
    }
}

/// Bytes held by all of Gears.
pub fn total_used() -> i64 {
    used(Pool::Native) + used(Pool::Python)
}

/// Sets the most memory all of Gears may hold, in bytes (0: no limit).
pub fn set_global_limit(bytes: u64) {
    GLOBAL_LIMIT.store(bytes, Ordering::Relaxed);
}

pub fn global_limit() -> u64 {
    GLOBAL_LIMIT.load(Ordering::Relaxed)
}

/// Which limit an allocation of `extra` more bytes by this thread would pass, if any: the
/// meter of the execution it works for, then Gears' global limit. A thread that works for no
/// execution is never refused (Gears' own work, interpreter start-up).
pub fn limit_passed(extra: u64) -> Option<LimitPassed> {
    let extra = i64::try_from(extra).unwrap_or(i64::MAX);
    let (used, limit) = PENDING
        .try_with(|pending| {
            let meter = pending.meter.get();
            // SAFETY: see `Pending::settle_meter`.
            (!meter.is_null()).then(|| unsafe { ((*meter).used(), (*meter).limit()) })
        })
        .ok()
        .flatten()?;
    if limit > 0 && used.saturating_add(extra) > limit as i64 {
        return Some(LimitPassed::Execution(limit));
    }
    let global = global_limit();
    if global > 0 && total_used().saturating_add(extra) > global as i64 {
        return Some(LimitPassed::Global(global));
    }
    None
}

/// A memory limit that was (or would be) passed, with its value in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitPassed {
    Execution(u64),
    Global(u64),
}

impl LimitPassed {
    /// The error text an execution stopped by this limit reports.
    pub fn message(self) -> String {
        match self {
            LimitPassed::Execution(limit) => format!(
                "OOM the execution used more than its memory limit of {limit} bytes \
                 (ExecutionMemoryLimit)"
            ),
            LimitPassed::Global(limit) => {
                format!("OOM Gears used more than its memory limit of {limit} bytes (MemoryLimit)")
            }
        }
    }
}

/// The memory an execution holds, as charged by the threads working for it (each thread's share
/// at most [`FLUSH_BYTES`] behind, except for the thread that reads it: its limit checks see
/// every byte it allocated).
pub struct MemoryMeter {
    used: AtomicI64,
    limit: u64,
}

impl MemoryMeter {
    /// A meter with a limit in bytes (0: no limit).
    pub fn new(limit: u64) -> Self {
        MemoryMeter {
            used: AtomicI64::new(0),
            limit,
        }
    }

    /// Bytes charged to the meter (with what this thread owes it, if it charges it).
    pub fn used(&self) -> i64 {
        let own = PENDING
            .try_with(|pending| {
                if std::ptr::eq(pending.meter.get(), self) {
                    pending.meter_owed.get()
                } else {
                    0
                }
            })
            .unwrap_or(0);
        self.used.load(Ordering::Relaxed) + own
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// Charges this thread's allocations to a meter until dropped (scopes nest).
pub struct MeterScope {
    meter: Arc<MemoryMeter>,
    previous: *const MemoryMeter,
}

impl MeterScope {
    pub fn enter(meter: &Arc<MemoryMeter>) -> Self {
        let meter = meter.clone();
        let previous = PENDING.with(|pending| {
            pending.settle_meter();
            pending.meter.replace(Arc::as_ptr(&meter))
        });
        MeterScope { meter, previous }
    }
}

impl Drop for MeterScope {
    fn drop(&mut self) {
        let _ = PENDING.try_with(|pending| {
            pending.settle_meter();
            pending.meter.set(self.previous);
        });
        let _ = &self.meter;
    }
}

/// A global allocator that counts what it hands out in [`Pool::Native`].
pub struct CountingAllocator<A>(pub A);

// SAFETY: every method forwards to the wrapped allocator unchanged; counting never allocates.
unsafe impl<A: GlobalAlloc> GlobalAlloc for CountingAllocator<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = self.0.alloc(layout);
        if !ptr.is_null() {
            charge(Pool::Native, layout.size() as i64);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = self.0.alloc_zeroed(layout);
        if !ptr.is_null() {
            charge(Pool::Native, layout.size() as i64);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.0.dealloc(ptr, layout);
        charge(Pool::Native, -(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = self.0.realloc(ptr, layout, new_size);
        if !new.is_null() {
            charge(Pool::Native, new_size as i64 - layout.size() as i64);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_reach_the_pool_and_the_current_meter() {
        let meter = Arc::new(MemoryMeter::new(1000));
        let before = used(Pool::Python);
        {
            let _scope = MeterScope::enter(&meter);
            charge(Pool::Python, 600);
            assert_eq!(limit_passed(300), None);
            assert_eq!(limit_passed(500), Some(LimitPassed::Execution(1000)));
            charge(Pool::Python, -100);
        }
        charge(Pool::Python, 50);
        assert_eq!(meter.used(), 500);
        assert_eq!(used(Pool::Python) - before, 550);
        charge(Pool::Python, -550);
    }

    #[test]
    fn another_threads_charges_reach_the_meter_when_its_scope_ends() {
        let meter = Arc::new(MemoryMeter::new(0));
        let worker = meter.clone();
        std::thread::spawn(move || {
            let _scope = MeterScope::enter(&worker);
            charge(Pool::Native, 100);
            // The charging thread sees its own bytes at once.
            assert_eq!(worker.used(), 100);
            charge(Pool::Native, -100);
            charge(Pool::Native, 40);
        })
        .join()
        .expect("the charging thread");
        assert_eq!(meter.used(), 40);
        // Large charges are added at once, without waiting for the scope's end.
        let big = Arc::new(MemoryMeter::new(0));
        let (entered, charged) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        std::thread::scope(|s| {
            s.spawn(|| {
                let _scope = MeterScope::enter(&big);
                charge(Pool::Native, FLUSH_BYTES);
                entered.wait();
                charged.wait();
                charge(Pool::Native, -FLUSH_BYTES);
            });
            entered.wait();
            assert_eq!(big.used(), FLUSH_BYTES);
            charged.wait();
        });
        assert_eq!(big.used(), 0);
        charge(Pool::Native, -40);
    }

    #[test]
    fn scopes_nest() {
        let outer = Arc::new(MemoryMeter::new(0));
        let inner = Arc::new(MemoryMeter::new(0));
        let _a = MeterScope::enter(&outer);
        {
            let _b = MeterScope::enter(&inner);
            charge(Pool::Python, 10);
        }
        charge(Pool::Python, 1);
        charge(Pool::Python, -11);
        assert_eq!((outer.used(), inner.used()), (-10, 10));
    }
}
