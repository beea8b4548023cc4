//! Lets `cfmem` run without LD_LIBRARY_PATH: an rpath to the libtorch folder the `jobs`
//! crate was built against. libtorch_cuda is deliberately not linked: `jobs::device` loads
//! it from this folder when a run asks for a device that may be CUDA.
fn main() {
    let lib = std::env::var("DEP_CFMEM_LIBTORCH_LIB").expect("the jobs crate reports its libtorch folder");
    println!("cargo::rustc-link-arg-bins=-Wl,-rpath,{lib}");
}
