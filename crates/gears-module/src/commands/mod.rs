//! The RG commands: running scripts (`RG.PYEXECUTE`, `RG.LUAEXECUTE`, `RG.RHAIEXECUTE`),
//! explaining them (`RG.EXPLAIN`), profiling them (`RG.PYPROFILE`), and what each command declares
//! to Redis.

pub(crate) mod background;
pub(crate) mod docs;
mod execute;
mod job;
mod profile;
mod stats;
mod table;

pub(crate) use execute::{explain, lua_execute, py_execute, rhai_execute, CAN_NOT_BLOCK};
pub(crate) use job::{frontend, step_args};
pub(crate) use profile::py_profile;
pub(crate) use stats::py_stats;
pub(crate) use table::create_commands;
