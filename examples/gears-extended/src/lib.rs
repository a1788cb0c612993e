//! A Gears module with two native extensions: `hll` (`hll_count`) and `zset` (the
//! `zset_entries` reader and its operators). It builds `libgears_extended.so`, loaded in place of
//! `libgears.so`:
//!
//! ```text
//! redis-server --loadmodule target/release/libgears_extended.so PythonVenv .venv
//! ```

gears_module::gears_module!(gears_ext_hll::extension(), gears_ext_zset::extension());
