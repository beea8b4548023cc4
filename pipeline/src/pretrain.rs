//! `cfmem pretrain`: the flags into a [`jobs::pretrain::PretrainRequest`], a progress bar,
//! and what the base learned, printed at the end.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;

use jobs::pretrain::{self, PretrainRequest, Pretrained};
use subsets::config::Hyperparameters;

use crate::ComputeArgs;
use crate::progress::Bars;

#[derive(Args)]
pub struct PretrainArgs {
    /// JSONL file, Parquet file, or directory of .txt files: the text to pretrain on
    /// (typically the background corpus of later runs).
    #[arg(long)]
    corpus: PathBuf,
    /// TOML file with [model] and [train] settings; see docs/guide/configuration.md.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Base directory to write: config.json, model.safetensors, tokenizer.json (the
    /// Hugging Face GPT-2 layout) and pretraining.toml.
    #[arg(long)]
    out: PathBuf,
    /// Fraction of the documents left out of training, to measure the base on.
    #[arg(long, default_value_t = 0.05)]
    holdout: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Seconds between two checkpoints; running the same command again resumes from the
    /// last one.
    #[arg(long, default_value_t = 120.0)]
    checkpoint_every: f64,
    #[command(flatten)]
    compute: ComputeArgs,
}

pub fn run(args: &PretrainArgs) -> Result<()> {
    if !(args.checkpoint_every >= 0.0 && args.checkpoint_every.is_finite()) {
        bail!("--checkpoint-every must be a number of seconds, 0 or more");
    }
    let hyperparameters = Hyperparameters::read(args.config.as_deref())?;
    jobs::device::set_cpu_threads(args.compute.threads);
    let device = args.compute.device.resolve()?;
    let checkpoint_every = Duration::from_secs_f64(args.checkpoint_every);
    let request = PretrainRequest::new(&args.corpus, &hyperparameters, (args.seed, args.holdout), checkpoint_every)
        .map_err(|e| crate::flags::name_the_flag(e.into()))?;
    let record = &request.record;
    eprintln!(
        "pretraining a {} model of {} parameters on {} documents ({} held out) on {}",
        request.model.architecture,
        subsets::architecture::Architecture::new(&request.model, request.layout).parameters(),
        record.documents - record.held_out_documents,
        record.held_out_documents,
        jobs::device::describe(device)
    );
    let bars = Bars::new(1);
    let pretrained = pretrain::pretrain(&request, &args.out, device, &bars)?;
    bars.finish();
    report(&args.out, &pretrained);
    Ok(())
}

fn report(out: &std::path::Path, pretrained: &Pretrained) {
    if pretrained.already_complete {
        eprintln!("{} already holds this base; nothing to do", out.display());
    } else if pretrained.resumed_from > 0 {
        eprintln!("resumed from the checkpoint at step {}", pretrained.resumed_from);
    }
    print!("{pretrained}");
    println!("base: {} (plan --init {0})", out.display());
}
