//! `gears-rhai`: the Rhai frontend of Gears.
//!
//! A script builds its pipeline with a `GearsBuilder` in Rhai idiom (method chaining and
//! closures) and starts it with `run()`:
//!
//! ```rhai
//! GB().filter(|x| parse_int(x.value.age) > 35).foreach(|x| execute("del", x.key)).run("user:*");
//! ```
//!
//! [`RhaiFrontend::compile`] runs the script's top level with an [`rhai::Engine`] configured for
//! that script alone; each `run()` lowers the builder into an [`gears_core::ExecutionPlan`]
//! through [`gears_core::PlanBuilder`], and callbacks are kept in the returned
//! [`RhaiSession`] as Rhai function pointers, referenced by [`gears_core::CallbackId`].
//!
//! Values a callback returns stay Rhai [`rhai::Dynamic`]s inside
//! [`gears_core::Record::Native`], so consecutive Rhai steps never convert them; they become
//! core records only when a Rust operator or the reply looks inside.
//!
//! The API reference for script authors is `docs/api-rhai.md`.

mod builder;
mod convert;
mod error;
mod frontend;
mod globals;
mod limits;
mod native;
mod session;
mod sizes;
mod state;

pub use builder::GearsBuilder;
pub use frontend::RhaiFrontend;
pub use globals::MAX_EXECUTE_ARGUMENTS;
pub use session::RhaiSession;

#[cfg(test)]
mod tests;
