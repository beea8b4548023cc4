//! `cfmem bench`: how close the stacked trainer comes to the device. It measures the
//! device's dense matrix-product peak, then trains stacks of several sizes with the real
//! trainer ([`train::train`]) on synthetic full-window documents of random token ids (the
//! vocabulary is the configuration's tokenizer's) and reports throughput,
//! model FLOP/s against that peak, evaluation speed and peak memory.
//!
//! Every number comes from this process, so ratios between rows compare work done on the
//! same machine at the same time: stack G against the same G models trained one at a time
//! is the ratio of their total tokens/s. [`run`] takes the whole measurement, which a
//! [`BenchReport`] shows as a table or JSON.

use std::time::{Duration, Instant};

use rand::RngExt;
use tch::{Device, Kind, Tensor};

use queue::Progress;
use subsets::architecture::Architecture;
use subsets::config::{CorpusConfig, DesignConfig, Hyperparameters, Precision, RunConfig, TokensConfig};
use subsets::seeds;
use subsets::tokenizer::Tokenizer;

use crate::Result;
use crate::base::LoadedBase;
use crate::train::{self, LOSS_EVERY, StackInput};

mod report;

pub use report::{BenchReport, run};

/// Dense matrix-product peak of a device, FLOP/s.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct MatmulPeak {
    pub fp32: f64,
    /// CUDA only.
    pub bf16: Option<f64>,
}

/// One stack size's measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StackRun {
    pub stack: usize,
    pub precision: Precision,
    /// Median seconds per training step, over the measured steps.
    pub step_seconds: f64,
    /// Predicted training tokens per second, all models together.
    pub tokens_per_second: f64,
    pub tokens_per_second_per_model: f64,
    /// Model FLOP/s ([`subsets::architecture::Architecture::training_flops_per_token`]).
    pub flops_per_second: f64,
    /// Of the measured matmul peak of the precision trained in.
    pub fraction_of_peak: f64,
    /// Documents evaluated per second by each model, times the models of the stack.
    pub eval_documents_per_second: f64,
    /// What one evaluation checkpoint (`train.eval_at`) adds to a job: the time to evaluate
    /// every document of a corpus over the time to train on it at `train.epochs` epochs and
    /// keep 0.5, full-length documents either way.
    pub checkpoint_cost: f64,
    /// Bytes of the tensors the stack holds (weights or base and adapters, AdamW's
    /// moments), activations aside.
    pub state_bytes: i64,
    /// CPU: the process's peak resident memory during this stack's run. CUDA: device
    /// memory in use after the run (the allocator keeps what it reserved, so this is the
    /// peak of this and every smaller stack before it).
    pub peak_memory_bytes: Option<u64>,
    /// What the memory check estimated for this stack before training
    /// ([`Architecture::memory_estimate`]), to set beside the peak.
    pub memory_estimate_bytes: u64,
}

/// What `cfmem bench` is asked to measure for one stack size.
#[derive(Clone)]
pub struct BenchRequest<'a> {
    /// With a base, its architecture and tokenizer in `model`.
    pub hyperparameters: Hyperparameters,
    /// The base every model of a stack starts from, if any.
    pub base: Option<&'a LoadedBase>,
    /// Training steps timed per stack size, after [`WARMUP_STEPS`] untimed ones (on CUDA,
    /// rounded up to a multiple of [`LOSS_EVERY`]).
    pub steps: usize,
    /// Tokens of every training document, when fewer than the context's window (short
    /// records, as fine-tuning sets often hold).
    pub document_tokens: Option<usize>,
}

impl BenchRequest<'_> {
    /// Tokens of every training document: `document_tokens`, at most the context's window.
    pub fn document_length(&self) -> usize {
        let window = self.hyperparameters.model.window();
        self.document_tokens.map_or(window, |tokens| tokens.min(window))
    }
}

/// Steps trained before timing starts (allocator, kernels' first calls).
pub const WARMUP_STEPS: usize = LOSS_EVERY;
/// Steps trained before timing starts on the CPU, where steps run one after the other
/// and each is timed on its own.
pub const CPU_WARMUP_STEPS: usize = 1;

/// Times `a · b` for square matrices of side `n`, median of several runs, as FLOP/s.
fn matmul_flops(n: i64, kind: Kind, device: Device) -> f64 {
    let a = Tensor::randn([n, n], (kind, device));
    let b = Tensor::randn([n, n], (kind, device));
    let sync = || {
        if let Device::Cuda(index) = device {
            tch::Cuda::synchronize(index as i64);
        }
    };
    let _ = a.mm(&b);
    sync();
    let mut times = Vec::new();
    let started = Instant::now();
    while times.len() < 5 || (started.elapsed() < Duration::from_secs(2) && times.len() < 50) {
        let t = Instant::now();
        let _ = a.mm(&b);
        sync();
        times.push(t.elapsed().as_secs_f64());
    }
    2.0 * (n as f64).powi(3) / median(&mut times)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The device's fp32 (and on CUDA bf16) dense matmul peak.
pub fn matmul_peak(device: Device) -> MatmulPeak {
    match device {
        Device::Cuda(_) => MatmulPeak {
            fp32: matmul_flops(8192, Kind::Float, device),
            bf16: Some(matmul_flops(8192, Kind::BFloat16, device)),
        },
        _ => MatmulPeak { fp32: matmul_flops(1024, Kind::Float, device), bf16: None },
    }
}

/// Records when each training step ended, to time a stretch of them.
struct StepClock {
    ended: std::cell::RefCell<Vec<Instant>>,
}

impl Progress for StepClock {
    fn training_step(&self, _step: usize, _loss: Option<f64>) {
        self.ended.borrow_mut().push(Instant::now());
    }
}

/// A run configuration whose stacks train exactly `steps` steps on `2 × batch_size`
/// documents (keep 0.5: the nominal set is one batch, so one epoch is one step), over the
/// vocabulary the configuration's tokenizer would have, or the base's.
fn bench_config(request: &BenchRequest<'_>, steps: usize) -> Result<RunConfig> {
    let hyperparameters = &request.hyperparameters;
    let mut train = hyperparameters.train.clone();
    train.epochs = steps as u32;
    let (vocab, bos) = match &request.base {
        Some(loaded) => (loaded.base.layout.rows, Some(loaded.base.layout.bos)),
        None => (Tokenizer::planned_vocab(&hyperparameters.model)?, None),
    };
    Ok(RunConfig {
        seed: 0,
        corpus: CorpusConfig { path: "synthetic".into(), sha256: String::new(), documents: 0 },
        design: DesignConfig::documents(2, 0.5),
        model: hyperparameters.model.clone(),
        train,
        jobs: hyperparameters.jobs.clone(),
        tokens: TokensConfig { vocab, bos, tokenizer_sha256: None, corpus: 0, capped: 0, background: 0 },
        background: None,
        base: None,
    })
}

/// Trains and evaluates a stack of `stack` models and measures it against `peak`.
pub fn measure_stack(request: &BenchRequest<'_>, stack: usize, device: Device, peak: &MatmulPeak) -> Result<StackRun> {
    let total_steps = match device {
        Device::Cuda(_) => WARMUP_STEPS + request.steps.div_ceil(LOSS_EVERY).max(1) * LOSS_EVERY,
        _ => CPU_WARMUP_STEPS + request.steps.max(1),
    };
    let config = bench_config(request, total_steps)?;
    let length = request.document_length();
    let batch = config.train.batch_size as usize;
    let mut rng = seeds::rng(0, "bench-documents", stack as u64);
    // Random token ids: the cost of a step depends on the vocabulary's size only.
    let vocab = config.tokens.vocab;
    let documents: Vec<Vec<u32>> =
        (0..2 * batch).map(|_| (0..length).map(|_| rng.random_range(0..vocab)).collect()).collect();
    let copies = vec![1; documents.len()];
    let holdout = vec![false; documents.len()];
    let every_document: Vec<u32> = (0..documents.len() as u32).collect();
    let models: Vec<(u32, &[u32])> = (0..stack as u32).map(|m| (m, every_document.as_slice())).collect();
    let input = StackInput {
        config: &config,
        documents: &documents,
        copies: &copies,
        holdout: &holdout,
        background: &[],
        models: &models,
        base: request.base.map(|loaded| &loaded.weights),
    };

    let architecture = Architecture::new(&config.model, config.tokens.layout());
    train::check_memory(&architecture, stack, &config.train, length, device)?;
    reset_peak_memory();
    let clock = StepClock { ended: Default::default() };
    let trained = train::train(&input, device, &clock)?;
    let ended = clock.ended.into_inner();
    // Steps between two loss readings run asynchronously on a GPU: time from one reading
    // (a synchronization) to the next, per step, from the end of the warmup on. On the CPU
    // a step ends when its work does.
    let mut per_step: Vec<f64> = match device {
        Device::Cuda(_) => {
            let readings: Vec<Instant> = ended.iter().skip(WARMUP_STEPS - 1).step_by(LOSS_EVERY).copied().collect();
            readings.windows(2).map(|w| (w[1] - w[0]).as_secs_f64() / LOSS_EVERY as f64).collect()
        }
        _ => ended[CPU_WARMUP_STEPS - 1..].windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect(),
    };
    let step_seconds = median(&mut per_step);

    // Four evaluation batches timed, after one untimed.
    let eval_batch = config.train.eval_batch_size as usize;
    let eval_docs: Vec<&[u32]> = documents.iter().map(Vec::as_slice).cycle().take(4 * eval_batch).collect();
    let _ = trained.evaluate(&eval_docs[..eval_batch.min(eval_docs.len())], eval_batch)?;
    let started = Instant::now();
    let _ = trained.evaluate(&eval_docs, eval_batch)?;
    let eval_seconds = started.elapsed().as_secs_f64();
    let eval_documents_per_second = (eval_docs.len() * stack) as f64 / eval_seconds;
    // Per document of the corpus: its evaluation by the stack, against epochs × keep of a
    // training step's share of it (a step trains `batch` documents of every model).
    let epochs = f64::from(request.hyperparameters.train.epochs);
    let training_seconds_per_document = epochs * 0.5 * step_seconds / batch as f64;
    let checkpoint_cost = stack as f64 / eval_documents_per_second / training_seconds_per_document;

    let tokens_per_step = (stack * batch * length) as f64;
    let tokens_per_second = tokens_per_step / step_seconds;
    let adapters = trained.adapters().map(|(lora, _)| lora.parameters());
    let flops_per_second = tokens_per_second * trained.architecture().training_flops_per_token(length as i64, adapters);
    let peak_flops = match config.train.precision {
        Precision::Bf16 => peak.bf16.unwrap_or(peak.fp32),
        Precision::Fp32 => peak.fp32,
    };
    Ok(StackRun {
        stack,
        precision: config.train.precision,
        step_seconds,
        tokens_per_second,
        tokens_per_second_per_model: tokens_per_second / stack as f64,
        flops_per_second,
        fraction_of_peak: flops_per_second / peak_flops,
        eval_documents_per_second,
        checkpoint_cost,
        state_bytes: trained.bytes(),
        peak_memory_bytes: peak_memory(device),
        memory_estimate_bytes: architecture.memory_estimate(
            stack,
            batch,
            config.train.eval_batch_size as usize,
            length,
            adapters,
        ),
    })
}

/// Starts a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM).
fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_memory(device: Device) -> Option<u64> {
    match device {
        Device::Cuda(_) => crate::device::cuda_memory().map(|(free, total)| total - free),
        _ => {
            let status = std::fs::read_to_string("/proc/self/status").ok()?;
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        }
    }
}
