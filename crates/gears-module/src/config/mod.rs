//! Gears' configuration: module arguments at load (`loadmodule libgears.so <name> <value> ...`)
//! and `RG.CONFIGGET` / `RG.CONFIGSET` at runtime, with RedisGears 1.2's names, defaults, reply
//! texts and quirks; names Gears does not know are kept in the "extra config" dictionary that
//! scripts read with `configGet`.

mod commands;
mod settings;

use std::collections::{BTreeMap, HashMap};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

pub(crate) use commands::{config_get, config_set};
pub(crate) use settings::*;

/// The outcome of setting one name, as `RG.CONFIGSET` replies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SetOutcome {
    /// `OK`.
    Set,
    /// `OK - value was saved in extra config dictionary`.
    SavedAsExtra,
    /// An error element with this text.
    Failed(String),
}

/// The configuration values (defaults, then module arguments, then `RG.CONFIGSET`).
pub(crate) struct Config {
    values: RwLock<Values>,
}

struct Values {
    /// Read several times per event: a fast hash of the (short, fixed) names.
    known: HashMap<&'static str, Value, rustc_hash::FxBuildHasher>,
    extra: BTreeMap<String, String>,
}

impl Config {
    fn with_defaults() -> Self {
        let known = SETTINGS.iter().map(|s| (s.name, (s.default)())).collect();
        Config {
            values: RwLock::new(Values {
                known,
                extra: BTreeMap::new(),
            }),
        }
    }

    /// The configuration given by module arguments; an invalid one refuses the load.
    pub fn load(args: &[String]) -> Result<Self, String> {
        let config = Self::with_defaults();
        let mut args = args.iter();
        while let Some(name) = args.next() {
            let value = args.next().map(String::as_str);
            match config.set(name, value, true) {
                SetOutcome::Set | SetOutcome::SavedAsExtra => {}
                SetOutcome::Failed(e) => return Err(e),
            }
        }
        Ok(config)
    }

    /// Sets `name` to `value` (`None`: no value was given). `at_load` allows load-only
    /// settings.
    pub fn set(&self, name: &str, value: Option<&str>, at_load: bool) -> SetOutcome {
        let mut values = self.values.write().unwrap_or_else(PoisonError::into_inner);
        let Some(setting) = find(name) else {
            let Some(value) = value else {
                return SetOutcome::Failed(format!("(error) Value was not given to {name}"));
            };
            values.extra.insert(name.to_string(), value.to_string());
            return SetOutcome::SavedAsExtra;
        };
        match setting.family {
            Family::Core | Family::Gears => {
                if !setting.runtime && !at_load {
                    return SetOutcome::Failed(format!(
                        "(error) Config value {name} not modifiable at runtime"
                    ));
                }
                let parsed = value.and_then(|v| setting.parse(v, &values.known[setting.name]));
                match parsed {
                    Some(parsed) => {
                        values.known.insert(setting.name, parsed);
                        SetOutcome::Set
                    }
                    None => {
                        SetOutcome::Failed(format!("(error) Failed setting config value {name}"))
                    }
                }
            }
            // The Python plugin of RedisGears 1.2 checks a value before the core saves it in
            // the extra config dictionary.
            Family::Python => {
                let Some(value) = value else {
                    return SetOutcome::Failed(format!("(error) Value was not given to {name}"));
                };
                if !setting.runtime && !at_load {
                    return SetOutcome::Failed(format!(
                        "(error) {name} is not configurable at runtime"
                    ));
                }
                match setting.parse(value, &values.known[setting.name]) {
                    Some(parsed) => {
                        values.known.insert(setting.name, parsed);
                        values.extra.insert(name.to_string(), value.to_string());
                        SetOutcome::SavedAsExtra
                    }
                    None => SetOutcome::Failed(format!(
                        "Failed setting config value for key '{name}' with value '{value}'"
                    )),
                }
            }
        }
    }

    /// The value of a known setting.
    pub fn get(&self, name: &'static str) -> Value {
        let values = self.values.read().unwrap_or_else(PoisonError::into_inner);
        values.known.get(name).cloned().unwrap_or(Value::Integer(0))
    }

    pub fn integer(&self, name: &'static str) -> i64 {
        self.get(name).as_integer()
    }

    pub fn text(&self, name: &'static str) -> String {
        self.get(name).as_text().to_string()
    }

    pub fn flag(&self, name: &'static str) -> bool {
        self.integer(name) != 0
    }

    pub fn duration(&self, name: &'static str) -> Duration {
        millis(&self.get(name))
    }

    /// A value of the extra config dictionary.
    pub fn extra(&self, name: &str) -> Option<String> {
        let values = self.values.read().unwrap_or_else(PoisonError::into_inner);
        values.extra.get(name).cloned()
    }

    /// What `configGet(name)` returns in a script: a known setting's value (as `RG.CONFIGGET`
    /// replies it), or an extra config value.
    pub fn lookup(&self, name: &str) -> Option<Value> {
        match find_exact(name) {
            Some(setting) => Some(self.get(setting.name)),
            None => self.extra(name).map(Value::Text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> Result<Config, String> {
        Config::load(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn module_arguments_set_values_and_extras() {
        let config = load(&["ExecutionThreads", "2", "PythonVenv", "/v", "Foo", "bar"]).unwrap();
        assert_eq!(config.integer(EXECUTION_THREADS), 2);
        assert_eq!(config.text(PYTHON_VENV), "/v");
        assert_eq!(config.extra("Foo").as_deref(), Some("bar"));
        assert_eq!(config.integer(MAX_EXECUTIONS), 1000);
    }

    #[test]
    fn bad_module_arguments_refuse_the_load() {
        assert_eq!(
            load(&["ExecutionThreads", "zero"]).err().as_deref(),
            Some("(error) Failed setting config value ExecutionThreads")
        );
        assert!(load(&["odd"]).is_err());
    }

    #[test]
    fn runtime_rules_follow_redisgears() {
        let config = load(&[]).unwrap();
        assert_eq!(
            config.set("maxexecutions", Some("5"), false),
            SetOutcome::Set
        );
        assert_eq!(config.integer(MAX_EXECUTIONS), 5);
        assert_eq!(
            config.set("ExecutionThreads", Some("5"), false),
            SetOutcome::Failed(
                "(error) Config value ExecutionThreads not modifiable at runtime".into()
            )
        );
        assert_eq!(
            config.set("CreateVenv", Some("1"), false),
            SetOutcome::Failed("(error) CreateVenv is not configurable at runtime".into())
        );
        assert_eq!(
            config.set(PYTHON_ATTEMPT_TRACEBACK, Some("0"), false),
            SetOutcome::SavedAsExtra
        );
        assert!(!config.flag(PYTHON_ATTEMPT_TRACEBACK));
        assert_eq!(
            config.set(PYTHON_INSTALL_REQ_MAX_IDLE_TIME, Some("x"), false),
            SetOutcome::Failed(
                "Failed setting config value for key 'PythonInstallReqMaxIdleTime' with value 'x'"
                    .into()
            )
        );
        assert_eq!(
            config.set("Mine", None, false),
            SetOutcome::Failed("(error) Value was not given to Mine".into())
        );
        assert_eq!(
            config.set("MemoryLimit", Some("10mb"), false),
            SetOutcome::Set
        );
        assert_eq!(config.integer(MEMORY_LIMIT), 10 << 20);
    }
}
