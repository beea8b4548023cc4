//! `cfmem report`: draws the HTML report of an analyzed run (`analysis::html_report`) and
//! writes it atomically.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;

use analysis::html_report::{self, ReportData};
use analysis::measure::Measure;
use subsets::atomic;
use subsets::layout::RunDir;

/// Writes the report of `run` to `out` (default `RUN/analysis/report.html`) with the `top`
/// most and least memorized documents by `rank_by` (default: as the analysis ranked),
/// prints its path and returns it.
pub fn write(run: &Path, out: Option<&Path>, top: usize, rank_by: Option<Measure>) -> Result<PathBuf> {
    let started = Instant::now();
    let run = RunDir::new(run);
    let page = html_report::render(&ReportData::load(&run, rank_by)?, top);
    let path = out.map_or_else(|| run.report(), Path::to_path_buf);
    atomic::write_bytes(&path, page.as_bytes())?;
    println!("report: {}", path.display());
    eprintln!("wrote {} KB in {:.2} s", page.len().div_ceil(1024), started.elapsed().as_secs_f64());
    Ok(path)
}
