//! `cfmem bench`: the stacked trainer's throughput against the device's matmul peak, as a
//! table on stdout (or JSON), progress on stderr.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;

use jobs::DeviceChoice;
use jobs::base::LoadedBase;
use jobs::bench::{self, BenchRequest, MatmulPeak, StackRun};
use jobs::lora::Lora;
use subsets::architecture::Architecture;
use subsets::base::Base;
use subsets::config::{Hyperparameters, Precision};
use subsets::tokenizer::Tokenizer;

#[derive(Args)]
pub struct BenchArgs {
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// TOML file with [model] and [train] settings (default: the defaults of `cfmem plan`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Start every model from this base (config.json, model.safetensors, tokenizer.json):
    /// its architecture and tokenizer replace [model].
    #[arg(long)]
    init: Option<PathBuf>,
    /// Stack sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    stacks: Vec<usize>,
    /// Precisions to measure: fp32 and/or bf16 (CUDA only). Default: fp32 on the CPU,
    /// both on CUDA.
    #[arg(long, value_delimiter = ',', value_parser = parse_precision)]
    precisions: Vec<Precision>,
    /// Timed training steps per stack size, after one untimed one on the CPU and ten on
    /// CUDA.
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// Tokens of each training document (default: the context's window, context − 1).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    document_tokens: Option<u32>,
    /// CPU threads of libtorch; 0 keeps libtorch's default (one per core).
    #[arg(long, default_value_t = 0)]
    threads: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_precision(text: &str) -> Result<Precision, String> {
    match text {
        "fp32" => Ok(Precision::Fp32),
        "bf16" => Ok(Precision::Bf16),
        _ => Err(format!("expected fp32 or bf16, got {text:?}")),
    }
}

fn precision_name(precision: Precision) -> &'static str {
    match precision {
        Precision::Fp32 => "fp32",
        Precision::Bf16 => "bf16",
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let device = args.device.resolve()?;
    jobs::device::set_cpu_threads(args.threads);
    let mut hyperparameters = match &args.config {
        Some(path) => Hyperparameters::from_file(path)?,
        None => Hyperparameters::default(),
    };
    if let Some(dir) = &args.init {
        hyperparameters.train.init = dir.display().to_string();
    }
    let base = match Base::resolve(&mut hyperparameters, args.config.as_deref())? {
        Some((base, files)) => {
            let started = Instant::now();
            let dir = base.dir.root().to_path_buf();
            let loaded = LoadedBase::from_files(base, &files)?;
            eprintln!(
                "loaded the base {} ({} parameters) in {:.2} s",
                dir.display(),
                loaded.weights.size()[0],
                started.elapsed().as_secs_f64()
            );
            Some(loaded)
        }
        None => None,
    };
    hyperparameters.validate()?;
    if args.stacks.is_empty() || args.stacks.contains(&0) {
        anyhow::bail!("--stacks: give stack sizes of at least 1, e.g. 1,4,16");
    }
    let precisions = match (args.precisions.is_empty(), device.is_cuda()) {
        (false, _) => args.precisions.clone(),
        (true, true) => vec![Precision::Fp32, Precision::Bf16],
        (true, false) => vec![Precision::Fp32],
    };
    if precisions.contains(&Precision::Bf16) && !device.is_cuda() {
        anyhow::bail!("--precisions bf16 needs a CUDA device");
    }

    eprintln!("measuring the matmul peak of {}", jobs::device::describe(device));
    let peak = bench::matmul_peak(device);
    let request = BenchRequest {
        hyperparameters: hyperparameters.clone(),
        base: base.as_ref(),
        steps: args.steps,
        document_tokens: args.document_tokens.map(|tokens| tokens as usize),
    };
    let mut runs = Vec::new();
    for &precision in &precisions {
        for &stack in &args.stacks {
            eprintln!("training a stack of {stack} in {}", precision_name(precision));
            let mut request = request.clone();
            request.hyperparameters.train.precision = precision;
            runs.push(bench::measure_stack(&request, stack, device, &peak)?);
        }
    }
    let layout = match &base {
        Some(loaded) => loaded.base.layout,
        None => subsets::config::EmbeddingLayout::after_vocab(Tokenizer::planned_vocab(&hyperparameters.model)?),
    };
    let vocab = layout.rows;
    let architecture = Architecture::new(&hyperparameters.model, layout);
    let lora = Lora::of(&architecture, &hyperparameters.train)?;
    if args.json {
        let report = serde_json::json!({
            "device": jobs::device::describe(device),
            "matmul_peak_flops": peak,
            "tokenizer": hyperparameters.model.tokenizer.to_string(),
            "vocab": vocab,
            "architecture": hyperparameters.model.architecture,
            "parameters": architecture.parameters(),
            "non_embedding_parameters": architecture.non_embedding_parameters(),
            "adapter": hyperparameters.train.adapter,
            "adapter_parameters": lora.as_ref().map(Lora::parameters),
            "runs": runs,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let shape = (vocab, &architecture, lora.as_ref());
        print_table(&jobs::device::describe(device), &hyperparameters, shape, request.document_length(), &peak, &runs);
    }
    Ok(())
}

fn print_table(
    device: &str,
    h: &Hyperparameters,
    (vocab, architecture, lora): (u32, &Architecture, Option<&Lora>),
    time: usize,
    peak: &MatmulPeak,
    runs: &[StackRun],
) {
    let tera = |flops: f64| flops / 1e12;
    print!("device {device}: dense matmul peak fp32 {:.3} TFLOP/s", tera(peak.fp32));
    if let Some(bf16) = peak.bf16 {
        print!(", bf16 {:.1} TFLOP/s", tera(bf16));
    }
    println!();
    let m = &h.model;
    println!(
        "model: {} {} layers, d_model {}, context {}, tokenizer {} (vocabulary {vocab}), batch {} per model, \
         documents of {time} tokens",
        m.architecture, m.n_layer, m.d_model, m.context, m.tokenizer, h.train.batch_size
    );
    let flops = architecture.training_flops_per_token(time as i64, lora.map(Lora::parameters));
    let width = architecture.n_head * architecture.head_dim;
    let (n, attention) = (architecture.non_embedding_parameters(), format!("6·{}·{time}·{width}", m.n_layer));
    match lora {
        Some(lora) => {
            let t = &h.train;
            let targets = t.lora_targets_of(m.architecture);
            println!(
                "LoRA rank {} (alpha {}) on {}: {} adapter parameters a model over a frozen base of {}, held once \
                 per stack",
                t.lora_rank,
                t.lora_alpha,
                targets.join(", "),
                lora.parameters(),
                architecture.parameters()
            );
            println!(
                "model FLOPs per token = 4·N + 6·Q + 6·n_layer·time·heads·head_dim = 4·{n} + 6·{} + {attention} = \
                 {flops:.3e}",
                lora.parameters()
            );
        }
        None => {
            println!("model FLOPs per token = 6·N + 6·n_layer·time·heads·head_dim = 6·{n} + {attention} = {flops:.3e}")
        }
    }
    println!(
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
    );
    for run in runs {
        let single = runs.iter().find(|r| r.stack == 1 && r.precision == run.precision);
        let ratio =
            single.map_or_else(|| "-".to_string(), |s| format!("{:.2}×", run.tokens_per_second / s.tokens_per_second));
        let memory =
            run.peak_memory_bytes.map_or_else(|| "-".to_string(), |b| format!("{:.0} MiB", b as f64 / 1048576.0));
        println!(
            "{:<5} {:>5} {:>9.2} {:>12.0} {:>12.0} {:>8} {:>9.3} {:>7.1}% {:>12.0} {:>9.1}% {:>10} {:>6.0} MiB",
            precision_name(run.precision),
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
        );
    }
    for run in runs.iter().filter(|r| r.precision == Precision::Bf16) {
        if let Some(fp32) = runs.iter().find(|r| r.stack == run.stack && r.precision == Precision::Fp32) {
            println!(
                "stack {}: bf16 trains {:.2}× as fast as fp32",
                run.stack,
                run.tokens_per_second / fp32.tokens_per_second
            );
        }
    }
    println!(
        "\nvs 1×G: tokens/s of the stack against the same models trained one at a time (stack 1); \
         of peak: model FLOP/s over the measured matmul peak of the same precision; \
         eval docs/s: documents × models evaluated per second; checkpoint: what one evaluation checkpoint \
         (train.eval_at) adds to a job's time, every document evaluated against training at {} epochs and keep 0.5; \
         estimate: the memory check's estimate for the stack, beside the peak measured.",
        h.train.epochs
    );
}
