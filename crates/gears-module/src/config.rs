//! Module load arguments: `loadmodule libgears.so [<name> <value> ...]`.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The module's configuration.
#[derive(Debug, Clone)]
pub(crate) struct GearsConfig {
    /// Worker threads that run executions (RedisGears' `ExecutionThreads`, default 3).
    pub execution_threads: usize,
    /// The virtual environment Python runs in (`PythonVenv`).
    pub python_venv: Option<PathBuf>,
    /// Tracebacks in Python error texts (`PythonAttemptTraceback`, default 1).
    pub python_attempt_traceback: bool,
    /// Every other name/value pair, readable from scripts with `configGet`.
    pub extra: BTreeMap<String, String>,
}

impl Default for GearsConfig {
    fn default() -> Self {
        GearsConfig {
            execution_threads: 3,
            python_venv: None,
            python_attempt_traceback: true,
            extra: BTreeMap::new(),
        }
    }
}

impl GearsConfig {
    pub fn parse(args: &[String]) -> Result<GearsConfig, String> {
        let mut config = GearsConfig::default();
        if !args.len().is_multiple_of(2) {
            return Err(format!(
                "module arguments must be name/value pairs, got {} arguments",
                args.len()
            ));
        }
        for pair in args.chunks(2) {
            let (name, value) = (&pair[0], &pair[1]);
            match name.as_str() {
                "ExecutionThreads" => {
                    config.execution_threads = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=64).contains(n))
                        .ok_or_else(|| format!("ExecutionThreads must be 1..64, got {value}"))?;
                }
                "PythonVenv" => config.python_venv = Some(PathBuf::from(value)),
                "PythonAttemptTraceback" => {
                    config.python_attempt_traceback = match value.as_str() {
                        "0" => false,
                        "1" => true,
                        _ => {
                            return Err(format!(
                                "PythonAttemptTraceback must be 0 or 1, got {value}"
                            ))
                        }
                    }
                }
                _ => {
                    config.extra.insert(name.clone(), value.clone());
                }
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_and_extra_pairs() {
        let args: Vec<String> = ["ExecutionThreads", "2", "PythonVenv", "/v", "Foo", "bar"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let config = GearsConfig::parse(&args).unwrap();
        assert_eq!(config.execution_threads, 2);
        assert_eq!(config.python_venv, Some(PathBuf::from("/v")));
        assert_eq!(config.extra.get("Foo").map(String::as_str), Some("bar"));
    }

    #[test]
    fn rejects_bad_values() {
        let args = vec!["ExecutionThreads".to_string(), "zero".to_string()];
        assert!(GearsConfig::parse(&args).is_err());
        assert!(GearsConfig::parse(&["odd".to_string()]).is_err());
    }
}
