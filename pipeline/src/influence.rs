//! `cfmem influence`: flags to [`analysis::influence`] settings, then the table and the
//! printed summary.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;

use analysis::influence::{self, InfluenceSettings, Targets};
use analysis::per_model::RunLogs;
use subsets::layout::RunDir;

#[derive(Args)]
pub struct InfluenceArgs {
    run: PathBuf,
    /// Target documents: `holdout` (the run's held-out documents: audits test-set
    /// contamination), `all`, or `ids FILE` (one document id per line).
    #[arg(long, num_args = 1..=2, value_names = ["holdout|all|ids", "FILE"], default_values = ["holdout"])]
    targets: Vec<String>,
    /// Training documents kept per target, strongest first.
    #[arg(long, default_value_t = InfluenceSettings::default().top)]
    top: usize,
    /// Leave out pairs whose |infl_acc| is below this.
    #[arg(long, default_value_t = InfluenceSettings::default().min_abs)]
    min_abs: f64,
}

impl InfluenceArgs {
    fn settings(&self) -> Result<InfluenceSettings> {
        let targets = match self.targets.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["holdout"] => Targets::Holdout,
            ["all"] => Targets::All,
            ["ids", file] => Targets::Ids(PathBuf::from(file)),
            _ => bail!("--targets: expected holdout, all or ids FILE, got {:?}", self.targets.join(" ")),
        };
        if !(self.min_abs >= 0.0 && self.min_abs.is_finite()) {
            bail!("--min-abs: must be a non-negative number, got {}", self.min_abs);
        }
        Ok(InfluenceSettings { targets, top: self.top, min_abs: self.min_abs })
    }
}

pub fn run(args: &InfluenceArgs) -> Result<()> {
    let settings = args.settings()?;
    write(&args.run, &RunLogs::open(&RunDir::new(&args.run))?, &settings)
}

/// Computes, writes and prints the influence `settings` ask for, from `logs`, the complete
/// logs of `run` a command already verified.
pub fn write(run: &Path, logs: &RunLogs, settings: &InfluenceSettings) -> Result<()> {
    let run = RunDir::new(run);
    let found = influence::influence(&run, logs, settings)?;
    found.write(&run)?;
    print!("{}", found.summary);
    eprintln!("wrote {}", run.influence().display());
    Ok(())
}
