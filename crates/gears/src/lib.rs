//! `libgears.so`: the Gears Redis module, with no native extensions. A module with extensions
//! is made the same way, by a crate of its own (see `examples/gears-extended` and
//! `docs/extending.md`).

gears_module::gears_module!();
