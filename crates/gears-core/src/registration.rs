//! Registrations: a plan that a trigger runs, once per event, instead of `run()` once.
//!
//! A script's `register()` lowers into a [`RegistrationSpec`]: the plan of its steps, the
//! trigger (which events start it, and what record each gives) and the execution mode. The
//! module owns the rest (ids, the event sources, queues, statistics, persistence); this part is
//! plain data, serializable so that it can be stored and shipped like a plan.

use serde::{Deserialize, Serialize};

use crate::glob::Glob;
use crate::plan::{CallbackId, ExecutionMode, ExecutionPlan, Kwarg, ReaderSpec, RunArg};
use crate::{GearsError, Record, Result};

/// What one `register()` call asked for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RegistrationSpec {
    /// The steps to run for each event; its reader describes the trigger's source. Shared by
    /// every run of the registration and the executions that list them (serialized as the plan
    /// itself).
    pub plan: std::sync::Arc<ExecutionPlan>,
    pub trigger: Trigger,
    /// `onRegistered`: called once the registration exists (and when it is re-created).
    pub on_registered: Option<CallbackId>,
    /// The id `register()` handed the script (Python returns it), if the host gave one.
    #[serde(default)]
    pub id: Option<String>,
}

impl RegistrationSpec {
    pub fn mode(&self) -> ExecutionMode {
        self.plan.options.mode
    }
}

/// Which events run a registration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum Trigger {
    /// Keyspace events (KeysReader).
    Keys(KeysTrigger),
    /// A command (CommandReader): `RG.TRIGGER <name>`, or a hooked Redis command.
    Command(CommandTrigger),
    /// New entries of streams (StreamReader), read through a consumer group.
    Stream(StreamTrigger),
    /// A schedule (TimerReader, Python's `registerTE`).
    Timer(crate::timer::TimerTrigger),
}

/// What a StreamReader registration does when a batch fails (`onFailedPolicy`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailed {
    /// Acknowledge the batch and go on.
    Continue,
    /// Stop (status `ABORTED`); the batch stays unacknowledged.
    Abort,
    /// Run the same batch again after `retry_interval` seconds.
    Retry,
}

impl OnFailed {
    pub fn name(self) -> &'static str {
        match self {
            OnFailed::Continue => "continue",
            OnFailed::Abort => "abort",
            OnFailed::Retry => "retry",
        }
    }
}

/// A StreamReader registration: which streams, how entries are batched, what a failure does.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StreamTrigger {
    /// `prefix`: a trailing `*` matches a prefix, anything else one exact stream name.
    pub prefix: Vec<u8>,
    /// `batch`: entries per run.
    pub batch: u64,
    /// `duration` (ms): a partial batch runs once this long has passed; 0: it waits for more.
    pub duration_ms: u64,
    pub on_failed: OnFailed,
    /// `onFailedRetryInterval`, in seconds.
    pub retry_interval: u64,
    /// `trimStream`: processed entries are removed from the stream.
    pub trim: bool,
    /// The consumer group that holds its position in each stream; named by the module (the
    /// session and the registration's place in its script, so an upgrade goes on from it).
    #[serde(default)]
    pub group: String,
}

impl StreamTrigger {
    /// Whether a stream of this name concerns this registration.
    pub fn matches_key(&self, key: &[u8]) -> bool {
        match self.prefix.split_last() {
            Some((b'*', prefix)) => key.starts_with(prefix),
            _ => key == self.prefix.as_slice(),
        }
    }
}

/// `register()`'s keyword arguments for the StreamReader, with RedisGears' error texts; `arg`
/// is the first positional argument (`prefix`). `mode` is the registration's execution mode:
/// `sync` allows only the `continue` policy.
pub fn stream_trigger(
    default_arg: &str,
    arg: RunArg,
    kwargs: &[Kwarg],
    mode: ExecutionMode,
) -> Result<StreamTrigger> {
    let get = |name: &str| kwarg(kwargs, name);
    let prefix = match (arg, get("prefix").or_else(|| get("regex"))) {
        (RunArg::Text(text), _) if !text.is_empty() => text,
        (_, Some(Record::String(s))) => s.clone().into_bytes(),
        (_, Some(Record::Bytes(b))) => b.clone(),
        (_, Some(_)) => return Err(plan_error("regex argument must be a string")),
        _ => default_arg.as_bytes().to_vec(),
    };
    if prefix.is_empty() {
        return Err(plan_error("regex argument must be a string"));
    }
    let number = |name: &str, label: &str, default: u64, least: u64| -> Result<u64> {
        let value = match get(name) {
            None => return Ok(default),
            Some(Record::Integer(n)) => *n,
            Some(Record::Float(f)) if f.is_finite() => *f as i64,
            Some(_) => return Err(plan_error(&format!("{label} argument must be a number"))),
        };
        if value < least as i64 {
            return Err(plan_error(&format!(
                "{label} argument must be a number of at least {least}"
            )));
        }
        Ok(value as u64)
    };
    let batch = number("batch", "batch", 1, 1)?;
    let duration_ms = number("duration", "duration", 0, 0)?;
    let retry_interval = number("onFailedRetryInterval", "retryInterval", 1, 0)?;
    let on_failed = match get("onFailedPolicy") {
        None => OnFailed::Continue,
        Some(Record::String(s)) => match s.to_ascii_lowercase().as_str() {
            "continue" => OnFailed::Continue,
            "abort" => OnFailed::Abort,
            "retry" => OnFailed::Retry,
            _ => return Err(plan_error("onFailedPolicy must be Continue/Abort/Retry")),
        },
        Some(_) => {
            return Err(plan_error(
                "onFailedPolicy must be a string (Continue/Abort/Retry)",
            ))
        }
    };
    if mode == ExecutionMode::Sync && on_failed != OnFailed::Continue {
        return Err(plan_error(
            "ExecutionMode sync can only be combined with OnFailedPolicy Continue",
        ));
    }
    let trim = match get("trimStream") {
        None => true,
        Some(Record::Bool(b)) => *b,
        Some(_) => return Err(plan_error("pyTrimmStream argument must be a boolean")),
    };
    Ok(StreamTrigger {
        prefix,
        batch,
        duration_ms,
        on_failed,
        retry_interval,
        trim,
        group: String::new(),
    })
}

/// A CommandReader registration: what runs it, and whether its runs keep their order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CommandTrigger {
    pub kind: CommandKind,
    /// `inorder`: runs start in the order their commands arrived, one at a time (async modes);
    /// otherwise each run takes the next free worker.
    pub in_order: bool,
}

/// Which command runs a CommandReader registration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum CommandKind {
    /// `trigger=name`: `RG.TRIGGER name args...` (and `RG.TRIGGERONKEY name key args...`).
    Trigger(String),
    /// `hook=command`: the registration replaces a Redis command (lower case), for every call
    /// or only for calls with a key starting with `key_prefix`.
    Hook {
        command: String,
        key_prefix: Option<Vec<u8>>,
    },
}

impl CommandTrigger {
    /// The trigger's name, for a `trigger=` registration.
    pub fn trigger_name(&self) -> Option<&str> {
        match &self.kind {
            CommandKind::Trigger(name) => Some(name),
            CommandKind::Hook { .. } => None,
        }
    }

    /// The hooked command (lower case), for a `hook=` registration.
    pub fn hooked_command(&self) -> Option<&str> {
        match &self.kind {
            CommandKind::Hook { command, .. } => Some(command),
            CommandKind::Trigger(_) => None,
        }
    }
}

/// The key types a KeysReader registration may filter on (`keyTypes`).
pub const KEY_TYPES: [&str; 8] = [
    "empty", "string", "list", "hash", "set", "zset", "module", "stream",
];

/// A KeysReader registration's filter: which keys, events and key types fire it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct KeysTrigger {
    /// `prefix` (RedisGears' `regex`): a trailing `*` matches a prefix, anything else one exact
    /// key; with `glob` a Redis glob pattern (`user:*:profile`).
    pub prefix: Vec<u8>,
    pub glob: bool,
    /// `eventTypes`, lower case; `None`: every event.
    pub event_types: Option<Vec<String>>,
    /// `keyTypes`; `None`: every type.
    pub key_types: Option<Vec<String>>,
    /// `readValue`: records carry the key's value and type.
    pub read_value: bool,
    /// `commands`: commands whose replies the registration may override (hooks).
    pub commands: Option<Vec<String>>,
    /// `prefix` compiled, when `glob`.
    #[serde(skip)]
    pub compiled: CompiledGlob,
}

/// A `glob` trigger's pattern, compiled at its first event and kept with the trigger (not
/// serialized: a shard that receives the trigger compiles its own).
#[derive(Clone, Debug, Default)]
pub struct CompiledGlob(std::sync::OnceLock<Glob>);

/// Made from the pattern, so it never tells two triggers apart.
impl PartialEq for CompiledGlob {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl KeysTrigger {
    /// Whether an event on `key` concerns this registration.
    pub fn matches_key(&self, key: &[u8]) -> bool {
        if self.glob {
            return self
                .compiled
                .0
                .get_or_init(|| Glob::new(&self.prefix))
                .matches(key);
        }
        match self.prefix.split_last() {
            Some((b'*', prefix)) => key.starts_with(prefix),
            _ => key == self.prefix.as_slice(),
        }
    }

    /// Whether the event (its name as Redis sends it, `set`, `hset`, `expired`...) fires it.
    pub fn matches_event(&self, event: &str) -> bool {
        match &self.event_types {
            None => true,
            Some(types) => types.iter().any(|t| t.eq_ignore_ascii_case(event)),
        }
    }

    /// Whether a key of this type (one of [`KEY_TYPES`]) fires it.
    pub fn matches_type(&self, key_type: &str) -> bool {
        match &self.key_types {
            None => true,
            Some(types) => types.iter().any(|t| t == key_type),
        }
    }

    /// True when the key's type must be known to filter the event.
    pub fn filters_types(&self) -> bool {
        self.key_types.is_some()
    }
}

/// The reader spec and trigger of `register()` on the builder's reader, from its first argument
/// and keyword arguments.
pub fn register_reader(
    reader: &str,
    default_arg: &str,
    arg: RunArg,
    kwargs: &[Kwarg],
    mode: ExecutionMode,
) -> Result<(ReaderSpec, Trigger)> {
    match reader {
        "KeysReader" => {
            let trigger = keys_trigger(default_arg, arg, kwargs)?;
            let spec = ReaderSpec::Keys {
                pattern: trigger.prefix.clone(),
                no_scan: false,
                read_value: trigger.read_value,
            };
            Ok((spec, Trigger::Keys(trigger)))
        }
        "CommandReader" => Ok((
            ReaderSpec::Command,
            Trigger::Command(command_trigger(kwargs)?),
        )),
        "StreamReader" => {
            let trigger = stream_trigger(default_arg, arg, kwargs, mode)?;
            let spec = ReaderSpec::Stream {
                key: trigger.prefix.clone(),
                from_id: "0-0".into(),
            };
            Ok((spec, Trigger::Stream(trigger)))
        }
        "TimerReader" => Ok((
            ReaderSpec::Timer,
            Trigger::Timer(crate::timer::timer_trigger(kwargs)?),
        )),
        _ => Err(plan_error(
            "Given reader do not support register or not exists",
        )),
    }
}

/// The longest glob pattern a registration may have.
pub const MAX_GLOB_BYTES: usize = 1024;

/// `register()`'s keyword arguments for the KeysReader, with the first positional argument
/// (`prefix`) as `arg`. `regex` is RedisGears' deprecated name for `prefix`.
pub fn keys_trigger(default_arg: &str, arg: RunArg, kwargs: &[Kwarg]) -> Result<KeysTrigger> {
    let get = |name: &str| kwargs.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let prefix = match (arg, get("prefix").or_else(|| get("regex"))) {
        (RunArg::Text(text), _) if !text.is_empty() => text,
        (_, Some(value)) => match value {
            Record::String(s) => s.clone().into_bytes(),
            Record::Bytes(b) => b.clone(),
            Record::Nil => default_arg.as_bytes().to_vec(),
            _ => return Err(plan_error("regex argument must be a string")),
        },
        _ => default_arg.as_bytes().to_vec(),
    };
    let flag = |name: &str, default: bool| -> Result<bool> {
        match get(name) {
            None | Some(Record::Nil) => Ok(default),
            Some(Record::Bool(b)) => Ok(*b),
            Some(Record::Integer(n)) => Ok(*n != 0),
            Some(_) => Err(plan_error(&format!("{name} value is not boolean"))),
        }
    };
    let event_types = names(get("eventTypes"), "eventTypes")?
        .map(|types| types.into_iter().map(|t| t.to_ascii_lowercase()).collect());
    let key_types = names(get("keyTypes"), "keyTypes")?;
    if let Some(types) = &key_types {
        if types.iter().any(|t| !KEY_TYPES.contains(&t.as_str())) {
            return Err(plan_error("unknown key type"));
        }
    }
    let commands = names(get("commands"), "commands")?;
    let glob = flag("glob", false)?;
    // Matched against the key of every event (linear in the key, times the pattern's parts
    // between stars over 64).
    if glob && prefix.len() > MAX_GLOB_BYTES {
        return Err(plan_error(&format!(
            "a glob pattern may have at most {MAX_GLOB_BYTES} bytes"
        )));
    }
    Ok(KeysTrigger {
        prefix,
        glob,
        event_types,
        key_types,
        read_value: flag("readValue", true)?,
        commands,
        compiled: CompiledGlob::default(),
    })
}

/// `register()`'s keyword arguments for the CommandReader: `trigger=`, or `hook=` with an
/// optional `keyprefix=`, and `inorder=`. The positional `prefix` means nothing here.
pub fn command_trigger(kwargs: &[Kwarg]) -> Result<CommandTrigger> {
    let get = |name: &str| kwarg(kwargs, name);
    let text = |name: &str| -> Result<Option<Vec<u8>>> {
        match get(name) {
            None => Ok(None),
            Some(Record::String(s)) => Ok(Some(s.clone().into_bytes())),
            Some(Record::Bytes(b)) => Ok(Some(b.clone())),
            Some(_) => Err(plan_error(&format!("{name} argument is not string"))),
        }
    };
    let trigger = text("trigger")?;
    let hook = text("hook")?;
    let key_prefix = text("keyprefix")?;
    let in_order = match get("inorder") {
        None => false,
        Some(Record::Bool(b)) => *b,
        Some(Record::Integer(n)) => *n != 0,
        Some(_) => return Err(plan_error("inorder argument must be a boolean")),
    };
    let kind = match (trigger, hook) {
        (Some(_), _) if key_prefix.is_some() => {
            return Err(plan_error(
                "trigger argument can not be given with keyprefix or hook",
            ))
        }
        (Some(_), Some(_)) => {
            return Err(plan_error(
                "trigger argument can not be given with keyprefix or hook",
            ))
        }
        (Some(name), None) => CommandKind::Trigger(String::from_utf8_lossy(&name).into_owned()),
        (None, Some(command)) => CommandKind::Hook {
            command: String::from_utf8_lossy(&command).to_ascii_lowercase(),
            key_prefix: key_prefix.filter(|p| !p.is_empty()),
        },
        (None, None) => return Err(plan_error("no trigger or hook argument was given")),
    };
    Ok(CommandTrigger { kind, in_order })
}

/// A list of names (`eventTypes=['set', 'del']`); `None` when absent or `None`.
fn names(value: Option<&Record>, what: &str) -> Result<Option<Vec<String>>> {
    let items = match value {
        None | Some(Record::Nil) => return Ok(None),
        Some(Record::List(items)) => items,
        Some(_) => return Err(plan_error(&format!("{what} argument must be a list"))),
    };
    items
        .iter()
        .map(|item| match item {
            Record::String(s) => Ok(s.clone()),
            Record::Bytes(b) => Ok(String::from_utf8_lossy(b).into_owned()),
            _ => Err(plan_error(&format!("{what} must be a list of strings"))),
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// A keyword argument's value; `None` when absent or `None`.
fn kwarg<'a>(kwargs: &'a [Kwarg], name: &str) -> Option<&'a Record> {
    kwargs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .filter(|v| !matches!(v, Record::Nil))
}

fn plan_error(text: &str) -> GearsError {
    GearsError::Plan(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(arg: &str, kwargs: &[Kwarg]) -> KeysTrigger {
        keys_trigger("*", RunArg::Text(arg.as_bytes().to_vec()), kwargs).unwrap()
    }

    #[test]
    fn a_trailing_star_is_a_prefix_anything_else_an_exact_key() {
        let prefix = trigger("user:*", &[]);
        assert!(prefix.matches_key(b"user:1"));
        assert!(prefix.matches_key(b"user:"));
        assert!(!prefix.matches_key(b"users"));
        let exact = trigger("user:?", &[]);
        assert!(exact.matches_key(b"user:?"));
        assert!(!exact.matches_key(b"user:1"));
        let all = keys_trigger("*", RunArg::None, &[]).unwrap();
        assert!(all.matches_key(b"anything") && all.matches_key(b""));
    }

    #[test]
    fn glob_is_opt_in() {
        let glob = trigger("user:*:profile", &[("glob".into(), Record::Bool(true))]);
        assert!(glob.matches_key(b"user:7:profile"));
        assert!(!glob.matches_key(b"user:7:settings"));
        let prefix = trigger("user:*:profile", &[]);
        assert!(!prefix.matches_key(b"user:7:profile"));
        assert!(prefix.matches_key(b"user:*:profile"));
    }

    #[test]
    fn events_are_case_insensitive_and_types_checked() {
        let t = trigger(
            "*",
            &[
                (
                    "eventTypes".into(),
                    Record::List(vec![Record::String("HSET".into())]),
                ),
                (
                    "keyTypes".into(),
                    Record::List(vec![Record::String("hash".into())]),
                ),
            ],
        );
        assert!(t.matches_event("hset") && !t.matches_event("set"));
        assert!(t.matches_type("hash") && !t.matches_type("string"));
        let bad = keys_trigger(
            "*",
            RunArg::None,
            &[(
                "keyTypes".into(),
                Record::List(vec![Record::String("tree".into())]),
            )],
        );
        assert_eq!(bad.unwrap_err().to_string(), "unknown key type");
    }

    fn command(kwargs: &[(&str, Record)]) -> Result<CommandTrigger> {
        let kwargs: Vec<Kwarg> = kwargs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        match register_reader(
            "CommandReader",
            "*",
            RunArg::None,
            &kwargs,
            ExecutionMode::Async,
        )? {
            (ReaderSpec::Command, Trigger::Command(trigger)) => Ok(trigger),
            other => panic!("not a command trigger: {other:?}"),
        }
    }

    #[test]
    fn command_reader_arguments() {
        let s = |text: &str| Record::String(text.into());
        let t = command(&[("trigger", s("mytrigger"))]).unwrap();
        assert_eq!(t.trigger_name(), Some("mytrigger"));
        assert!(!t.in_order);
        let h = command(&[
            ("hook", s("HSET")),
            ("keyprefix", s("user:")),
            ("inorder", Record::Bool(true)),
        ])
        .unwrap();
        assert_eq!(
            h.kind,
            CommandKind::Hook {
                command: "hset".into(),
                key_prefix: Some(b"user:".to_vec())
            }
        );
        assert!(h.in_order);
        let error = |kwargs: &[(&str, Record)]| command(kwargs).unwrap_err().to_string();
        assert_eq!(error(&[]), "no trigger or hook argument was given");
        assert_eq!(
            error(&[("trigger", s("t")), ("hook", s("set"))]),
            "trigger argument can not be given with keyprefix or hook"
        );
        assert_eq!(
            error(&[("trigger", s("t")), ("keyprefix", s("k"))]),
            "trigger argument can not be given with keyprefix or hook"
        );
        assert_eq!(
            error(&[("trigger", Record::Integer(1))]),
            "trigger argument is not string"
        );
    }

    #[test]
    fn regex_is_prefix() {
        let t = keys_trigger(
            "*",
            RunArg::None,
            &[("regex".into(), Record::String("a*".into()))],
        )
        .unwrap();
        assert_eq!(t.prefix, b"a*");
    }
}
