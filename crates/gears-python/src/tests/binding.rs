//! Every session's API is bound to that session: whoever calls a session's functions (another
//! session, a finaliser, a thread), they act as that session and stop working when it ends; and
//! what sessions are made from can not be reached through `gc`.
//!
//! Scripts here share one interpreter with the tests running in parallel, so each test keeps
//! what it shares between its scripts under its own `sys._gears_binding_*` name.

use std::sync::Arc;

use gears_core::control::{ControlScope, ExecutionControl};
use gears_core::{Frontend, GearsError, Record};

use super::frontend;
use super::support::{execute, Recorder, FINISHED};
use crate::link::{ATOMIC_ELSEWHERE, ENDED};

fn runs(script: &str, redis: &Arc<Recorder>) {
    if let Err(e) = frontend().compile(script, redis.clone()) {
        panic!("{script}\nfailed: {e}");
    }
}

#[test]
fn a_function_of_one_session_acts_as_that_session_whoever_calls_it() {
    let a = Arc::new(Recorder::default());
    let b = Arc::new(Recorder::default());
    let first = frontend()
        .compile(
            "import sys, redisgears\n\
             sys._gears_binding_1 = (execute, log, configGet, gearsConfigGet, hashtag, \
             redisgears.executeCommand)",
            a.clone(),
        )
        .expect("compiles");
    // B calls A's functions while A's session lives: they act as A.
    runs(
        "import sys\nex, lg, cg, gcg, ht, rex = sys._gears_binding_1\n\
         ex('SET', 'k', 'from b')\nrex('SET', 'k2', 'from b')\nlg('b logs through a')\n\
         execute('SET', 'own', 'b')\nassert ht() == '06S' and cg('k') is None",
        &b,
    );
    assert_eq!(
        a.commands(),
        vec![vec!["SET", "k", "from b"], vec!["SET", "k2", "from b"]]
    );
    assert_eq!(a.logs(), vec!["b logs through a"]);
    assert_eq!(b.commands(), vec![vec!["SET", "own", "b"]]);
    drop(first);
    // Once A's session has ended, every one of them fails.
    runs(
        "import sys\n\
         calls = [('SET', 'k', 'late'), ('late',), ('k',), ('k',), (), ('SET', 'k', 'late')]\n\
         for f, args in zip(sys._gears_binding_1, calls):\n    \
             try:\n        f(*args)\n        log('reached')\n    \
             except GearsError as e:\n        log(type(e).__name__ + ': ' + str(e))\n\
         del sys._gears_binding_1",
        &b,
    );
    assert_eq!(b.logs(), vec![format!("error: {ENDED}"); 6]);
    assert_eq!(a.commands().len(), 2);
    assert_eq!(a.logs().len(), 1);
}

#[test]
fn a_finaliser_left_by_an_ended_session_can_not_reach_redis_from_another_execution() {
    let mallory = Arc::new(Recorder::default());
    let admin = Arc::new(Recorder::default());
    let trap = "import sys\nsys._gears_binding_2 = []\n\
                class Trap:\n    def __init__(self):\n        self.me = self\n    \
                def __del__(self, execute=execute, out=sys._gears_binding_2, \
                BaseException=BaseException, str=str):\n        \
                try:\n            execute('SET', 'pwned', 'x')\n            out.append('reached')\n        \
                except BaseException as e:\n            out.append(str(e))\n\
                for i in range(3):\n    Trap()\n";
    drop(frontend().compile(trap, mallory.clone()).expect("compiles"));
    // The cyclic GC runs inside the admin's execution.
    let victim = "import gc, sys, time\n\
                  def f(x):\n    out = sys._gears_binding_2\n    \
                  for _ in range(500):\n        gc.collect()\n        \
                  if len(out) >= 3:\n            break\n        time.sleep(0.01)\n    \
                  return list(out)\n\
                  GB().map(f).run()";
    let compiled = frontend().compile(victim, admin.clone()).expect("compiles");
    let (results, errors) = execute(compiled, vec![Record::Integer(1)]);
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!(
        results,
        vec![Record::String(format!("['{ENDED}', '{ENDED}', '{ENDED}']"))]
    );
    assert!(admin.commands().is_empty(), "{:?}", admin.commands());
    assert!(mallory.commands().is_empty(), "{:?}", mallory.commands());
    runs("import sys\ndel sys._gears_binding_2", &admin);
}

#[test]
fn a_finished_host_refuses_a_live_session_s_functions() {
    // What the module's host does once its execution has finished, even if a session lives on.
    let host = Arc::new(Recorder::default());
    let compiled = frontend()
        .compile("import sys\nsys._gears_binding_3 = execute", host.clone())
        .expect("compiles");
    host.finish();
    let other = Arc::new(Recorder::default());
    runs(
        "import sys\ntry:\n    sys._gears_binding_3('SET', 'k', 'v')\n\
         except GearsError as e:\n    log(str(e))\ndel sys._gears_binding_3",
        &other,
    );
    assert_eq!(other.logs(), vec![FINISHED]);
    assert!(host.commands().is_empty());
    drop(compiled);
}

#[test]
fn a_thread_a_script_started_acts_as_the_script_until_its_session_ends() {
    let host = Arc::new(Recorder::default());
    let script = "import sys, threading\n\
                  t = threading.Thread(target=lambda: execute('SET', 'from', 'thread'))\n\
                  t.start()\nt.join()\n\
                  event, out = threading.Event(), []\n\
                  sys._gears_binding_4 = (event, out)\n\
                  def late(event=event, out=out, execute=execute, BaseException=BaseException, \
                  str=str):\n    event.wait(10)\n    \
                  try:\n        execute('SET', 'from', 'late thread')\n        out.append('reached')\n    \
                  except BaseException as e:\n        out.append(str(e))\n\
                  threading.Thread(target=late, daemon=True).start()\n";
    drop(frontend().compile(script, host.clone()).expect("compiles"));
    let other = Arc::new(Recorder::default());
    runs(
        "import sys, time\nevent, out = sys._gears_binding_4\nevent.set()\n\
         for _ in range(1000):\n    if out:\n        break\n    time.sleep(0.01)\n\
         log(out[0])\ndel sys._gears_binding_4",
        &other,
    );
    assert_eq!(other.logs(), vec![ENDED]);
    assert_eq!(host.commands(), vec![vec!["SET", "from", "thread"]]);
}

#[test]
fn atomic_blocks_belong_to_their_own_execution() {
    let a = Arc::new(Recorder::default());
    let b = Arc::new(Recorder::default());
    let control_a = ExecutionControl::unlimited();
    let first = {
        let _scope = ControlScope::enter(&control_a);
        frontend()
            .compile(
                "import sys\nsys._gears_binding_5 = (atomic, execute)",
                a.clone(),
            )
            .expect("compiles")
    };
    let control_b = ExecutionControl::unlimited();
    let _scope = ControlScope::enter(&control_b);
    let script = "import sys\nother_atomic, other_execute = sys._gears_binding_5\n\
                  def f(x):\n    try:\n        with other_atomic():\n            log('entered')\n    \
                  except GearsError as e:\n        log(str(e))\n    \
                  with atomic():\n        other_atomic().__exit__(None, None, None)\n        \
                  other_execute('SET', 'as', 'a')\n        execute('SET', 'as', 'b')\n    \
                  return x\n\
                  GB().map(f).run()";
    let compiled = frontend().compile(script, b.clone()).expect("compiles");
    let (_, errors) = execute(compiled, vec![Record::Integer(1)]);
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!(b.logs(), vec![ATOMIC_ELSEWHERE]);
    // A's block was never begun, and A's __exit__ did not end B's block: B's own did.
    assert!(a.atomic_events().is_empty(), "{:?}", a.atomic_events());
    assert_eq!(b.atomic_events(), vec!["begin", "end"]);
    assert_eq!(a.commands(), vec![vec!["SET", "as", "a"]]);
    assert_eq!(b.commands(), vec![vec!["SET", "as", "b"]]);
    assert!(!control_b.in_atomic() && !control_a.in_atomic());
    drop(first);
    runs("import sys\ndel sys._gears_binding_5", &b);
}

#[test]
fn run_of_another_session_builds_no_plan_here() {
    let a = Arc::new(Recorder::default());
    let first = frontend()
        .compile(
            "import sys\nsys._gears_binding_6 = GB('ShardsIDReader').map(lambda x: 'a')",
            a.clone(),
        )
        .expect("compiles");
    let b = Arc::new(Recorder::default());
    let compiled = frontend()
        .compile(
            "import sys\ntry:\n    sys._gears_binding_6.run()\nexcept GearsError as e:\n    log(str(e))\n\
             del sys._gears_binding_6\nGB('ShardsIDReader').map(lambda x: 'b').run()",
            b.clone(),
        )
        .expect("compiles");
    assert_eq!(
        b.logs(),
        vec!["run() can only be called from the top level of a script"]
    );
    assert_eq!(compiled.plans.len(), 1);
    let (results, _) = execute(compiled, vec![Record::Integer(1)]);
    assert_eq!(results, vec![Record::from("b")]);
    drop(first);
}

#[test]
fn redisgears_is_the_session_s_own_read_only_module() {
    let redis = Arc::new(Recorder::default());
    runs(
        "import sys, redisgears\nsys._gears_binding_7 = redisgears",
        &redis,
    );
    let script = r#"
import sys, redisgears
from redisgears import *
from redisgears import executeCommand as ec
assert redisgears is not sys._gears_binding_7
assert 'redisgears' not in sys.modules
assert ec is execute and redisgears.executeCommand is execute and executeCommand is execute
assert redisgears.atomic is atomic and redisgears.GearsError is GearsError
assert redisgears.__name__ == 'redisgears'
assert sorted(vars(redisgears)) == ['GearsError', '__name__', 'atomic', 'call_next', 'configGet',
    'executeCommand', 'flat_error', 'forcestopped', 'gearsConfigGet', 'get_command', 'hashtag',
    'log', 'override_reply', 'registerTimeEvent'], sorted(vars(redisgears))
vars(redisgears)['executeCommand'] = print
assert redisgears.executeCommand is execute
for attempt in ("redisgears.executeCommand = print", "del redisgears.log", "redisgears.x = 1"):
    try:
        exec(attempt)
        raise AssertionError(attempt)
    except AttributeError as e:
        assert str(e) == 'the Gears API module can not be modified', str(e)
try:
    type(redisgears).executeCommand = print
    raise AssertionError('the module type was modified')
except TypeError:
    pass
try:
    redisgears.nothing
    raise AssertionError('found')
except AttributeError as e:
    assert str(e) == "module 'redisgears' has no attribute 'nothing'", str(e)
for name in ('help', 'exit', 'quit', 'copyright', 'credits', 'license', '__loader__', '__spec__'):
    assert name not in __builtins__, name
import builtins
assert __builtins__['len'] is builtins.len and __builtins__['__import__'] is not builtins.__import__
del sys._gears_binding_7
"#;
    runs(script, &redis);
}

/// What the reviewer's attack did, against every dict `gc` can find that is not a live
/// session's namespace (other tests' sessions run meanwhile; a live session is reachable, see
/// docs/api-python.md) nor the `builtins` module's own dict: replace the Gears API objects and
/// the builtins found there, also in the dicts of the module type.
const TAMPER: &str = r#"
import gc, sys, builtins
spied = sys._gears_binding_8 = []
def spy(*args, _spied=spied, **kwargs):
    _spied.append(args)
    return 'spied'
targets = [execute, log, configGet, gearsConfigGet, hashtag, atomic, GB, GearsError,
           __builtins__['__import__'], builtins.sorted, builtins.len]
names = {'executeCommand', 'execute', 'log', 'configGet', 'gearsConfigGet', 'hashtag', 'atomic',
         'GB', 'GearsBuilder', 'GearsError', '_run', '_atomic_begin', '_atomic_end', 'sorted'}
def session_namespace(d):
    if d.get('__name__') in ('__main__', 'gears'):
        return True
    imp = d.get('__import__')
    return imp is not None and imp is not builtins.__import__
candidates = [o for o in gc.get_objects() if type(o) is dict]
for t in targets:
    candidates += [o for o in gc.get_referrers(t) if type(o) is dict]
sys._gears_binding_8_restore = restore = []
import redisgears
module_type = gc.get_referents(type(redisgears).__dict__)[0]
for k in ('executeCommand', '__getattribute__', '__getattr__'):
    restore.append((module_type, k, module_type.get(k, None)))
    module_type[k] = spy
seen = set()
for d in candidates:
    if id(d) in seen or d is vars(builtins) or session_namespace(d):
        continue
    seen.add(id(d))
    for k, v in list(d.items()):
        if any(v is t for t in targets) or k in names:
            restore.append((d, k, v))
            d[k] = spy
sys._gears_binding_8_count = len(restore)
"#;

const VICTIM: &str = r#"
import sys, redisgears
from redisgears import executeCommand
execute('SET', 'user:1', 'password123')
redisgears.executeCommand('SET', 'user:2', 'password456')
executeCommand('SET', 'user:3', 'password789')
assert sorted([3, 1, 2]) == [1, 2, 3] and len('abc') == 3
with atomic():
    execute('SET', 'user:4', 'password000')
assert hashtag() == '06S'
log('spied %d' % len(sys._gears_binding_8))
GB('ShardsIDReader').map(lambda x: x).run()
"#;

const RESTORE: &str = r#"
import sys
for d, k, v in reversed(sys._gears_binding_8_restore):
    if v is None:
        del d[k]
    else:
        d[k] = v
log('restored %d' % sys._gears_binding_8_count)
del sys._gears_binding_8, sys._gears_binding_8_restore, sys._gears_binding_8_count
"#;

#[test]
fn writing_into_every_dict_gc_finds_changes_nothing_a_later_session_uses() {
    let mallory = Arc::new(Recorder::default());
    runs(TAMPER, &mallory);
    let admin = Arc::new(Recorder::default());
    let compiled = frontend().compile(VICTIM, admin.clone());
    let restore = Arc::new(Recorder::default());
    runs(RESTORE, &restore);
    match compiled {
        Ok(compiled) => assert_eq!(compiled.plans.len(), 1),
        Err(GearsError::Script(text)) => panic!("the victim failed: {text}"),
        Err(other) => panic!("{other:?}"),
    }
    assert_eq!(
        admin.commands(),
        vec![
            vec!["SET", "user:1", "password123"],
            vec!["SET", "user:2", "password456"],
            vec!["SET", "user:3", "password789"],
            vec!["SET", "user:4", "password000"],
        ]
    );
    assert_eq!(admin.logs(), vec!["spied 0"]);
    assert_eq!(admin.atomic_events(), vec!["begin", "end"]);
    assert!(mallory.commands().is_empty());
    eprintln!("{:?}", restore.logs());
}

#[test]
fn a_cycle_through_a_session_s_redisgears_is_collected() {
    let redis = Arc::new(Recorder::default());
    // Built-in functions' __module__ is writable: the function and the module refer to each
    // other, and the module also holds the session's atomic class.
    let compiled = frontend()
        .compile(
            "import redisgears, sys, weakref\nexecute.__module__ = redisgears\n\
             sys._gears_binding_9 = weakref.ref(atomic)",
            redis.clone(),
        )
        .expect("compiles");
    drop(compiled);
    runs(
        "import gc, sys\nfor _ in range(100):\n    gc.collect()\n    \
         if sys._gears_binding_9() is None:\n        break\n\
         log(str(sys._gears_binding_9() is None))\ndel sys._gears_binding_9",
        &redis,
    );
    assert_eq!(redis.logs(), vec!["True"]);
}
