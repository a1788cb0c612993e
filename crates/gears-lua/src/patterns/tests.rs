//! The Rust string functions against Lua's C ones, and their stop.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use gears_core::control::{ControlScope, ExecutionControl, Limits};
use gears_core::{Frontend, GearsError, RedisAccess};
use mlua::{Lua, LuaOptions, StdLib, Table, Value};

use crate::LuaFrontend;

const NAMES: [&str; 4] = ["find", "match", "gmatch", "gsub"];

/// A sandboxed state with the Rust functions installed, and a table of the C ones they
/// replaced.
fn state() -> (Lua, Table) {
    let libs = StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::COROUTINE;
    let lua = Lua::new_with(libs, LuaOptions::new()).expect("state");
    let string: Table = lua.globals().get("string").expect("string");
    let c = lua.create_table().expect("table");
    for name in NAMES {
        c.set(name, string.get::<Value>(name).expect("C function"))
            .expect("set");
    }
    super::install(&lua).expect("install");
    crate::globals::sandbox(&lua).expect("sandbox");
    (lua, c)
}

fn eval<T: mlua::FromLuaMulti>(lua: &Lua, code: &str) -> mlua::Result<T> {
    lua.load(code).set_name("=script").eval()
}

#[test]
fn the_rust_functions_return_what_the_c_ones_do() {
    let (lua, c) = state();
    let string: Table = lua.globals().get("string").expect("string");
    let (checks, mismatches): (i64, Vec<String>) = lua
        .load(include_str!("differential.lua"))
        .set_name("=script")
        .call((c, string))
        .expect("differential script");
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    assert!(checks > 50_000, "{checks} comparisons");
}

#[test]
fn methods_on_strings_use_the_rust_functions() {
    let (lua, c) = state();
    lua.globals().set("C", c).expect("set");
    let same: bool = eval(
        &lua,
        "return getmetatable('').__index == string and string.find ~= C.find
           and string.gsub ~= C.gsub and ('a.b'):gsub('%.', '!') == 'a!b'",
    )
    .expect("eval");
    assert!(same);
}

#[test]
fn errors_read_as_lua_errors() {
    let (lua, _) = state();
    let cases = [
        (
            "return select(2, pcall(string.find))",
            "bad argument #1 to 'string.find' (string expected, got no value)",
        ),
        (
            "return select(2, pcall(function() local x = ('a'):find('%') return x end))",
            "script:1: malformed pattern (ends with '%')",
        ),
        (
            "return select(2, pcall(function() local x = ('a'):rep(300):find(('.?'):rep(250)) return x end))",
            "script:1: pattern too complex",
        ),
        (
            "return select(2, pcall(function() for _ in ('a'):gmatch('[a') do end end))",
            "script:1: malformed pattern (missing ']')",
        ),
    ];
    for (code, expected) in cases {
        let got: String = eval(&lua, code).expect(code);
        assert_eq!(got, expected);
    }
}

#[test]
fn an_uncaught_pattern_error_fails_the_script_with_its_text() {
    let error = match LuaFrontend::new().compile("\nlocal x = ('a'):find('%f')", redis()) {
        Ok(_) => panic!("compiled"),
        Err(e) => e,
    };
    assert_eq!(
        error,
        GearsError::Script("script:2: missing '[' after '%f' in pattern".into())
    );
}

fn redis() -> Arc<dyn RedisAccess> {
    Arc::new(crate::tests::NoRedis)
}

/// Patterns that backtrack for hours in C.
const EXPONENTIAL: [&str; 4] = [
    "string.find(string.rep('a', 40), string.rep('a*', 40) .. 'b')",
    "string.match(string.rep('a', 40), string.rep('a-', 40) .. 'b')",
    "for _ in string.gmatch(string.rep('a', 40), string.rep('a?', 40) .. 'b') do end",
    "string.gsub(string.rep('a', 40), string.rep('%a*', 40) .. '$b', 'x')",
];

/// Runs `script` under `control`, returning its error and when it ended.
fn run_under(control: &Arc<ExecutionControl>, script: &str) -> (GearsError, Instant) {
    let _scope = ControlScope::enter(control);
    let outcome = LuaFrontend::new().compile(script, redis());
    let ended = Instant::now();
    match outcome {
        Ok(_) => panic!("the script ended: {script}"),
        Err(e) => (e, ended),
    }
}

#[test]
fn an_abort_stops_an_exponential_pattern() {
    for script in EXPONENTIAL {
        let control = ExecutionControl::unlimited();
        let stopper = {
            let control = control.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(50));
                control.stop("Execution was aborted");
                Instant::now()
            })
        };
        let (error, ended) = run_under(&control, script);
        let stopped = stopper.join().expect("stopper");
        assert_eq!(error, GearsError::Stopped("Execution was aborted".into()));
        let latency = ended.saturating_duration_since(stopped);
        assert!(latency < Duration::from_millis(50), "{script}: {latency:?}");
    }
}

#[test]
fn a_pattern_caught_by_pcall_still_stops() {
    let control = ExecutionControl::unlimited();
    control.stop("Execution was aborted");
    let script = format!("while true do pcall(function() {} end) end", EXPONENTIAL[0]);
    let (error, _) = run_under(&control, &script);
    assert_eq!(error, GearsError::Stopped("Execution was aborted".into()));
}

#[test]
fn the_run_time_limit_stops_an_exponential_pattern() {
    let control = ExecutionControl::new(Limits {
        timeout: Duration::from_millis(100),
        ..Limits::default()
    });
    control.start_clock();
    let started = Instant::now();
    let (error, _) = run_under(&control, EXPONENTIAL[0]);
    assert!(
        matches!(&error, GearsError::Stopped(m) if m.starts_with("TIMEOUT")),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn the_atomic_block_limit_stops_an_exponential_pattern() {
    let control = ExecutionControl::new(Limits {
        atomic_max: Duration::from_millis(50),
        ..Limits::default()
    });
    let started = Instant::now();
    let script = format!("atomic(function() {} end)", EXPONENTIAL[3]);
    let (error, _) = run_under(&control, &script);
    assert!(
        matches!(&error, GearsError::Stopped(m) if m.starts_with("BUSY")),
        "{error:?}"
    );
    assert!(!control.in_atomic());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
#[ignore]
fn bench_by_hand() {
    let (lua, c) = state();
    let string: Table = lua.globals().get("string").expect("string");
    let setup = r#"
      local lib = ...
      local text = string.rep('hello world 12345 foo-bar ', 40330) -- ~1 MB
      local words = string.rep('alpha beta gamma delta ', 25000) -- 100k words
      local line = 'GET /index.html 200 1234-5678 "Mozilla"'
      local cases = {
        {'gsub %w+ -> x (1MB)', function() return lib.gsub(text, '%w+', 'x') end},
        {'gsub o -> 0 (1MB)', function() return lib.gsub(text, 'o', '0') end},
        {'gsub %s -> "" (1MB)', function() return lib.gsub(text, '%s', '') end},
        {'gsub (%w+) -> <%1> (1MB)', function() return lib.gsub(text, '(%w+)', '<%1>') end},
        {'gsub %d+ function (1MB)', function() return lib.gsub(text, '%d+', function(d) return #d end) end},
        {'gsub %a+ table (1MB)', function() return lib.gsub(text, '%a+', {hello = 'HI'}) end},
        {'gsub no match (1MB)', function() return lib.gsub(text, 'xyz', 'q') end},
        {'gmatch %a+ (100k words)', function() local n = 0 for _ in lib.gmatch(words, '%a+') do n = n + 1 end return n end},
        {'gmatch (%a+) (%a+) (100k)', function() local n = 0 for a, b in lib.gmatch(words, '(%a+) (%a+)') do n = n + 1 end return n end},
        {'find plain miss (1MB) x100', function() for _ = 1, 100 do lib.find(text, 'zzz') end end},
        {'find plain=true (1MB) x100', function() for _ = 1, 100 do lib.find(text, '12345 foo-bar x', 1, true) end end},
        {'find pattern miss (1MB) x10', function() for _ = 1, 10 do lib.find(text, '%d%d%d%d%d%d') end end},
        {'find .-$ (10 KB)', function() return lib.find(text:sub(1, 10000), 'hello.-zzz$') end},
        {'find captures x100k', function() for _ = 1, 100000 do lib.find(line, '(%d+)-(%d+)') end end},
        {'match ^(%w+)=(%w+)$ x100k', function() for _ = 1, 100000 do lib.match('key=value', '^(%w+)=(%w+)$') end end},
        {'match %S+ x100k', function() for _ = 1, 100000 do lib.match(line, '"(%S+)"') end end},
        {'find short plain x100k', function() for _ = 1, 100000 do lib.find(line, 'html') end end},
      }
      return cases
    "#;
    let run = |lib: &Table| -> Vec<(String, f64)> {
        let cases: Table = lua
            .load(setup)
            .set_name("=bench")
            .call(lib.clone())
            .expect("setup");
        let mut out = Vec::new();
        for case in cases.sequence_values::<Table>() {
            let case = case.expect("case");
            let name: String = case.get(1).expect("name");
            let f: mlua::Function = case.get(2).expect("f");
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = Instant::now();
                f.call::<mlua::MultiValue>(()).expect("run");
                best = best.min(t.elapsed().as_secs_f64());
            }
            out.push((name, best));
        }
        out
    };
    let c_times = run(&c);
    let r_times = run(&string);
    for ((name, ct), (_, rt)) in c_times.iter().zip(r_times.iter()) {
        println!(
            "{name:32} C {:8.2} ms  Rust {:8.2} ms  ratio {:.2}",
            ct * 1e3,
            rt * 1e3,
            rt / ct
        );
    }
}
