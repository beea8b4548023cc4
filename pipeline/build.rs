//! Lets `cfmem` run without LD_LIBRARY_PATH: an rpath to the libtorch folder the `jobs`
//! crate was built against. libtorch_cuda is linked with --no-as-needed because nothing
//! names its symbols directly, and without it CUDA would never be found at run time.
fn main() {
    let lib = std::env::var("DEP_CFMEM_LIBTORCH_LIB").expect("the jobs crate reports its libtorch folder");
    println!("cargo::rustc-link-arg-bins=-Wl,-rpath,{lib}");
    if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo::rustc-link-arg-bins=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
