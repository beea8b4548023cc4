//! The whole of `cfmem bench`: the matmul peak, then every precision and stack size
//! measured in turn, gathered into a [`BenchReport`], which is shown as the table
//! `cfmem bench` prints or serialized as its `--json`.

use std::fmt;

use serde::Serialize;
use tch::Device;

use subsets::architecture::Architecture;
use subsets::config::{Adapter, EmbeddingLayout, Hyperparameters, Precision};
use subsets::family::Family;
use subsets::tokenizer::Tokenizer;

use super::{BenchRequest, MatmulPeak, StackRun, matmul_peak, measure_stack};
use crate::Result;
use crate::lora::Lora;

/// What `cfmem bench` measured. Serialized, the device, its peak, the model's shape and
/// every run; displayed, the table with the FLOP formula it used.
#[derive(Serialize)]
pub struct BenchReport {
    pub adapter: Adapter,
    pub adapter_parameters: Option<i64>,
    pub architecture: Family,
    pub device: String,
    pub matmul_peak_flops: MatmulPeak,
    pub non_embedding_parameters: i64,
    pub parameters: i64,
    pub runs: Vec<StackRun>,
    pub tokenizer: String,
    pub vocab: u32,
    /// The settings measured, the first precision's.
    #[serde(skip)]
    hyperparameters: Hyperparameters,
    #[serde(skip)]
    shape: Architecture,
    #[serde(skip)]
    lora: Option<Lora>,
    /// Tokens of each training document.
    #[serde(skip)]
    document_length: usize,
}

/// Measures the device's matmul peak, then trains a stack of each size in `stacks` in each
/// of `precisions` (fp32 alone on the CPU and both on CUDA where empty) as `request` says;
/// `progress` is told what is being measured.
pub fn run(
    request: &BenchRequest<'_>,
    stacks: &[usize],
    precisions: &[Precision],
    device: Device,
    progress: &dyn Fn(&str),
) -> Result<BenchReport> {
    let precisions = match (precisions.is_empty(), device.is_cuda()) {
        (false, _) => precisions.to_vec(),
        (true, true) => vec![Precision::Fp32, Precision::Bf16],
        (true, false) => vec![Precision::Fp32],
    };
    let described = crate::device::describe(device);
    progress(&format!("measuring the matmul peak of {described}"));
    let peak = matmul_peak(device);
    let mut runs = Vec::new();
    for &precision in &precisions {
        for &stack in stacks {
            progress(&format!("training a stack of {stack} in {}", precision.name()));
            let mut request = request.clone();
            request.hyperparameters.train.precision = precision;
            runs.push(measure_stack(&request, stack, device, &peak)?);
        }
    }
    let hyperparameters = request.hyperparameters.clone();
    let layout = match request.base {
        Some(loaded) => loaded.base.layout,
        None => EmbeddingLayout::after_vocab(Tokenizer::planned_vocab(&hyperparameters.model)?),
    };
    let shape = Architecture::new(&hyperparameters.model, layout);
    let lora = Lora::of(&shape, &hyperparameters.train)?;
    Ok(BenchReport {
        adapter: hyperparameters.train.adapter,
        adapter_parameters: lora.as_ref().map(Lora::parameters),
        architecture: hyperparameters.model.architecture,
        device: described,
        matmul_peak_flops: peak,
        non_embedding_parameters: shape.non_embedding_parameters(),
        parameters: shape.parameters(),
        runs,
        tokenizer: hyperparameters.model.tokenizer.to_string(),
        vocab: layout.rows,
        document_length: request.document_length(),
        hyperparameters,
        shape,
        lora,
    })
}

impl fmt::Display for BenchReport {
    /// The device's peak, the model and its FLOPs per token, a row per stack run with its
    /// ratio to stack 1 of the same precision, bf16 against fp32, and what the columns mean.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, time, peak) = (&self.hyperparameters, self.document_length, &self.matmul_peak_flops);
        let tera = |flops: f64| flops / 1e12;
        write!(f, "device {}: dense matmul peak fp32 {:.3} TFLOP/s", self.device, tera(peak.fp32))?;
        if let Some(bf16) = peak.bf16 {
            write!(f, ", bf16 {:.1} TFLOP/s", tera(bf16))?;
        }
        writeln!(f)?;
        let m = &h.model;
        writeln!(
            f,
            "model: {} {} layers, d_model {}, context {}, tokenizer {} (vocabulary {}), batch {} per model, \
             documents of {time} tokens",
            m.architecture, m.n_layer, m.d_model, m.context, m.tokenizer, self.vocab, h.train.batch_size
        )?;
        let shape = &self.shape;
        let flops = shape.training_flops_per_token(time as i64, self.adapter_parameters);
        let width = shape.n_head * shape.head_dim;
        let (n, attention) = (shape.non_embedding_parameters(), format!("6·{}·{time}·{width}", m.n_layer));
        match &self.lora {
            Some(lora) => {
                let t = &h.train;
                writeln!(
                    f,
                    "LoRA rank {} (alpha {}) on {}: {} adapter parameters a model over a frozen base of {}, held \
                     once per stack",
                    t.lora_rank,
                    t.lora_alpha,
                    t.lora_targets_of(m.architecture).join(", "),
                    lora.parameters(),
                    shape.parameters()
                )?;
                writeln!(
                    f,
                    "model FLOPs per token = 4·N + 6·Q + 6·n_layer·time·heads·head_dim = 4·{n} + 6·{} + {attention} \
                     = {flops:.3e}",
                    lora.parameters()
                )?;
            }
            None => writeln!(
                f,
                "model FLOPs per token = 6·N + 6·n_layer·time·heads·head_dim = 6·{n} + {attention} = {flops:.3e}"
            )?,
        }
        writeln!(
            f,
            "\n{:<5} {:>5} {:>9} {:>12} {:>12} {:>8} {:>9} {:>8} {:>12} {:>10} {:>10} {:>10}",
            "prec",
            "stack",
            "step ms",
            "tokens/s",
            "per model",
            "vs 1×G",
            "TFLOP/s",
            "of peak",
            "eval docs/s",
            "checkpoint",
            "peak mem",
            "estimate"
        )?;
        let runs = &self.runs;
        for run in runs {
            let single = runs.iter().find(|r| r.stack == 1 && r.precision == run.precision);
            let ratio = single
                .map_or_else(|| "-".to_string(), |s| format!("{:.2}×", run.tokens_per_second / s.tokens_per_second));
            let memory =
                run.peak_memory_bytes.map_or_else(|| "-".to_string(), |b| format!("{:.0} MiB", b as f64 / 1048576.0));
            writeln!(
                f,
                "{:<5} {:>5} {:>9.2} {:>12.0} {:>12.0} {:>8} {:>9.3} {:>7.1}% {:>12.0} {:>9.1}% {:>10} {:>6.0} MiB",
                run.precision.name(),
                run.stack,
                run.step_seconds * 1e3,
                run.tokens_per_second,
                run.tokens_per_second_per_model,
                ratio,
                tera(run.flops_per_second),
                100.0 * run.fraction_of_peak,
                run.eval_documents_per_second,
                100.0 * run.checkpoint_cost,
                memory,
                run.memory_estimate_bytes as f64 / 1048576.0
            )?;
        }
        for run in runs.iter().filter(|r| r.precision == Precision::Bf16) {
            if let Some(fp32) = runs.iter().find(|r| r.stack == run.stack && r.precision == Precision::Fp32) {
                writeln!(
                    f,
                    "stack {}: bf16 trains {:.2}× as fast as fp32",
                    run.stack,
                    run.tokens_per_second / fp32.tokens_per_second
                )?;
            }
        }
        writeln!(
            f,
            "\nvs 1×G: tokens/s of the stack against the same models trained one at a time (stack 1); \
             of peak: model FLOP/s over the measured matmul peak of the same precision; \
             eval docs/s: documents × models evaluated per second; checkpoint: what one evaluation checkpoint \
             (train.eval_at) adds to a job's time, every document evaluated against training at {} epochs and keep \
             0.5; estimate: the memory check's estimate for the stack, beside the peak measured.",
            h.train.epochs
        )
    }
}
