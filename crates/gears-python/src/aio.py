# Gears' asyncio support, run once into a namespace only Rust holds (scripts can not reach it).
# One event loop, on a thread of its own, runs every coroutine a callback returns; each step of a
# coroutine runs inside its session's execution (`enter`), so its execute() reaches that
# execution. The waiting step's thread blocks on a concurrent future, the GIL released.
import asyncio
import threading

_loop = None
_loop_lock = threading.Lock()


def loop():
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            thread = threading.Thread(target=_serve, name='gears-asyncio', daemon=True)
            thread.start()
        return _loop


def _serve():
    """Runs the loop for ever: a script that stops it (`get_running_loop().stop()`) or closes
    it does not end it for everyone."""
    global _loop
    while True:
        with _loop_lock:
            if _loop.is_closed():
                _loop = asyncio.new_event_loop()
            current = _loop
        try:
            current.run_forever()
        except BaseException:
            pass


class Driven:
    """Awaits `coro`, each of its steps run by `step(it, thrown, value)`, which Gears gives:
    it runs the step inside the coroutine's execution (its commands, its limits) and throws
    `await is not allow inside atomic block` into a step that suspends inside an atomic
    block."""
    __slots__ = ('_coro', '_step')

    def __init__(self, coro, step):
        self._coro = coro
        self._step = step

    def __await__(self):
        it = self._coro.__await__()
        step = self._step
        value = None
        thrown = None
        while True:
            try:
                yielded = step(it, thrown, value)
            except StopIteration as stop:
                return stop.value
            thrown = None
            try:
                value = yield yielded
            except BaseException as e:
                thrown = e
                value = None


async def _drive(driven):
    try:
        return await driven
    except (KeyboardInterrupt, SystemExit) as e:
        # Raised out of a task, these would end the loop thread for everyone.
        raise Exception('%s: %s' % (type(e).__name__, e)) from None


def submit(coro, step):
    """Runs a coroutine on Gears' loop: a concurrent future of its result."""
    return asyncio.run_coroutine_threadsafe(_drive(Driven(coro, step)), loop())


async def _wait(future):
    return await future


def wait_future(future):
    """A concurrent future of an asyncio future of Gears' loop."""
    return asyncio.run_coroutine_threadsafe(_wait(future), loop())


def _set_result(future, value):
    if not future.done():
        future.set_result(value)


def _set_exception(future, error):
    if not future.done():
        if not isinstance(error, BaseException):
            error = Exception(str(error))
        future.set_exception(error)


def new_future():
    return asyncio.Future(loop=loop())


def set_result(future, value):
    loop().call_soon_threadsafe(_set_result, future, value)


def set_exception(future, error):
    loop().call_soon_threadsafe(_set_exception, future, error)


class GearsFuture:
    """`gearsFuture()`: returned by a step's callback, it holds the record until `continueRun(v)`
    or `continueFailed(e)` (from any thread, any execution)."""
    __slots__ = ('_future', '_returned', '_done', '_error', '__weakref__')

    def __init__(self, error):
        self._future = new_future()
        self._returned = False
        self._done = False
        self._error = error

    def continueRun(self, *args):
        if len(args) != 1:
            raise self._error('Continue function expect an object')
        if self._done:
            raise self._error('Can not continue with the same future twice')
        if not self._returned:
            raise self._error('Can not handle future untill it returned from the callback')
        self._done = True
        set_result(self._future, args[0])

    def continueFailed(self, *args):
        if len(args) != 1:
            raise self._error('Continue function expect an object')
        if self._done:
            raise self._error('Can not continue with the same future twice')
        self._done = True
        set_exception(self._future, Exception(str(args[0])))

    def __del__(self):
        if self._returned and not self._done:
            set_exception(self._future, Exception('Async record did not called continue'))


def returned(gears_future):
    """The step took the future: its record waits for it."""
    gears_future._returned = True
    return wait_future(gears_future._future)


def discarded(gears_future):
    """The callback created the future but returned something else: it can not continue."""
    gears_future._done = True


async def _later(coro, delay, step, future):
    if delay:
        await asyncio.sleep(delay)
    try:
        result = await _drive(Driven(coro, step))
    except Exception as e:
        if future is not None:
            try:
                future.continueFailed(e)
            except Exception:
                pass
        return
    if future is not None:
        try:
            future.continueRun(result)
        except Exception:
            pass


def run_later(coro, delay, step, future):
    """`runCoroutine(cr, f=None, delay=0)`: runs `cr` on Gears' loop after `delay` seconds."""
    asyncio.run_coroutine_threadsafe(_later(coro, delay, step, future), loop())
