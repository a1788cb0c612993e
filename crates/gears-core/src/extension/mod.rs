//! The extension API: Rust crates add **native operators** and **native readers** to Gears,
//! and scripts in every language call them by name.
//!
//! An extension is a named, versioned bundle ([`Extension`]) of
//! - operators ([`NativeOperator`]), each of one kind: a [`Mapper`], a [`Predicate`] (filter),
//!   a [`FlatMapper`], an [`Accumulator`] (a two-phase aggregation: a partial state per shard,
//!   merged where the states meet) or a [`KeyExtractor`] (the key of `groupby`, `countby`,
//!   `repartition`, ...);
//! - readers ([`NativeReaderDef`]), each a [`NativeReader`] that yields batches of records,
//!   reading Redis through a [`ReaderHost`] under the same rules as the built-in readers.
//!
//! A step that consumes its records (a map, a flatmap, an aggregate) may declare the part of a
//! key record it reads ([`Projection`]): when it comes first after a keys reader, the reader
//! reads only that part (for example one field of each hash).
//!
//! Every operator and reader is built from the arguments the script gave ([`Args`]) by a
//! factory that checks them: a script that gives bad arguments gets the factory's error when
//! it builds its plan, before anything runs. A plan refers to a native step by name, major
//! version and arguments ([`NativeCall`]), so it can be explained, stored and shipped to other
//! shards like any other step; a server that does not have the operator (or has another major
//! version of it) refuses the plan with an error naming it.
//!
//! The module collects extensions in a [`Registry`] at load ([`install`]); the builders of the
//! three languages look names up in it ([`installed`]).
//!
//! # Example
//!
//! A map operator that upper-cases one field of a hash, with its argument checked once:
//!
//! ```
//! use gears_core::extension::{Args, Extension, Mapper, NativeOperator, Registry, Version};
//! use gears_core::{Record, Result};
//!
//! struct Upper { field: String }
//!
//! impl Mapper for Upper {
//!     fn map(&mut self, record: Record) -> Result<Record> {
//!         let value = record.get_field("value").and_then(|v| v.get_field(&self.field));
//!         Ok(match value {
//!             Some(Record::String(s)) => Record::String(s.to_uppercase()),
//!             _ => Record::Nil,
//!         })
//!     }
//! }
//!
//! let extension = Extension::new("strings", Version::new(1, 0)).operator(NativeOperator::map(
//!     "upper_field",
//!     Version::new(1, 0),
//!     |args: &Args| {
//!         args.arity(1, 1)?;
//!         Ok(Upper { field: args.string(0)?.to_string() })
//!     },
//! ));
//! let mut registry = Registry::new();
//! registry.add(extension).unwrap();
//! assert_eq!(registry.operators().count(), 1);
//! ```

mod accumulator;
mod args;
mod call;
mod extractor;
mod filter;
mod flat_map;
mod map;
mod projection;
mod reader;
mod registry;

pub use accumulator::Accumulator;
pub use args::Args;
pub use call::{NativeCall, NativeStepKind};
pub use extractor::KeyExtractor;
pub use filter::Predicate;
pub use flat_map::FlatMapper;
pub use map::Mapper;
pub use projection::Projection;
pub use reader::{NativeReader, NativeRecordReader, ReaderHost, RedisReads};
pub(crate) use registry::{guarded, guarded_until_panic};
pub use registry::{
    install, installed, Extension, NativeOperator, NativeReaderDef, OperatorKind, Registry,
};

use serde::{Deserialize, Serialize};

/// The version of an extension, an operator or a reader. Plans record the major version they
/// were built against; a server whose major version differs refuses them. Minor versions are
/// compatible changes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32) -> Self {
        Version { major, minor }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}
