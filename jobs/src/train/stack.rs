//! A stack of G models ([`Stack`]): their weights (or one frozen base and each model's
//! adapters), AdamW's moments, the step that updates them all at once, and the teacher-forced
//! evaluation of every model on every document ([`DocEval`]), Min-K% statistics included.

use tch::{Device, Kind, Reduction, Tensor};

use subsets::architecture::Architecture;
use subsets::config::{Precision, RunConfig};
use subsets::schema::{EvaluationTable, MIN_K_FRACTION};
use subsets::seeds;

use crate::Result;
use crate::lora::Lora;
use crate::model::{Compute, Output};

use super::windows::{NO_TARGET, Specials, Window, token_table, windows};

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

/// A model's evaluation of each document (`doc_ids`, in corpus order) as an
/// [`EvaluationTable`].
pub fn evaluation_table(doc_ids: &[String], evals: &[DocEval]) -> EvaluationTable {
    let mut table = EvaluationTable::default();
    for (doc, (id, eval)) in doc_ids.iter().zip(evals).enumerate() {
        table.doc.push(doc as u32);
        table.doc_id.push(id.clone());
        table.tokens.push(eval.tokens);
        table.nll.push(eval.nll);
        table.correct.push(eval.correct);
    }
    table
}

/// The mean of the lowest ⌈[`MIN_K_FRACTION`] · n⌉ (at least one) of `values`, None when
/// there are none.
pub(crate) fn mean_of_lowest(values: &mut [f32]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let k = ((MIN_K_FRACTION * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values.select_nth_unstable_by(k - 1, f32::total_cmp);
    Some(values[..k].iter().map(|&v| f64::from(v)).sum::<f64>() / k as f64)
}

/// G models with their AdamW moments: each model's weights `[G, P]`, or one frozen base
/// `[1, P]` shared by all and each model's adapters `[G, Q]`. AdamW, clipping and weight
/// decay act on the trained tensor only.
pub struct Stack {
    pub(crate) architecture: Architecture,
    /// `[G, P]`, trained; with adapters, `[1, P]`, the base, never updated.
    pub(crate) weights: Tensor,
    /// With LoRA: the adapters' layout and each model's adapters `[G, Q]`, trained.
    pub(crate) adapters: Option<(Lora, Tensor)>,
    pub(crate) exp_avg: Tensor,
    pub(crate) exp_avg_sq: Tensor,
    pub(crate) decay_mask: Tensor,
    pub(crate) precision: Precision,
    pub(crate) steps_taken: i32,
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
    pub(crate) fn trained(&self) -> &Tensor {
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
    pub(crate) fn logits(&self, inputs: &Tensor) -> Tensor {
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
    pub(crate) fn losses(&self, inputs: &Tensor, targets: &Tensor) -> Tensor {
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
    pub(crate) fn update(&mut self, lr: f64, train: &subsets::config::TrainConfig) {
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
pub(crate) fn clip_per_model(grad: &mut Tensor, max_norm: f64) {
    let norms = grad.norm_scalaropt_dim(2.0, [1], true);
    let coefficients = ((norms + 1e-6).reciprocal() * max_norm).clamp_max(1.0);
    let _ = grad.g_mul_(&coefficients);
}
