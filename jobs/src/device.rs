//! Which torch device a run trains on.

use std::fmt;
use std::str::FromStr;

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
    /// The torch device, or an error when CUDA is asked for and absent.
    pub fn resolve(self) -> Result<Device> {
        let available = tch::Cuda::device_count() as usize;
        match self {
            DeviceChoice::Auto if available > 0 => Ok(Device::Cuda(0)),
            DeviceChoice::Auto | DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(n) if n < available => Ok(Device::Cuda(n)),
            DeviceChoice::Cuda(n) => {
                Err(Error::Device(format!("cuda:{n} was asked for but libtorch sees {available} CUDA device(s)")))
            }
        }
    }
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

/// Sets the CPU threads libtorch uses in this process; 0 keeps its default.
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
        let count = tch::Cuda::device_count() as usize;
        let err = DeviceChoice::Cuda(count).resolve().unwrap_err().to_string();
        assert!(err.contains(&format!("cuda:{count} was asked for")), "{err}");
        if count == 0 {
            assert_eq!(DeviceChoice::Auto.resolve().unwrap(), Device::Cpu);
        }
    }
}
