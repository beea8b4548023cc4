//! `cfmem report`: draws the HTML report of an analyzed run ([`analysis::html_report`]),
//! written atomically, and says where and how large.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;

use analysis::measure::Measure;
use subsets::layout::RunDir;

pub fn write(run: &Path, out: Option<&Path>, top: usize, rank_by: Option<Measure>) -> Result<PathBuf> {
    let started = Instant::now();
    let (path, bytes) = analysis::html_report::write(&RunDir::new(run), out, top, rank_by)?;
    println!("report: {}", path.display());
    eprintln!("wrote {} KB in {:.2} s", bytes.div_ceil(1024), started.elapsed().as_secs_f64());
    Ok(path)
}
