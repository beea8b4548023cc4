//! The optimizer steps of a training: how many every model of a run takes ([`steps`]), the
//! learning rate of each ([`learning_rate`]), and how each step's batches are drawn
//! ([`Schedule`]).

use tch::{Kind, Tensor};

use queue::Progress;
use subsets::config::TrainConfig;
use subsets::design;

use crate::Result;

use super::stack::Stack;
use super::windows::{ExampleStream, TrainingTable};
use super::{LOSS_EVERY, STEPS_PER_UPLOAD, StackInput};

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
