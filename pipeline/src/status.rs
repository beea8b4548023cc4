//! `cfmem status RUN`: the job queue's [`StatusReport`] of a run, as text or JSON. It never
//! reads the corpus nor the tokenizer.

use std::path::Path;

use anyhow::Result;

use queue::Queue;
use queue::status::StatusReport;
use subsets::layout::RunDir;

pub fn status(run: &Path, json: bool) -> Result<()> {
    let run_dir = RunDir::new(run);
    let status = Queue::open(run_dir.clone())?.status()?;
    let report = StatusReport::new(run.display().to_string(), &status, queue::slurm::task_states(&run_dir)?);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
