//! Starting the embedded interpreter.

use std::ffi::{CStr, CString};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::thread::ThreadId;

use gears_core::{GearsError, Result};
use pyo3::ffi;
use pyo3::prelude::*;

/// How to start Python.
#[derive(Clone, Debug, Default)]
pub struct PythonConfig {
    /// A virtual environment whose `bin/python` becomes the program name, so that Python finds
    /// the venv's `pyvenv.cfg` and its site-packages.
    pub venv: Option<PathBuf>,
    /// Put the full traceback in error texts (RedisGears' `PythonAttemptTraceback`, default on).
    pub attempt_traceback: bool,
}

static STARTED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
/// The thread that started Python: Redis's main thread, which holds the Redis lock whenever it
/// runs module code, so it must never wait for the GIL.
static MAIN_THREAD: OnceLock<ThreadId> = OnceLock::new();
static ATTEMPT_TRACEBACK: AtomicBool = AtomicBool::new(true);

/// True on the thread that started Python (Redis's main thread).
pub(crate) fn on_main_thread() -> bool {
    MAIN_THREAD.get() == Some(&std::thread::current().id())
}

pub(crate) fn attempt_traceback() -> bool {
    ATTEMPT_TRACEBACK.load(Ordering::Relaxed)
}

/// Changes `PythonAttemptTraceback` at runtime.
pub fn set_attempt_traceback(on: bool) {
    ATTEMPT_TRACEBACK.store(on, Ordering::Relaxed);
}

/// True once the interpreter runs (it can never be stopped again in this process).
pub fn is_started() -> bool {
    matches!(STARTED.get(), Some(Ok(())))
}

/// Gives the calling thread (a worker) a Python thread state for its whole life. Without one,
/// every entry into Python creates a thread state and the exit deletes it (with its 16 KB
/// frame stack mapped and unmapped each time): a registration runs Python once per event.
/// Does nothing if Python is not started. The GIL is not held on return.
pub fn keep_thread_state() {
    if !is_started() {
        return;
    }
    // SAFETY: PyGILState_Ensure creates this thread's state and takes the GIL; SaveThread
    // releases the GIL and keeps the state (its count stays above zero, so it is never
    // deleted by a later PyGILState_Release).
    unsafe {
        let _ = pyo3::ffi::PyGILState_Ensure();
        pyo3::ffi::PyEval_SaveThread();
    }
}

/// Starts CPython. Must be called on Redis's main thread (so that `threading` records it as the
/// main thread); later calls return the first call's outcome. On return the GIL is released.
pub fn start_interpreter(config: &PythonConfig) -> Result<()> {
    ATTEMPT_TRACEBACK.store(config.attempt_traceback, Ordering::Relaxed);
    STARTED
        .get_or_init(|| start(config))
        .clone()
        .map_err(GearsError::Internal)
}

fn start(config: &PythonConfig) -> std::result::Result<(), String> {
    reopen_libpython_global();
    let _ = MAIN_THREAD.set(std::thread::current().id());
    // SAFETY: plain CPython initialisation through PyConfig, done once (guarded by STARTED)
    // before any other Python API call in this process.
    unsafe {
        if ffi::Py_IsInitialized() != 0 {
            return Err("Python was already initialised by another module".into());
        }
        // Choose the allocators, then wrap them before the interpreter allocates anything
        // it will free later.
        let allocators = pre_initialize()?;
        crate::memory::install(allocators);
        let mut pyconfig = std::mem::MaybeUninit::<ffi::PyConfig>::zeroed();
        ffi::PyConfig_InitPythonConfig(pyconfig.as_mut_ptr());
        let mut pyconfig = pyconfig.assume_init();
        pyconfig.install_signal_handlers = 0;
        pyconfig.parse_argv = 0;
        // PYTHONTRACEMALLOC would start tracemalloc, which the memory limits make abort the
        // server (crate::memory::refuse_tracemalloc).
        pyconfig.tracemalloc = 0;
        if let Some(venv) = &config.venv {
            let program = venv.join("bin").join("python");
            let program = CString::new(program.to_string_lossy().as_bytes())
                .map_err(|_| "venv path contains a NUL byte".to_string())?;
            let status = ffi::PyConfig_SetBytesString(
                &mut pyconfig,
                &mut pyconfig.program_name,
                program.as_ptr(),
            );
            if ffi::PyStatus_Exception(status) != 0 {
                ffi::PyConfig_Clear(&mut pyconfig);
                return Err("could not set the Python program name".into());
            }
        }
        let status = ffi::Py_InitializeFromConfig(&pyconfig);
        ffi::PyConfig_Clear(&mut pyconfig);
        if ffi::PyStatus_Exception(status) != 0 {
            return Err(format!(
                "Python failed to start: {}",
                status_message(&status)
            ));
        }
    }
    let setup = Python::attach(|py| -> PyResult<()> {
        // Record this (Redis's main) thread as Python's main thread.
        py.import("threading")?;
        crate::exceptions::install(py);
        crate::memory::refuse_tracemalloc(py)?;
        crate::sleep::install(py)?;
        crate::isolation::install(py)?;
        crate::profile::install(py)?;
        crate::output::install(py)?;
        crate::watchdog::start(py)
    });
    // SAFETY: releases the GIL this thread got from Py_InitializeFromConfig; worker threads take
    // it with PyGILState_Ensure (Python::attach). The thread state is never restored.
    unsafe {
        ffi::PyEval_SaveThread();
    }
    setup.map_err(|e| format!("Python set-up failed: {e}"))
}

/// `Py_PreInitialize` with pymalloc chosen explicitly (whatever `PYTHONMALLOC` says), so that
/// the raw domain is malloc, whose blocks the memory hooks can measure; malloc everywhere on a
/// CPython built without pymalloc.
///
/// # Safety
/// Call once, before any other initialisation of the interpreter.
unsafe fn pre_initialize() -> std::result::Result<crate::memory::Allocators, String> {
    use crate::memory::Allocators;
    // CPython's PyMemAllocatorName values.
    const PYMEM_ALLOCATOR_MALLOC: i32 = 3;
    const PYMEM_ALLOCATOR_PYMALLOC: i32 = 5;
    let mut message = String::new();
    for (allocator, allocators) in [
        (PYMEM_ALLOCATOR_PYMALLOC, Allocators::Pymalloc),
        (PYMEM_ALLOCATOR_MALLOC, Allocators::Malloc),
    ] {
        let mut preconfig = std::mem::MaybeUninit::<ffi::PyPreConfig>::zeroed();
        ffi::PyPreConfig_InitPythonConfig(preconfig.as_mut_ptr());
        let mut preconfig = preconfig.assume_init();
        preconfig.parse_argv = 0;
        preconfig.allocator = allocator;
        let status = ffi::Py_PreInitialize(&preconfig);
        if ffi::PyStatus_Exception(status) == 0 {
            return Ok(allocators);
        }
        message = status_message(&status);
    }
    Err(format!("Python failed to pre-initialise: {message}"))
}

/// The text of a failed PyStatus.
///
/// # Safety
/// `status.err_msg` must be NULL or a C string (CPython's statuses hold static strings).
unsafe fn status_message(status: &ffi::PyStatus) -> String {
    if status.err_msg.is_null() {
        "unknown error".to_string()
    } else {
        CStr::from_ptr(status.err_msg)
            .to_string_lossy()
            .into_owned()
    }
}

/// libpython arrived with redis-server's `dlopen` of the module, without `RTLD_GLOBAL`, so C
/// extensions cannot resolve `Py*` symbols. Re-open it globally.
fn reopen_libpython_global() {
    // SAFETY: dladdr on the address of a libpython function, then dlopen(RTLD_NOLOAD) of the
    // library that is already mapped; nothing is unloaded.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        let symbol = ffi::Py_IsInitialized as *const libc::c_void;
        if libc::dladdr(symbol, &mut info) != 0 && !info.dli_fname.is_null() {
            libc::dlopen(
                info.dli_fname,
                libc::RTLD_NOW | libc::RTLD_GLOBAL | libc::RTLD_NOLOAD,
            );
        }
    }
}
