//! `string.find`, `string.match`, `string.gmatch` and `string.gsub`, ported from Lua 5.4's
//! `lstrlib.c` to Rust.
//!
//! Lua's own run their matching in C, where the instruction hook that stops a script never
//! fires: a pattern that backtracks exponentially (`('a'):rep(40):find(('a*'):rep(40) .. 'b')`)
//! ran for hours, unstoppable, and inside an atomic block froze Redis. The port's matcher counts
//! its steps and checks the execution's control every few thousand (see [`matcher`]); a stopped
//! execution raises its stop as the error, as the hook does.
//!
//! Everything else is Lua 5.4's: results, errors and their texts (`script:3: malformed pattern
//! (ends with '%')`), argument checks and coercions. Errors are raised as Lua strings (see
//! [`Thrown`](crate::error::Thrown)).

mod args;
mod matcher;
#[cfg(test)]
mod tests;

use memchr::memmem;
use mlua::chunk::ChunkMode;
use mlua::{Function, Lua, LuaString, MultiValue, Table, Value};

use crate::error::{raise_gears, throw};
use args::{lua_error, type_error, type_name, Args};
use matcher::{no_specials, Capture, MatchError, Matcher};

/// Replaces the four functions in the state's `string` table (which is also the `__index` of
/// strings, so `s:find(...)` calls them too).
pub fn install(lua: &Lua) -> mlua::Result<()> {
    let globals = lua.globals();
    let string: Table = globals.raw_get("string")?;
    let callers = Callers::new(lua)?;
    let find = lua.create_function(|lua, args| find_aux(lua, &Args::new(lua, args), true))?;
    let match_ = lua.create_function(|lua, args| find_aux(lua, &Args::new(lua, args), false))?;
    let gmatch = lua.create_function(|lua, args| gmatch(lua, &Args::new(lua, args)))?;
    let gsub = lua.create_function(move |lua, args| gsub(lua, &Args::new(lua, args), &callers))?;
    string.raw_set("find", find)?;
    string.raw_set("match", match_)?;
    string.raw_set("gmatch", gmatch)?;
    string.raw_set("gsub", gsub)?;
    Ok(())
}

/// How `gsub` runs Lua code (a replacement function, a table's `__index`) so that it behaves as
/// from C: through the raw `pcall`, whose error value is raised again unchanged (an error
/// passing through an mlua call would become a string).
struct Callers {
    /// The base library's `pcall` (the sandbox replaces the global later).
    pcall: Function,
    /// `t[k]`, stripped of line information: an error raised at level 2 from `__index`
    /// (`error(msg, 2)`) has no position, as when C's `lua_gettable` called it.
    index: Function,
}

impl Callers {
    fn new(lua: &Lua) -> mlua::Result<Self> {
        let index = lua.load("local t, k = ... return t[k]").into_function()?;
        let index = lua
            .load(index.dump(true))
            .set_mode(ChunkMode::Binary)
            .into_function()?;
        Ok(Callers {
            pcall: lua.globals().raw_get("pcall")?,
            index,
        })
    }

    /// `t[key]`, with its metamethods (`lua_gettable`).
    fn get(&self, table: &Table, key: Value) -> mlua::Result<Value> {
        if table.metatable().is_none() {
            return table.raw_get(key);
        }
        let call = [
            Value::Function(self.index.clone()),
            Value::Table(table.clone()),
            key,
        ];
        self.call(MultiValue::from_iter(call))
    }

    /// Calls `call[0]` with the rest of `call`, raising its error unchanged.
    fn call(&self, call: MultiValue) -> mlua::Result<Value> {
        let mut results = self.pcall.call::<MultiValue>(call)?.into_iter();
        let ok = matches!(results.next(), Some(Value::Boolean(true)));
        let value = results.next().unwrap_or(Value::Nil);
        match value {
            _ if ok => Ok(value),
            // Gears' errors (the execution's stop) and Rust errors keep their kind.
            Value::Error(error) => Err(*error),
            // pcall hides a memory error's status; the execution must still see it as one.
            Value::String(s) if s.as_bytes() == b"not enough memory".as_slice() => {
                Err(mlua::Error::MemoryError("not enough memory".into()))
            }
            other => Err(throw(other)),
        }
    }
}

/// The Lua error of a failed match: the C function's error at the caller's position, or the
/// execution's stop.
fn match_error(lua: &Lua, error: MatchError) -> mlua::Error {
    match error {
        MatchError::Lua(text) => lua_error(lua, &text),
        MatchError::Stopped(stopped) => raise_gears(stopped),
    }
}

/// A position or count as a Lua integer (a Lua string's length fits in one).
fn integer(n: usize) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// `posrelatI`: a 1-based start position, negative from the end, clipped to `[1, inf)`.
fn start_position(pos: i64, len: usize) -> usize {
    if pos > 0 {
        usize::try_from(pos).unwrap_or(usize::MAX)
    } else if pos == 0 || pos.unsigned_abs() > len as u64 {
        1
    } else {
        len - usize::try_from(pos.unsigned_abs()).unwrap_or(len) + 1
    }
}

/// `get_onecapture` as a Lua value.
fn capture_value(lua: &Lua, m: &Matcher, i: usize, s: usize, e: usize) -> mlua::Result<Value> {
    match m.capture(i, s, e).map_err(|err| match_error(lua, err))? {
        Capture::Text(range) => Ok(Value::String(lua.create_string(&m.subject()[range])?)),
        Capture::Position(pos) => Ok(Value::Integer(pos)),
    }
}

/// `push_captures` for the match `s..e`: its captures, or the whole match when the pattern has
/// none and `whole` (false for `find`, which returns the positions instead).
fn push_captures(
    lua: &Lua,
    m: &Matcher,
    (s, e): (usize, usize),
    whole: bool,
    out: &mut MultiValue,
) -> mlua::Result<()> {
    for i in 0..m.capture_count(whole) {
        out.push_back(capture_value(lua, m, i, s, e)?);
    }
    Ok(())
}

/// `nil`, Lua's `luaL_pushfail`.
fn fail() -> MultiValue {
    MultiValue::from_vec(vec![Value::Nil])
}

/// The pattern without its `^` anchor, and whether it had one.
fn split_anchor(pattern: &[u8]) -> (bool, &[u8]) {
    match pattern.split_first() {
        Some((b'^', rest)) => (true, rest),
        _ => (false, pattern),
    }
}

/// `str_find_aux`: `string.find` (`find`) and `string.match`.
fn find_aux(lua: &Lua, args: &Args, find: bool) -> mlua::Result<MultiValue> {
    let subject = args.check_string(1)?;
    let pattern = args.check_string(2)?;
    let (src, pat) = (subject.as_bytes(), pattern.as_bytes());
    let init = start_position(args.opt_integer(3, 1)?, src.len()) - 1;
    if init > src.len() {
        return Ok(fail()); // starts after the subject's end
    }
    if find && (args.truthy(4) || no_specials(&pat)) {
        return Ok(match memmem::find(&src[init..], &pat) {
            Some(at) => {
                MultiValue::from_vec(vec![integer(init + at + 1), integer(init + at + pat.len())])
            }
            None => fail(),
        });
    }
    let (anchor, pat) = split_anchor(&pat);
    let mut m = Matcher::new(&src, pat);
    let mut s1 = init;
    loop {
        if let Some(e) = m.match_at(s1).map_err(|err| match_error(lua, err))? {
            let mut out = MultiValue::new();
            if find {
                out.push_back(integer(s1 + 1));
                out.push_back(integer(e));
            }
            push_captures(lua, &m, (s1, e), !find, &mut out)?;
            return Ok(out);
        }
        if anchor || s1 >= src.len() {
            return Ok(fail());
        }
        s1 += 1;
    }
}

/// `gmatch`: an iterator over the matches from `init` on. `^` is no anchor here.
fn gmatch(lua: &Lua, args: &Args) -> mlua::Result<Function> {
    let subject = args.check_string(1)?;
    let pattern = args.check_string(2)?;
    let len = subject.as_bytes().len();
    // Past the end: one past it, so the iterator finds nothing.
    let mut src = (start_position(args.opt_integer(3, 1)?, len) - 1).min(len + 1);
    let mut last_match: Option<usize> = None;
    lua.create_function_mut(move |lua, ()| {
        let (bytes, pat) = (subject.as_bytes(), pattern.as_bytes());
        let mut m = Matcher::new(&bytes, &pat);
        let mut out = MultiValue::new();
        if let Some((start, end)) =
            next_match(&mut m, src, last_match).map_err(|err| match_error(lua, err))?
        {
            (src, last_match) = (end, Some(end));
            push_captures(lua, &m, (start, end), true, &mut out)?;
        }
        Ok(out)
    })
}

/// `gmatch_aux`: the next match starting at `from` or after. An empty match right where the
/// last one ended does not count.
fn next_match(
    m: &mut Matcher,
    from: usize,
    last_match: Option<usize>,
) -> Result<Option<(usize, usize)>, MatchError> {
    for start in from..=m.subject().len() {
        if let Some(end) = m.match_at(start)?.filter(|&e| Some(e) != last_match) {
            return Ok(Some((start, end)));
        }
    }
    Ok(None)
}

/// The replacement argument of `gsub`.
enum Replacement {
    Text(LuaString),
    Table(Table),
    Function(Function),
}

impl Replacement {
    fn from_arg(lua: &Lua, args: &Args) -> mlua::Result<Self> {
        match args.get(3) {
            Some(Value::String(s)) => Ok(Replacement::Text(s.clone())),
            Some(Value::Table(t)) => Ok(Replacement::Table(t.clone())),
            Some(Value::Function(f)) => Ok(Replacement::Function(f.clone())),
            Some(number @ (Value::Integer(_) | Value::Number(_))) => {
                match lua.coerce_string(number.clone())? {
                    Some(s) => Ok(Replacement::Text(s)),
                    None => Err(type_error(lua, 3, "string/function/table", Some(number))),
                }
            }
            other => Err(type_error(lua, 3, "string/function/table", other)),
        }
    }
}

/// The result of `gsub`, built lazily: the subject up to `copied` is in `buf`; the bytes from
/// there to the current position are the subject's own (skipped, or kept by a nil
/// replacement), copied only when a replacement follows them.
struct Output {
    buf: Vec<u8>,
    copied: usize,
}

impl Output {
    fn push(&mut self, bytes: &[u8]) -> mlua::Result<()> {
        // A huge result is Lua's "not enough memory", not an abort of the process.
        self.buf
            .try_reserve(bytes.len())
            .map_err(|_| mlua::Error::MemoryError("not enough memory".into()))?;
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// Copies the subject's bytes up to `to` into the result.
    fn catch_up(&mut self, src: &[u8], to: usize) -> mlua::Result<()> {
        if to > self.copied {
            self.push(&src[self.copied..to])?;
            self.copied = to;
        }
        Ok(())
    }
}

/// `str_gsub`.
fn gsub(lua: &Lua, args: &Args, callers: &Callers) -> mlua::Result<MultiValue> {
    let subject = args.check_string(1)?;
    let pattern = args.check_string(2)?;
    let (src, pat) = (subject.as_bytes(), pattern.as_bytes());
    let max = args.opt_integer(4, i64::try_from(src.len()).unwrap_or(i64::MAX - 1) + 1)?;
    let replacement = Replacement::from_arg(lua, args)?;
    let (anchor, pat) = split_anchor(&pat);
    let mut m = Matcher::new(&src, pat);
    let mut out = Output {
        buf: Vec::new(),
        copied: 0,
    };
    let (mut pos, mut last_match, mut n, mut changed) = (0, None, 0i64, false);
    while n < max {
        let end = m.match_at(pos).map_err(|err| match_error(lua, err))?;
        match end.filter(|&e| Some(e) != last_match) {
            Some(e) => {
                n += 1;
                changed |= add_value(lua, &mut m, &mut out, (pos, e), &replacement, callers)?;
                (pos, last_match) = (e, Some(e));
            }
            None if pos < src.len() => pos += 1,
            None => break,
        }
        if anchor {
            break;
        }
    }
    let result = if changed {
        out.catch_up(&src, src.len())?;
        lua.create_string(&out.buf)?
    } else {
        subject.clone()
    };
    Ok(MultiValue::from_vec(vec![
        Value::String(result),
        Value::Integer(n),
    ]))
}

/// `add_value`: replaces the match `s..e`; false when the replacement kept it (a nil or false
/// from the table or function).
fn add_value(
    lua: &Lua,
    m: &mut Matcher,
    out: &mut Output,
    (s, e): (usize, usize),
    replacement: &Replacement,
    callers: &Callers,
) -> mlua::Result<bool> {
    let value = match replacement {
        Replacement::Text(text) => {
            let before = out.buf.len();
            add_string(lua, m, out, (s, e), &text.as_bytes())?;
            // Long replacements count as steps, so the memory they take is checked.
            let written = out.buf.len() - before;
            m.tick(written / 256).map_err(|err| match_error(lua, err))?;
            return Ok(true);
        }
        Replacement::Table(table) => callers.get(table, capture_value(lua, m, 0, s, e)?)?,
        Replacement::Function(f) => {
            let mut call = MultiValue::new();
            call.push_back(Value::Function(f.clone()));
            push_captures(lua, m, (s, e), true, &mut call)?;
            callers.call(call)?
        }
    };
    let text = match value {
        Value::Nil | Value::Boolean(false) => return Ok(false), // keep the original
        Value::String(text) => text,
        number @ (Value::Integer(_) | Value::Number(_)) => match lua.coerce_string(number)? {
            Some(text) => text,
            None => return Err(lua_error(lua, "invalid replacement value (a number)")),
        },
        other => {
            let text = format!("invalid replacement value (a {})", type_name(&other));
            return Err(lua_error(lua, &text));
        }
    };
    out.catch_up(m.subject(), s)?;
    out.push(&text.as_bytes())?;
    out.copied = e;
    m.tick(text.as_bytes().len() / 256)
        .map_err(|err| match_error(lua, err))?;
    Ok(true)
}

/// `add_s`: the replacement string, with `%0`-`%9` and `%%` expanded.
fn add_string(
    lua: &Lua,
    m: &Matcher,
    out: &mut Output,
    (s, e): (usize, usize),
    text: &[u8],
) -> mlua::Result<()> {
    let src = m.subject();
    out.catch_up(src, s)?;
    let mut rest = text;
    while let Some(at) = memchr::memchr(b'%', rest) {
        out.push(&rest[..at])?;
        // C reads the terminating NUL after a final '%'.
        match rest.get(at + 1).copied().unwrap_or(0) {
            b'%' => out.push(b"%")?,
            b'0' => out.push(&src[s..e])?,
            d @ b'1'..=b'9' => {
                match m
                    .capture(usize::from(d - b'1'), s, e)
                    .map_err(|err| match_error(lua, err))?
                {
                    Capture::Text(range) => out.push(&src[range])?,
                    Capture::Position(pos) => out.push(pos.to_string().as_bytes())?,
                }
            }
            _ => return Err(lua_error(lua, "invalid use of '%' in replacement string")),
        }
        rest = &rest[at + 2..];
    }
    out.push(rest)?;
    out.copied = e;
    Ok(())
}
