//! Which torch device a run trains on.

use std::ffi::CStr;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use tch::Device;

use crate::{Error, Result};

/// A device as the user names it: `auto`, `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// CUDA device 0 when libtorch sees one, else the CPU.
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| format!("unknown device {s:?}: expected auto, cpu, cuda or cuda:N")),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => write!(f, "auto"),
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceChoice {
    /// The torch device, or an error when CUDA is asked for and absent. `cpu` never loads
    /// libtorch's CUDA backend; `auto` and `cuda` do (see [`cuda_device_count`]).
    pub fn resolve(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Auto => Ok(if cuda_device_count().unwrap_or(0) > 0 { Device::Cuda(0) } else { Device::Cpu }),
            DeviceChoice::Cuda(n) => match cuda_device_count() {
                Ok(available) if n < available => Ok(Device::Cuda(n)),
                Ok(available) => {
                    Err(Error::CudaUnavailable { index: n, why: format!("libtorch sees {available} CUDA device(s)") })
                }
                Err(why) => Err(Error::CudaUnavailable { index: n, why }),
            },
        }
    }
}

/// How many CUDA devices libtorch sees, once its CUDA backend is loaded, or why it could
/// not be loaded.
///
/// `cfmem` is not linked against libtorch_cuda: that library and the CUDA libraries it
/// pulls in (cuBLAS, cuDNN, NCCL, ...) cost every process about 350 MB of memory and a
/// quarter of a second to load, which the commands that never train (`dups`, `analyze`,
/// `report`, ...) would pay for nothing. It is loaded here instead, from the rpath's
/// libtorch folder (or LD_LIBRARY_PATH), the first time a device that may be CUDA is
/// resolved. Its static initializers register the CUDA kernels and hooks with libtorch_cpu
/// exactly as at program start, because nothing asks libtorch about CUDA before this.
pub fn cuda_device_count() -> std::result::Result<usize, String> {
    static LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            // SAFETY: a constant, NUL-terminated name; the handle is never closed, so the
            // library stays loaded for the life of the process, as a linked one would.
            let handle = unsafe { libc::dlopen(c"libtorch_cuda.so".as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            if handle.is_null() {
                // SAFETY: dlerror returns the message of the failed dlopen on this thread, a
                // valid C string until the next dl* call here, or null when it has none.
                let why = unsafe {
                    let message = libc::dlerror();
                    (!message.is_null()).then(|| CStr::from_ptr(message).to_string_lossy().into_owned())
                };
                let why = why.unwrap_or_else(|| "libtorch_cuda.so: no reason given".into());
                Err(format!("libtorch's CUDA backend could not be loaded: {why}"))
            } else {
                Ok(())
            }
        })
        .clone()?;
    Ok(tch::Cuda::device_count() as usize)
}

/// Keeps the memory libtorch frees in the process, for the next step to reuse, instead of
/// handing it back to the kernel: every training step allocates and frees the same
/// activations, and glibc serves blocks over 32 MB (and, once it trims, smaller ones too)
/// from fresh mappings whose pages the kernel must fault in and zero again each step. On
/// this project's 2-core VM that made a stack of 16 train at 0.70× the tokens/s of one
/// model, 1.14× with this (`cfmem bench --device cpu --stacks 1,16`). The cost: a training
/// process keeps its peak memory until it exits. Call it before libtorch allocates.
pub fn keep_freed_memory() {
    // SAFETY: mallopt only sets allocator parameters; glibc reads them on later calls.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Bytes free for tensors on `device`: the kernel's MemAvailable on the CPU, the CUDA
/// runtime's free memory on a GPU; None where neither can be read.
pub fn free_memory(device: Device) -> Option<u64> {
    match device {
        Device::Cuda(_) => cuda_memory().map(|(free, _)| free),
        _ => available_memory(),
    }
}

/// Bytes of memory the kernel says new allocations can have (MemAvailable).
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Free and total memory of the current CUDA device, from the CUDA runtime libtorch has
/// loaded.
pub fn cuda_memory() -> Option<(u64, u64)> {
    type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
    // SAFETY: looks up a symbol of a library already loaded by libtorch; a null result
    // means the runtime is not there and is handled.
    let symbol = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"cudaMemGetInfo".as_ptr()) };
    if symbol.is_null() {
        return None;
    }
    // SAFETY: cudaMemGetInfo has this signature in every CUDA runtime.
    let get_info: MemGetInfo = unsafe { std::mem::transmute(symbol) };
    let (mut free, mut total) = (0usize, 0usize);
    // SAFETY: both pointers are valid for writes.
    let status = unsafe { get_info(&mut free, &mut total) };
    (status == 0).then_some((free as u64, total as u64))
}

/// Sets the CPU threads libtorch uses in this process; 0 keeps its default (one per core).
/// A count set here is fixed: PyTorch also turns off MKL's dynamic choice of threads per
/// call, under which a loaded machine may compute a matrix product with fewer threads, so
/// with sums in another order. Left at 0, MKL chooses, which trains this project's small
/// models about 20% faster on two cores (the demo: 184 s against 225 s pinned to 2); runs
/// that must reproduce bit for bit under load set the count. Call it before libtorch
/// computes anything.
pub fn set_cpu_threads(threads: u32) {
    if threads > 0 {
        tch::set_num_threads(threads as i32);
    }
}

/// A short name of a resolved device, for messages.
pub fn describe(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling_and_refuses_others() {
        assert_eq!("auto".parse(), Ok(DeviceChoice::Auto));
        assert_eq!("cpu".parse(), Ok(DeviceChoice::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceChoice::Cuda(3)));
        let err = "gpu".parse::<DeviceChoice>().unwrap_err();
        assert!(err.contains("unknown device \"gpu\""), "{err}");
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
    }

    #[test]
    fn cpu_resolves_and_missing_cuda_is_an_error() {
        assert_eq!(DeviceChoice::Cpu.resolve().unwrap(), Device::Cpu);
        let count = cuda_device_count().unwrap_or(0);
        let err = DeviceChoice::Cuda(count).resolve().unwrap_err().to_string();
        assert!(err.contains(&format!("cuda:{count} was asked for")), "{err}");
        if count == 0 {
            assert_eq!(DeviceChoice::Auto.resolve().unwrap(), Device::Cpu);
        }
    }

    #[test]
    fn the_cuda_backend_is_loaded_from_the_libtorch_built_against() {
        let backend = std::path::Path::new(env!("CFMEM_LIBTORCH_LIB")).join("libtorch_cuda.so");
        if !backend.exists() {
            assert!(cuda_device_count().unwrap_err().contains("libtorch_cuda.so"));
            return;
        }
        cuda_device_count().expect("libtorch_cuda.so loads through the rpath");
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let backend = backend.canonicalize().unwrap();
        assert!(maps.contains(backend.to_str().unwrap()), "{} is not mapped", backend.display());
    }
}
