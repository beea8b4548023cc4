//! The plan side of cfmem and the on-disk contract every other crate reads and writes.
//!
//! - [`corpus`] reads a user's corpus (JSONL, Parquet or a folder of `.txt` files) into
//!   validated [`corpus::Document`]s with stable ids.
//! - [`tokenizer`] turns text into token ids: bytes, a BPE trained at plan time, or a
//!   user's `tokenizer.json`.
//! - [`design`] draws the balanced membership design: which model trains on which unit.
//! - [`units`] turns clusters, passage groups and group fields into each level's sampling
//!   units, with the size limit.
//! - [`membership`] stores that design as one bit per (model, document), model by model.
//! - [`config`] is the resolved run configuration written to `run.toml`.
//! - [`duplicate_scores`] stores the `duplicates` engine's scores of a run's documents and
//!   reads them back.
//! - [`schema`] defines every Parquet file of a run (columns, types, readers, writers) and
//!   [`layout`] where each file lives in the run directory. No other crate names a column.
//! - [`family`] is the table of model families (GPT-2, Llama, Qwen2, GPT-NeoX), and
//!   [`architecture`] the one description of a model's tensors derived from it, which
//!   training, LoRA, import and export read.
//! - [`base`] reads and checks a base model directory in the Hugging Face layout of one of
//!   those families, which a run's models may start from, resolves the base a command asks
//!   for, and reads how `cfmem pretrain` made it (`pretraining.toml`).
//! - [`canaries`] generates and plants the copy sweep's canaries; [`demo`] is the built-in
//!   demo corpus, its settings and its plan; [`plan`] builds and writes a run from all of
//!   the above, and says what it holds.
//! - [`atomic`] writes files so that a crash never leaves a half-written output.
//!
//! This crate knows nothing of models, training or statistics: it must build and test
//! without libtorch.

pub mod architecture;
pub mod atomic;
pub mod base;
pub mod canaries;
pub mod config;
pub mod corpus;
pub mod demo;
pub mod design;
pub mod duplicate_scores;
pub mod error;
pub mod family;
pub mod layout;
pub mod membership;
pub mod plan;
pub mod schema;
pub mod seeds;
pub mod tokenizer;
pub mod units;

pub use error::{Error, Result};
