//! Training and evaluating the models of a planned run: the only crate that links libtorch.
//!
//! - [`base`] loads a base model's weights into the parameter layout, writes a model as a
//!   base directory in its family's Hugging Face layout, and exports a LoRA run's model.
//! - [`mod@bench`] measures the trainer against the device's matmul peak, and shows it as
//!   `cfmem bench`'s table or JSON ([`bench::BenchReport`]).
//! - [`device`] resolves `auto|cpu|cuda|cuda:N` to a torch device, and keeps freed CPU
//!   memory for reuse.
//! - [`lora`] lays out low-rank adapters over a frozen base, merges them into full
//!   weights and stores them as peft does.
//! - [`model`] computes the model that [`subsets::architecture`] describes (every family),
//!   G of them stacked in one set of tensors.
//! - [`pretrain`] trains one model on a whole corpus, with checkpoints it resumes from,
//!   and writes it as a base.
//! - [`stored`] reads and writes tensors as safetensors files (a leaf: it knows no model).
//! - [`target`] evaluates a model from outside a run on the run's documents, once it is
//!   found compatible with the run's models (`cfmem attack`).
//! - [`train`] trains a stack of models, each on its own subset, and evaluates every model
//!   on every document.
//! - [`trainer`] is the trainer the job queue (crate `queue`) drives: a run's documents
//!   tokenized once, then each job's stack trained and evaluated; and the base evaluated
//!   as the membership attacks' reference.
//!
//! Which job runs, claims, logs and their completion records are the queue's: results leave
//! through [`subsets::schema::LogTable`] rows handed to the queue, and progress through
//! [`queue::Progress`]; this crate draws nothing on a terminal and computes no statistics.

pub mod base;
pub mod bench;
pub mod device;
pub mod lora;
pub mod model;
pub mod pretrain;
pub mod stored;
pub mod target;
pub mod train;
pub mod trainer;
#[cfg(test)]
mod transformers_reference;

pub use device::DeviceChoice;
pub use trainer::RunTrainer;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Files(#[from] subsets::Error),
    #[error(transparent)]
    Queue(#[from] queue::Error),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A CUDA device was asked for and is not there.
    #[error("cuda:{index} was asked for but {why}")]
    CudaUnavailable { index: usize, why: String },
    /// A stack that would not fit in the device's free memory, refused before training.
    #[error(
        "a stack of {models} models of {parameters} parameters needs about {needed_gib:.2} GiB ({state} and \
         activations of a batch of {batch} × {time}), more than the {free_gib:.2} GiB free on {device}; {advice}"
    )]
    StackTooLarge {
        models: usize,
        parameters: u64,
        needed_gib: f64,
        /// What the stack holds besides activations, in words.
        state: String,
        batch: u32,
        time: usize,
        free_gib: f64,
        device: String,
        /// The largest stack that fits, or what to change.
        advice: String,
    },
    #[error("model {model} has no training document")]
    NoTrainingDocument { model: u32 },
    #[error("no document to pretrain on: every document is empty or held out")]
    NothingToPretrain,
    /// A setting `cfmem pretrain` cannot honour, and why.
    #[error("{setting}: {why}")]
    NotForPretraining { setting: &'static str, why: &'static str },
    /// A file cfmem writes (`what`) that could not be serialized.
    #[error("{what}: cannot be written: {message}")]
    Serialize { what: String, message: String },
    #[error("{path}: {message}")]
    Plan { path: std::path::PathBuf, message: String },
}
