//! The queue side of the command line: `--job` lists, `plan --extend`, and the refusal of
//! `analyze` on a run whose jobs are not all complete.

use std::path::Path;

use anyhow::{Result, bail};

use subsets::layout::{LogState, RunDir};
use subsets::plan;
use subsets::schema::{self, JobTable};

/// Parses `3,7-9` into `[3, 7, 8, 9]`.
pub fn parse_jobs(text: &str) -> Result<Vec<u32>, String> {
    let mut jobs = Vec::new();
    for part in text.split(',').map(str::trim) {
        let number = |s: &str| s.trim().parse::<u32>().map_err(|_| format!("{s:?} is not a job number in {text:?}"));
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (number(first)?, number(last)?);
                if first > last {
                    return Err(format!("the range {part:?} is empty"));
                }
                jobs.extend(first..=last);
            }
            None => jobs.push(number(part)?),
        }
    }
    Ok(jobs)
}

pub fn extend(run: &Path, models: u32) -> Result<()> {
    let extension = plan::extend(&RunDir::new(run), models)?;
    eprintln!(
        "extended {} from {} to {} models: new jobs {} to {}; existing models and logs are unchanged",
        run.display(),
        extension.old_models,
        extension.models,
        extension.new_jobs.start,
        extension.new_jobs.end - 1
    );
    Ok(())
}

/// Refuses (unless `partial`) to analyze a run with incomplete jobs, naming them; with
/// `partial`, returns the notice to print with the summary.
pub fn completeness(run: &Path, partial: bool) -> Result<Option<String>> {
    let run_dir = RunDir::new(run);
    if !run_dir.jobs().exists() {
        return Ok(None);
    }
    let table: JobTable = schema::read(&run_dir.jobs())?;
    let mut jobs = table.job.clone();
    jobs.sort_unstable();
    jobs.dedup();
    let incomplete = run_dir.incomplete_jobs(&jobs)?;
    if incomplete.is_empty() {
        return Ok(None);
    }
    let missing_models = table.job.iter().filter(|job| incomplete.iter().any(|(j, _)| j == *job)).count();
    let listed: Vec<String> = incomplete
        .iter()
        .map(|(job, state)| match state {
            LogState::Damaged(reason) => format!("{job} ({reason})"),
            _ => format!("{job} (not run)"),
        })
        .collect();
    let what = format!(
        "{} of {} jobs ({missing_models} of {} models) are not complete: {}",
        incomplete.len(),
        jobs.len(),
        table.model.len(),
        listed.join(", ")
    );
    if !partial {
        bail!(
            "{}: {what}; finish them with `cfmem run {}` or analyze what is there with --partial",
            run.display(),
            run.display()
        );
    }
    Ok(Some(format!(
        "partial analysis: {what}. The design is no longer exactly balanced: each document's estimate rests on \
         the n_in and n_out models of scores.parquet.\n"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_lists_take_numbers_and_ranges() {
        assert_eq!(parse_jobs("3,7-9").unwrap(), [3, 7, 8, 9]);
        assert_eq!(parse_jobs("5").unwrap(), [5]);
        assert!(parse_jobs("9-7").unwrap_err().contains("empty"));
        assert!(parse_jobs("x").unwrap_err().contains("\"x\" is not a job number"));
    }
}
