//! `cfmem evaluate`: a base model's teacher-forced evaluation of every document of a
//! corpus, written as one Parquet table; the mean loss and accuracy printed. It shows what
//! a base already predicts before any audit, and checks a base against another
//! implementation of the same model.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use jobs::base::LoadedBase;
use subsets::corpus;
use subsets::schema;

use crate::ComputeArgs;

#[derive(Args)]
pub struct EvaluateArgs {
    /// Base directory: config.json, model.safetensors, tokenizer.json (Hugging Face GPT-2 layout).
    #[arg(long)]
    model: PathBuf,
    /// JSONL file, Parquet file, or directory of .txt files.
    #[arg(long)]
    corpus: PathBuf,
    /// Parquet file to write, one row per document.
    #[arg(long)]
    out: PathBuf,
    /// Windows per forward pass.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    #[command(flatten)]
    compute: ComputeArgs,
}

pub fn run(args: &EvaluateArgs) -> Result<()> {
    jobs::device::set_cpu_threads(args.compute.threads);
    let device = args.compute.device.resolve()?;
    let loaded = LoadedBase::load(&args.model)?;
    let documents = corpus::read(&args.corpus)?;
    let table = loaded.evaluation_table(&documents, args.batch_size as usize, device)?;
    schema::write(&args.out, &table, None)?;
    let ((loss, accuracy), tokens) = (table.means(), table.tokens());
    let (documents, out) = (documents.len(), args.out.display());
    println!(
        "{documents} documents, {tokens} tokens: loss {loss:.4} nats per token, accuracy {accuracy:.4}; wrote {out}"
    );
    Ok(())
}
