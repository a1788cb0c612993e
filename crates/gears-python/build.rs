fn main() {
    // Lets the module find the libpython it was built against without LD_LIBRARY_PATH.
    pyo3_build_config::add_libpython_rpath_link_args();
}
