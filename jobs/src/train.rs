//! Training a stack of models together and evaluating them, teacher-forced, on every
//! document, at each checkpoint of `train.eval_at` (fractions of the training's steps) and
//! at the end. Training is cut into stretches at the checkpoints; a stretch computes exactly
//! what one uninterrupted training would, and evaluation reads the weights without
//! touching the optimizer or the data order, so checkpoints change nothing in the models.
//!
//! A document of n tokens `[b0, …, b(n-1)]` is cut into consecutive windows of at most
//! `context − 1` tokens that together cover it (`Window`); each window is one row of a
//! batch. The model reads the token just before the window (BOS for the first) and the
//! window less its last token, and predicts the window, so every one of the n tokens is
//! predicted exactly once, and a document's evaluation is the sum over its windows. Rows
//! of a batch are padded at the end: PAD as input, `NO_TARGET` as target. A long document
//! thus weighs in training by its number of windows: it is that many examples.
//!
//! A model's training set is its subset of the corpus, each document repeated by its copy
//! count, plus every background document once; background documents are never evaluated.
//!
//! Each model of a stack is an independent model: its initial weights come from (run seed,
//! model id), or are the base's when the run starts from one, its data order from its own
//! seeded generator, its loss is its own mean over
//! its own batch (the stack's loss is the sum of the models' losses, so each model gets
//! exactly its own gradient), its gradient norm is clipped on its own, and AdamW, being
//! elementwise, keeps its own moments. A stack of G and G stacks of 1 are the same
//! computation.
//!
//! Every model of a run takes the same number of steps, [`steps`], computed from the
//! design's nominal training-set size (the background included); a model draws its batches from an endless stream
//! of its own reshuffled passes over its training set, so a model whose set is a little
//! smaller than nominal sees its documents a little more often, and IN and OUT stay
//! comparable.
//!
//! The data path keeps the device busy: the stack's training documents are uploaded once
//! as one token table, each step's batches are gathered on the device from indices
//! uploaded a chunk of steps at a time, and the loss is read back (a host synchronization)
//! only every [`LOSS_EVERY`] steps.

use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Reduction, Tensor};

use queue::Progress;
use subsets::architecture::Architecture;
use subsets::config::{Precision, RunConfig, TrainConfig};
use subsets::schema::{LogRow, LogTable, MIN_K_FRACTION};
use subsets::{design, seeds};

use crate::lora::Lora;
use crate::model::{Compute, Output};
use crate::{Error, Result};

/// Steps between two readings of the loss.
pub const LOSS_EVERY: usize = 10;
/// Training steps whose batch indices are uploaded together.
const STEPS_PER_UPLOAD: usize = 256;
/// Documents evaluated between two copies of results back to the host.
const EVAL_CHUNK: usize = 8192;
/// The target of a padded position: no token id, so that a base whose PAD is one of its
/// tokens (its BOS) still never masks a real target of that token.
const NO_TARGET: i64 = -100;

/// What one job trains: a stack of models over the run's documents.
pub struct StackInput<'a> {
    pub config: &'a RunConfig,
    /// Token ids (below `config.tokens.vocab`) of every document of the run, in corpus order.
    pub documents: &'a [Vec<u32>],
    /// Copies of each document in a training set that includes it.
    pub copies: &'a [u16],
    /// Documents no model trains on.
    pub holdout: &'a [bool],
    /// Token ids of the background documents: every model trains on each of them once a
    /// pass, and none is evaluated.
    pub background: &'a [Vec<u32>],
    /// Each model of the stack with the sorted documents it trains on.
    pub models: &'a [(u32, &'a [u32])],
    /// The weights every model starts from (`[P]`, on the CPU), when the run starts from a
    /// base; otherwise each model's own initialization.
    pub base: Option<&'a Tensor>,
}

/// Trains every model of the stack, evaluating each on every document at every checkpoint
/// of `train.eval_at` without stopping its training. The log rows go to `rows` in parts,
/// checkpoint by checkpoint, one part per chunk of documents in corpus order, model-major
/// within it. Returns the trained stack.
pub fn train_and_evaluate(
    input: &StackInput<'_>,
    device: Device,
    progress: &dyn Progress,
    rows: &mut dyn FnMut(LogTable) -> Result<()>,
) -> Result<Stack> {
    let mut training = Training::new(input, device, progress)?;
    let models: Vec<u32> = input.models.iter().map(|&(model, _)| model).collect();
    let train = &input.config.train;
    let mut taken = 0;
    for (&checkpoint, step) in train.eval_at.iter().zip(train.checkpoint_steps(training.total)) {
        training.run(taken..step, progress);
        taken = step;
        progress.evaluating(&models, checkpoint);
        evaluate_into(&training.stack, input, checkpoint, step as u32, rows)?;
    }
    Ok(training.stack)
}

/// Evaluates every model of `stack` on every document, as the log rows of `checkpoint`
/// (after `step` steps).
fn evaluate_into(
    stack: &Stack,
    input: &StackInput<'_>,
    checkpoint: f64,
    step: u32,
    rows: &mut dyn FnMut(LogTable) -> Result<()>,
) -> Result<()> {
    let all: Vec<&[u32]> = input.documents.iter().map(Vec::as_slice).collect();
    let mut first = 0;
    for chunk in all.chunks(EVAL_CHUNK) {
        let evals = stack.evaluate(chunk, input.config.train.eval_batch_size as usize)?;
        let mut log = LogTable::default();
        for (&(model, in_docs), evals) in input.models.iter().zip(evals) {
            for (i, DocEval { tokens, nll, correct, min_k, min_k_pp }) in evals.into_iter().enumerate() {
                let doc = first + i;
                let in_train = in_docs.binary_search(&(doc as u32)).is_ok();
                let copies = if in_train { input.copies[doc] } else { 0 };
                let doc = doc as u32;
                log.push(LogRow {
                    checkpoint,
                    step,
                    model,
                    doc,
                    in_train,
                    tokens,
                    nll,
                    correct,
                    copies,
                    min_k,
                    min_k_pp,
                });
            }
        }
        rows(log)?;
        first += chunk.len();
    }
    Ok(())
}

/// Refuses, before any work, a stack of `models` whose estimated memory
/// ([`Architecture::memory_estimate`]) exceeds what `device` has free, saying the estimate,
/// the limit and the largest stack that would fit. Rows are as long as the `longest`
/// document but at most a window: a base of a long context costs no more on short records
/// than its rows need.
pub fn check_memory(
    architecture: &Architecture,
    models: usize,
    train: &TrainConfig,
    longest: usize,
    device: Device,
) -> Result<()> {
    let Some(free) = crate::device::free_memory(device) else { return Ok(()) };
    let time = longest.clamp(1, architecture.context as usize - 1);
    let lora = Lora::of(architecture, train)?;
    let (batch, eval_batch) = (train.batch_size as usize, train.eval_batch_size as usize);
    let adapters = lora.as_ref().map(Lora::parameters);
    let needed = |g: usize| architecture.memory_estimate(g, batch, eval_batch, time, adapters);
    if needed(models) <= free {
        return Ok(());
    }
    let gib = |bytes: u64| bytes as f64 / f64::from(1u32 << 30);
    let advice = match (1..models).rev().find(|&g| needed(g) <= free) {
        Some(fits) => format!("a stack of {fits} fits: plan with [jobs] stack = {fits}"),
        None => {
            "not even one model fits: lower train.batch_size and train.eval_batch_size, or use a larger device".into()
        }
    };
    let state = match &lora {
        Some(lora) => format!(
            "the base once, each model's {} adapter parameters with their gradients and AdamW state",
            lora.parameters()
        ),
        None => "weights, gradients, AdamW state".into(),
    };
    Err(Error::StackTooLarge {
        models,
        parameters: architecture.parameters() as u64,
        needed_gib: gib(needed(models)),
        state,
        batch: train.batch_size,
        time,
        free_gib: gib(free),
        device: crate::device::describe(device),
        advice,
    })
}

/// One document's evaluation by one model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DocEval {
    /// Predicted positions.
    pub tokens: u32,
    /// Summed negative log-likelihood, nats.
    pub nll: f64,
    /// Positions whose argmax is the target.
    pub correct: u32,
    /// Min-K%: the mean of the lowest [`MIN_K_FRACTION`] of the positions' target
    /// log-probabilities; None for a document without positions.
    pub min_k: Option<f64>,
    /// Min-K%++: the same mean of the target log-probabilities standardized by the mean and
    /// standard deviation of the log-probabilities under the model's predicted distribution
    /// at each position.
    pub min_k_pp: Option<f64>,
}

/// The mean of the lowest ⌈[`MIN_K_FRACTION`] · n⌉ (at least one) of `values`, None when
/// there are none.
fn mean_of_lowest(values: &mut [f32]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let k = ((MIN_K_FRACTION * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values.select_nth_unstable_by(k - 1, f32::total_cmp);
    Some(values[..k].iter().map(|&v| f64::from(v)).sum::<f64>() / k as f64)
}

/// Learning rate at `step` of `total`: linear warmup to `peak`, then cosine decay to 0.
pub fn learning_rate(step: usize, total: usize, warmup: usize, peak: f64) -> f64 {
    if step < warmup {
        peak * (step + 1) as f64 / warmup as f64
    } else {
        let decay_steps = (total - warmup).max(1) as f64;
        let progress = (step - warmup) as f64 / decay_steps;
        peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// Optimizer steps every model of the run takes: `epochs` passes over the design's nominal
/// training set, round(keep·M)/M of every non-held-out document's windows times copies,
/// plus every background window.
pub fn steps(input: &StackInput<'_>) -> Result<usize> {
    let config = input.config;
    let models = config.design.models;
    let in_count = design::in_count(models, config.design.keep)?;
    let span = config.model.window();
    let windows_of = |doc: &Vec<u32>| doc.len().div_ceil(span) as u64;
    let examples: u64 = (0..input.documents.len())
        .filter(|&doc| !input.holdout[doc])
        .map(|doc| u64::from(input.copies[doc]) * windows_of(&input.documents[doc]))
        .sum();
    let background: u64 = input.background.iter().map(windows_of).sum();
    let nominal = examples as f64 * f64::from(in_count) / f64::from(models) + background as f64;
    let passes = f64::from(config.train.epochs) * nominal / f64::from(config.train.batch_size);
    Ok((passes.ceil() as usize).max(1))
}

/// At most `context − 1` consecutive tokens `doc[start..end]` of a document, one batch row.
#[derive(Debug, Clone, Copy)]
struct Window<'a> {
    doc: &'a [u32],
    start: usize,
    end: usize,
}

impl Window<'_> {
    fn len(&self) -> usize {
        self.end - self.start
    }
}

/// The windows of `doc`, `span` tokens each but the last.
fn windows(doc: &[u32], span: usize) -> impl Iterator<Item = Window<'_>> {
    (0..doc.len()).step_by(span).map(move |start| Window { doc, start, end: (start + span).min(doc.len()) })
}

/// The two tokens a model reads besides the text's (either may be one of the text's tokens
/// too: a base's BOS is its end-of-text token).
#[derive(Debug, Clone, Copy)]
struct Specials {
    bos: i64,
    pad: i64,
}

impl Specials {
    fn of(architecture: &Architecture) -> Specials {
        Specials { bos: architecture.bos(), pad: architecture.pad() }
    }
}

/// Padded `[rows, longest]` inputs and targets of `windows`, on the host.
fn padded(windows: &[Window<'_>], longest: usize, specials: Specials) -> (Vec<i64>, Vec<i64>) {
    let mut inputs = Vec::with_capacity(windows.len() * longest);
    let mut targets = Vec::with_capacity(windows.len() * longest);
    for w in windows {
        inputs.push(if w.start == 0 { specials.bos } else { i64::from(w.doc[w.start - 1]) });
        inputs.extend(w.doc[w.start..w.end - 1].iter().map(|&t| i64::from(t)));
        targets.extend(w.doc[w.start..w.end].iter().map(|&t| i64::from(t)));
        let padding = longest - w.len();
        inputs.extend(std::iter::repeat_n(specials.pad, padding));
        targets.extend(std::iter::repeat_n(NO_TARGET, padding));
    }
    (inputs, targets)
}

/// Input and target token tensors `[rows, longest]` of `windows` on `device`.
fn token_table(windows: &[Window<'_>], specials: Specials, device: Device) -> (Tensor, Tensor) {
    let longest = windows.iter().map(Window::len).max().unwrap_or(0);
    let (inputs, targets) = padded(windows, longest, specials);
    let shape = [windows.len() as i64, longest as i64];
    (Tensor::from_slice(&inputs).view(shape).to(device), Tensor::from_slice(&targets).view(shape).to(device))
}

/// A model's training examples (rows of its documents' windows, repeated by copies) served
/// as an endless stream of reshuffled passes.
pub(crate) struct ExampleStream {
    examples: Vec<i64>,
    next: usize,
    rng: ChaCha8Rng,
}

impl ExampleStream {
    pub(crate) fn new(examples: Vec<i64>, rng: ChaCha8Rng) -> ExampleStream {
        ExampleStream { next: examples.len(), examples, rng }
    }

    /// Draws and drops `count` examples: the stream as it is after that many draws.
    pub(crate) fn skip(&mut self, count: usize) {
        for _ in 0..count {
            self.take();
        }
    }

    fn take(&mut self) -> i64 {
        if self.next == self.examples.len() {
            self.examples.shuffle(&mut self.rng);
            self.next = 0;
        }
        self.next += 1;
        self.examples[self.next - 1]
    }
}

/// G models with their AdamW moments: each model's weights `[G, P]`, or one frozen base
/// `[1, P]` shared by all and each model's adapters `[G, Q]`. AdamW, clipping and weight
/// decay act on the trained tensor only.
pub struct Stack {
    architecture: Architecture,
    /// `[G, P]`, trained; with adapters, `[1, P]`, the base, never updated.
    pub(crate) weights: Tensor,
    /// With LoRA: the adapters' layout and each model's adapters `[G, Q]`, trained.
    adapters: Option<(Lora, Tensor)>,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    decay_mask: Tensor,
    precision: Precision,
    steps_taken: i32,
}

impl Stack {
    /// The initial stack of `models`: each a copy of `base` (`[P]`, the base's weights in
    /// the parameter layout) or, from scratch, initialized from (run seed, model id); with
    /// LoRA (`train.adapter`), the base once and each model's adapters initialized from
    /// (run seed, model id).
    pub fn new(config: &RunConfig, models: &[u32], base: Option<&Tensor>, device: Device) -> Result<Stack> {
        let architecture = Architecture::new(&config.model, config.tokens.layout());
        if let Some(lora) = Lora::of(&architecture, &config.train)? {
            let base = base.ok_or_else(|| {
                subsets::Error::setting("train.adapter", "\"lora\" needs a base to adapt (train.init)")
            })?;
            let adapters: Vec<Tensor> = models
                .iter()
                .map(|&model| lora.initial_adapters(seeds::derive(config.seed, "lora-init", model.into())))
                .collect();
            return Stack::adapted(architecture, base, lora, &adapters, config.train.precision, device);
        }
        let rows: Vec<Tensor> = models
            .iter()
            .map(|&model| match base {
                Some(weights) => weights.shallow_clone(),
                None => architecture.initial_weights(seeds::derive(config.seed, "model-init", model.into())),
            })
            .collect();
        Stack::from_rows(architecture, &rows, config.train.precision, device)
    }

    /// A stack of one model per row of `rows` (each `[P]`), before its first step.
    pub fn from_rows(
        architecture: Architecture,
        rows: &[Tensor],
        precision: Precision,
        device: Device,
    ) -> Result<Stack> {
        check_precision(precision, device)?;
        let weights = Tensor::stack(rows, 0).to(device).set_requires_grad(true);
        Ok(Stack {
            exp_avg: weights.zeros_like(),
            exp_avg_sq: weights.zeros_like(),
            decay_mask: architecture.decay_mask(device),
            architecture,
            weights,
            adapters: None,
            precision,
            steps_taken: 0,
        })
    }

    /// A stack of one model per row of `adapters` (each `[Q]`) over `base` (`[P]`), which
    /// goes to the device once and is never trained.
    pub fn adapted(
        architecture: Architecture,
        base: &Tensor,
        lora: Lora,
        adapters: &[Tensor],
        precision: Precision,
        device: Device,
    ) -> Result<Stack> {
        check_precision(precision, device)?;
        let weights = base.to(device).unsqueeze(0);
        let adapters = Tensor::stack(adapters, 0).to(device).set_requires_grad(true);
        Ok(Stack {
            exp_avg: adapters.zeros_like(),
            exp_avg_sq: adapters.zeros_like(),
            // Adapters are matrices: AdamW decays all of them, as transformers' Trainer does.
            decay_mask: Tensor::ones([1, lora.parameters()], (Kind::Float, device)),
            architecture,
            weights,
            adapters: Some((lora, adapters)),
            precision,
            steps_taken: 0,
        })
    }

    /// The weights `[G, P]`, AdamW's two moments and the steps taken: everything a later
    /// step of a stack without adapters reads.
    pub(crate) fn state(&self) -> (&Tensor, &Tensor, &Tensor, i32) {
        (&self.weights, &self.exp_avg, &self.exp_avg_sq, self.steps_taken)
    }

    /// The stack without adapters whose [`Stack::state`] was `weights`, `exp_avg`,
    /// `exp_avg_sq` and `steps_taken`.
    pub(crate) fn restore(
        architecture: Architecture,
        [weights, exp_avg, exp_avg_sq]: [Tensor; 3],
        steps_taken: i32,
        precision: Precision,
        device: Device,
    ) -> Result<Stack> {
        let rows: Vec<Tensor> = (0..weights.size()[0]).map(|g| weights.get(g)).collect();
        let mut stack = Stack::from_rows(architecture, &rows, precision, device)?;
        stack.exp_avg = exp_avg.to(device);
        stack.exp_avg_sq = exp_avg_sq.to(device);
        stack.steps_taken = steps_taken;
        Ok(stack)
    }

    /// What the optimizer trains: the weights `[G, P]`, or the adapters `[G, Q]`.
    fn trained(&self) -> &Tensor {
        self.adapters.as_ref().map_or(&self.weights, |(_, adapters)| adapters)
    }

    /// The adapters' layout and each model's adapters `[G, Q]`, when the stack has them.
    pub fn adapters(&self) -> Option<(&Lora, &Tensor)> {
        self.adapters.as_ref().map(|(lora, adapters)| (lora, adapters))
    }

    /// Bytes of every tensor the stack holds on its device: weights, adapters, AdamW's
    /// moments and the decay mask.
    pub fn bytes(&self) -> i64 {
        let adapters = self.adapters.as_ref().map(|(_, a)| a);
        [Some(&self.weights), adapters, Some(&self.exp_avg), Some(&self.exp_avg_sq), Some(&self.decay_mask)]
            .into_iter()
            .flatten()
            .map(|t| t.numel() as i64 * t.kind().elt_size_in_bytes() as i64)
            .sum()
    }

    /// Next-token logits of every model for `inputs` `[G, batch, time]`.
    fn logits(&self, inputs: &Tensor) -> Tensor {
        let factors = self.adapters.as_ref().map(|(lora, adapters)| lora.factors(adapters));
        self.architecture.forward(&self.weights, factors.as_deref(), inputs, self.precision, Output::Logits)
    }

    pub fn models(&self) -> i64 {
        self.trained().size()[0]
    }

    pub fn architecture(&self) -> &Architecture {
        &self.architecture
    }

    /// Each model's mean loss `[G]` over the non-PAD targets of its own batch
    /// (`inputs`, `targets`: `[G, batch, time]`).
    fn losses(&self, inputs: &Tensor, targets: &Tensor) -> Tensor {
        let models = self.models();
        let logits = self.logits(inputs);
        let nll = logits
            .view([-1, self.architecture.outputs()])
            .cross_entropy_loss(&targets.view([-1]), None::<Tensor>, Reduction::None, NO_TARGET, 0.0)
            .view([models, -1]);
        let counts = targets.ne(NO_TARGET).view([models, -1]).sum_dim_intlist(1, false, Kind::Float);
        nll.sum_dim_intlist(1, false, Kind::Float) / counts
    }

    /// One training step on each model's batch at learning rate `lr`; returns the models'
    /// losses `[G]`, left on the device.
    pub fn step(&mut self, inputs: &Tensor, targets: &Tensor, lr: f64, train: &subsets::config::TrainConfig) -> Tensor {
        let losses = self.losses(inputs, targets);
        self.trained().shallow_clone().zero_grad();
        losses.sum(Kind::Float).backward();
        tch::no_grad(|| self.update(lr, train));
        losses.detach()
    }

    /// Per-model gradient clipping, then AdamW (torch's formulation, decoupled weight decay
    /// on matrices only), all on the device without reading anything back. Once the moments
    /// have read it, the gradient's own storage holds the denominator: every pass over the
    /// trained tensor works in place, with no temporary of its size (on the CPU a fresh one
    /// costs more than the arithmetic).
    fn update(&mut self, lr: f64, train: &subsets::config::TrainConfig) {
        let mut trained = self.trained().shallow_clone();
        let mut grad = trained.grad();
        if train.grad_clip > 0.0 {
            clip_per_model(&mut grad, train.grad_clip);
        }
        self.steps_taken += 1;
        let (b1, b2) = (train.beta1, train.beta2);
        let _ = self.exp_avg.lerp_(&grad, 1.0 - b1);
        let _ = grad.square_();
        let _ = self.exp_avg_sq.lerp_(&grad, 1.0 - b2);
        if train.weight_decay > 0.0 {
            let mut keep = &self.decay_mask * (-lr * train.weight_decay);
            let _ = trained.g_mul_(&keep.g_add_scalar_(1.0));
        }
        let correction1 = 1.0 - b1.powi(self.steps_taken);
        let correction2 = 1.0 - b2.powi(self.steps_taken);
        // w += m / d with d = (sqrt(v)/sqrt(c2) + eps)·(−c1/lr): w − (lr/c1)·m/(sqrt(v)/sqrt(c2) + eps).
        let scale = -correction1 / lr;
        let mut denominator = self.exp_avg_sq.sqrt_out(&grad);
        let _ = denominator.g_mul_scalar_(scale / correction2.sqrt());
        let _ = denominator.g_add_scalar_(1e-8 * scale);
        let _ = trained.addcdiv_(&self.exp_avg, &denominator);
    }

    /// Teacher-forced evaluation of `docs` by every model, `batch_size` windows a forward:
    /// per model, one [`DocEval`] per document in the order given, summed over the
    /// document's windows. Windows are batched by length to cut padding; the sums stay on
    /// the device until every batch is done. The per-token statistics of Min-K% and
    /// Min-K%++ (each position's target log-probability, and its standardized value) come
    /// from the same forward pass, two floats per position moved to the host per batch,
    /// and are reduced per document there: a document's lowest tokens may lie in any of
    /// its windows.
    pub fn evaluate(&self, docs: &[&[u32]], batch_size: usize) -> Result<Vec<Vec<DocEval>>> {
        let _no_grad = tch::no_grad_guard();
        let models = self.models();
        let (windows, sorted, inputs, targets) = self.window_table(docs);
        let mut nll_parts = Vec::new();
        let mut correct_parts = Vec::new();
        // Per batch, [models, rows, time, 2] on the host: target log-probability, standardized.
        let mut token_parts: Vec<(Vec<f32>, usize)> = Vec::new();
        for (b, batch) in sorted.chunks(batch_size).enumerate() {
            let (start, rows, time) = ((b * batch_size) as i64, batch.len() as i64, batch[0].len() as i64);
            let take = |t: &Tensor| {
                t.narrow(0, start, rows).narrow(1, 0, time).unsqueeze(0).expand([models, rows, time], false)
            };
            let (inputs, targets) = (take(&inputs), take(&targets));
            let log_probs = self.logits(&inputs.contiguous()).log_softmax(-1, Kind::Float);
            let mask = targets.ne(NO_TARGET);
            let target_log_probs = log_probs.gather(3, &targets.clamp_min(0).unsqueeze(-1), false).squeeze_dim(-1);
            nll_parts.push(-(target_log_probs.to_kind(Kind::Double) * mask.to_kind(Kind::Double)).sum_dim_intlist(
                2,
                false,
                Kind::Double,
            ));
            let hits = log_probs.argmax(-1, false).eq_tensor(&targets).logical_and(&mask);
            correct_parts.push(hits.sum_dim_intlist(2, false, Kind::Int64));
            token_parts
                .push((Vec::<f32>::try_from(per_token_statistics(&log_probs, &target_log_probs))?, time as usize));
        }
        let nll = Tensor::cat(&nll_parts, 1).to_device(Device::Cpu);
        let correct = Tensor::cat(&correct_parts, 1).to_device(Device::Cpu);
        (0..models)
            .map(|g| {
                let nll = Vec::<f64>::try_from(nll.get(g))?;
                let correct = Vec::<i64>::try_from(correct.get(g))?;
                let mut evals: Vec<DocEval> = docs
                    .iter()
                    .map(|doc| DocEval { tokens: doc.len() as u32, nll: 0.0, correct: 0, min_k: None, min_k_pp: None })
                    .collect();
                // Each document's positions' statistics, gathered from its windows.
                let mut log_probs: Vec<Vec<f32>> = docs.iter().map(|doc| Vec::with_capacity(doc.len())).collect();
                let mut standardized = log_probs.clone();
                for (position, &(doc, window)) in windows.iter().enumerate() {
                    evals[doc].nll += nll[position];
                    evals[doc].correct += correct[position] as u32;
                    let (batch, row) = (position / batch_size, position % batch_size);
                    let (values, time) = &token_parts[batch];
                    let rows = values.len() / (2 * time * models as usize);
                    let start = ((g as usize * rows + row) * time) * 2;
                    for pair in values[start..start + 2 * window.len()].chunks_exact(2) {
                        log_probs[doc].push(pair[0]);
                        standardized[doc].push(pair[1]);
                    }
                }
                for (eval, (log_probs, standardized)) in
                    evals.iter_mut().zip(log_probs.iter_mut().zip(&mut standardized))
                {
                    eval.min_k = mean_of_lowest(log_probs);
                    eval.min_k_pp = mean_of_lowest(standardized);
                }
                Ok(evals)
            })
            .collect()
    }

    /// Every window of `docs` with its document, longest first (batches of similar length
    /// cut padding), the windows alone in that order, and their input and target tokens
    /// `[windows, time]` on the stack's device.
    #[allow(clippy::type_complexity)]
    fn window_table<'a>(&self, docs: &[&'a [u32]]) -> (Vec<(usize, Window<'a>)>, Vec<Window<'a>>, Tensor, Tensor) {
        let span = self.architecture.context as usize - 1;
        let mut windows: Vec<(usize, Window<'a>)> =
            docs.iter().enumerate().flat_map(|(d, doc)| windows(doc, span).map(move |w| (d, w))).collect();
        windows.sort_by_key(|(_, w)| std::cmp::Reverse(w.len()));
        let sorted: Vec<Window<'a>> = windows.iter().map(|&(_, w)| w).collect();
        let (inputs, targets) = token_table(&sorted, Specials::of(&self.architecture), self.weights.device());
        (windows, sorted, inputs, targets)
    }

    /// Each document's mean final-layer hidden state over its positions (each predicting
    /// one of its tokens), under the stack's model (a stack of one: a base): one `d_model`
    /// vector per document, in the order given, zeros for an empty one. Windows are cut
    /// and batched as [`Stack::evaluate`] cuts them.
    pub fn mean_hidden_states(&self, docs: &[&[u32]], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        let _no_grad = tch::no_grad_guard();
        let (windows, sorted, inputs, targets) = self.window_table(docs);
        let width = self.architecture.d_model as usize;
        let (mut sums, mut counts) = (vec![vec![0f64; width]; docs.len()], vec![0f64; docs.len()]);
        let factors = self.adapters.as_ref().map(|(lora, adapters)| lora.factors(adapters));
        for (b, batch) in sorted.chunks(batch_size).enumerate() {
            let (start, rows, time) = ((b * batch_size) as i64, batch.len() as i64, batch[0].len() as i64);
            let take = |t: &Tensor| t.narrow(0, start, rows).narrow(1, 0, time).unsqueeze(0);
            let hidden = self.architecture.forward(
                &self.weights,
                factors.as_deref(),
                &take(&inputs).contiguous(),
                self.precision,
                Output::Hidden,
            );
            let mask = take(&targets).ne(NO_TARGET).to_kind(Kind::Float).unsqueeze(-1);
            let summed = Vec::<f32>::try_from((hidden * &mask).sum_dim_intlist(2, false, Kind::Float).flatten(0, -1))?;
            let counted = Vec::<f32>::try_from(mask.sum_dim_intlist(2, false, Kind::Float).flatten(0, -1))?;
            for row in 0..rows as usize {
                let (doc, _) = windows[b * batch_size + row];
                for (sum, &value) in sums[doc].iter_mut().zip(&summed[row * width..(row + 1) * width]) {
                    *sum += f64::from(value);
                }
                counts[doc] += f64::from(counted[row]);
            }
        }
        Ok(sums
            .into_iter()
            .zip(counts)
            .map(|(sum, count)| sum.into_iter().map(|v| if count > 0.0 { (v / count) as f32 } else { 0.0 }).collect())
            .collect())
    }
}

/// Per position of `log_probs` (`[models, rows, time, vocabulary]`), the target's
/// log-probability and its Min-K%++ standardization (log p − μ) / σ, with μ and σ² the mean
/// and variance of log p under the predicted distribution p; σ is floored at 1e-6 so that a
/// certain prediction stays finite. `[models, rows, time, 2]` flattened, on the host, as f32.
fn per_token_statistics(log_probs: &Tensor, target_log_probs: &Tensor) -> Tensor {
    // The moments need two temporaries of the logits' size: taken a few rows at a time, so
    // that they stay under 64 Mi values whatever the vocabulary and batch.
    let [_, rows, _, _] = log_probs.size()[..] else { unreachable!("log-probabilities are 4-D") };
    let per_row = log_probs.numel() as i64 / rows.max(1);
    let step = ((1i64 << 25) / per_row.max(1)).clamp(1, rows.max(1));
    let (mut means, mut variances) = (Vec::new(), Vec::new());
    for start in (0..rows).step_by(step as usize) {
        let part = log_probs.narrow(1, start, step.min(rows - start));
        let p = part.exp();
        let mean = (&p * &part).sum_dim_intlist(-1, true, Kind::Float);
        // The variance about the mean, not E[(log p)²] − μ²: near a uniform prediction the
        // two terms are large and nearly equal, and their f32 difference is mostly rounding,
        // which the division by σ then magnifies.
        let mut centered = &part - &mean;
        let _ = centered.square_();
        let _ = centered.g_mul_(&p);
        variances.push(centered.sum_dim_intlist(-1, false, Kind::Float));
        means.push(mean.squeeze_dim(-1));
    }
    let (mean, variance) = (Tensor::cat(&means, 1), Tensor::cat(&variances, 1));
    let sd = variance.sqrt().clamp_min(1e-6);
    let standardized = (target_log_probs - mean) / sd;
    Tensor::stack(&[target_log_probs.to_kind(Kind::Float), standardized], -1).to_device(Device::Cpu).flatten(0, -1)
}

/// bf16 needs a CUDA device.
fn check_precision(precision: Precision, device: Device) -> Result<()> {
    if precision == Precision::Bf16 && !device.is_cuda() {
        return Err(subsets::Error::setting(
            "train.precision",
            "\"bf16\" needs a CUDA device; set it to \"fp32\" to train on the CPU",
        )
        .into());
    }
    Ok(())
}

/// Scales each model's row of `grad` `[G, P]` so that its L2 norm is at most `max_norm`, as
/// torch's clip_grad_norm_ does for one model (coefficient max/(norm + 1e-6), capped at 1).
fn clip_per_model(grad: &mut Tensor, max_norm: f64) {
    let norms = grad.norm_scalaropt_dim(2.0, [1], true);
    let coefficients = ((norms + 1e-6).reciprocal() * max_norm).clamp_max(1.0);
    let _ = grad.g_mul_(&coefficients);
}

/// Trains the stack of `input.models` to the end; `progress` hears every step.
pub fn train(input: &StackInput<'_>, device: Device, progress: &dyn Progress) -> Result<Stack> {
    let mut training = Training::new(input, device, progress)?;
    training.run(0..training.total, progress);
    Ok(training.stack)
}

/// A stack's training in progress: the stack, its token table, each model's example stream
/// and the schedule of `total` steps.
struct Training<'a> {
    stack: Stack,
    table: TrainingTable,
    streams: Vec<ExampleStream>,
    schedule: Schedule<'a>,
    total: usize,
}

impl<'a> Training<'a> {
    /// The stack of `input.models` before its first step.
    fn new(input: &StackInput<'a>, device: Device, progress: &dyn Progress) -> Result<Training<'a>> {
        let config = input.config;
        let models: Vec<u32> = input.models.iter().map(|&(model, _)| model).collect();
        let stack = Stack::new(config, &models, input.base, device)?;
        let total = steps(input)?;
        progress.stack_started(&models, total);

        // The stack's token table holds the background's windows, then those of every
        // document some model of it trains on; `first_row[doc]` is the row of a document's
        // first window.
        let mut table_docs: Vec<u32> = input.models.iter().flat_map(|&(_, docs)| docs.iter().copied()).collect();
        table_docs.sort_unstable();
        table_docs.dedup();
        let span = config.model.window();
        let mut table_windows: Vec<Window<'_>> = input.background.iter().flat_map(|doc| windows(doc, span)).collect();
        let background_rows = table_windows.len() as i64;
        let mut first_row = std::collections::HashMap::with_capacity(table_docs.len());
        for &doc in &table_docs {
            let count = input.documents[doc as usize].len().div_ceil(span) as i64;
            first_row.insert(doc, (table_windows.len() as i64, count));
            table_windows.extend(windows(&input.documents[doc as usize], span));
        }
        let table = TrainingTable::new(&table_windows, Specials::of(stack.architecture()), device);
        let mut streams = Vec::with_capacity(models.len());
        for &(model, docs) in input.models {
            let mut examples: Vec<i64> = (0..background_rows).collect();
            for &doc in docs {
                let (first, count) = first_row[&doc];
                for _ in 0..input.copies[doc as usize] {
                    examples.extend(first..first + count);
                }
            }
            if examples.is_empty() {
                return Err(Error::NoTrainingDocument { model });
            }
            streams.push(ExampleStream::new(examples, seeds::rng(config.seed, "model-data", model.into())));
        }
        Ok(Training { stack, table, streams, schedule: Schedule::new(&config.train, total), total })
    }

    /// Takes `steps` (of `0..total`, in order): in several calls, exactly what one call
    /// would compute.
    fn run(&mut self, steps: std::ops::Range<usize>, progress: &dyn Progress) {
        self.schedule.run(&mut self.stack, &self.table, &mut self.streams, steps, progress);
    }
}

/// The windows a stack trains on as device tensors: inputs and targets `[rows, longest]`,
/// and each row's length, which bounds a batch's time dimension.
pub(crate) struct TrainingTable {
    inputs: Tensor,
    targets: Tensor,
    lengths: Vec<usize>,
}

impl TrainingTable {
    fn new(windows: &[Window<'_>], specials: Specials, device: Device) -> TrainingTable {
        let (inputs, targets) = token_table(windows, specials, device);
        TrainingTable { inputs, targets, lengths: windows.iter().map(Window::len).collect() }
    }

    /// The table of every window of `documents` (each `span` tokens but a document's last).
    pub(crate) fn of_documents(
        documents: &[&[u32]],
        span: usize,
        architecture: &Architecture,
        device: Device,
    ) -> TrainingTable {
        let all: Vec<Window<'_>> = documents.iter().flat_map(|doc| windows(doc, span)).collect();
        TrainingTable::new(&all, Specials::of(architecture), device)
    }

    /// Rows of the table.
    pub(crate) fn rows(&self) -> usize {
        self.lengths.len()
    }
}

/// The optimizer steps of a training: how many, the learning rate of each, and how each
/// step's batches are drawn.
pub(crate) struct Schedule<'a> {
    train: &'a TrainConfig,
    total: usize,
    warmup: usize,
}

impl<'a> Schedule<'a> {
    pub(crate) fn new(train: &'a TrainConfig, total: usize) -> Schedule<'a> {
        Schedule { train, total, warmup: (train.warmup_fraction * total as f64).round() as usize }
    }

    /// Takes `steps` (of `0..total`, in order) on `stack`, model g drawing each batch from
    /// `streams[g]`. Taking steps in several calls computes exactly what one call would.
    pub(crate) fn run(
        &self,
        stack: &mut Stack,
        table: &TrainingTable,
        streams: &mut [ExampleStream],
        steps: std::ops::Range<usize>,
        progress: &dyn Progress,
    ) {
        let batch = self.train.batch_size as usize;
        let g = streams.len() as i64;
        let device = table.inputs.device();
        let mut step = steps.start;
        while step < steps.end {
            let chunk = STEPS_PER_UPLOAD.min(steps.end - step);
            let mut indices = Vec::with_capacity(chunk * streams.len() * batch);
            let mut longest = Vec::with_capacity(chunk);
            for _ in 0..chunk {
                let mut step_longest = 0;
                for stream in streams.iter_mut() {
                    for _ in 0..batch {
                        let row = stream.take();
                        step_longest = step_longest.max(table.lengths[row as usize]);
                        indices.push(row);
                    }
                }
                longest.push(step_longest as i64);
            }
            let indices = Tensor::from_slice(&indices).view([chunk as i64, -1]).to(device);
            for (i, &time) in longest.iter().enumerate() {
                let rows = indices.get(i as i64);
                let gather = |t: &Tensor| t.narrow(1, 0, time).index_select(0, &rows).view([g, batch as i64, time]);
                let lr = learning_rate(step, self.total, self.warmup, self.train.lr);
                let losses = stack.step(&gather(&table.inputs), &gather(&table.targets), lr, self.train);
                step += 1;
                // Reading the loss waits for the device: now and then only.
                let report = step.is_multiple_of(LOSS_EVERY) || step == self.total;
                progress.training_step(step, report.then(|| losses.mean(Kind::Float).double_value(&[])));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use queue::Silent;
    use subsets::config::{Activation, CorpusConfig, DesignConfig, Hyperparameters, ModelConfig, TokensConfig};
    use subsets::family::Family;
    use subsets::schema::Table;

    fn tiny_config(epochs: u32) -> RunConfig {
        tiny_config_of(Family::Gpt2, epochs)
    }

    /// A tiny model of `family`: one block of width 32, two heads (one key/value head in
    /// llama, half of each head rotating in gpt_neox).
    fn tiny_config_of(family: Family, epochs: u32) -> RunConfig {
        let model = ModelConfig {
            architecture: family,
            n_layer: 1,
            n_head: 2,
            d_model: 32,
            context: 32,
            n_kv_head: (family == Family::Llama).then_some(1),
            rotary_pct: (family == Family::GptNeox).then_some(0.5),
            activation: if matches!(family, Family::Llama | Family::Qwen2) {
                Activation::Silu
            } else {
                Activation::Gelu
            },
            ..Default::default()
        };
        let mut h = Hyperparameters { model, ..Default::default() };
        h.train.epochs = epochs;
        h.train.batch_size = 4;
        h.train.lr = 1e-2;
        RunConfig {
            seed: 11,
            corpus: CorpusConfig { path: String::new(), sha256: String::new(), documents: 0 },
            design: DesignConfig::documents(2, 0.5),
            model: h.model,
            train: h.train,
            jobs: h.jobs,
            tokens: TokensConfig { vocab: 256, bos: None, tokenizer_sha256: None, corpus: 0, capped: 0, background: 0 },
            background: None,
            base: None,
        }
    }

    const BYTES: Specials = Specials { bos: 256, pad: 257 };

    fn tokens(text: &[u8]) -> Vec<u32> {
        text.iter().map(|&b| u32::from(b)).collect()
    }

    /// A stack input of `models` over `documents`, nothing held out, one copy each.
    fn input<'a>(
        config: &'a RunConfig,
        documents: &'a [Vec<u32>],
        models: &'a [(u32, &'a [u32])],
        flags: &'a (Vec<u16>, Vec<bool>),
    ) -> StackInput<'a> {
        StackInput { config, documents, copies: &flags.0, holdout: &flags.1, background: &[], models, base: None }
    }

    fn one_copy_none_held(documents: usize) -> (Vec<u16>, Vec<bool>) {
        (vec![1; documents], vec![false; documents])
    }

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert!((learning_rate(0, 100, 10, 1.0) - 0.1).abs() < 1e-12);
        assert!((learning_rate(9, 100, 10, 1.0) - 1.0).abs() < 1e-12);
        assert!((learning_rate(10, 100, 10, 1.0) - 1.0).abs() < 1e-12);
        assert!((learning_rate(55, 100, 10, 1.0) - 0.5).abs() < 1e-12);
        assert!(learning_rate(99, 100, 10, 1.0) < 0.001);
        assert!((learning_rate(0, 5, 0, 2.0) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn every_model_of_a_stack_from_a_base_starts_at_the_base() {
        let config = tiny_config(1);
        let base = Architecture::new(&config.model, config.tokens.layout()).initial_weights(99);
        let stack = Stack::new(&config, &[0, 1, 2], Some(&base), Device::Cpu).unwrap();
        for g in 0..3 {
            assert_eq!(stack.weights.get(g).detach(), base, "model {g}");
        }
        let scratch = Stack::new(&config, &[0, 1], None, Device::Cpu).unwrap();
        assert_ne!(scratch.weights.get(0).detach(), base);
    }

    #[test]
    fn padding_shifts_targets_and_pads_the_end() {
        let (abc, d) = (tokens(b"abc"), tokens(b"d"));
        let (inputs, targets) =
            padded(&[Window { doc: &abc, start: 0, end: 3 }, Window { doc: &d, start: 0, end: 1 }], 3, BYTES);
        assert_eq!(inputs, [256, 97, 98, 256, 257, 257]);
        assert_eq!(targets, [97, 98, 99, 100, NO_TARGET, NO_TARGET]);
    }

    #[test]
    fn steps_follow_the_nominal_set_size() {
        let config = tiny_config(3);
        // 10 documents, one held out, one with 3 copies: 11 examples, half of them IN.
        let mut copies = vec![1; 10];
        copies[2] = 3;
        let mut holdout = vec![false; 10];
        holdout[9] = true;
        let mut documents = vec![tokens(b"short"); 10];
        let steps_of = |documents: &[Vec<u32>], background: &[Vec<u32>]| {
            let flags = (copies.clone(), holdout.clone());
            steps(&StackInput { background, ..input(&config, documents, &[], &flags) }).unwrap()
        };
        assert_eq!(steps_of(&documents, &[]), (3.0f64 * 5.5 / 4.0).ceil() as usize);
        // A document of two windows (context 32: 31 tokens a window) counts twice.
        documents[0] = vec![120; 40];
        assert_eq!(steps_of(&documents, &[]), (3.0f64 * 6.0 / 4.0).ceil() as usize);
        // Every model trains on the whole background: 2 + 1 windows more.
        let background = [vec![1; 62], vec![2; 5]];
        assert_eq!(steps_of(&documents, &background), (3.0f64 * 9.0 / 4.0).ceil() as usize);
    }

    #[test]
    fn training_memorizes_and_is_reproducible_on_cpu() {
        // Nominal set: half of the two trainable documents, so 240 epochs are 60 steps.
        let config = tiny_config(240);
        let documents: Vec<Vec<u32>> =
            [&b"7f3a9c01 e2b4d6f8"[..], b"hello world", b"0c5e1a9b 44d2f7e3"].iter().map(|d| tokens(d)).collect();
        let seen: &[u32] = &[0, 1];
        let flags = (vec![1; 3], vec![false, false, true]);
        let models = [(0, seen)];
        let input = input(&config, &documents, &models, &flags);
        let docs: Vec<&[u32]> = documents.iter().map(Vec::as_slice).collect();
        let first = train(&input, Device::Cpu, &Silent).unwrap();
        let evals = first.evaluate(&docs, 2).unwrap().remove(0);
        assert_eq!(evals[0].tokens, 17);
        assert!(evals[0].nll / 17.0 < 0.5, "trained document still hard: {:?}", evals[0]);
        assert!(evals[2].nll > 3.0 * evals[0].nll, "{evals:?}");
        let again = train(&input, Device::Cpu, &Silent).unwrap();
        assert_eq!(again.evaluate(&docs, 2).unwrap()[0], evals, "same seed, same numbers");
        for (alone, batched) in again.evaluate(&docs, 1).unwrap()[0].iter().zip(&evals) {
            assert_eq!(alone.correct, batched.correct, "padding changes nothing");
            assert!((alone.nll - batched.nll).abs() < 1e-4);
        }
        let other_models = [(1, seen)];
        let other = StackInput { models: &other_models, ..input };
        assert_ne!(
            train(&other, Device::Cpu, &Silent).unwrap().evaluate(&docs, 2).unwrap()[0],
            evals,
            "another model id, another init"
        );
    }

    /// The devices to check on: the CPU, and CUDA device 0 when there is one.
    fn devices() -> Vec<Device> {
        let mut devices = vec![Device::Cpu];
        if let Ok(cuda @ Device::Cuda(_)) = crate::DeviceChoice::Auto.resolve() {
            devices.push(cuda);
        }
        devices
    }

    /// bf16 on CUDA (products, attention and activations in bf16; weights, AdamW and the
    /// log-softmax in fp32) within its stated tolerance of fp32, in every family: the same
    /// trained weights evaluate to each document's mean loss per token within 3% + 0.02 nats,
    /// and a stack trained in bf16 reaches a mean loss per token within 10% + 0.05 nats of
    /// the fp32 stack's. (Set before any GPU run: `scripts/gpu-check.sh` reports the gaps.)
    #[test]
    #[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
    fn bf16_on_cuda_stays_within_its_tolerance_of_fp32() {
        let Ok(device @ Device::Cuda(_)) = crate::DeviceChoice::Cuda(0).resolve() else {
            panic!("no CUDA device: this test checks bf16, which runs on CUDA only")
        };
        let (documents, in_docs) = corpus();
        let flags = one_copy_none_held(documents.len());
        let models: Vec<(u32, &[u32])> = in_docs.iter().enumerate().map(|(m, d)| (m as u32, d.as_slice())).collect();
        let docs: Vec<&[u32]> = documents.iter().map(Vec::as_slice).collect();
        let per_token = |evals: &[Vec<DocEval>]| -> f64 {
            let (nll, tokens) = evals.iter().flatten().fold((0.0, 0u32), |(n, t), e| (n + e.nll, t + e.tokens));
            nll / f64::from(tokens)
        };
        for family in Family::ALL {
            let fp32_config = tiny_config_of(family, 40);
            let mut stack = train(&input(&fp32_config, &documents, &models, &flags), device, &Silent).unwrap();
            let fp32 = stack.evaluate(&docs, 4).unwrap();
            stack.precision = Precision::Bf16;
            let same_weights = stack.evaluate(&docs, 4).unwrap();
            let mut largest = 0f64;
            for (a, b) in fp32.iter().flatten().zip(same_weights.iter().flatten()) {
                let (a, b) = (a.nll / f64::from(a.tokens), b.nll / f64::from(b.tokens));
                largest = largest.max((a - b).abs());
                assert!((a - b).abs() <= 0.03 * a + 0.02, "{family}: {b} nats per token in bf16, {a} in fp32");
            }
            let mut bf16_config = tiny_config_of(family, 40);
            bf16_config.train.precision = Precision::Bf16;
            let trained = train(&input(&bf16_config, &documents, &models, &flags), device, &Silent).unwrap();
            let (ours, reference) = (per_token(&trained.evaluate(&docs, 4).unwrap()), per_token(&fp32));
            eprintln!(
                "{family}: bf16 evaluation of fp32 weights within {largest:.4} nats per token of fp32; trained in \
                 bf16 {ours:.4} against {reference:.4}"
            );
            assert!(
                (ours - reference).abs() <= 0.1 * reference + 0.05,
                "{family}: {ours} trained in bf16, {reference}"
            );
        }
    }

    /// Documents 0..12 of a made-up corpus and, per model, the documents it trains on.
    fn corpus() -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
        let documents = (0..12)
            .map(|i| tokens(format!("doc {i}: {} {}", "ab".repeat(i % 5 + 1), 7919 * (i + 3)).as_bytes()))
            .collect();
        let in_docs = (0..4u32).map(|m| (0..12).filter(|d| (d + m) % 2 == 0 || d % 5 == m).collect()).collect();
        (documents, in_docs)
    }

    /// Every (model, document) row of a stack's log, keyed by model.
    fn rows_by_model(input: &StackInput<'_>, device: Device) -> std::collections::BTreeMap<u32, Vec<(f64, u32)>> {
        let mut by_model = std::collections::BTreeMap::<u32, Vec<(f64, u32)>>::new();
        train_and_evaluate(input, device, &Silent, &mut |log| {
            for i in 0..log.model.len() {
                by_model.entry(log.model[i]).or_default().push((log.nll[i], log.correct[i]));
            }
            Ok(())
        })
        .unwrap();
        by_model
    }

    /// Asserts per-document nll within 1e-4 relative and correct counts equal on at least
    /// 99.9% of (model, document) pairs.
    fn assert_same_models(
        a: &std::collections::BTreeMap<u32, Vec<(f64, u32)>>,
        b: &std::collections::BTreeMap<u32, Vec<(f64, u32)>>,
    ) {
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        let (mut pairs, mut same_correct) = (0, 0);
        for (model, rows) in a {
            for (doc, (&(nll_a, correct_a), &(nll_b, correct_b))) in rows.iter().zip(&b[model]).enumerate() {
                assert!(
                    (nll_a - nll_b).abs() <= 1e-4 * nll_a.abs().max(nll_b.abs()),
                    "model {model} doc {doc}: {nll_a} vs {nll_b}"
                );
                pairs += 1;
                same_correct += usize::from(correct_a == correct_b);
            }
        }
        assert!(same_correct as f64 >= 0.999 * pairs as f64, "{same_correct} of {pairs} correct counts agree");
    }

    #[test]
    fn evaluating_at_checkpoints_changes_nothing_in_the_training() {
        let mut config = tiny_config(8);
        let (documents, in_docs) = corpus();
        let flags = one_copy_none_held(documents.len());
        let models: Vec<(u32, &[u32])> =
            in_docs.iter().take(2).enumerate().map(|(m, d)| (m as u32, d.as_slice())).collect();
        let logs = |config: &RunConfig| {
            let mut log = LogTable::default();
            train_and_evaluate(&input(config, &documents, &models, &flags), Device::Cpu, &Silent, &mut |part| {
                log.append(part);
                Ok(())
            })
            .unwrap();
            log
        };
        let end_only = logs(&config);
        config.train.eval_at = vec![0.25, 0.5, 1.0];
        let total = steps(&input(&config, &documents, &models, &flags)).unwrap();
        let every = logs(&config);
        let rows = 2 * documents.len();
        assert_eq!(every.len(), 3 * rows);
        assert_eq!(end_only.checkpoint, vec![1.0; rows]);
        assert_eq!(end_only.step, vec![total as u32; rows]);
        let at = |c: usize| -> Vec<usize> { (c * rows..(c + 1) * rows).collect() };
        for (c, (&checkpoint, step)) in [0.25, 0.5, 1.0].iter().zip(config.train.checkpoint_steps(total)).enumerate() {
            assert!(at(c).iter().all(|&i| every.checkpoint[i] == checkpoint && every.step[i] == step as u32));
        }
        let final_rows = |log: &LogTable, rows: Vec<usize>| -> Vec<(u32, u32, bool, u32, f64, u32)> {
            rows.into_iter()
                .map(|i| (log.model[i], log.doc[i], log.in_train[i], log.tokens[i], log.nll[i], log.correct[i]))
                .collect()
        };
        assert_eq!(final_rows(&every, at(2)), final_rows(&end_only, (0..rows).collect()), "value for value");
        let total_nll = |c: usize| at(c).iter().map(|&i| every.nll[i]).sum::<f64>();
        assert!(total_nll(0) > total_nll(1) && total_nll(1) > total_nll(2), "training goes on between checkpoints");
    }

    #[test]
    fn a_stack_of_four_is_four_models_trained_alone_in_every_family() {
        let (documents, in_docs) = corpus();
        let flags = one_copy_none_held(documents.len());
        let models: Vec<(u32, &[u32])> = in_docs.iter().enumerate().map(|(m, d)| (m as u32, d.as_slice())).collect();
        for (family, device) in Family::ALL.into_iter().flat_map(|f| devices().into_iter().map(move |d| (f, d))) {
            let config = tiny_config_of(family, 8);
            let input = input(&config, &documents, &models, &flags);
            let together = rows_by_model(&input, device);
            let mut alone = std::collections::BTreeMap::new();
            for model in &models {
                alone.extend(rows_by_model(&StackInput { models: std::slice::from_ref(model), ..input }, device));
            }
            assert_same_models(&together, &alone);
        }
    }

    #[test]
    fn models_are_independent_of_their_place_in_the_stack() {
        let config = tiny_config(8);
        let (documents, in_docs) = corpus();
        let flags = one_copy_none_held(documents.len());
        let forward: Vec<(u32, &[u32])> = vec![(0, &in_docs[0]), (1, &in_docs[0])];
        let backward: Vec<(u32, &[u32])> = forward.iter().rev().copied().collect();
        for device in devices() {
            let input = input(&config, &documents, &forward, &flags);
            let stack = train(&input, device, &Silent).unwrap();
            let weights = stack.weights.detach().to_device(Device::Cpu);
            assert!(!weights.get(0).allclose(&weights.get(1), 1e-3, 1e-3, false), "different seeds, different weights");
            assert_same_models(
                &rows_by_model(&input, device),
                &rows_by_model(&StackInput { models: &backward, ..input }, device),
            );
        }
    }

    #[test]
    fn clipping_scales_only_the_model_whose_gradient_is_too_large() {
        let mut grad = Tensor::from_slice(&[0.3f32, 0.4, 300.0, 400.0, 0.0, 0.1]).view([3, 2]);
        clip_per_model(&mut grad, 1.0);
        let clipped = Vec::<f32>::try_from(grad.view([-1])).unwrap();
        assert_eq!(&clipped[..2], &[0.3, 0.4], "a norm of 0.5 stays");
        assert!(
            (clipped[2] - 0.6).abs() < 1e-6 && (clipped[3] - 0.8).abs() < 1e-6,
            "a norm of 500 becomes 1: {clipped:?}"
        );
        assert_eq!(&clipped[4..], &[0.0, 0.1]);
    }

    #[test]
    fn a_long_document_is_every_token_once_in_windows() {
        let doc: Vec<u32> = (0..70).map(|i| 97 + i % 26).collect();
        let cut: Vec<(usize, usize)> = windows(&doc, 31).map(|w| (w.start, w.end)).collect();
        assert_eq!(cut, [(0, 31), (31, 62), (62, 70)]);
        let (inputs, targets) = padded(&windows(&doc, 31).collect::<Vec<_>>(), 31, BYTES);
        assert_eq!(inputs[31], i64::from(doc[30]), "a later window reads the token before it");
        assert_eq!(&targets[62..70], doc[62..70].iter().map(|&t| i64::from(t)).collect::<Vec<_>>().as_slice());

        // The document's evaluation is the sum of its windows', each computed by hand, for
        // both models of a stack; windows two a batch, so that a document spans batches.
        let config = tiny_config(1);
        let documents = vec![doc.clone()];
        let flags = one_copy_none_held(1);
        let models: [(u32, &[u32]); 2] = [(0, &[0]), (1, &[0])];
        let stack = train(&input(&config, &documents, &models, &flags), Device::Cpu, &Silent).unwrap();
        let evals = stack.evaluate(&[&doc], 2).unwrap();
        for (g, evals) in evals.iter().enumerate() {
            let eval = evals[0];
            assert_eq!(eval.tokens, 70);
            let (mut nll, mut correct) = (0.0, 0);
            let (mut log_probs, mut standardized) = (Vec::new(), Vec::new());
            for w in windows(&doc, 31) {
                let (inputs, targets) = padded(&[w], w.len(), BYTES);
                let inputs = Tensor::from_slice(&inputs).view([1, 1, -1]).expand([2, 1, -1], false).contiguous();
                let all = stack
                    .architecture
                    .forward(&stack.weights, None, &inputs, Precision::Fp32, Output::Logits)
                    .log_softmax(-1, Kind::Double);
                for (t, &target) in targets.iter().enumerate() {
                    let row = all.get(g as i64).get(0).get(t as i64);
                    let target_log_prob = row.double_value(&[target]);
                    nll -= target_log_prob;
                    correct += u32::from(row.argmax(0, false).int64_value(&[]) == target);
                    // Min-K%++: the target against the mean and deviation of log p under p.
                    let values = Vec::<f64>::try_from(&row).unwrap();
                    let mean: f64 = values.iter().map(|lp| lp.exp() * lp).sum();
                    let variance: f64 = values.iter().map(|lp| lp.exp() * (lp - mean).powi(2)).sum();
                    log_probs.push(target_log_prob);
                    standardized.push((target_log_prob - mean) / variance.sqrt());
                }
            }
            assert!((eval.nll - nll).abs() < 1e-3, "model {g}: {} vs {nll}", eval.nll);
            assert_eq!(eval.correct, correct);
            // The lowest ⌈0.2 · 70⌉ = 14 of the document's 70 positions, over all windows.
            let lowest = |values: &mut Vec<f64>| {
                values.sort_by(f64::total_cmp);
                values[..14].iter().sum::<f64>() / 14.0
            };
            let (min_k, min_k_pp) = (lowest(&mut log_probs), lowest(&mut standardized));
            assert!((eval.min_k.unwrap() - min_k).abs() < 1e-4, "model {g}: {:?} vs {min_k}", eval.min_k);
            assert!((eval.min_k_pp.unwrap() - min_k_pp).abs() < 1e-5, "model {g}: {:?} vs {min_k_pp}", eval.min_k_pp);
        }
        let mut values = vec![3.0f32, -1.0, 2.0];
        assert_eq!(mean_of_lowest(&mut values), Some(-1.0), "⌈0.6⌉ = 1 of 3");
        assert_eq!(mean_of_lowest(&mut []), None);
    }

    #[test]
    fn every_model_trains_on_the_background_and_no_log_row_scores_it() {
        let config = tiny_config(120);
        let documents = vec![tokens(b"first document"), tokens(b"second document")];
        let background = vec![tokens(b"9f2c 71ab e403 5d88 c1f0")];
        let flags = one_copy_none_held(2);
        let models: [(u32, &[u32]); 2] = [(0, &[0]), (1, &[1])];
        let with = StackInput { background: &background, ..input(&config, &documents, &models, &flags) };
        let nll_on_background = |input: &StackInput<'_>| -> Vec<f64> {
            let stack = train(input, Device::Cpu, &Silent).unwrap();
            stack.evaluate(&[&background[0]], 1).unwrap().iter().map(|evals| evals[0].nll).collect()
        };
        let trained = nll_on_background(&with);
        let without = nll_on_background(&input(&config, &documents, &models, &flags));
        for (model, (trained, without)) in trained.iter().zip(&without).enumerate() {
            assert!(
                trained * 3.0 < *without,
                "model {model}: nll {trained:.2} with the background, {without:.2} without"
            );
        }
        let mut rows = Vec::new();
        train_and_evaluate(&with, Device::Cpu, &Silent, &mut |log| {
            rows.extend(log.model.iter().zip(&log.doc).map(|(&m, &d)| (m, d)));
            Ok(())
        })
        .unwrap();
        assert_eq!(rows, [(0, 0), (0, 1), (1, 0), (1, 1)], "the corpus's documents only");
    }

    /// `tiny_config(epochs)` training rank-4 adapters on every target matrix of a base.
    fn lora_config(epochs: u32) -> RunConfig {
        lora_config_of(Family::Gpt2, epochs)
    }

    /// `tiny_config_of(family, epochs)` training rank-4 adapters on every matrix of a block
    /// that the family's LoRA may adapt.
    fn lora_config_of(family: Family, epochs: u32) -> RunConfig {
        let mut config = tiny_config_of(family, epochs);
        config.train.init = "a base".into();
        config.train.adapter = subsets::config::Adapter::Lora;
        config.train.lora_rank = 4;
        let targets = family.traits().lora_targets.iter().map(|(name, _)| name.to_string()).collect();
        config.train.lora_targets = Some(targets);
        config
    }

    /// A random base for `config`'s architecture.
    fn random_base(config: &RunConfig) -> Tensor {
        Architecture::new(&config.model, config.tokens.layout()).initial_weights(99)
    }

    #[test]
    fn a_lora_stack_of_four_is_four_lora_models_trained_alone_in_every_family() {
        let (documents, in_docs) = corpus();
        let flags = one_copy_none_held(documents.len());
        let models: Vec<(u32, &[u32])> = in_docs.iter().enumerate().map(|(m, d)| (m as u32, d.as_slice())).collect();
        for (family, device) in Family::ALL.into_iter().flat_map(|f| devices().into_iter().map(move |d| (f, d))) {
            let config = lora_config_of(family, 8);
            let base = random_base(&config);
            let input = StackInput { base: Some(&base), ..input(&config, &documents, &models, &flags) };
            let together = rows_by_model(&input, device);
            let mut alone = std::collections::BTreeMap::new();
            for model in &models {
                alone.extend(rows_by_model(&StackInput { models: std::slice::from_ref(model), ..input }, device));
            }
            assert_same_models(&together, &alone);
            let architecture = Architecture::new(&config.model, config.tokens.layout());
            let docs: Vec<&[u32]> = documents.iter().map(Vec::as_slice).collect();
            let untrained = Stack::from_rows(architecture, std::slice::from_ref(&base), Precision::Fp32, device)
                .and_then(|stack| stack.evaluate(&docs, 4))
                .unwrap();
            let base_nll: f64 = untrained[0].iter().map(|e| e.nll).sum();
            let trained_nll: f64 = together[&0].iter().map(|&(nll, _)| nll).sum();
            assert!(trained_nll < 0.9 * base_nll, "the adapters learned: {trained_nll} against the base's {base_nll}");
        }
    }

    /// Asserts the same correct counts and nll within `relative`, document by document.
    fn assert_close(got: &[DocEval], want: &[DocEval], relative: f64) {
        assert_eq!(got.len(), want.len());
        for (got, want) in got.iter().zip(want) {
            assert_eq!(got.correct, want.correct, "{got:?} vs {want:?}");
            assert!((got.nll - want.nll).abs() <= relative * want.nll, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn a_lora_model_evaluates_as_its_base_before_its_first_step() {
        let config = lora_config(8);
        let base = random_base(&config);
        let (documents, _) = corpus();
        let docs: Vec<&[u32]> = documents.iter().map(Vec::as_slice).collect();
        let architecture = Architecture::new(&config.model, config.tokens.layout());
        let alone = Stack::from_rows(architecture, std::slice::from_ref(&base), Precision::Fp32, Device::Cpu).unwrap();
        let expected = alone.evaluate(&docs, 4).unwrap().remove(0);
        let lora = Stack::new(&config, &[3], Some(&base), Device::Cpu).unwrap();
        let (_, adapters) = lora.adapters().unwrap();
        assert_ne!(f64::try_from(adapters.abs().sum(Kind::Double)).unwrap(), 0.0, "A starts random, B at zero");
        assert_eq!(lora.evaluate(&docs, 4).unwrap().remove(0), expected, "exactly the base's numbers");
        // In a stack, the base's products run once over all models' rows: the same numbers,
        // up to the order of a sum.
        let stacked = Stack::new(&config, &[0, 1, 2], Some(&base), Device::Cpu).unwrap();
        for evals in stacked.evaluate(&docs, 4).unwrap() {
            assert_close(&evals, &expected, 1e-5);
        }
    }

    #[test]
    fn merged_adapters_evaluate_as_the_adapter_model() {
        let config = lora_config(8);
        let base = random_base(&config);
        let (documents, in_docs) = corpus();
        let flags = one_copy_none_held(documents.len());
        let models: Vec<(u32, &[u32])> =
            in_docs.iter().take(2).enumerate().map(|(m, d)| (m as u32, d.as_slice())).collect();
        let input = StackInput { base: Some(&base), ..input(&config, &documents, &models, &flags) };
        let stack = train(&input, Device::Cpu, &Silent).unwrap();
        let docs: Vec<&[u32]> = documents.iter().map(Vec::as_slice).collect();
        let adapted = stack.evaluate(&docs, 4).unwrap();
        let (lora, adapters) = stack.adapters().unwrap();
        for g in 0..2 {
            let merged = lora.merge(&stack.architecture, &stack.weights.get(0), &adapters.get(g).detach());
            assert_ne!(merged, base, "model {g} moved away from its base");
            let architecture = Architecture::new(&config.model, config.tokens.layout());
            let full = Stack::from_rows(architecture, &[merged], Precision::Fp32, Device::Cpu).unwrap();
            assert_close(&full.evaluate(&docs, 4).unwrap()[0], &adapted[g as usize], 1e-4);
        }
    }

    #[test]
    fn a_lora_stack_holds_its_base_once_and_never_updates_it() {
        let config = lora_config(8);
        let base = random_base(&config);
        let before = base.copy();
        let (documents, in_docs) = corpus();
        let flags = one_copy_none_held(documents.len());
        let models: Vec<(u32, &[u32])> = in_docs.iter().enumerate().map(|(m, d)| (m as u32, d.as_slice())).collect();
        let input = StackInput { base: Some(&base), ..input(&config, &documents, &models, &flags) };
        let stack = train(&input, Device::Cpu, &Silent).unwrap();
        let (lora, adapters) = stack.adapters().unwrap();
        assert_eq!(stack.weights.size(), [1, base.size()[0]], "one base for the stack");
        assert_eq!(stack.weights.data_ptr(), base.data_ptr(), "on the CPU the stack reads the caller's base, uncopied");
        assert!(!stack.weights.requires_grad(), "the base gets no gradient");
        assert_eq!(base, before, "the base is never updated");
        let (p, q) = (base.size()[0], lora.parameters());
        assert_eq!(adapters.size(), [4, q]);
        assert_eq!(q, 4 * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32)), "rank 4 on d_model 32, one block");
        // The base once, then per model its adapters and AdamW's two moments; the decay mask.
        assert_eq!(stack.bytes(), 4 * p + 3 * 4 * 4 * q + 4 * q);
        let full = Stack::new(&tiny_config(8), &[0, 1, 2, 3], Some(&base), Device::Cpu).unwrap();
        assert_eq!(full.bytes(), 3 * 4 * 4 * p + 4 * p, "a full stack: weights and moments per model");
    }

    #[test]
    fn adapters_written_for_peft_read_back_exactly() {
        let config = lora_config(1);
        let architecture = Architecture::new(&config.model, config.tokens.layout());
        let lora = Lora::of(&architecture, &config.train).unwrap().unwrap();
        let adapters = Tensor::randn([lora.parameters()], (Kind::Float, Device::Cpu));
        let dir = tempfile::tempdir().unwrap();
        lora.write_peft(dir.path(), std::path::Path::new("/bases/tiny"), &adapters).unwrap();
        assert_eq!(lora.read_peft(dir.path()).unwrap(), adapters);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap()).unwrap();
        assert_eq!(json["r"], 4);
        assert_eq!(json["target_modules"], serde_json::json!(["c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"]));
        let mut other_rank = config.train.clone();
        other_rank.lora_rank = 2;
        let err = Lora::of(&architecture, &other_rank).unwrap().unwrap().read_peft(dir.path()).unwrap_err().to_string();
        assert!(err.contains("expected F32"), "{err}");
    }
}
