//! `cfmem export`: one model of a LoRA run, its adapters merged into the base, written as
//! a base directory in the Hugging Face GPT-2 layout for other tools.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use subsets::config::RunConfig;
use subsets::layout::RunDir;

#[derive(Args)]
pub struct ExportArgs {
    /// Run directory of a run planned with train.adapter = "lora".
    run: PathBuf,
    /// The model to export (its id, 0 to models − 1).
    #[arg(long)]
    model: u32,
    /// Directory to write: config.json, model.safetensors, tokenizer.json.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: &ExportArgs) -> Result<()> {
    let run = RunDir::new(&args.run);
    let config = RunConfig::from_file(&run.config())?;
    let merged = jobs::base::export(&run, &config, args.model, &args.out)?;
    eprintln!(
        "wrote model {} ({} parameters, its adapters merged into {}) to {}; \
         its adapters alone, for peft, are in {}",
        args.model,
        merged.size()[0],
        config.train.init,
        args.out.display(),
        run.adapters(args.model).display()
    );
    Ok(())
}
