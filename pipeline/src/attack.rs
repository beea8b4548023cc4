//! `cfmem attack`: a model from outside the run (exported from it, or fine-tuned elsewhere
//! on some of its documents) evaluated on the run's documents, then attacked with the run's
//! models as shadows ([`analysis::attacks::attack_model`]); the scores written, the figures
//! printed.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use analysis::attacks::{self, TargetEvaluation, TargetSettings};
use jobs::RunTrainer;
use queue::Queue;
use subsets::layout::RunDir;
use subsets::schema::{self, CorpusTable};

use crate::ComputeArgs;

#[derive(Args)]
pub struct AttackArgs {
    /// Run directory whose models are the shadows: every job complete.
    run: PathBuf,
    /// The model to attack: a directory in the Hugging Face layout of the run's family
    /// (config.json, model.safetensors, tokenizer.json), e.g. written by `cfmem export`.
    #[arg(long)]
    target: PathBuf,
    /// The documents the target trained on, one id a line: prints every attack's AUC and
    /// TPR at 1% and 0.1% FPR on it; the other documents are its non-members.
    #[arg(long)]
    members: Option<PathBuf>,
    /// A run model to leave out of the shadows: the one the target was exported from.
    #[arg(long)]
    leave_out: Option<u32>,
    /// Parquet file to write: every attack's score of each document.
    #[arg(long)]
    out: PathBuf,
    /// Bootstrap resamples of the documents behind the printed intervals.
    #[arg(long, default_value_t = 200)]
    bootstrap: usize,
    #[command(flatten)]
    compute: ComputeArgs,
}

pub fn run(args: &AttackArgs) -> Result<()> {
    let run = RunDir::new(&args.run);
    let queue = Queue::open(run.clone())?;
    let logs = attacks::shadow_logs(&run, &queue.verify()?)?;
    let corpus: CorpusTable = schema::read(&run.corpus())?;
    let members =
        args.members.as_ref().map(|path| subsets::corpus::listed_documents(path, &corpus.doc_id)).transpose()?;
    jobs::device::set_cpu_threads(args.compute.threads);
    let device = args.compute.device.resolve()?;
    let trainer = RunTrainer::new(&run, queue.config(), device)?;
    let evals = jobs::target::evaluate_on_run(&trainer, &run, &args.target)?;
    if trainer.write_reference()? {
        eprintln!("evaluated the run's base as the reference model: {}", run.reference().display());
    }
    let target: Vec<TargetEvaluation> = evals
        .iter()
        .map(|e| TargetEvaluation { tokens: e.tokens, nll: e.nll, min_k: e.min_k, min_k_pp: e.min_k_pp })
        .collect();
    let settings = TargetSettings { members, leave_out: args.leave_out, bootstrap: args.bootstrap };
    let report = attacks::attack_model(&run, &logs, &target, &settings).map_err(|e| match e {
        analysis::Error::NotAShadow { .. } => anyhow::anyhow!("--leave-out {e}"),
        e => e.into(),
    })?;
    schema::write(&args.out, &report.table, None)?;
    print!("{report}");
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
