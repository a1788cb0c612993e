//! The arguments and errors of the string functions, as `lauxlib.c` checks and raises them:
//! `luaL_checklstring`, `luaL_optinteger`, `luaL_argerror` (with the function's name as the
//! caller sees it) and `luaL_error` (with the caller's position, `script:3: `).

use mlua::{Function, Lua, LuaString, MultiValue, Table, Value};

use crate::error::throw;

/// The arguments of one call (1-based, as in C).
pub struct Args<'a> {
    lua: &'a Lua,
    values: MultiValue,
}

impl<'a> Args<'a> {
    pub fn new(lua: &'a Lua, values: MultiValue) -> Self {
        Args { lua, values }
    }

    /// Argument `i`, `None` when the call has fewer arguments.
    pub fn get(&self, i: usize) -> Option<&Value> {
        self.values.get(i - 1)
    }

    /// `luaL_checklstring`: a string, or a number turned into one.
    pub fn check_string(&self, i: usize) -> mlua::Result<LuaString> {
        match self.get(i) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(number @ (Value::Integer(_) | Value::Number(_))) => {
                match self.lua.coerce_string(number.clone())? {
                    Some(s) => Ok(s),
                    None => Err(type_error(self.lua, i, "string", Some(number))),
                }
            }
            other => Err(type_error(self.lua, i, "string", other)),
        }
    }

    /// `luaL_optinteger`: `default` when absent or nil, else an integer (or a float or string
    /// with an exact integer value).
    pub fn opt_integer(&self, i: usize, default: i64) -> mlua::Result<i64> {
        let value = match self.get(i) {
            None | Some(Value::Nil) => return Ok(default),
            Some(Value::Integer(n)) => return Ok(*n),
            Some(value) => value,
        };
        if let Some(n) = self.lua.coerce_integer(value.clone())? {
            return Ok(n);
        }
        if self.lua.coerce_number(value.clone())?.is_some() {
            return Err(arg_error(
                self.lua,
                i,
                "number has no integer representation",
            ));
        }
        Err(type_error(self.lua, i, "number", Some(value)))
    }

    /// `lua_toboolean`: a missing argument is false.
    pub fn truthy(&self, i: usize) -> bool {
        !matches!(self.get(i), None | Some(Value::Nil | Value::Boolean(false)))
    }
}

/// `luaL_typename`.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Nil => "nil",
        Value::Boolean(_) => "boolean",
        Value::Integer(_) | Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Table(_) => "table",
        Value::Function(_) => "function",
        Value::Thread(_) => "thread",
        _ => "userdata",
    }
}

/// `luaL_error`: `text` raised as a string with the caller's position, as `luaL_where(L, 1)`
/// puts it.
pub fn lua_error(lua: &Lua, text: &str) -> mlua::Error {
    let text = format!("{}{text}", caller_position(lua));
    match lua.create_string(text) {
        Ok(s) => throw(Value::String(s)),
        Err(e) => e,
    }
}

/// `luaL_where(L, 1)`: `source:line: ` of the Lua function that called the running one, or
/// nothing when that is not a Lua function.
fn caller_position(lua: &Lua) -> String {
    lua.inspect_stack(1, |frame| {
        let line = frame.current_line().filter(|&line| line > 0)?;
        let source = frame.source().short_src?.into_owned();
        Some(format!("{source}:{line}: "))
    })
    .flatten()
    .unwrap_or_default()
}

/// `luaL_typeerror`: argument `i` is not of the `expected` type.
pub fn type_error(lua: &Lua, i: usize, expected: &str, value: Option<&Value>) -> mlua::Error {
    let got = match value {
        None => "no value".to_string(),
        Some(value) => match metatable_name(value) {
            Some(name) => name,
            None if matches!(value, Value::LightUserData(_)) => "light userdata".to_string(),
            None => type_name(value).to_string(),
        },
    };
    arg_error(lua, i, &format!("{expected} expected, got {got}"))
}

/// The `__name` field of a value's metatable, which names its type in argument errors.
fn metatable_name(value: &Value) -> Option<String> {
    let name: Value = match value {
        Value::Table(t) => t.metatable()?.raw_get("__name").ok()?,
        Value::UserData(ud) => ud.metatable().ok()?.get("__name").ok()?,
        _ => return None,
    };
    match name {
        Value::String(s) => Some(s.to_string_lossy()),
        _ => None,
    }
}

/// `luaL_argerror`: the running function's name comes from its call site (`find`, or the
/// local it was called through); in a method call (`s:find(...)`) `self` is not counted.
pub fn arg_error(lua: &Lua, i: usize, extra: &str) -> mlua::Error {
    let frame = lua.inspect_stack(0, |frame| {
        let names = frame.names();
        let method = names.name_what == Some("method");
        (names.name.map(|n| n.into_owned()), method, frame.function())
    });
    let Some((name, method, function)) = frame else {
        return lua_error(lua, &format!("bad argument #{i} ({extra})"));
    };
    let mut i = i;
    if method {
        i -= 1;
        if i == 0 {
            let name = name.unwrap_or_default();
            return lua_error(lua, &format!("calling '{name}' on bad self ({extra})"));
        }
    }
    let name = name
        .or_else(|| global_name(lua, &function))
        .unwrap_or_else(|| "?".to_string());
    lua_error(lua, &format!("bad argument #{i} to '{name}' ({extra})"))
}

/// `pushglobalfuncname`: the function's name among the loaded modules (`string.find`).
fn global_name(lua: &Lua, function: &Function) -> Option<String> {
    let loaded: Table = lua.named_registry_value("_LOADED").ok()?;
    let target = Value::Function(function.clone());
    let name = find_field(&loaded, &target, 2)?;
    Some(match name.strip_prefix("_G.") {
        Some(rest) => rest.to_string(),
        None => name,
    })
}

/// `findfield`: the dotted path to `target` in `table`, at most `level` deep, in `lua_next`
/// order.
fn find_field(table: &Table, target: &Value, level: u32) -> Option<String> {
    if level == 0 {
        return None;
    }
    for pair in table.pairs::<Value, Value>() {
        let Ok((Value::String(key), value)) = pair else {
            continue;
        };
        if value == *target {
            return Some(key.to_string_lossy());
        }
        if let Value::Table(inner) = &value {
            if let Some(rest) = find_field(inner, target, level - 1) {
                return Some(format!("{}.{rest}", key.to_string_lossy()));
            }
        }
    }
    None
}
