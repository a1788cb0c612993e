//! The settings Gears knows: their names, families, whether they change at runtime, how their
//! values parse, and their defaults.

use std::time::Duration;

/// Whose setting it is. The family decides the reply texts and name matching of
/// `RG.CONFIGSET`, as in RedisGears 1.2 (core and Python plugin differ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    /// RedisGears' core settings: names match case-insensitively.
    Core,
    /// RedisGears' Python plugin settings: exact names; a runtime change is also saved in the
    /// extra config dictionary.
    Python,
    /// Gears' own settings (not in RedisGears): names match case-insensitively.
    Gears,
}

/// How a setting's text parses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An integer of at least `min`.
    Integer { min: i64 },
    /// 0 or 1 (any integer; non-zero is true), replied as an integer.
    Bool,
    /// Any text.
    Text,
    /// A size in bytes: an integer with an optional `kb`, `mb`, `gb` suffix; 0 means automatic.
    Bytes,
    /// A list; each value given appends to it (`Plugin`).
    List,
}

/// A parsed value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    Integer(i64),
    Text(String),
    List(Vec<String>),
}

impl Value {
    pub fn as_integer(&self) -> i64 {
        match self {
            Value::Integer(i) => *i,
            _ => 0,
        }
    }

    pub fn as_text(&self) -> &str {
        match self {
            Value::Text(s) => s,
            _ => "",
        }
    }
}

pub(crate) struct Setting {
    pub name: &'static str,
    pub family: Family,
    /// True when `RG.CONFIGSET` may change it; otherwise only a module argument sets it.
    pub runtime: bool,
    pub kind: Kind,
    pub default: fn() -> Value,
}

const fn setting(
    name: &'static str,
    family: Family,
    runtime: bool,
    kind: Kind,
    default: fn() -> Value,
) -> Setting {
    Setting {
        name,
        family,
        runtime,
        kind,
        default,
    }
}

pub(crate) const MAX_EXECUTIONS: &str = "MaxExecutions";
pub(crate) const MAX_EXECUTIONS_PER_REGISTRATION: &str = "MaxExecutionsPerRegistration";
pub(crate) const PROFILE_EXECUTIONS: &str = "ProfileExecutions";
pub(crate) const EXECUTION_THREADS: &str = "ExecutionThreads";
pub(crate) const EXECUTION_MAX_IDLE_TIME: &str = "ExecutionMaxIdleTime";
pub(crate) const SEND_MSG_RETRIES: &str = "SendMsgRetries";
pub(crate) const PLUGIN: &str = "Plugin";
pub(crate) const PYTHON_ATTEMPT_TRACEBACK: &str = "PythonAttemptTraceback";
pub(crate) const PYTHON_INSTALL_REQ_MAX_IDLE_TIME: &str = "PythonInstallReqMaxIdleTime";
pub(crate) const PYTHON_VENV: &str = "PythonVenv";
pub(crate) const PYTHON_INSTALLATION_DIR: &str = "PythonInstallationDir";
pub(crate) const PYTHON_WHEELS_DIR: &str = "PythonWheelsDir";
pub(crate) const PYTHON_ENABLED: &str = "PythonEnabled";
pub(crate) const MEMORY_LIMIT: &str = "MemoryLimit";
pub(crate) const EXECUTION_MEMORY_LIMIT: &str = "ExecutionMemoryLimit";
pub(crate) const ATOMIC_BLOCK_MAX_TIME: &str = "AtomicBlockMaxTime";
pub(crate) const EXECUTION_MAX_RUN_TIME: &str = "ExecutionMaxRunTime";
pub(crate) const EXECUTION_MAX_RECORDS: &str = "ExecutionMaxRecords";
pub(crate) const EXECUTION_MAX_REPLY_SIZE: &str = "ExecutionMaxReplySize";
pub(crate) const EXECUTION_MAX_ERRORS: &str = "ExecutionMaxErrors";
pub(crate) const MAX_QUEUED_EXECUTIONS: &str = "MaxQueuedExecutions";
pub(crate) const MAX_PENDING_EVENTS: &str = "MaxPendingEventsPerRegistration";
pub(crate) const SYNC_REGISTRATION_WRITES: &str = "SyncRegistrationWrites";
pub(crate) const MAX_REGISTRATIONS: &str = "MaxRegistrations";

/// The highest `ExecutionThreads` Gears accepts.
pub(crate) const MAX_EXECUTION_THREADS: i64 = 64;

fn integer(i: i64) -> Value {
    Value::Integer(i)
}

/// Every setting, RedisGears 1.2's first (same names, defaults and runtime rules).
#[rustfmt::skip]
pub(crate) static SETTINGS: &[Setting] = &[
    setting(MAX_EXECUTIONS, Family::Core, true, Kind::Integer { min: 0 }, || integer(1000)),
    setting(MAX_EXECUTIONS_PER_REGISTRATION, Family::Core, true, Kind::Integer { min: i64::MIN }, || integer(100)),
    setting(PROFILE_EXECUTIONS, Family::Core, true, Kind::Integer { min: i64::MIN }, || integer(0)),
    setting(EXECUTION_THREADS, Family::Core, false, Kind::Integer { min: 1 }, || integer(3)),
    setting(EXECUTION_MAX_IDLE_TIME, Family::Core, true, Kind::Integer { min: 1 }, || integer(5000)),
    setting(SEND_MSG_RETRIES, Family::Core, true, Kind::Integer { min: 0 }, || integer(3)),
    setting(PLUGIN, Family::Core, false, Kind::List, || Value::List(Vec::new())),
    setting("CreateVenv", Family::Python, false, Kind::Bool, || integer(0)),
    setting("DownloadDeps", Family::Python, false, Kind::Bool, || integer(0)),
    setting("ForeceDownloadDepsOnEnterprise", Family::Python, false, Kind::Bool, || integer(0)),
    setting(PYTHON_ATTEMPT_TRACEBACK, Family::Python, true, Kind::Bool, || integer(1)),
    setting("OverridePythonAllocators", Family::Python, false, Kind::Bool, || integer(1)),
    setting(PYTHON_INSTALL_REQ_MAX_IDLE_TIME, Family::Python, true, Kind::Integer { min: 1 }, || integer(30000)),
    setting("DependenciesUrl", Family::Python, false, Kind::Text, || Value::Text(String::new())),
    setting("DependenciesSha256", Family::Python, false, Kind::Text, || Value::Text(String::new())),
    setting(PYTHON_INSTALLATION_DIR, Family::Python, false, Kind::Text, || Value::Text(String::new())),
    setting(PYTHON_VENV, Family::Gears, false, Kind::Text, || Value::Text(String::new())),
    setting(PYTHON_ENABLED, Family::Gears, false, Kind::Bool, || integer(1)),
    setting(PYTHON_WHEELS_DIR, Family::Gears, true, Kind::Text, || Value::Text(String::new())),
    setting(MEMORY_LIMIT, Family::Gears, true, Kind::Bytes, || integer(0)),
    setting(EXECUTION_MEMORY_LIMIT, Family::Gears, true, Kind::Bytes, || integer(0)),
    setting(ATOMIC_BLOCK_MAX_TIME, Family::Gears, true, Kind::Integer { min: 1 }, || integer(5000)),
    setting(EXECUTION_MAX_RUN_TIME, Family::Gears, true, Kind::Integer { min: 0 }, || integer(600_000)),
    setting(EXECUTION_MAX_RECORDS, Family::Gears, true, Kind::Integer { min: 0 }, || integer(50_000_000)),
    setting(EXECUTION_MAX_REPLY_SIZE, Family::Gears, true, Kind::Bytes, || integer(512 << 20)),
    setting(EXECUTION_MAX_ERRORS, Family::Gears, true, Kind::Integer { min: 0 }, || integer(100)),
    setting(MAX_QUEUED_EXECUTIONS, Family::Gears, true, Kind::Integer { min: 0 }, || integer(1000)),
    setting(MAX_PENDING_EVENTS, Family::Gears, true, Kind::Integer { min: 1 }, || integer(1_000_000)),
    setting(SYNC_REGISTRATION_WRITES, Family::Gears, true, Kind::Bool, || integer(0)),
    setting(MAX_REGISTRATIONS, Family::Gears, true, Kind::Integer { min: 0 }, || integer(1000)),
];

/// The setting `name` refers to, with the family's name matching rule.
pub(crate) fn find(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| match s.family {
        Family::Python => s.name == name,
        Family::Core | Family::Gears => s.name.eq_ignore_ascii_case(name),
    })
}

/// The setting named exactly `name` (`RG.CONFIGGET` matches names case-sensitively).
pub(crate) fn find_exact(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// An integer as Redis parses one (`string2ll`): optional `-`, digits, no `+`, no spaces.
pub(crate) fn parse_integer(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    text.parse().ok()
}

/// A size: `1048576`, `100kb`, `64mb`, `2gb` (case-insensitive; 1k = 1024).
pub(crate) fn parse_bytes(text: &str) -> Option<i64> {
    let lower = text.to_ascii_lowercase();
    let (number, unit) = [
        ("gb", 1i64 << 30),
        ("mb", 1 << 20),
        ("kb", 1 << 10),
        ("b", 1),
    ]
    .iter()
    .find_map(|(suffix, unit)| lower.strip_suffix(suffix).map(|n| (n.to_string(), *unit)))
    .unwrap_or((lower, 1));
    let number = parse_integer(&number)?;
    if number < 0 {
        return None;
    }
    number.checked_mul(unit)
}

impl Setting {
    /// Parses a value for this setting; `previous` is the current value (lists append).
    pub fn parse(&self, text: &str, previous: &Value) -> Option<Value> {
        match self.kind {
            Kind::Integer { min } => parse_integer(text)
                .filter(|n| *n >= min)
                .filter(|n| self.name != EXECUTION_THREADS || *n <= MAX_EXECUTION_THREADS)
                .map(Value::Integer),
            Kind::Bool => parse_integer(text).map(|n| Value::Integer(i64::from(n != 0))),
            Kind::Text => Some(Value::Text(text.to_string())),
            Kind::Bytes => parse_bytes(text).map(Value::Integer),
            Kind::List => {
                let mut items = match previous {
                    Value::List(items) => items.clone(),
                    _ => Vec::new(),
                };
                items.push(text.to_string());
                Some(Value::List(items))
            }
        }
    }
}

/// A duration setting in milliseconds.
pub(crate) fn millis(value: &Value) -> Duration {
    Duration::from_millis(value.as_integer().max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_like_redis() {
        assert_eq!(parse_integer("12"), Some(12));
        assert_eq!(parse_integer("-3"), Some(-3));
        for bad in ["", "+1", " 1", "1 ", "01", "1.5", "x"] {
            assert_eq!(parse_integer(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sizes_take_units() {
        assert_eq!(parse_bytes("100"), Some(100));
        assert_eq!(parse_bytes("100kb"), Some(102_400));
        assert_eq!(parse_bytes("64MB"), Some(64 << 20));
        assert_eq!(parse_bytes("2gb"), Some(2 << 30));
        assert_eq!(parse_bytes("-1mb"), None);
        assert_eq!(parse_bytes("mb"), None);
    }

    #[test]
    fn names_match_by_family() {
        assert_eq!(find("maxexecutions").map(|s| s.name), Some(MAX_EXECUTIONS));
        assert_eq!(find("memorylimit").map(|s| s.name), Some(MEMORY_LIMIT));
        assert!(find("pythonattempttraceback").is_none());
        assert!(find(PYTHON_ATTEMPT_TRACEBACK).is_some());
        assert!(find_exact("maxexecutions").is_none());
    }

    #[test]
    fn values_are_checked() {
        let threads = find(EXECUTION_THREADS).unwrap();
        assert_eq!(threads.parse("0", &Value::Integer(3)), None);
        assert_eq!(threads.parse("65", &Value::Integer(3)), None);
        assert_eq!(
            threads.parse("2", &Value::Integer(3)),
            Some(Value::Integer(2))
        );
        let traceback = find(PYTHON_ATTEMPT_TRACEBACK).unwrap();
        assert_eq!(
            traceback.parse("7", &Value::Integer(0)),
            Some(Value::Integer(1))
        );
        let plugin = find(PLUGIN).unwrap();
        assert_eq!(
            plugin.parse("b", &Value::List(vec!["a".into()])),
            Some(Value::List(vec!["a".into(), "b".into()]))
        );
    }
}
