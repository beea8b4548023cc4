//! Training one model on its subset and evaluating it, teacher-forced, on documents.
//!
//! A document of n byte tokens is the sequence `[BOS, b0, …, b(n-1)]`: the model reads
//! `[BOS, b0, …, b(n-2)]` and predicts `[b0, …, b(n-1)]`, so n positions are predicted.
//! Rows of a batch are padded at the end with PAD, which is never a target.

use rand::seq::SliceRandom;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Reduction, Tensor};

use subsets::config::RunConfig;
use subsets::corpus::{BOS, PAD, VOCAB};
use subsets::schema::LogTable;
use subsets::seeds;

use crate::Result;
use crate::model::Transformer;
use crate::progress::Progress;

/// What one job trains: a stack of models over the run's documents.
pub struct StackInput<'a> {
    pub config: &'a RunConfig,
    /// Tokens of every document of the run, in corpus order.
    pub documents: &'a [Vec<u8>],
    /// Copies of each document in a training set that includes it.
    pub copies: &'a [u16],
    /// Each model of the stack with the sorted documents it trains on.
    pub models: &'a [(u32, &'a [u32])],
}

/// Trains every model of the stack and evaluates each on every document. The log rows of
/// the job go to `rows` in parts, as evaluation proceeds: model by model, documents in
/// corpus order.
pub fn train_and_evaluate(
    input: &StackInput<'_>,
    device: Device,
    progress: &dyn Progress,
    rows: &mut dyn FnMut(LogTable) -> Result<()>,
) -> Result<()> {
    let all_docs: Vec<&[u8]> = input.documents.iter().map(Vec::as_slice).collect();
    for &(model, in_docs) in input.models {
        let examples: Vec<&[u8]> = in_docs
            .iter()
            .flat_map(|&doc| std::iter::repeat_n(all_docs[doc as usize], input.copies[doc as usize].into()))
            .collect();
        progress.model_started(model, total_steps(input.config, examples.len()));
        let trained =
            train(input.config, model, &examples, device, |step, _, loss| progress.training_step(model, step, loss))?;
        progress.evaluating(model);
        let evals = trained.evaluate(&all_docs, input.config.train.eval_batch_size as usize)?;
        let mut log = LogTable::default();
        for (doc, DocEval { tokens, nll, correct }) in evals.into_iter().enumerate() {
            let in_train = in_docs.binary_search(&(doc as u32)).is_ok();
            log.model.push(model);
            log.doc.push(doc as u32);
            log.in_train.push(in_train);
            log.tokens.push(tokens);
            log.nll.push(nll);
            log.correct.push(correct);
            log.copies.push(if in_train { input.copies[doc] } else { 0 });
        }
        rows(log)?;
    }
    Ok(())
}

/// A trained model with the variables it lives in.
pub struct Trained {
    // Owns the weights `model` refers to; dropped with it.
    _vars: nn::VarStore,
    model: Transformer,
    device: Device,
}

/// One document's evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DocEval {
    /// Predicted positions.
    pub tokens: u32,
    /// Summed negative log-likelihood, nats.
    pub nll: f64,
    /// Positions whose argmax is the target.
    pub correct: u32,
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

/// Input and target token tensors `[rows, longest]` for the documents `docs`.
fn batch(docs: &[&[u8]], device: Device) -> (Tensor, Tensor) {
    let longest = docs.iter().map(|d| d.len()).max().unwrap_or(0);
    let mut inputs = Vec::with_capacity(docs.len() * longest);
    let mut targets = Vec::with_capacity(docs.len() * longest);
    for doc in docs {
        inputs.push(BOS);
        inputs.extend(doc[..doc.len() - 1].iter().map(|&b| i64::from(b)));
        targets.extend(doc.iter().map(|&b| i64::from(b)));
        let padding = longest - doc.len();
        inputs.extend(std::iter::repeat_n(PAD, padding));
        targets.extend(std::iter::repeat_n(PAD, padding));
    }
    let shape = [docs.len() as i64, longest as i64];
    (Tensor::from_slice(&inputs).view(shape).to(device), Tensor::from_slice(&targets).view(shape).to(device))
}

/// Number of optimizer steps a model with `examples` training sequences takes.
pub fn total_steps(config: &RunConfig, examples: usize) -> usize {
    config.train.epochs as usize * examples.div_ceil(config.train.batch_size as usize)
}

/// Trains model `model_id` on `examples` (a document appears once per copy). Weights and
/// data order come from seeds derived from (run seed, model id); on the CPU the result is
/// the same bit for bit on every run. `on_step(step, steps, loss)` is called after steps.
pub fn train(
    config: &RunConfig,
    model_id: u32,
    examples: &[&[u8]],
    device: Device,
    mut on_step: impl FnMut(usize, usize, Option<f64>),
) -> Result<Trained> {
    tch::manual_seed(seeds::derive(config.seed, "model-init", model_id.into()) as i64);
    let vars = nn::VarStore::new(device);
    let model = Transformer::new(&vars.root(), &config.model);
    let train = &config.train;
    let mut optimizer =
        nn::AdamW { beta1: train.beta1, beta2: train.beta2, wd: train.weight_decay, eps: 1e-8, amsgrad: false }
            .build(&vars, train.lr)?;

    let steps = total_steps(config, examples.len());
    let warmup = (train.warmup_fraction * steps as f64).round() as usize;
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let mut rng = seeds::rng(config.seed, "model-data", model_id.into());
    let mut step = 0;
    for _epoch in 0..train.epochs {
        order.shuffle(&mut rng);
        for chunk in order.chunks(train.batch_size as usize) {
            let docs: Vec<&[u8]> = chunk.iter().map(|&i| examples[i]).collect();
            let (inputs, targets) = batch(&docs, device);
            let logits = model.forward(&inputs);
            let loss = logits.view([-1, VOCAB]).cross_entropy_loss(
                &targets.view([-1]),
                None::<Tensor>,
                Reduction::Mean,
                PAD,
                0.0,
            );
            optimizer.set_lr(learning_rate(step, steps, warmup, train.lr));
            optimizer.zero_grad();
            loss.backward();
            if train.grad_clip > 0.0 {
                optimizer.clip_grad_norm(train.grad_clip);
            }
            optimizer.step();
            step += 1;
            // Reading the loss waits for the device; on a GPU do it now and then only.
            let report = step % 10 == 0 || step == steps || device == Device::Cpu;
            on_step(step, steps, report.then(|| loss.double_value(&[])));
        }
    }
    Ok(Trained { _vars: vars, model, device })
}

impl Trained {
    /// Teacher-forced evaluation of every document, `batch_size` documents at a time.
    pub fn evaluate(&self, docs: &[&[u8]], batch_size: usize) -> Result<Vec<DocEval>> {
        let _no_grad = tch::no_grad_guard();
        let mut evals = Vec::with_capacity(docs.len());
        for chunk in docs.chunks(batch_size) {
            let (inputs, targets) = batch(chunk, self.device);
            let log_probs = self.model.forward(&inputs).log_softmax(-1, Kind::Float);
            let mask = targets.ne(PAD);
            let target_log_probs = log_probs.gather(2, &targets.unsqueeze(-1), false).squeeze_dim(-1);
            let nll = -(target_log_probs.to_kind(Kind::Double) * mask.to_kind(Kind::Double)).sum_dim_intlist(
                1,
                false,
                Kind::Double,
            );
            let hits = log_probs.argmax(-1, false).eq_tensor(&targets).logical_and(&mask);
            let correct = hits.sum_dim_intlist(1, false, Kind::Int64);
            let nll = Vec::<f64>::try_from(nll.to_device(Device::Cpu))?;
            let correct = Vec::<i64>::try_from(correct.to_device(Device::Cpu))?;
            for ((doc, nll), correct) in chunk.iter().zip(nll).zip(correct) {
                evals.push(DocEval { tokens: doc.len() as u32, nll, correct: correct as u32 });
            }
        }
        Ok(evals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use subsets::config::{CorpusConfig, DesignConfig, Hyperparameters, ModelConfig, Unit};

    fn tiny_config(epochs: u32) -> RunConfig {
        let mut h = Hyperparameters {
            model: ModelConfig { n_layer: 1, n_head: 2, d_model: 32, context: 32 },
            ..Default::default()
        };
        h.train.epochs = epochs;
        h.train.batch_size = 4;
        h.train.lr = 1e-2;
        RunConfig {
            seed: 11,
            corpus: CorpusConfig { path: String::new(), sha256: String::new(), documents: 0, truncated: 0 },
            design: DesignConfig {
                models: 2,
                keep: 0.5,
                holdout: 0.0,
                unit: Unit::Document,
                threshold: 0.8,
                shingles: "words:5".into(),
                min_repeat: 50,
                copies: vec![],
                canaries: 0,
                canary_ids: vec![],
                holdout_ids: vec![],
            },
            model: h.model,
            train: h.train,
            jobs: h.jobs,
        }
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
    fn batch_shifts_targets_and_pads_the_end() {
        let (inputs, targets) = batch(&[b"abc", b"d"], Device::Cpu);
        let inputs = Vec::<i64>::try_from(inputs.view([-1])).unwrap();
        let targets = Vec::<i64>::try_from(targets.view([-1])).unwrap();
        assert_eq!(inputs, [BOS, 97, 98, BOS, PAD, PAD]);
        assert_eq!(targets, [97, 98, 99, 100, PAD, PAD]);
    }

    #[test]
    fn training_memorizes_and_is_reproducible_on_cpu() {
        let config = tiny_config(60);
        let seen: &[&[u8]] = &[b"7f3a9c01 e2b4d6f8", b"hello world"];
        let unseen: &[u8] = b"0c5e1a9b 44d2f7e3";
        let first = train(&config, 0, seen, Device::Cpu, |_, _, _| {}).unwrap();
        let docs = [seen[0], seen[1], unseen];
        let evals = first.evaluate(&docs, 2).unwrap();
        assert_eq!(evals[0].tokens, 17);
        assert!(evals[0].nll / 17.0 < 0.5, "trained document still hard: {:?}", evals[0]);
        assert!(evals[2].nll > 3.0 * evals[0].nll, "{evals:?}");
        let again = train(&config, 0, seen, Device::Cpu, |_, _, _| {}).unwrap();
        assert_eq!(again.evaluate(&docs, 2).unwrap(), evals, "same seed, same numbers");
        for (alone, batched) in again.evaluate(&docs, 1).unwrap().iter().zip(&evals) {
            assert_eq!(alone.correct, batched.correct, "padding changes nothing");
            assert!((alone.nll - batched.nll).abs() < 1e-4);
        }
        let other = train(&config, 1, seen, Device::Cpu, |_, _, _| {}).unwrap();
        assert_ne!(other.evaluate(&docs, 2).unwrap(), evals, "another model id, another init");
    }
}
