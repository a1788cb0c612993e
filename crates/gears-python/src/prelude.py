# The Python side of Gears' GearsBuilder. It only records the steps; `run()` hands them to Rust,
# which lowers them into the shared execution plan.
#
# Compiled once and run once per session, into a fresh namespace that already holds the session's
# own Rust functions (`execute`, `log`, `configGet`, `gearsConfigGet`, `hashtag`, `_run`,
# `_atomic_begin`, `_atomic_end`, all bound to the session) and `GearsError`: every script gets
# its own GearsBuilder and atomic classes, so none can patch another's. The public names are
# copied into the script's globals, as RedisGears 1.2 does.


class native(object):
    """`native(name, *args)`: a native extractor (a Rust extension's), given where a key function
    goes: `GB().groupby(native('hash_field', 'city'), reducer)`. It runs in Rust."""
    __slots__ = ('name', 'args')
    _gears_native = True

    def __init__(self, name, *args):
        self.name = name
        self.args = args

    def __repr__(self):
        return 'native(%s)' % ', '.join(repr(a) for a in (self.name,) + self.args)


def _is_key(a):
    return callable(a) or isinstance(a, native)


def _check_functions(op, args, count):
    if len(args) != count:
        raise GearsError('wrong number of args to %s function' % op)
    if count == 1 and op == 'repartition':
        if not _is_key(args[0]):
            raise GearsError('%s argument must be a function' % op)
        return
    if count == 2:
        if not _is_key(args[0]):
            raise GearsError('%s extractor argument must be a function' % op)
        if not callable(args[1]):
            raise GearsError('%s reducer argument must be a function' % op)
        return
    for a in args:
        if not callable(a):
            raise GearsError('%s argument must be a function' % op)


def flat_error(msg):
    """Raises an error whose text is exactly `msg` (no traceback), as RedisGears 1.2 does: a
    command hook replies it as is; a StreamReader batch failing with `PAUSE...` pauses."""
    raise _FlatError(str(msg))


class atomic(object):
    """`with atomic():` runs the block's commands with no other client's command in between."""

    def __enter__(self):
        _atomic_begin()
        return self

    def __exit__(self, *exc):
        _atomic_end()
        return False


class GearsBuilder(object):
    def __init__(self, reader='KeysReader', defaultArg='*', desc=None):
        self.reader = reader
        self.defaultArg = defaultArg
        self.desc = desc
        self.steps = []

    def _step(self, op, args, functions):
        _check_functions(op, args, functions)
        self.steps.append((op, args))
        return self

    def map(self, *args):
        return self._step('map', args, 1)

    def flatmap(self, *args):
        return self._step('flatmap', args, 1)

    def foreach(self, *args):
        return self._step('foreach', args, 1)

    def filter(self, *args):
        return self._step('filter', args, 1)

    def accumulate(self, *args):
        return self._step('accumulate', args, 1)

    def localgroupby(self, *args):
        return self._step('localgroupby', args, 2)

    def repartition(self, *args):
        return self._step('repartition', args, 1)

    def groupby(self, *args):
        return self._step('groupby', args, 2)

    def batchgroupby(self, *args):
        return self._step('batchgroupby', args, 2)

    def collect(self, *args):
        return self._step('collect', args, 0)

    def limit(self, *args):
        if len(args) not in (1, 2):
            raise GearsError('wrong number of args to limit function')
        for a in args:
            if type(a) is not int:
                raise GearsError('limit argument must be a number')
        self.steps.append(('limit', args))
        return self

    def aggregate(self, zero, seqOp, combOp):
        self.steps.append(('aggregate', (zero, seqOp, combOp)))
        return self

    def aggregateby(self, extractor, zero, seqOp, combOp):
        self.steps.append(('aggregateby', (extractor, zero, seqOp, combOp)))
        return self

    def count(self):
        self.steps.append(('count', ()))
        return self

    def countby(self, extractor=None):
        self.steps.append(('countby', (extractor,)))
        return self

    def avg(self, extractor=None):
        self.steps.append(('avg', (extractor,)))
        return self

    def sort(self, reverse=True):
        self.steps.append(('sort', (bool(reverse),)))
        return self

    def distinct(self):
        self.steps.append(('distinct', ()))
        return self

    def native(self, name, *args):
        """A native operator's step (a Rust extension's): `native('hll_count', 'name')`."""
        self.steps.append(('native', (name,) + args))
        return self

    def run(self, arg=None, convertToStr=True, collect=True, **kwargs):
        # `prefix=` names the keys as `arg` does (RedisGears' documentation uses it).
        if arg is None and 'prefix' in kwargs:
            arg = kwargs.pop('prefix')
        return _run(self.reader, self.defaultArg, self.desc, self.steps, arg, convertToStr,
                    collect, kwargs)

    def register(self, prefix='*', convertToStr=True, collect=True, mode='async', onRegistered=None,
                 **kwargs):
        if 'regex' in kwargs:
            regex = kwargs.pop('regex')
            if prefix == '*':
                prefix = regex
        return _register(self.reader, self.defaultArg, self.desc, self.steps, prefix, convertToStr,
                         collect, mode, onRegistered, kwargs)


GB = GearsBuilder


def registerTE(*args):
    """registerTE(seconds, callback, key=None): calls `callback()` every `seconds` seconds, as
    RedisGears 1.2 did: on the master, on Redis's main thread (a sync TimerReader registration
    of this session); a call that raises stops it. With `key`, the timer lives while that key
    holds it (deleting the key stops it); False if the key already holds something else."""
    if len(args) < 2 or len(args) > 3:
        raise GearsError('not enough arguments for time event')
    seconds, callback = args[0], args[1]
    key = args[2] if len(args) == 3 else None
    if not callable(callback):
        raise GearsError('callback must be a function')
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        raise GearsError('time argument must be a long')
    if seconds <= 0:
        raise GearsError('time argument must be a positive number of seconds')
    if seconds > 3153600000:
        raise GearsError('time argument must be at most 3153600000 seconds (100 years)')
    if key is not None and not isinstance(key, (str, bytes)):
        raise GearsError('key argument must be a string')

    def time_event(record):
        callback()

    name = getattr(callback, '__name__', None) or 'callback'
    registered = GearsBuilder('TimerReader', desc='registerTE(%d, %s)' % (seconds, name)) \
        .foreach(time_event) \
        .register(convertToStr=False, collect=False, mode='sync', interval=seconds, key=key,
                  stopOnError=True)
    return registered is not False


registerTimeEvent = registerTE
