//! The Rust string functions against Lua's C ones, and their stop.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use gears_core::control::{ControlScope, ExecutionControl, Limits};
use gears_core::{Frontend, GearsError, LogLevel, Record, RedisAccess, Result};
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

/// No Redis: atomic blocks only mark the execution's control.
struct NoRedis;

impl RedisAccess for NoRedis {
    fn execute(&self, _args: &[Vec<u8>]) -> Result<Record> {
        Err(GearsError::Redis("no redis in unit tests".into()))
    }
    fn log(&self, _level: LogLevel, _message: &str) {}
    fn gears_config_get(&self, _key: &str) -> Option<Record> {
        None
    }
    fn hashtag(&self) -> String {
        String::new()
    }
    fn begin_atomic(&self) -> Result<()> {
        if let Some(control) = gears_core::control::current() {
            control.begin_atomic();
        }
        Ok(())
    }
    fn end_atomic(&self) {
        if let Some(control) = gears_core::control::current() {
            control.end_atomic();
        }
    }
}

fn redis() -> Arc<dyn RedisAccess> {
    Arc::new(NoRedis)
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
