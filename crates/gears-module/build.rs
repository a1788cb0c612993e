fn main() {
    // The module links libpython through gears-python; an rpath lets redis-server's dlopen find
    // the libpython it was built against without LD_LIBRARY_PATH.
    pyo3_build_config::add_libpython_rpath_link_args();
}
