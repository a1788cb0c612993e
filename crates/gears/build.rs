fn main() {
    // The module links libpython (through gears-module); an rpath lets redis-server's dlopen
    // find the libpython it was built against, without LD_LIBRARY_PATH. gears-module's build
    // script gives its directory.
    if let Ok(dir) = std::env::var("DEP_GEARS_MODULE_PYTHON_LIBDIR") {
        println!("cargo:rustc-link-arg-cdylib=-Wl,-rpath,{dir}");
    }
}
