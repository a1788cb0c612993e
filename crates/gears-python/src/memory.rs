//! Python's memory, counted and limited.
//!
//! CPython's allocators are wrapped by hooks that call the allocators they replace:
//! - the `PYMEM_DOMAIN_RAW` domain (malloc, calloc, realloc, free): pymalloc takes blocks larger
//!   than 512 bytes from it, and so do CPython's own raw allocations;
//! - the object arena allocator: the 1 MiB arenas pymalloc carves small objects from.
//!
//! Raw blocks are counted by `malloc_usable_size` (on allocation, reallocation and free alike, so
//! the count balances), arenas by their size. Every change goes to
//! [`gears_core::memory::charge`] in [`Pool::Python`], which also charges the meter of the
//! execution the thread works for.
//!
//! An allocation is refused (NULL, so CPython raises `MemoryError`) when it would pass the
//! execution's or Gears' memory limit, and the execution is stopped with the limit's message.
//! Refusals happen only while the thread runs Python code for an execution (a
//! [`RefusalScope`] is held, see [`crate::watchdog::Running`]); start-up, thread states and
//! Gears' own work are never refused, so CPython never meets a failure it treats as fatal.
//!
//! The hooks are `extern "C"` and run on any thread, with or without the GIL: they never
//! panic, never take a lock on the allocation path, and never allocate through Python.

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::OnceLock;

use gears_core::control;
use gears_core::memory::{self, Pool};
use libc::size_t;
use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi::{self, PyMemAllocatorDomain, PyMemAllocatorEx, PyObjectArenaAllocator};
use pyo3::prelude::*;
use pyo3::types::PyCFunction;

thread_local! {
    /// True while this thread runs Python code for an execution (allocations may be refused).
    static REFUSALS: Cell<bool> = const { Cell::new(false) };
}

/// Lets the hooks refuse this thread's allocations until dropped (scopes nest).
pub(crate) struct RefusalScope {
    previous: bool,
}

impl RefusalScope {
    pub(crate) fn enter() -> Self {
        let previous = REFUSALS.with(|r| r.replace(true));
        RefusalScope { previous }
    }
}

impl Drop for RefusalScope {
    fn drop(&mut self) {
        let _ = REFUSALS.try_with(|r| r.set(self.previous));
    }
}

/// True (and the current execution stopped) if allocating `size` more bytes on this thread
/// must be refused.
fn refused(size: usize) -> bool {
    if !REFUSALS.try_with(Cell::get).unwrap_or(false) {
        return false;
    }
    match memory::limit_passed(size as u64) {
        None => false,
        Some(limit) => {
            // Rust allocations do not go through these hooks: allocating here is fine.
            if let Some(control) = control::current() {
                control.stop(limit.message());
            }
            true
        }
    }
}

/// The size malloc really gave a block (0 for NULL).
fn usable(ptr: *mut c_void) -> i64 {
    if ptr.is_null() {
        return 0;
    }
    // SAFETY: `ptr` came from the wrapped raw allocator, which is malloc (see `install`).
    unsafe { libc::malloc_usable_size(ptr) as i64 }
}

/// An allocator saved for the hooks to call, at a fixed address (the hooks' `ctx`).
struct Saved<T>(T);

// SAFETY: the saved allocators are plain function pointers plus CPython's context pointer,
// written once before the hooks are installed and only read afterwards.
unsafe impl<T> Send for Saved<T> {}
unsafe impl<T> Sync for Saved<T> {}

static RAW: OnceLock<Saved<PyMemAllocatorEx>> = OnceLock::new();
static MEM: OnceLock<Saved<PyMemAllocatorEx>> = OnceLock::new();
static OBJ: OnceLock<Saved<PyMemAllocatorEx>> = OnceLock::new();
static ARENA: OnceLock<Saved<PyObjectArenaAllocator>> = OnceLock::new();

/// The allocator a hook wraps, from the `ctx` CPython passes back.
///
/// # Safety
/// `ctx` must be the address of a `Saved<PyMemAllocatorEx>` in one of the statics above.
unsafe fn previous<'a>(ctx: *mut c_void) -> &'a PyMemAllocatorEx {
    &(*(ctx as *const Saved<PyMemAllocatorEx>)).0
}

extern "C" fn hook_malloc(ctx: *mut c_void, size: size_t) -> *mut c_void {
    if refused(size) {
        return std::ptr::null_mut();
    }
    // SAFETY: ctx is the Saved allocator registered with this hook.
    let previous = unsafe { previous(ctx) };
    let Some(malloc) = previous.malloc else {
        return std::ptr::null_mut();
    };
    let ptr = malloc(previous.ctx, size);
    memory::charge(Pool::Python, usable(ptr));
    ptr
}

extern "C" fn hook_calloc(ctx: *mut c_void, nelem: size_t, elsize: size_t) -> *mut c_void {
    if refused(nelem.saturating_mul(elsize)) {
        return std::ptr::null_mut();
    }
    // SAFETY: as in hook_malloc.
    let previous = unsafe { previous(ctx) };
    let Some(calloc) = previous.calloc else {
        return std::ptr::null_mut();
    };
    let ptr = calloc(previous.ctx, nelem, elsize);
    memory::charge(Pool::Python, usable(ptr));
    ptr
}

extern "C" fn hook_realloc(ctx: *mut c_void, ptr: *mut c_void, new_size: size_t) -> *mut c_void {
    let old = usable(ptr);
    let growth = (new_size as i64).saturating_sub(old);
    if growth > 0 && refused(growth as usize) {
        // A failed realloc leaves the block as it was, as CPython expects.
        return std::ptr::null_mut();
    }
    // SAFETY: as in hook_malloc.
    let previous = unsafe { previous(ctx) };
    let Some(realloc) = previous.realloc else {
        return std::ptr::null_mut();
    };
    let new = realloc(previous.ctx, ptr, new_size);
    if !new.is_null() {
        memory::charge(Pool::Python, usable(new) - old);
    }
    new
}

extern "C" fn hook_free(ctx: *mut c_void, ptr: *mut c_void) {
    if ptr.is_null() {
        return;
    }
    memory::charge(Pool::Python, -usable(ptr));
    // SAFETY: as in hook_malloc.
    let previous = unsafe { previous(ctx) };
    if let Some(free) = previous.free {
        free(previous.ctx, ptr);
    }
}

extern "C" fn arena_alloc(ctx: *mut c_void, size: size_t) -> *mut c_void {
    if refused(size) {
        return std::ptr::null_mut();
    }
    // SAFETY: ctx is the address of ARENA's saved allocator.
    let previous = unsafe { &(*(ctx as *const Saved<PyObjectArenaAllocator>)).0 };
    let Some(alloc) = previous.alloc else {
        return std::ptr::null_mut();
    };
    let ptr = alloc(previous.ctx, size);
    if !ptr.is_null() {
        memory::charge(Pool::Python, size as i64);
    }
    ptr
}

extern "C" fn arena_free(ctx: *mut c_void, ptr: *mut c_void, size: size_t) {
    if ptr.is_null() {
        return;
    }
    memory::charge(Pool::Python, -(size as i64));
    // SAFETY: as in arena_alloc.
    let previous = unsafe { &(*(ctx as *const Saved<PyObjectArenaAllocator>)).0 };
    if let Some(free) = previous.free {
        free(previous.ctx, ptr, size);
    }
}

/// How CPython allocates, as chosen at pre-initialisation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Allocators {
    /// pymalloc for the object and mem domains, malloc for the raw domain.
    Pymalloc,
    /// malloc for every domain (a CPython built without pymalloc).
    Malloc,
}

/// Wraps CPython's allocators. Must run after `Py_PreInitialize` (which chose the allocators)
/// and before `Py_InitializeFromConfig`, so that (almost) every block freed was counted.
///
/// # Safety
/// Call once, before the interpreter is initialised, with `allocators` saying what
/// `Py_PreInitialize` set up (every wrapped domain must be malloc-based).
pub(crate) unsafe fn install(allocators: Allocators) {
    hook_domain(PyMemAllocatorDomain::PYMEM_DOMAIN_RAW, &RAW);
    match allocators {
        Allocators::Pymalloc => {
            let mut arena = std::mem::zeroed::<PyObjectArenaAllocator>();
            ffi::PyObject_GetArenaAllocator(&mut arena);
            if ARENA.set(Saved(arena)).is_ok() {
                if let Some(saved) = ARENA.get() {
                    let mut hook = PyObjectArenaAllocator {
                        ctx: saved as *const Saved<PyObjectArenaAllocator> as *mut c_void,
                        alloc: Some(arena_alloc),
                        free: Some(arena_free),
                    };
                    ffi::PyObject_SetArenaAllocator(&mut hook);
                }
            }
        }
        Allocators::Malloc => {
            hook_domain(PyMemAllocatorDomain::PYMEM_DOMAIN_MEM, &MEM);
            hook_domain(PyMemAllocatorDomain::PYMEM_DOMAIN_OBJ, &OBJ);
        }
    }
}

unsafe fn hook_domain(
    domain: PyMemAllocatorDomain,
    slot: &'static OnceLock<Saved<PyMemAllocatorEx>>,
) {
    let mut current = std::mem::zeroed::<PyMemAllocatorEx>();
    ffi::PyMem_GetAllocator(domain, &mut current);
    if slot.set(Saved(current)).is_err() {
        return;
    }
    let Some(saved) = slot.get() else { return };
    let mut hook = PyMemAllocatorEx {
        ctx: saved as *const Saved<PyMemAllocatorEx> as *mut c_void,
        malloc: Some(hook_malloc),
        calloc: Some(hook_calloc),
        realloc: Some(hook_realloc),
        free: Some(hook_free),
    };
    ffi::PyMem_SetAllocator(domain, &mut hook);
}

/// Why `tracemalloc.start()` raises `RuntimeError` in Gears.
pub(crate) const TRACEMALLOC_REFUSED: &str = "tracemalloc cannot run in Gears: a memory limit \
    refusing one of its own allocations makes CPython abort the server; INFO rg shows Python's \
    memory";

/// Makes `_tracemalloc.start` (which `tracemalloc.start` is) raise instead of tracing.
///
/// tracemalloc keeps its tables of traces with the raw allocator these hooks wrap; when a limit
/// refuses one of those allocations, CPython calls `Py_FatalError` ("failed to allocate a
/// trace"), which aborts the server (measured: it froze instead, flushing stdout under
/// tracemalloc's own lock). Tracing is also kept off at start-up (`PYTHONTRACEMALLOC` is
/// ignored, see `crate::interpreter`). Called once, with the GIL, before any script runs.
pub(crate) fn refuse_tracemalloc(py: Python<'_>) -> PyResult<()> {
    let refuse = PyCFunction::new_closure(
        py,
        Some(c"start"),
        Some(c"Refused in Gears: see INFO rg for Python's memory."),
        |_args, _kwargs| -> PyResult<()> { Err(PyRuntimeError::new_err(TRACEMALLOC_REFUSED)) },
    )?;
    py.import("_tracemalloc")?.setattr("start", &refuse)?;
    // `tracemalloc` copies `start` when it is first imported: patch a copy made before now.
    let modules = py.import("sys")?.getattr("modules")?;
    if let Ok(tracemalloc) = modules.get_item("tracemalloc") {
        tracemalloc.setattr("start", &refuse)?;
    }
    Ok(())
}
