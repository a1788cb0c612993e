//! [`Args`]: the arguments a script gave a native operator or reader, with checked getters
//! whose errors name the operator and the argument.

use crate::error::{GearsError, Result};
use crate::record::Record;
use crate::repr::python_repr;

/// The arguments of one call: positional (`native('name', a, b)`), and for readers the options
/// of `run()` by name (`run('key', batch=100)`). Values are core records.
///
/// Getters count positions from 0 and fail with a [`GearsError::Plan`] such as
/// `hll_count: argument 1 must be a string, not int`; a factory returns that error as is and
/// the script gets it when it builds its plan.
#[derive(Clone, Copy, Debug)]
pub struct Args<'a> {
    name: &'a str,
    positional: &'a [Record],
    named: &'a [(String, Record)],
}

impl<'a> Args<'a> {
    /// The arguments of the operator or reader `name`.
    pub fn new(name: &'a str, positional: &'a [Record], named: &'a [(String, Record)]) -> Self {
        Args {
            name,
            positional,
            named,
        }
    }

    /// The operator's or reader's name.
    pub fn name(&self) -> &str {
        self.name
    }

    /// How many positional arguments were given.
    pub fn len(&self) -> usize {
        self.positional.len()
    }

    pub fn is_empty(&self) -> bool {
        self.positional.is_empty()
    }

    /// The positional arguments.
    pub fn positional(&self) -> &'a [Record] {
        self.positional
    }

    /// The named arguments (readers: `run()`'s options that are not Gears' own).
    pub fn named(&self) -> &'a [(String, Record)] {
        self.named
    }

    /// An error of this operator: `<name>: <message>`.
    pub fn error(&self, message: impl std::fmt::Display) -> GearsError {
        GearsError::Plan(format!("{}: {message}", self.name))
    }

    /// Fails unless `min..=max` positional arguments were given.
    pub fn arity(&self, min: usize, max: usize) -> Result<()> {
        let n = self.positional.len();
        if n >= min && n <= max {
            return Ok(());
        }
        let expected = match (min, max) {
            (min, max) if min == max => format!("{min}"),
            (min, usize::MAX) => format!("at least {min}"),
            (min, max) => format!("{min} to {max}"),
        };
        Err(self.error(format!(
            "takes {expected} argument{}, {n} given",
            if expected == "1" { "" } else { "s" }
        )))
    }

    /// Fails on a named argument that is not in `known`.
    pub fn only_named(&self, known: &[&str]) -> Result<()> {
        match self
            .named
            .iter()
            .find(|(k, _)| !known.contains(&k.as_str()))
        {
            None => Ok(()),
            Some((k, _)) => Err(self.error(format!("unknown option '{k}'"))),
        }
    }

    /// Positional argument `i`, if given.
    pub fn get(&self, i: usize) -> Option<&'a Record> {
        self.positional.get(i)
    }

    /// Named argument `name`, if given.
    pub fn get_named(&self, name: &str) -> Option<&'a Record> {
        self.named.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    fn wrong(&self, what: &str, expected: &str, got: &Record) -> GearsError {
        self.error(format!(
            "{what} must be {expected}, not {}",
            got.type_name()
        ))
    }

    fn missing(&self, what: &str) -> GearsError {
        self.error(format!("{what} is missing"))
    }

    /// Positional argument `i` as text.
    pub fn string(&self, i: usize) -> Result<&'a str> {
        let what = format!("argument {}", i + 1);
        match self.get(i) {
            Some(record) => text(record).ok_or_else(|| self.wrong(&what, "a string", record)),
            None => Err(self.missing(&what)),
        }
    }

    /// Positional argument `i` as text, or `None` when it was not given (or is nil).
    pub fn opt_string(&self, i: usize) -> Result<Option<&'a str>> {
        match self.get(i) {
            None | Some(Record::Nil) => Ok(None),
            Some(_) => self.string(i).map(Some),
        }
    }

    /// Positional argument `i` as bytes (a string or bytes).
    pub fn bytes(&self, i: usize) -> Result<&'a [u8]> {
        let what = format!("argument {}", i + 1);
        match self.get(i) {
            Some(Record::String(s)) => Ok(s.as_bytes()),
            Some(Record::Bytes(b)) => Ok(b),
            Some(other) => Err(self.wrong(&what, "a string", other)),
            None => Err(self.missing(&what)),
        }
    }

    /// Positional argument `i` as an integer (a float with no fraction is one too).
    pub fn integer(&self, i: usize) -> Result<i64> {
        let what = format!("argument {}", i + 1);
        match self.get(i) {
            Some(record) => integer(record).ok_or_else(|| self.wrong(&what, "an integer", record)),
            None => Err(self.missing(&what)),
        }
    }

    /// Positional argument `i` as an integer, or `default` when it was not given (or is nil).
    pub fn opt_integer(&self, i: usize, default: i64) -> Result<i64> {
        match self.get(i) {
            None | Some(Record::Nil) => Ok(default),
            Some(_) => self.integer(i),
        }
    }

    /// Named argument `name` as an integer, or `default` when it was not given.
    pub fn named_integer(&self, name: &str, default: i64) -> Result<i64> {
        match self.get_named(name) {
            None | Some(Record::Nil) => Ok(default),
            Some(record) => integer(record)
                .ok_or_else(|| self.wrong(&format!("option '{name}'"), "an integer", record)),
        }
    }

    /// Named argument `name` as a float (an integer is one too), or `default`.
    pub fn named_float(&self, name: &str, default: f64) -> Result<f64> {
        match self.get_named(name) {
            None | Some(Record::Nil) => Ok(default),
            Some(Record::Integer(i)) => Ok(*i as f64),
            Some(Record::Float(f)) => Ok(*f),
            Some(Record::String(s)) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| self.error(format!("option '{name}' must be a number, not {s:?}"))),
            Some(other) => Err(self.wrong(&format!("option '{name}'"), "a number", other)),
        }
    }

    /// The arguments as `RG.EXPLAIN` shows them: `('name', 14)`.
    pub fn describe(&self) -> String {
        describe(self.positional, self.named)
    }
}

fn text(record: &Record) -> Option<&str> {
    match record {
        Record::String(s) => Some(s),
        Record::Bytes(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

fn integer(record: &Record) -> Option<i64> {
    match record {
        Record::Integer(i) => Some(*i),
        Record::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
        _ => None,
    }
}

/// `(a, b, name=c)`, each value `repr()`'d.
pub(crate) fn describe(positional: &[Record], named: &[(String, Record)]) -> String {
    let parts: Vec<String> = positional
        .iter()
        .map(python_repr)
        .chain(named.iter().map(|(k, v)| format!("{k}={}", python_repr(v))))
        .collect();
    format!("({})", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getters_name_the_operator_and_the_argument() {
        let positional = vec![Record::from("f"), Record::Integer(3), Record::Float(2.0)];
        let args = Args::new("op", &positional, &[]);
        assert_eq!(args.string(0).unwrap(), "f");
        assert_eq!(args.integer(1).unwrap(), 3);
        assert_eq!(args.integer(2).unwrap(), 2);
        assert_eq!(args.opt_integer(5, 7).unwrap(), 7);
        assert_eq!(
            args.string(1).unwrap_err().to_string(),
            "op: argument 2 must be a string, not int"
        );
        assert_eq!(
            args.integer(0).unwrap_err().to_string(),
            "op: argument 1 must be an integer, not str"
        );
        assert_eq!(
            args.string(3).unwrap_err().to_string(),
            "op: argument 4 is missing"
        );
        assert_eq!(
            args.arity(0, 1).unwrap_err().to_string(),
            "op: takes 0 to 1 arguments, 3 given"
        );
        assert_eq!(
            args.arity(1, 1).unwrap_err().to_string(),
            "op: takes 1 argument, 3 given"
        );
        assert_eq!(args.describe(), "('f', 3, 2.0)");
    }

    #[test]
    fn named_options() {
        let named = vec![("batch".to_string(), Record::Integer(10))];
        let args = Args::new("r", &[], &named);
        assert_eq!(args.named_integer("batch", 1).unwrap(), 10);
        assert_eq!(args.named_integer("other", 1).unwrap(), 1);
        assert!(args.only_named(&["batch"]).is_ok());
        assert_eq!(
            args.only_named(&["min"]).unwrap_err().to_string(),
            "r: unknown option 'batch'"
        );
    }
}
