//! The sandboxed Lua state of a script and the Gears globals it sees.
//!
//! Libraries: base (without `dofile`, `loadfile`, `require`, `collectgarbage`; `load` accepts
//! text chunks only; `setmetatable` refuses `__gc`), `string`, `table`, `math`, `utf8`,
//! `coroutine`. No `io`, `os`, `package`,
//! `debug` or `ffi`. `print` writes to the Redis log at notice level. `string.find`,
//! `string.match`, `string.gmatch` and `string.gsub` are Rust ports that an execution's stop
//! interrupts (see `patterns`).

use std::sync::Arc;

use gears_core::{LogLevel, RedisAccess};
use mlua::{HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Value, VmState};

use crate::builder::create_builder_function;
use crate::convert::to_lua;
use crate::error::{message, raise, raise_gears, thrown};
use crate::state::SharedState;

/// The sandbox's replacements, run once per state with the Rust function that turns an error
/// object into its text:
/// - `load` refuses binary chunks;
/// - `setmetatable` refuses `__gc` metamethods: Lua runs finalizers with hooks switched off, so a
///   finalizer could loop (or hold an atomic block) where no limit reaches it, and one runs at
///   the latest when the script's state is closed, on a worker, after its execution ended;
/// - `string.rep` of an empty result, `table.move` over a large range, and `table.insert`,
///   `table.remove`, `table.concat` and `table.sort` on a table with a metatable (whose `__len`
///   may claim any length, whose `__index` may be a C function) would loop inside C, where the
///   instruction hook never runs: no abort, no time limit, and in an atomic block a frozen
///   server. They answer at once (`string.rep`), move in chunks of 4,096 with Lua between them
///   (`table.move`), shift in Lua (`insert`, `remove`), or read the items in Lua first
///   (`concat`, `sort`), with Lua 5.4's results and errors;
/// - `pcall`, `xpcall` and `coroutine.resume` hand an error raised by Gears (a Redis error from
///   `execute`, ...) to the script as its text (`script:3: ERR ...`), not as an error object
///   whose text carries a Rust stack traceback; a value a Rust function throws (the string
///   functions' errors, see `error::Thrown`) as that value. Other error values pass unchanged.
const SANDBOX: &str = r##"
local text, out_of_memory = ...
local raw_load = load
load = function(chunk, chunkname, _, env)
  if env == nil then
    return raw_load(chunk, chunkname, "t")
  end
  return raw_load(chunk, chunkname, "t", env)
end
local raw_setmetatable, raw_rawget, raw_type, raw_error = setmetatable, rawget, type, error
setmetatable = function(t, mt)
  if raw_type(mt) == "table" and raw_rawget(mt, "__gc") ~= nil then
    raw_error("__gc metamethods are not allowed", 2)
  end
  return raw_setmetatable(t, mt)
end
local function plain(ok, ...)
  if ok then
    return ok, ...
  end
  return ok, text((...))
end
local raw_pcall, raw_xpcall, raw_resume = pcall, xpcall, coroutine.resume
pcall = function(f, ...)
  return plain(raw_pcall(f, ...))
end
xpcall = function(f, handler, ...)
  return raw_xpcall(f, function(e) return handler(text(e)) end, ...)
end
coroutine.resume = function(co, ...)
  return plain(raw_resume(co, ...))
end
local tointeger, ult, maxinteger = math.tointeger, math.ult, math.maxinteger
local rep, move, insert, remove = string.rep, table.move, table.insert, table.remove
local raw_getmetatable, select, raw_match = getmetatable, select, string.match
-- Calls library function `name`; its error is raised where the script called the replacement,
-- worded as the function's own.
local function call(name, f, ...)
  local ok, result = raw_pcall(f, ...)
  if not ok then
    -- pcall hides a memory error's status; the execution must still see it as one.
    if result == "not enough memory" then
      out_of_memory()
    end
    if raw_type(result) == "string" then
      local before, after = raw_match(result, "^(.-to ')%?('.*)$")
      if before then
        result = before .. name .. after
      end
    end
    raw_error(result, 3)
  end
  return result
end
string.rep = function(...)
  local s, n, sep = ...
  if s == "" and (sep == nil or sep == "") and tointeger(n) ~= nil then
    return ""
  end
  local result = call("rep", rep, ...)
  return result
end
local CHUNK = 4096
table.move = function(...)
  local a1, f, e, t, a2 = ...
  local fi, ei, ti = tointeger(f), tointeger(e), tointeger(t)
  if fi == nil or ei == nil or ti == nil or ei - fi < CHUNK then
    local result = call("move", move, ...)
    return result
  end
  call("move", move, a1, 1, 0, 1, a2)
  if not (fi > 0 or ei < maxinteger + fi) then
    raw_error("bad argument #3 to 'move' (too many elements to move)", 2)
  end
  local n = ei - fi
  if ti > maxinteger - n then
    raw_error("bad argument #4 to 'move' (destination wrap around)", 2)
  end
  local dest = a2
  if dest == nil then dest = a1 end
  if ti > ei or ti <= fi or (a2 ~= nil and a1 ~= a2) then
    local i = 0
    while i <= n do
      local last = i + CHUNK - 1
      if last > n then last = n end
      call("move", move, a1, fi + i, fi + last, ti + i, dest)
      i = last + 1
    end
  else
    local last = n
    while last >= 0 do
      local first = last - CHUNK + 1
      if first < 0 then first = 0 end
      call("move", move, a1, fi + first, fi + last, ti + first, dest)
      last = first - 1
    end
  end
  return dest
end
local function length(t)
  local n = tointeger(#t)
  if n == nil then raw_error("object length is not an integer", 3) end
  return n
end
local raw_tonumber = tonumber
local function integer(v, name, arg)
  local i = tointeger(v)
  if i == nil then
    local why = "number has no integer representation"
    if raw_tonumber(v) == nil then
      why = "number expected, got " .. raw_type(v)
    end
    raw_error("bad argument #" .. (arg or 2) .. " to '" .. name .. "' (" .. why .. ")", 3)
  end
  return i
end
-- `concat` and `sort` of a table with a metatable read (and `sort` writes back) its items in
-- Lua: metamethods may be C functions (`__index = rawlen`) that no instruction runs in.
local concat, sort = table.concat, table.sort
table.concat = function(...)
  local t, sep, i, j = ...
  if raw_type(t) ~= "table" or raw_getmetatable(t) == nil then
    local result = call("concat", concat, ...)
    return result
  end
  if i == nil then i = 1 else i = integer(i, "concat", 3) end
  if j == nil then j = length(t) else j = integer(j, "concat", 4) end
  local parts, count = {}, 0
  for k = i, j do
    local v = t[k]
    local kind = raw_type(v)
    if kind ~= "string" and kind ~= "number" then
      raw_error("invalid value (" .. kind .. ") at index " .. k .. " in table for 'concat'", 2)
    end
    count = count + 1
    parts[count] = v
  end
  local result = call("concat", concat, parts, sep)
  return result
end
table.sort = function(...)
  local t, comp = ...
  if raw_type(t) ~= "table" or raw_getmetatable(t) == nil then
    call("sort", sort, ...)
    return
  end
  local n = length(t)
  if n >= 2147483647 then
    raw_error("bad argument #1 to 'sort' (array too big)", 2)
  end
  local items = {}
  for k = 1, n do items[k] = t[k] end
  call("sort", sort, items, comp)
  for k = 1, n do t[k] = items[k] end
end
table.insert = function(t, ...)
  if raw_type(t) ~= "table" or raw_getmetatable(t) == nil then
    call("insert", insert, t, ...)
    return
  end
  local count = select("#", ...)
  local e = length(t) + 1
  if count == 1 then
    t[e] = (...)
    return
  elseif count ~= 2 then
    raw_error("wrong number of arguments to 'insert'", 2)
  end
  local pos, v = ...
  pos = integer(pos, "insert")
  if not ult(pos - 1, e) then
    raw_error("bad argument #2 to 'insert' (position out of bounds)", 2)
  end
  for i = e, pos + 1, -1 do
    t[i] = t[i - 1]
  end
  t[pos] = v
end
table.remove = function(t, ...)
  if raw_type(t) ~= "table" or raw_getmetatable(t) == nil then
    local result = call("remove", remove, t, ...)
    return result
  end
  local size = length(t)
  local pos = size
  if select("#", ...) > 0 and (...) ~= nil then
    pos = integer((...), "remove")
  end
  if pos ~= size and ult(size, pos - 1) then
    raw_error("bad argument #2 to 'remove' (position out of bounds)", 2)
  end
  local v = t[pos]
  while pos < size do
    t[pos] = t[pos + 1]
    pos = pos + 1
  end
  t[pos] = nil
  return v
end
"##;

/// How many VM instructions run between two checks of the execution's control.
const CHECK_EVERY: u32 = 1000;

/// The instruction hook. Once the execution is stopped it raises on every line and every
/// instruction, so code that catches the error with `pcall` and loops on is stopped again at its
/// next line, until the error reaches the top.
fn check_control(lua: &Lua, _: &mlua::debug::Debug) -> mlua::Result<VmState> {
    match gears_core::control::check_current() {
        Ok(()) => Ok(VmState::Continue),
        Err(stopped) => {
            lua.set_global_hook(
                HookTriggers::new().every_line().every_nth_instruction(1),
                |_, _| match gears_core::control::check_current() {
                    Ok(()) => Ok(VmState::Continue),
                    Err(stopped) => Err(raise_gears(stopped)),
                },
            )?;
            Err(raise_gears(stopped))
        }
    }
}

/// Installs the sandbox's replacements ([`SANDBOX`]) and removes the functions scripts may not
/// use. An error object that carries a [`Thrown`](crate::error::Thrown) value reaches the script
/// as that value.
pub(crate) fn sandbox(lua: &Lua) -> mlua::Result<()> {
    let text = lua.create_function(|lua, value: Value| match value {
        Value::Error(error) => match thrown(&error) {
            Some(value) => Ok(value.clone()),
            None => Ok(Value::String(lua.create_string(message(&error))?)),
        },
        other => Ok(other),
    })?;
    let out_of_memory = lua.create_function(|_, ()| -> mlua::Result<()> {
        Err(mlua::Error::MemoryError("not enough memory".into()))
    })?;
    lua.load(SANDBOX)
        .set_name("=gears")
        .call::<()>((text, out_of_memory))?;
    let globals = lua.globals();
    for name in ["dofile", "loadfile", "require", "collectgarbage"] {
        globals.raw_set(name, Value::Nil)?;
    }
    Ok(())
}

/// A fresh sandboxed Lua state with the Gears globals installed.
///
/// The state observes the execution it is compiled for: its memory is limited to the
/// execution's memory limit, and every [`CHECK_EVERY`] instructions a hook checks the
/// execution's control, so a stopped execution (aborted, an atomic block past its time, Gears
/// out of memory) raises an error inside running Lua code, loops included.
pub fn new_state(redis: Arc<dyn RedisAccess>, state: SharedState) -> mlua::Result<Lua> {
    let libs = StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8 | StdLib::COROUTINE;
    let lua = Lua::new_with(libs, LuaOptions::new())?;
    if let Some(control) = gears_core::control::current() {
        // A single allocation (`string.rep`) happens inside one instruction: the state's own
        // limit refuses it, at the execution's limit or Gears' whole limit, the lower.
        let limit = [control.limits().memory, gears_core::memory::global_limit()]
            .into_iter()
            .filter(|&limit| limit > 0)
            .min()
            .unwrap_or(0);
        if limit > 0 {
            lua.set_memory_limit(usize::try_from(limit).unwrap_or(usize::MAX))?;
        }
    }
    lua.set_global_hook(
        HookTriggers::new().every_nth_instruction(CHECK_EVERY),
        check_control,
    )?;
    crate::patterns::install(&lua)?;
    sandbox(&lua)?;
    let globals = lua.globals();

    let builder = create_builder_function(&lua, state.clone())?;
    globals.raw_set("GearsBuilder", builder.clone())?;
    globals.raw_set("GB", builder)?;
    globals.raw_set("native", crate::builder::create_native_function(&lua)?)?;

    let r = redis.clone();
    let execute = lua.create_function(move |lua, args: MultiValue| {
        let args = args.into_vec();
        if args.is_empty() {
            return Err(raise("wrong number of args to execute function"));
        }
        let mut command = Vec::with_capacity(args.len());
        for arg in args {
            match lua.coerce_string(arg)? {
                Some(s) => command.push(s.as_bytes().to_vec()),
                None => return Err(raise("execute arguments must be strings or numbers")),
            }
        }
        let reply = r.execute(&command).map_err(raise_gears)?;
        to_lua(lua, &reply).map_err(raise_gears)
    })?;
    globals.raw_set("execute", execute)?;

    let r = redis.clone();
    let log = lua.create_function(move |lua, args: MultiValue| {
        let args = args.into_vec();
        if args.is_empty() || args.len() > 2 {
            return Err(raise("wrong number of args to log function"));
        }
        let text = match lua.coerce_string(args[0].clone())? {
            Some(s) => s.to_string_lossy(),
            None => args[0].to_string().unwrap_or_default(),
        };
        let level = match args.get(1) {
            None | Some(Value::Nil) => LogLevel::Notice,
            Some(Value::String(level)) => LogLevel::parse(&level.to_string_lossy())
                .ok_or_else(|| raise("invalid log level"))?,
            Some(_) => return Err(raise("invalid log level")),
        };
        r.log(level, &text);
        Ok(())
    })?;
    globals.raw_set("log", log)?;

    let r = redis.clone();
    let print = lua.create_function(move |_, args: MultiValue| {
        let parts: Vec<String> = args
            .iter()
            .map(|v| v.to_string().unwrap_or_else(|e| message(&e)))
            .collect();
        r.log(LogLevel::Notice, &parts.join("\t"));
        Ok(())
    })?;
    globals.raw_set("print", print)?;

    let r = redis.clone();
    let config_get = lua.create_function(move |lua, key: Value| {
        let key = match key {
            Value::String(s) => s.to_string_lossy(),
            _ => return Err(raise("configGet argument must be a string")),
        };
        match r.gears_config_get(&key) {
            Some(value) => to_lua(lua, &value).map_err(raise_gears),
            None => Ok(Value::Nil),
        }
    })?;
    globals.raw_set("configGet", config_get)?;

    let r = redis.clone();
    let gears_config_get = lua.create_function(move |lua, (key, default): (Value, Value)| {
        let key = match key {
            Value::String(s) => s.to_string_lossy(),
            _ => return Err(raise("gearsConfigGet argument must be a string")),
        };
        match r.gears_config_get(&key) {
            Some(value) => to_lua(lua, &value).map_err(raise_gears),
            None => Ok(default),
        }
    })?;
    globals.raw_set("gearsConfigGet", gears_config_get)?;

    let r = redis.clone();
    let hashtag = lua.create_function(move |_, ()| Ok(r.hashtag()))?;
    globals.raw_set("hashtag", hashtag)?;

    // Command hooks: call_next(...), override_reply(value), get_command(), flat_error(msg).
    let r = redis.clone();
    let call_next = lua.create_function(move |lua, args: MultiValue| {
        let mut command = Vec::with_capacity(args.len());
        for arg in args {
            match lua.coerce_string(arg)? {
                Some(s) => command.push(s.as_bytes().to_vec()),
                None => return Err(raise("call_next arguments must be strings or numbers")),
            }
        }
        let reply = r.call_next(&command).map_err(raise_gears)?;
        to_lua(lua, &reply).map_err(raise_gears)
    })?;
    globals.raw_set("call_next", call_next)?;
    let r = redis.clone();
    let override_reply = lua.create_function(move |_, value: Value| {
        let value = crate::convert::value_to_core(&value, 0).map_err(raise_gears)?;
        r.override_reply(value).map_err(raise_gears)
    })?;
    globals.raw_set("override_reply", override_reply)?;
    let r = redis.clone();
    let get_command = lua.create_function(move |lua, ()| {
        let command = r.get_command().map_err(raise_gears)?;
        let record =
            gears_core::Record::List(command.into_iter().map(gears_core::Record::from).collect());
        to_lua(lua, &record).map_err(raise_gears)
    })?;
    globals.raw_set("get_command", get_command)?;
    // An error reply of exactly `msg`, as a hook's result.
    let flat_error = lua.create_function(|lua, message: mlua::LuaString| {
        let mut text = b"-".to_vec();
        text.extend_from_slice(&message.as_bytes());
        lua.create_string(&text)
    })?;
    globals.raw_set("flat_error", flat_error)?;

    let register_timer = register_timer_function(&lua, redis.clone(), state)?;
    globals.raw_set("register_timer", register_timer)?;

    // atomic(f): runs f with no other client's command in between (the Redis lock is held).
    let r = redis;
    let atomic = lua.create_function(move |_, f: Value| {
        let Value::Function(f) = f else {
            return Err(raise("atomic argument must be a function"));
        };
        r.begin_atomic().map_err(raise_gears)?;
        let result = f.call::<MultiValue>(());
        r.end_atomic();
        result
    })?;
    globals.raw_set("atomic", atomic)?;

    Ok(lua)
}

/// `register_timer(seconds, f, key?)`: Python's `registerTE` in Lua. Calls `f()` every `seconds`
/// on the master, on Redis's main thread (a sync timer registration of the script's session);
/// an error stops it. With `key`, the timer lives while that key holds it; `false` if the key
/// holds something else, else `true`.
fn register_timer_function(
    lua: &Lua,
    redis: Arc<dyn RedisAccess>,
    state: SharedState,
) -> mlua::Result<mlua::Function> {
    lua.create_function(move |lua, args: MultiValue| {
        let args = args.into_vec();
        if args.len() < 2 || args.len() > 3 {
            return Err(raise("not enough arguments for time event"));
        }
        let Value::Function(callback) = &args[1] else {
            return Err(raise("callback must be a function"));
        };
        let seconds = match &args[0] {
            Value::Integer(n) => *n,
            Value::Number(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => *f as i64,
            _ => return Err(raise("time argument must be a long")),
        };
        let key = match args.get(2) {
            None | Some(Value::Nil) => None,
            Some(Value::String(text)) => Some(text.as_bytes().to_vec()),
            Some(_) => return Err(raise("key argument must be a string")),
        };
        gears_core::timer::check_time_event(seconds, key.as_deref()).map_err(raise_gears)?;
        if !state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .compiling
        {
            return Err(raise(
                "register_timer() can only be called while the script's top level runs",
            ));
        }
        if let Some(key) = &key {
            if !redis.timer_key_free(key).map_err(raise_gears)? {
                return Ok(false);
            }
        }
        // The step gets a record; the user's function gets no argument.
        let step: mlua::Function = lua
            .load("local f = ...\nreturn function() f() end")
            .set_name("=register_timer")
            .call(callback.clone())?;
        let mut script = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let id = script.add_callback(step).map_err(raise_gears)?;
        let spec = gears_core::timer::time_event(
            gears_core::Language::Lua,
            seconds,
            key,
            id,
            format!("register_timer({seconds})"),
        )
        .map_err(raise_gears)?;
        script.registrations.push(spec);
        Ok(true)
    })
}
