//! What a session's API functions are bound to.
//!
//! Every session gets one [`Link`]; its `execute`, `atomic`, `log`, `configGet`,
//! `gearsConfigGet`, `hashtag` and `run()` reach Redis (and the compiler) only through it, never
//! through a "current execution" of the calling thread. So a function of session A called while
//! session B runs (a finaliser, a callback leaked through a shared module, a thread A started)
//! acts as A, with A's ACL user, and once A's session has ended it fails with [`ENDED`].
//!
//! Atomic blocks hold the Redis lock, which only a thread working for the session's own
//! execution may do (its control times the block, and its watchdog registration can interrupt
//! it); anywhere else `atomic()` is refused with [`ATOMIC_ELSEWHERE`].

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use gears_core::control::{self, ExecutionControl};
use gears_core::RedisAccess;
use pyo3::prelude::*;

use crate::api::CompileState;
use crate::exceptions::error;

/// The error of a Gears function whose script's execution has ended.
pub(crate) const ENDED: &str =
    "the execution of the script this function belongs to has ended: it can not reach Redis any more";

/// The error of `atomic()` used outside the script's own execution.
pub(crate) const ATOMIC_ELSEWHERE: &str =
    "an atomic block can only be used by the execution of the script it belongs to";

/// One session's access to Redis and to its compiler.
pub(crate) struct Link {
    /// The session's Redis host; `None` once the session has ended.
    host: Mutex<Option<Arc<dyn RedisAccess>>>,
    /// The control of the execution the session was created for (none in unit tests run
    /// outside an execution).
    control: Option<Arc<ExecutionControl>>,
    /// What the script's top level builds, while it runs.
    compiling: Mutex<Compile>,
    /// The thread on which this session has an atomic block open, if any (its execution's
    /// thread, or Gears' asyncio loop for a coroutine), and the host that opened it: only that
    /// thread ends it, through that host, also after the session ended (its Redis lock must be
    /// released whatever happened meanwhile).
    atomic: Mutex<Option<(std::thread::ThreadId, Arc<dyn RedisAccess>)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Link {
    /// A link for a session created on a thread working for the current execution.
    pub(crate) fn new(host: Arc<dyn RedisAccess>) -> Arc<Link> {
        Arc::new(Link {
            host: Mutex::new(Some(host)),
            control: control::current(),
            compiling: Mutex::new(Compile::Closed),
            atomic: Mutex::new(None),
        })
    }

    /// The session's host, or [`ENDED`].
    pub(crate) fn host(&self) -> PyResult<Arc<dyn RedisAccess>> {
        lock(&self.host)
            .clone()
            .ok_or_else(|| error::new_err(ENDED))
    }

    /// Ends the session: from now on its functions fail with [`ENDED`]. Returns the host, so the
    /// caller decides where it is dropped (never by a Python object, see
    /// [`crate::session::PythonSession`]).
    pub(crate) fn end(&self) -> Option<Arc<dyn RedisAccess>> {
        self.end_atomic();
        lock(&self.host).take()
    }

    /// True if this thread works for the session's own execution: the one it was created for,
    /// or one that entered the session to run its callbacks (a registration's event).
    fn on_own_execution(&self) -> bool {
        let entered = ENTERED.with(|entered| {
            entered
                .borrow()
                .iter()
                .any(|link| std::ptr::eq(*link, self))
        });
        entered
            || match (&self.control, control::current()) {
                (Some(own), Some(current)) => Arc::ptr_eq(own, &current),
                (None, None) => true,
                _ => false,
            }
    }

    /// True while the session has an atomic block open on this thread.
    pub(crate) fn is_atomic(&self) -> bool {
        lock(&self.atomic)
            .as_ref()
            .is_some_and(|(thread, _)| *thread == std::thread::current().id())
    }

    /// Marks this thread as running the session's callbacks for the current execution until
    /// the guard is dropped.
    pub(crate) fn entered(&self) -> Entered {
        ENTERED.with(|entered| entered.borrow_mut().push(self as *const Link));
        Entered
    }
}

thread_local! {
    /// The links whose sessions this thread has entered (innermost last).
    static ENTERED: std::cell::RefCell<Vec<*const Link>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// See [`Link::entered`].
pub(crate) struct Entered;

impl Drop for Entered {
    fn drop(&mut self) {
        let _ = ENTERED.try_with(|entered| entered.borrow_mut().pop());
    }
}

impl Link {
    /// `atomic().__enter__`: takes the Redis lock until [`Link::end_atomic`]. The GIL is
    /// released while waiting for the lock (lock order: Redis lock, then GIL).
    pub(crate) fn begin_atomic(&self, py: Python<'_>) -> PyResult<()> {
        if !self.on_own_execution() {
            return Err(error::new_err(ATOMIC_ELSEWHERE));
        }
        let host = self.host()?;
        let opener = host.clone();
        // The host is dropped without the GIL, whatever happens meanwhile.
        py.detach(move || host.begin_atomic())
            .map_err(|e| error::new_err(e.to_string()))?;
        *lock(&self.atomic) = Some((std::thread::current().id(), opener));
        Ok(())
    }

    /// `atomic().__exit__`: ends the block this session opened, if any (never another
    /// session's, nor a block of this session on another thread).
    pub(crate) fn end_atomic(&self) {
        if self.on_own_execution() {
            self.close_atomic();
        }
    }

    /// Ends this session's open atomic block, if any.
    pub(crate) fn close_atomic(&self) {
        let opened = {
            let mut open = lock(&self.atomic);
            // Only on the thread that holds it: another thread's end (an execution that ended
            // while its coroutine still ran) would leave the block's Redis lock held for ever.
            match open.as_ref() {
                Some((thread, _)) if *thread == std::thread::current().id() => open.take(),
                _ => None,
            }
        };
        if let Some((_, host)) = opened {
            host.end_atomic();
        }
    }

    /// Runs `f` while the session's top level may build plans; returns what it built.
    pub(crate) fn compiling<R>(&self, f: impl FnOnce() -> R) -> (R, CompileState) {
        /// Closes the compile state on every exit, unwinding included.
        struct Close<'a>(&'a Link);
        impl Close<'_> {
            fn take(&self) -> CompileState {
                match std::mem::replace(&mut *lock(&self.0.compiling), Compile::Closed) {
                    Compile::Open(state) => state,
                    _ => CompileState::default(),
                }
            }
        }
        impl Drop for Close<'_> {
            fn drop(&mut self) {
                drop(self.take());
            }
        }
        *lock(&self.compiling) = Compile::Open(CompileState::default());
        let close = Close(self);
        let result = f();
        let state = close.take();
        (result, state)
    }

    /// Takes the compile state while the session's top level runs (else `None`), so that no
    /// lock is held while Python code runs; [`Link::put_compile_state`] gives it back. A `run()`
    /// nested in the conversion of another finds none.
    pub(crate) fn take_compile_state(&self) -> Option<CompileState> {
        let mut compiling = lock(&self.compiling);
        match std::mem::replace(&mut *compiling, Compile::Busy) {
            Compile::Open(state) => Some(state),
            other => {
                *compiling = other;
                None
            }
        }
    }

    /// Gives back what [`Link::take_compile_state`] took; dropped if the top level has ended
    /// meanwhile (a `run()` on another thread).
    pub(crate) fn put_compile_state(&self, state: CompileState) {
        let mut compiling = lock(&self.compiling);
        if matches!(*compiling, Compile::Busy) {
            *compiling = Compile::Open(state);
        }
    }
}

/// The compile state of a session.
enum Compile {
    /// The top level is not running.
    Closed,
    /// The top level runs; plans may be added.
    Open(CompileState),
    /// A `run()` is adding a plan.
    Busy,
}
