//! Training and evaluating the models of a planned run: the only crate that links libtorch.
//!
//! - [`bench`] measures the trainer against the device's matmul peak (`cfmem bench`).
//! - [`device`] resolves `auto|cpu|cuda|cuda:N` to a torch device, and keeps freed CPU
//!   memory for reuse.
//! - [`model`] is the tiny decoder-only transformer over the run's tokens, G of them
//!   stacked in one set of tensors.
//! - [`train`] trains a stack of models, each on its own subset, and evaluates every model
//!   on every document.
//! - [`claim`] makes sure each job is trained by one worker at a time: create-exclusive
//!   claim files with a heartbeat, taken over when stale.
//! - [`runner`] reads a run's plan, tokenizes its documents, claims its jobs one by one,
//!   skips the complete ones (checked against the record written at completion), streams
//!   each job's log and publishes it atomically.
//!
//! Results leave through [`subsets::schema::LogTable`] and progress through the [`Progress`]
//! trait; this crate draws nothing on a terminal and computes no statistics.

pub mod bench;
pub mod claim;
pub mod device;
pub mod model;
pub mod progress;
pub mod runner;
pub mod train;

pub use device::DeviceChoice;
pub use progress::{Progress, Silent};
pub use runner::{JobOutcome, RunJobs, Selection};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Files(#[from] subsets::Error),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("device: {0}")]
    Device(String),
    #[error("{path}: {message}")]
    Plan { path: std::path::PathBuf, message: String },
    #[error("job {job}: another worker took over its claim")]
    ClaimLost { job: u32 },
}
