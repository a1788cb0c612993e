//! [`Extension`]s and the [`Registry`] that finds their operators and readers by name.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use super::{
    Accumulator, Args, FlatMapper, KeyExtractor, Mapper, NativeCall, NativeReader, Predicate,
    Projection, Version,
};
use crate::error::{GearsError, Result};

type Factory<T> = Arc<dyn Fn(&Args) -> Result<Box<T>> + Send + Sync>;

/// What kind of operator a [`NativeOperator`] is, with the factory that builds it from a
/// script's arguments.
#[derive(Clone)]
pub enum OperatorKind {
    Map(Factory<dyn Mapper>),
    Filter(Factory<dyn Predicate>),
    FlatMap(Factory<dyn FlatMapper>),
    Aggregate(Factory<dyn Accumulator>),
    Extractor(Factory<dyn KeyExtractor>),
}

impl OperatorKind {
    /// `map`, `filter`, `flatmap`, `aggregate` or `extractor`.
    pub fn name(&self) -> &'static str {
        match self {
            OperatorKind::Map(_) => "map",
            OperatorKind::Filter(_) => "filter",
            OperatorKind::FlatMap(_) => "flatmap",
            OperatorKind::Aggregate(_) => "aggregate",
            OperatorKind::Extractor(_) => "extractor",
        }
    }

    /// The name with its article, for error texts: `a map`, `an aggregate`.
    pub fn described(&self) -> String {
        match self {
            OperatorKind::Aggregate(_) | OperatorKind::Extractor(_) => {
                format!("an {}", self.name())
            }
            _ => format!("a {}", self.name()),
        }
    }
}

/// A native operator: a name scripts call, a version, and a factory of its kind.
#[derive(Clone)]
pub struct NativeOperator {
    name: String,
    version: Version,
    kind: OperatorKind,
}

macro_rules! constructor {
    ($(#[$doc:meta])* $fn:ident, $trait:ident, $variant:ident) => {
        $(#[$doc])*
        pub fn $fn<F, T>(name: &str, version: Version, factory: F) -> Self
        where
            F: Fn(&Args) -> Result<T> + Send + Sync + 'static,
            T: $trait + 'static,
        {
            let factory: Factory<dyn $trait> =
                Arc::new(move |args: &Args| Ok(Box::new(factory(args)?) as Box<dyn $trait>));
            NativeOperator {
                name: name.to_string(),
                version,
                kind: OperatorKind::$variant(factory),
            }
        }
    };
}

impl NativeOperator {
    constructor!(
        /// A [`Mapper`] built by `factory` from the script's arguments.
        map, Mapper, Map
    );
    constructor!(
        /// A [`Predicate`] (a native `filter`).
        filter, Predicate, Filter
    );
    constructor!(
        /// A [`FlatMapper`].
        flat_map, FlatMapper, FlatMap
    );
    constructor!(
        /// An [`Accumulator`] (a two-phase aggregation).
        aggregate, Accumulator, Aggregate
    );
    constructor!(
        /// A [`KeyExtractor`], given where a key function goes.
        extractor, KeyExtractor, Extractor
    );

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn kind(&self) -> &OperatorKind {
        &self.kind
    }

    /// What a step of this operator called with `call`'s arguments reads of its input key
    /// records: the operator is built to ask it. Filters and extractors read whole records
    /// (their records go on to the next steps).
    pub fn projection(&self, call: &NativeCall) -> Result<Projection> {
        let args = call.args();
        guarded(|| match &self.kind {
            OperatorKind::Map(f) => Ok(f(&args)?.projection()),
            OperatorKind::FlatMap(f) => Ok(f(&args)?.projection()),
            OperatorKind::Aggregate(f) => Ok(f(&args)?.projection()),
            OperatorKind::Filter(_) | OperatorKind::Extractor(_) => Ok(Projection::Whole),
        })
    }

    /// Checks a call's arguments by building the operator once (the builders do it, so that a
    /// script with bad arguments fails before it runs).
    pub fn check(&self, call: &NativeCall) -> Result<()> {
        let args = call.args();
        guarded(|| match &self.kind {
            OperatorKind::Map(f) => f(&args).map(drop),
            OperatorKind::Filter(f) => f(&args).map(drop),
            OperatorKind::FlatMap(f) => f(&args).map(drop),
            OperatorKind::Aggregate(f) => f(&args).map(drop),
            OperatorKind::Extractor(f) => f(&args).map(drop),
        })
    }
}

type ReaderFactory = Arc<dyn Fn(&Args) -> Result<Box<dyn NativeReader>> + Send + Sync>;

/// A native reader: a name scripts give `GB(...)`, a version, and its factory.
#[derive(Clone)]
pub struct NativeReaderDef {
    name: String,
    version: Version,
    factory: ReaderFactory,
}

impl NativeReaderDef {
    /// A reader built by `factory` from `run()`'s argument (positional argument 0, when given)
    /// and its options (named arguments).
    pub fn new<F, R>(name: &str, version: Version, factory: F) -> Self
    where
        F: Fn(&Args) -> Result<R> + Send + Sync + 'static,
        R: NativeReader + 'static,
    {
        NativeReaderDef {
            name: name.to_string(),
            version,
            factory: Arc::new(move |args: &Args| {
                Ok(Box::new(factory(args)?) as Box<dyn NativeReader>)
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// Builds the reader of `call`.
    pub fn build(&self, call: &NativeCall) -> Result<Box<dyn NativeReader>> {
        let args = call.args();
        guarded(|| (self.factory)(&args))
    }
}

/// A named, versioned bundle of native operators and readers, as a crate provides it.
#[derive(Clone)]
pub struct Extension {
    name: String,
    version: Version,
    operators: Vec<NativeOperator>,
    readers: Vec<NativeReaderDef>,
}

impl Extension {
    pub fn new(name: &str, version: Version) -> Self {
        Extension {
            name: name.to_string(),
            version,
            operators: Vec::new(),
            readers: Vec::new(),
        }
    }

    /// Adds an operator.
    pub fn operator(mut self, operator: NativeOperator) -> Self {
        self.operators.push(operator);
        self
    }

    /// Adds a reader.
    pub fn reader(mut self, reader: NativeReaderDef) -> Self {
        self.readers.push(reader);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// The names of its operators and readers.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.operators
            .iter()
            .map(|o| o.name())
            .chain(self.readers.iter().map(|r| r.name()))
    }
}

/// The extensions of one server, and their operators and readers by name.
#[derive(Clone, Default)]
pub struct Registry {
    extensions: Vec<(String, Version)>,
    operators: BTreeMap<String, NativeOperator>,
    readers: BTreeMap<String, NativeReaderDef>,
}

/// A name scripts can call: `[a-z][a-z0-9_]*`, at most 64 characters. Lower case keeps native
/// readers apart from the built-in ones (`KeysReader`, ...).
fn check_name(what: &str, name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(GearsError::Plan(format!(
            "invalid native {what} name '{name}': use lower-case letters, digits and '_', starting with a letter"
        )))
    }
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// Adds an extension. Names are unique across all extensions (of either kind: a name is
    /// an operator or a reader); an extension's name is unique too.
    pub fn add(&mut self, extension: Extension) -> Result<()> {
        check_name("extension", &extension.name)?;
        if self.extensions.iter().any(|(n, _)| *n == extension.name) {
            return Err(GearsError::Plan(format!(
                "extension '{}' is added twice",
                extension.name
            )));
        }
        let mut names = std::collections::BTreeSet::new();
        let taken = |name: &str, names: &mut std::collections::BTreeSet<String>| {
            if self.operators.contains_key(name)
                || self.readers.contains_key(name)
                || !names.insert(name.to_string())
            {
                Err(GearsError::Plan(format!(
                    "native name '{name}' of extension '{}' is already taken",
                    extension.name
                )))
            } else {
                Ok(())
            }
        };
        for operator in &extension.operators {
            check_name("operator", &operator.name)?;
            taken(&operator.name, &mut names)?;
        }
        for reader in &extension.readers {
            check_name("reader", &reader.name)?;
            taken(&reader.name, &mut names)?;
        }
        self.extensions
            .push((extension.name.clone(), extension.version));
        for operator in extension.operators {
            self.operators.insert(operator.name.clone(), operator);
        }
        for reader in extension.readers {
            self.readers.insert(reader.name.clone(), reader);
        }
        Ok(())
    }

    /// The extensions, by name and version, in the order they were added.
    pub fn extensions(&self) -> &[(String, Version)] {
        &self.extensions
    }

    /// Every operator, by name.
    pub fn operators(&self) -> impl Iterator<Item = &NativeOperator> {
        self.operators.values()
    }

    /// Every reader, by name.
    pub fn readers(&self) -> impl Iterator<Item = &NativeReaderDef> {
        self.readers.values()
    }

    fn available(&self) -> String {
        let names: Vec<String> = self
            .operators
            .values()
            .map(|o| format!("{} {}", o.name, o.version))
            .chain(
                self.readers
                    .values()
                    .map(|r| format!("{} {}", r.name, r.version)),
            )
            .collect();
        if names.is_empty() {
            "this server has no native operators or readers".to_string()
        } else {
            format!("this server has: {}", names.join(", "))
        }
    }

    /// The operator a script asks for: `name`, or `name@major` for that major version.
    pub fn operator(&self, requested: &str) -> Result<&NativeOperator> {
        let (name, major) = split_version(requested)?;
        let operator = self.operators.get(name).ok_or_else(|| {
            let what = if self.readers.contains_key(name) {
                format!("'{name}' is a native reader, not an operator")
            } else {
                format!("unknown native operator '{name}'")
            };
            GearsError::Plan(format!("{what} ({})", self.available()))
        })?;
        check_major("operator", name, operator.version, major)?;
        Ok(operator)
    }

    /// The reader a script asks for: `name` or `name@major`.
    pub fn reader(&self, requested: &str) -> Result<&NativeReaderDef> {
        let (name, major) = split_version(requested)?;
        let reader = self.readers.get(name).ok_or_else(|| {
            GearsError::Plan(format!(
                "unknown native reader '{name}' ({})",
                self.available()
            ))
        })?;
        check_major("reader", name, reader.version, major)?;
        Ok(reader)
    }

    /// The call of operator `requested` with `args`, checked (the operator exists, in the
    /// requested major version, and accepts the arguments).
    pub fn call(
        &self,
        requested: &str,
        args: Vec<crate::Record>,
    ) -> Result<(NativeCall, &NativeOperator)> {
        let operator = self.operator(requested)?;
        let call = NativeCall {
            name: operator.name.clone(),
            major: operator.version.major,
            args,
            named: Vec::new(),
        };
        operator.check(&call)?;
        Ok((call, operator))
    }

    /// The operator of a plan's call, on this server: refused when this server does not have
    /// it, or has another major version.
    pub fn resolve(&self, call: &NativeCall) -> Result<&NativeOperator> {
        self.operator(&format!("{}@{}", call.name, call.major))
    }

    /// The reader of a plan's call, on this server.
    pub fn resolve_reader(&self, call: &NativeCall) -> Result<&NativeReaderDef> {
        self.reader(&format!("{}@{}", call.name, call.major))
    }
}

/// `name@major` → (`name`, `Some(major)`); `name` → (`name`, `None`).
fn split_version(requested: &str) -> Result<(&str, Option<u32>)> {
    match requested.split_once('@') {
        None => Ok((requested, None)),
        Some((name, major)) => match major.parse::<u32>() {
            Ok(major) => Ok((name, Some(major))),
            Err(_) => Err(GearsError::Plan(format!(
                "invalid native version in '{requested}': write name@MAJOR, such as {name}@1"
            ))),
        },
    }
}

fn check_major(what: &str, name: &str, version: Version, major: Option<u32>) -> Result<()> {
    match major {
        Some(major) if major != version.major => Err(GearsError::Plan(format!(
            "native {what} '{name}' is version {version} on this server, not {major}.x"
        ))),
        _ => Ok(()),
    }
}

static INSTALLED: OnceLock<Arc<Registry>> = OnceLock::new();

/// Makes `registry` this process's registry (the module does it once, at load). Refused when
/// one is installed already.
pub fn install(registry: Registry) -> Result<()> {
    INSTALLED
        .set(Arc::new(registry))
        .map_err(|_| GearsError::Internal("the native extensions are installed already".into()))
}

/// This process's registry (empty until [`install`]).
pub fn installed() -> Arc<Registry> {
    INSTALLED.get().cloned().unwrap_or_default()
}

/// Runs extension code; a panic becomes an error (`<panic>` text), so a bug in an extension
/// fails a record or a plan, never the server.
pub(crate) fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => Err(GearsError::Internal(panic_error(&panic))),
    }
}

/// Calls into an extension (like [`guarded`]) unless it panicked before in this step: after a panic its state can
/// not be trusted (a half-done update), so the step makes no more calls and every later record
/// (and an aggregate's result) gets that panic's error.
pub(crate) fn guarded_until_panic<T>(
    broken: &mut Option<String>,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    if let Some(message) = broken {
        return Err(GearsError::Internal(message.clone()));
    }
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic_error(&panic);
            *broken = Some(message.clone());
            Err(GearsError::Internal(message))
        }
    }
}

/// The error text of a panic inside an extension.
fn panic_error(panic: &Box<dyn std::any::Any + Send>) -> String {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_string());
    format!("a native extension failed: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Record;

    struct Id;
    impl Mapper for Id {
        fn map(&mut self, record: Record) -> Result<Record> {
            Ok(record)
        }
    }

    fn ext(name: &str, op: &str) -> Extension {
        Extension::new(name, Version::new(1, 0)).operator(NativeOperator::map(
            op,
            Version::new(2, 3),
            |args: &Args| {
                args.arity(0, 1)?;
                Ok(Id)
            },
        ))
    }

    #[test]
    fn names_versions_and_errors() {
        let mut registry = Registry::new();
        assert_eq!(
            registry.operator("id").err().unwrap().to_string(),
            "unknown native operator 'id' (this server has no native operators or readers)"
        );
        registry.add(ext("a", "id")).unwrap();
        assert!(registry.operator("id").is_ok());
        assert!(registry.operator("id@2").is_ok());
        assert_eq!(
            registry.operator("id@1").err().unwrap().to_string(),
            "native operator 'id' is version 2.3 on this server, not 1.x"
        );
        assert_eq!(
            registry.operator("id@x").err().unwrap().to_string(),
            "invalid native version in 'id@x': write name@MAJOR, such as id@1"
        );
        assert_eq!(
            registry.operator("nope").err().unwrap().to_string(),
            "unknown native operator 'nope' (this server has: id 2.3)"
        );
        assert_eq!(
            registry.add(ext("b", "id")).unwrap_err().to_string(),
            "native name 'id' of extension 'b' is already taken"
        );
        assert_eq!(
            registry.add(ext("a", "other")).unwrap_err().to_string(),
            "extension 'a' is added twice"
        );
        assert!(registry
            .add(ext("c", "Bad"))
            .unwrap_err()
            .to_string()
            .starts_with("invalid native operator name 'Bad'"));
        // Bad arguments are refused when the call is made.
        assert_eq!(
            registry
                .call("id", vec![Record::Nil, Record::Nil])
                .err()
                .unwrap()
                .to_string(),
            "id: takes 0 to 1 arguments, 2 given"
        );
        let (call, _) = registry.call("id", vec![]).unwrap();
        assert_eq!(call.major, 2);
        assert!(registry.resolve(&call).is_ok());
    }

    #[test]
    fn a_panicking_factory_is_an_error() {
        let op = NativeOperator::map("boom", Version::new(1, 0), |_: &Args| -> Result<Id> {
            panic!("bad")
        });
        let call = NativeCall {
            name: "boom".into(),
            major: 1,
            args: vec![],
            named: vec![],
        };
        assert_eq!(
            op.check(&call).unwrap_err().to_string(),
            "a native extension failed: bad"
        );
    }
}
