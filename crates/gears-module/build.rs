fn main() {
    // This crate's own test binaries link libpython through gears-python; an rpath lets them
    // find the libpython it was built against without LD_LIBRARY_PATH.
    pyo3_build_config::add_libpython_rpath_link_args();
    // The crates that make the module (`gears_module!`) need the same rpath in their library,
    // and a dependency's link arguments do not reach it: they read this directory from
    // DEP_GEARS_MODULE_PYTHON_LIBDIR (`links = "gears_module"`) in their build script.
    if let Some(dir) = pyo3_build_config::get().lib_dir() {
        println!("cargo:python_libdir={dir}");
    }
}
