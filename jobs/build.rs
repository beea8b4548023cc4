//! libtorch comes from torch-sys, which finds it (LIBTORCH_USE_PYTORCH=1) and tells its
//! direct dependents where. This crate's own test binaries get an rpath to it, and the
//! folder is passed on to the `cfmem` binary's build script (DEP_CFMEM_LIBTORCH_LIB) and to
//! this crate's tests (CFMEM_LIBTORCH_LIB).
fn main() {
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys reports its libtorch folder");
    println!("cargo::metadata=lib={lib}");
    println!("cargo::rustc-link-arg=-Wl,-rpath,{lib}");
    println!("cargo::rustc-env=CFMEM_LIBTORCH_LIB={lib}");
}
