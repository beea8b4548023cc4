//! `cfmem bench`: the stacked trainer's throughput against the device's matmul peak, as a
//! table on stdout (or JSON), progress on stderr.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;

use jobs::base::LoadedBase;
use jobs::bench::{self, BenchRequest};
use subsets::config::{Hyperparameters, Precision};

use crate::ComputeArgs;

#[derive(Args)]
pub struct BenchArgs {
    /// TOML file with [model] and [train] settings (default: the defaults of `cfmem plan`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Start every model from this base (config.json, model.safetensors, tokenizer.json):
    /// its architecture and tokenizer replace [model].
    #[arg(long)]
    init: Option<PathBuf>,
    /// Stack sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16", value_parser = clap::value_parser!(u32).range(1..))]
    stacks: Vec<u32>,
    /// Precisions to measure: fp32 and/or bf16 (CUDA only). Default: fp32 on the CPU,
    /// both on CUDA.
    #[arg(long, value_delimiter = ',')]
    precisions: Vec<Precision>,
    /// Timed training steps per stack size, after one untimed one on the CPU and ten on
    /// CUDA.
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// Tokens of each training document (default: the context's window, context − 1).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    document_tokens: Option<u32>,
    #[command(flatten)]
    compute: ComputeArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    jobs::device::set_cpu_threads(args.compute.threads);
    let device = args.compute.device.resolve()?;
    let mut hyperparameters = Hyperparameters::read(args.config.as_deref())?;
    if let Some(dir) = &args.init {
        hyperparameters.train.init = dir.display().to_string();
    }
    let started = Instant::now();
    let base = LoadedBase::resolve(&mut hyperparameters, args.config.as_deref())?;
    if let Some(loaded) = &base {
        let (dir, parameters) = (loaded.base.dir.root().display(), loaded.weights.size()[0]);
        eprintln!("loaded the base {dir} ({parameters} parameters) in {:.2} s", started.elapsed().as_secs_f64());
    }
    hyperparameters.validate()?;
    if args.precisions.contains(&Precision::Bf16) && !device.is_cuda() {
        anyhow::bail!("--precisions bf16 needs a CUDA device");
    }
    let request = BenchRequest {
        hyperparameters,
        base: base.as_ref(),
        steps: args.steps,
        document_tokens: args.document_tokens.map(|tokens| tokens as usize),
    };
    let stacks: Vec<usize> = args.stacks.iter().map(|&stack| stack as usize).collect();
    let report = bench::run(&request, &stacks, &args.precisions, device, &|what| eprintln!("{what}"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
