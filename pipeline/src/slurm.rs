//! `cfmem slurm RUN`: the flags into [`queue::slurm::ArraySettings`]; the array is written
//! (and with `--submit` submitted) by [`queue::slurm`], each task running this binary.

use std::path::Path;

use anyhow::{Context, Result};

use queue::slurm::{self, ArraySettings};
use subsets::layout::RunDir;

pub fn slurm(run: &Path, settings: &ArraySettings, submit: bool) -> Result<()> {
    let run_dir = RunDir::new(std::path::absolute(run).with_context(|| format!("{}", run.display()))?);
    let binary = std::env::current_exe().context("the path of this cfmem binary")?;
    let script = slurm::write_array(&run_dir, &binary, settings)?;
    eprintln!("wrote {}", script.display());
    if submit {
        let id = slurm::submit(&run_dir)?;
        println!("{id}");
        eprintln!("submitted Slurm job {id}; `cfmem status {}` follows it", run.display());
    }
    Ok(())
}
