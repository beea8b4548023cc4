//! `cfmem pretrain`: one model trained on a whole corpus, written as a base directory that
//! a run's models can start from ([`crate::base`]).
//!
//! The training is a stack of one (`train::Schedule`), so it computes what a run's
//! model computes. It survives `kill -9`: every so often the weights, AdamW's moments and
//! the step are written to `OUT/.pretrain/checkpoint.safetensors` (whole or not at all), and
//! the same command run again resumes from there. A resumed training ends with the same
//! weights as an uninterrupted one: the data order is replayed from the seed up to the
//! checkpoint's step, and the state it restores is bit for bit what was saved. A checkpoint
//! is resumed only by the command that wrote it: it carries a fingerprint of the corpus,
//! the tokenizer and every setting. `OUT/pretraining.toml`, written last, records what was
//! trained and marks the base complete.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use safetensors::SafeTensors;
use tch::{Device, Kind, Tensor};

use queue::Progress;
use subsets::architecture::Architecture;
use subsets::base::{BaseDir, PretrainingRecord};
use subsets::config::{Adapter, EmbeddingLayout, Hyperparameters, ModelConfig, TrainConfig};
use subsets::tokenizer::Tokenizer;
use subsets::{atomic, corpus, design, seeds};

use crate::base;
use crate::model::Compute;
use crate::stored::{StoredTensor, serialize};
use crate::train::{ExampleStream, Schedule, Stack, TrainingTable};
use crate::{Error, Result};

/// Steps between two looks at the clock, to decide whether to checkpoint.
const STEPS_PER_CHECK: usize = 10;

/// What to pretrain, on what.
pub struct PretrainRequest {
    /// Token ids of every document of the corpus.
    pub documents: Vec<Vec<u32>>,
    /// Documents left out of training, evaluated at the end.
    pub held_out: Vec<bool>,
    pub model: ModelConfig,
    pub layout: EmbeddingLayout,
    pub train: TrainConfig,
    pub seed: u64,
    /// The tokenizer, as the base's `tokenizer.json`.
    pub tokenizer_json: String,
    /// What the base's `pretraining.toml` says it was trained on; its `fingerprint` must
    /// change with anything that changes the training.
    pub record: PretrainingRecord,
    /// Wall-clock time between two checkpoints.
    pub checkpoint_every: Duration,
}

impl PretrainRequest {
    /// A pretraining on the corpus at `corpus` with `hyperparameters` (checked), the
    /// fraction `holdout` of its documents drawn by `seed` held out, a checkpoint every
    /// `checkpoint_every`: the corpus read, its tokenizer trained or loaded as `[model]`
    /// says, the documents tokenized and the record fingerprinted.
    pub fn new(
        corpus: &Path,
        hyperparameters: &Hyperparameters,
        (seed, holdout): (u64, f64),
        checkpoint_every: Duration,
    ) -> Result<PretrainRequest> {
        let train = &hyperparameters.train;
        if train.adapter != Adapter::Full {
            let why = "pretraining trains every weight of a new model; adapters are for runs from a base (plan --init)";
            return Err(Error::NotForPretraining { setting: "[train] adapter = \"lora\"", why });
        }
        hyperparameters.validate()?;
        if train.base().is_some() {
            let why = "pretraining starts from scratch; remove init from the configuration";
            return Err(Error::NotForPretraining { setting: "[train] init", why });
        }
        let texts = corpus::read(corpus)?;
        let held_out = design::holdout(texts.len(), holdout, seed)?;
        let model = &hyperparameters.model;
        let tokenizer = Tokenizer::for_plan(model, texts.iter().map(|d| d.text.as_str()))?;
        let documents = tokenizer.encode_documents(&texts, model.max_tokens_per_doc)?;
        let tokenizer_json = tokenizer.file_json();
        let record =
            PretrainingRecord::new(corpus, &texts, &held_out, &tokenizer_json, hyperparameters, (seed, holdout));
        Ok(PretrainRequest {
            documents,
            held_out,
            model: model.clone(),
            layout: tokenizer.layout(),
            train: train.clone(),
            seed,
            tokenizer_json,
            record,
            checkpoint_every,
        })
    }
}

/// How a pretraining ended.
pub struct Pretrained {
    pub record: PretrainingRecord,
    /// The step training resumed from; 0 when it started afresh.
    pub resumed_from: usize,
    /// The base was already complete: nothing ran.
    pub already_complete: bool,
}

impl std::fmt::Display for Pretrained {
    /// What the base learned: steps and tokens, and its loss and accuracy on the held-out
    /// documents.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.record;
        writeln!(f, "pretrained {} steps, {} tokens", r.steps, r.tokens_trained)?;
        match (r.held_out_loss, r.held_out_accuracy) {
            (Some(loss), Some(accuracy)) => writeln!(
                f,
                "held out: {} documents, loss {loss:.4} nats per token, accuracy {accuracy:.4}",
                r.held_out_documents
            ),
            _ => writeln!(f, "held out: no documents (a holdout of 0)"),
        }
    }
}

/// The files of a pretraining in progress and when done.
struct Output {
    root: PathBuf,
}

impl Output {
    fn record(&self) -> PathBuf {
        BaseDir::new(&self.root).pretraining_record()
    }

    fn progress_dir(&self) -> PathBuf {
        self.root.join(".pretrain")
    }

    fn checkpoint(&self) -> PathBuf {
        self.progress_dir().join("checkpoint.safetensors")
    }
}

/// Pretrains `request`'s model into the base directory `out`, resuming from its
/// checkpoint if one is there.
pub fn pretrain(request: &PretrainRequest, out: &Path, device: Device, progress: &dyn Progress) -> Result<Pretrained> {
    let output = Output { root: out.to_path_buf() };
    if let Some(done) = completed(&output, &request.record)? {
        return Ok(Pretrained { record: done, resumed_from: 0, already_complete: true });
    }
    refuse_foreign(out)?;
    std::fs::create_dir_all(output.progress_dir()).map_err(subsets::Error::io(output.progress_dir()))?;

    let architecture = Architecture::new(&request.model, request.layout);
    let longest = request.documents.iter().map(Vec::len).max().unwrap_or(0);
    crate::train::check_memory(&architecture, 1, &request.train, longest, device)?;
    let trained: Vec<&[u32]> = request
        .documents
        .iter()
        .zip(&request.held_out)
        .filter(|&(_, &held)| !held)
        .map(|(doc, _)| doc.as_slice())
        .collect();
    let span = request.model.window();
    let table = TrainingTable::of_documents(&trained, span, &architecture, device);
    if table.rows() == 0 {
        return Err(Error::NothingToPretrain);
    }
    let batch = request.train.batch_size as usize;
    let total = (request.train.epochs as usize * table.rows()).div_ceil(batch).max(1);
    let (mut stack, resumed_from) =
        match read_checkpoint(&output, &request.record.fingerprint, &architecture, request, device)? {
            Some((stack, step)) => (stack, step),
            None => {
                let weights = architecture.initial_weights(seeds::derive(request.seed, "pretrain-init", 0));
                (Stack::from_rows(architecture, &[weights], request.train.precision, device)?, 0)
            }
        };
    let mut stream =
        ExampleStream::new((0..table.rows() as i64).collect(), seeds::rng(request.seed, "pretrain-data", 0));
    stream.skip(resumed_from * batch);
    let mut streams = [stream];

    progress.stack_started(&[0], total);
    let schedule = Schedule::new(&request.train, total);
    let mut step = resumed_from;
    let mut last_checkpoint = Instant::now();
    while step < total {
        let next = (step + STEPS_PER_CHECK).min(total);
        schedule.run(&mut stack, &table, &mut streams, step..next, progress);
        step = next;
        if step < total && last_checkpoint.elapsed() >= request.checkpoint_every {
            write_checkpoint(&output, &request.record.fingerprint, &stack, step)?;
            last_checkpoint = Instant::now();
        }
    }
    // The finished weights are a checkpoint too: a kill while the base is written
    // resumes here, with nothing left to train.
    write_checkpoint(&output, &request.record.fingerprint, &stack, total)?;

    progress.evaluating(&[0], 1.0);
    let mut record = request.record.clone();
    record.steps = total as u64;
    record.tokens_trained = u64::from(request.train.epochs) * trained.iter().map(|d| d.len() as u64).sum::<u64>();
    let held: Vec<&[u32]> = request
        .documents
        .iter()
        .zip(&request.held_out)
        .filter(|&(_, &held)| held)
        .map(|(doc, _)| doc.as_slice())
        .collect();
    let evals = stack.evaluate(&held, request.train.eval_batch_size as usize)?.remove(0);
    let tokens: u64 = evals.iter().map(|e| u64::from(e.tokens)).sum();
    if tokens > 0 {
        record.held_out_loss = Some(evals.iter().map(|e| e.nll).sum::<f64>() / tokens as f64);
        record.held_out_accuracy = Some(evals.iter().map(|e| u64::from(e.correct)).sum::<u64>() as f64 / tokens as f64);
    }
    base::write(out, &request.model, request.layout, &stack.weights.get(0), &request.tokenizer_json)?;
    let toml = toml::to_string(&record).expect("a pretraining record always serializes");
    atomic::write_bytes(&output.record(), toml.as_bytes())?;
    std::fs::remove_dir_all(output.progress_dir()).map_err(subsets::Error::io(output.progress_dir()))?;
    Ok(Pretrained { record, resumed_from, already_complete: false })
}

/// The record of a base `out` already holds from the same command; a base pretrained
/// otherwise is refused.
fn completed(output: &Output, expected: &PretrainingRecord) -> Result<Option<PretrainingRecord>> {
    let path = output.record();
    let Some(record) = PretrainingRecord::read(&BaseDir::new(&output.root))? else { return Ok(None) };
    if record.fingerprint != expected.fingerprint {
        return Err(Error::Plan {
            path,
            message: "this base was pretrained from another corpus or with other settings; choose another --out".into(),
        });
    }
    // A kill between the record and the checkpoint's removal leaves the checkpoint behind.
    if output.progress_dir().exists() {
        std::fs::remove_dir_all(output.progress_dir()).map_err(subsets::Error::io(output.progress_dir()))?;
    }
    Ok(Some(record))
}

/// Refuses an output directory holding files that a pretraining did not write.
fn refuse_foreign(out: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(out) else { return Ok(()) };
    let ours = [".pretrain", "config.json", "model.safetensors", "tokenizer.json"];
    let foreign: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !ours.contains(&name.as_str()) && !name.starts_with(".cfmem-"))
        .collect();
    let unfinished = out.join(".pretrain").is_dir();
    if !foreign.is_empty() || (!unfinished && out.join("model.safetensors").exists()) {
        return Err(Error::Plan {
            path: out.to_path_buf(),
            message: "already holds files this pretraining did not write; choose an empty or new directory".into(),
        });
    }
    Ok(())
}

/// Metadata keys of a checkpoint.
const FINGERPRINT: &str = "fingerprint";
const STEP: &str = "step";
const STEPS_TAKEN: &str = "steps_taken";

fn write_checkpoint(output: &Output, fingerprint: &str, stack: &Stack, step: usize) -> Result<()> {
    let (weights, exp_avg, exp_avg_sq, steps_taken) = stack.state();
    let tensors = [
        StoredTensor::new("weights", weights)?,
        StoredTensor::new("exp_avg", exp_avg)?,
        StoredTensor::new("exp_avg_sq", exp_avg_sq)?,
    ];
    let metadata = HashMap::from([
        (FINGERPRINT.to_string(), fingerprint.to_string()),
        (STEP.to_string(), step.to_string()),
        (STEPS_TAKEN.to_string(), steps_taken.to_string()),
    ]);
    let bytes = serialize(&tensors, metadata)?;
    atomic::write_bytes(&output.checkpoint(), &bytes)?;
    Ok(())
}

/// The stack and step of the checkpoint in `output`, if there is one of this pretraining.
fn read_checkpoint(
    output: &Output,
    fingerprint: &str,
    architecture: &Architecture,
    request: &PretrainRequest,
    device: Device,
) -> Result<Option<(Stack, usize)>> {
    let path = output.checkpoint();
    let Ok(bytes) = std::fs::read(&path) else { return Ok(None) };
    let damaged = |message: String| Error::Plan { path: path.clone(), message };
    let (_, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| damaged(format!("{e:?}")))?;
    let meta = metadata.metadata().clone().unwrap_or_default();
    if meta.get(FINGERPRINT).map(String::as_str) != Some(fingerprint) {
        return Err(damaged(
            "a checkpoint of another pretraining (other corpus or settings): remove it, or choose another --out".into(),
        ));
    }
    let number = |key: &str| -> Result<usize> {
        meta.get(key).and_then(|v| v.parse().ok()).ok_or_else(|| damaged(format!("no {key} in the checkpoint")))
    };
    let (step, steps_taken) = (number(STEP)?, number(STEPS_TAKEN)?);
    let file = SafeTensors::deserialize(&bytes).map_err(|e| damaged(format!("{e:?}")))?;
    let tensor = |name: &str| -> Result<Tensor> {
        let view = file.tensor(name).map_err(|e| damaged(format!("{name}: {e:?}")))?;
        let shape: Vec<i64> = view.shape().iter().map(|&n| n as i64).collect();
        if shape != [1, architecture.parameters()] {
            return Err(damaged(format!("{name} has shape {shape:?}, the model {:?}", [1, architecture.parameters()])));
        }
        Ok(Tensor::f_from_data_size(view.data(), &shape, Kind::Float)?)
    };
    let stack = Stack::restore(
        architecture.clone(),
        [tensor("weights")?, tensor("exp_avg")?, tensor("exp_avg_sq")?],
        steps_taken as i32,
        request.train.precision,
        device,
    )?;
    Ok(Some((stack, step)))
}
