//! Choosing, claiming, running and publishing the jobs of a planned run. A job is one stack
//! of models: a worker claims it ([`crate::claim`]), reads only its models' membership
//! rows, hands the stack to a [`Trainer`] and streams the rows it returns into the job's
//! log, row group by row group; the log is published (renamed into place, then its
//! completion record written) only when the whole stack is done, so a killed worker loses
//! at most the stack it was training. A job never touches another job's files, so any
//! number of workers can share a run.

use std::cell::Cell;
use std::time::Duration;

use subsets::membership;
use subsets::schema::LogTable;

use crate::claim::{Acquired, Claim};
use crate::log::{self, JobRecord, LogState, LogWriter};
use crate::progress::{JobOutcome, Progress};
use crate::{Error, Queue, Result};

/// What trains and evaluates the models of a job: the runner's only view of models.
pub trait Trainer {
    /// The trainer's errors; the queue's own errors convert into them.
    type Error: From<Error>;

    /// Trains the stack `models` of `job`, each model with the sorted documents it trains
    /// on, evaluates each model on every document, and hands the log rows to `rows` in
    /// parts (each becomes a row group of the log, in order). An error from `rows` (the
    /// claim was lost, the log could not be written) must end the job and be returned.
    fn train_job(
        &self,
        job: u32,
        models: &[(u32, &[u32])],
        progress: &dyn Progress,
        rows: &mut dyn FnMut(LogTable) -> Result<()>,
    ) -> Result<(), Self::Error>;
}

/// Which jobs a worker runs: all (None) or the listed ones, and at most `max_jobs` of them.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub jobs: Option<Vec<u32>>,
    pub max_jobs: Option<usize>,
}

impl Selection {
    /// Whether this worker's jobs include the run's first, `first`: that worker alone does
    /// what a run needs once (the base's evaluation for the membership attacks' reference).
    pub fn includes_first(&self, first: Option<u32>) -> bool {
        self.jobs.as_ref().is_none_or(|jobs| first.is_some_and(|f| jobs.contains(&f)))
    }
}

/// Parses a job list such as `3,7-9` into `[3, 7, 8, 9]` (`cfmem run --jobs`).
///
/// ```
/// assert_eq!(queue::parse_jobs("3,7-9").unwrap(), [3, 7, 8, 9]);
/// assert!(queue::parse_jobs("2-x").unwrap_err().contains("\"x\" is not a job number"));
/// ```
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

/// How a job this worker held ended.
enum Held {
    Published,
    /// Another worker broke the claim: the job is theirs now, or again to be claimed.
    ClaimLost,
}

impl Queue {
    /// Runs the selected jobs whose logs are not complete, claiming each first; returns each
    /// job's outcome. Jobs another worker holds are waited for, polling, until they are
    /// complete or their claims go stale and are taken over, so on return every selected job
    /// is complete (unless `max_jobs` stopped the worker first). When the trainer fails,
    /// the job's claim is released and nothing of its log is published.
    pub fn run<T: Trainer>(
        &self,
        trainer: &T,
        selection: &Selection,
        progress: &dyn Progress,
    ) -> Result<Vec<(u32, JobOutcome)>, T::Error> {
        let mut pending = self.selected(selection)?;
        let timeout = self.claim_timeout();
        log::remove_old_temporaries(&self.run, timeout)?;
        let mut outcomes = Vec::new();
        let mut trained = 0;
        loop {
            let mut waiting = Vec::new();
            for job in pending {
                if selection.max_jobs.is_some_and(|max| trained >= max) {
                    return Ok(outcomes);
                }
                // A complete job whose claim is still there goes through the claim: its
                // holder is releasing it, or died after publishing and the claim goes stale.
                if log::quick_state(&self.run, job)? == LogState::Complete && !self.run.claim(job).exists() {
                    progress.job_finished(job, &JobOutcome::Skipped);
                    outcomes.push((job, JobOutcome::Skipped));
                    continue;
                }
                let claim = match Claim::acquire(&self.run, job, timeout)? {
                    Acquired::Held(_) => {
                        waiting.push(job);
                        continue;
                    }
                    Acquired::Ours { claim, broke } => {
                        if let Some(stale) = broke {
                            progress.claim_taken_over(job, &stale);
                        }
                        claim
                    }
                };
                // Checked again now that the job is ours: another worker may have finished
                // it between the first check and the claim.
                let outcome = match log::quick_state(&self.run, job)? {
                    LogState::Complete => JobOutcome::Skipped,
                    LogState::NotRun => JobOutcome::Ran,
                    LogState::Damaged(reason) => JobOutcome::Redone(reason),
                };
                if outcome != JobOutcome::Skipped {
                    match self.run_job(trainer, job, &claim, progress) {
                        Ok(Held::Published) => trained += 1,
                        Ok(Held::ClaimLost) => {
                            waiting.push(job);
                            continue;
                        }
                        Err(e) => {
                            // Nobody works on the job any more: say so to the other workers.
                            // The trainer's error is the one worth reporting.
                            let _ = claim.release();
                            return Err(e);
                        }
                    }
                }
                claim.release()?;
                progress.job_finished(job, &outcome);
                outcomes.push((job, outcome));
            }
            if waiting.is_empty() {
                return Ok(outcomes);
            }
            progress.waiting_for_claims(&waiting);
            std::thread::sleep(Duration::from_secs_f64((timeout / 4.0).clamp(0.1, 10.0)));
            pending = waiting;
        }
    }

    /// The jobs `selection` names, all of them by default; an unknown job is an error.
    fn selected(&self, selection: &Selection) -> Result<Vec<u32>> {
        let Some(jobs) = &selection.jobs else { return Ok(self.job_ids()) };
        if let Some(job) = jobs.iter().find(|job| !self.jobs.contains_key(job)) {
            return Err(Error::Plan {
                path: self.run.jobs(),
                message: format!("there is no job {job}: the run has jobs 0 to {}", self.jobs.len().saturating_sub(1)),
            });
        }
        Ok(jobs.clone())
    }

    /// Trains and evaluates the models of `job`, which `claim` holds, streaming the log and
    /// publishing it with its completion record unless the claim was lost.
    fn run_job<T: Trainer>(
        &self,
        trainer: &T,
        job: u32,
        claim: &Claim,
        progress: &dyn Progress,
    ) -> Result<Held, T::Error> {
        let models = &self.jobs[&job];
        log::remove_temporaries(&self.run, job)?;
        let in_docs = membership::read_models(&self.run.membership(), models).map_err(Error::from)?;
        progress.job_started(job, models.len());
        let stack: Vec<(u32, &[u32])> = models.iter().zip(&in_docs).map(|(&m, docs)| (m, docs.as_slice())).collect();
        let mut log = LogWriter::create(&self.run, job, self.config.seed)?;
        let lost = Cell::new(false);
        let trained = trainer.train_job(job, &stack, progress, &mut |part| {
            if !claim.is_ours() {
                lost.set(true);
                return Err(Error::ClaimLost { job });
            }
            log.write(&part)
        });
        match trained {
            Err(_) if lost.get() => return Ok(Held::ClaimLost),
            Err(e) => return Err(e),
            Ok(()) if !claim.is_ours() => return Ok(Held::ClaimLost),
            Ok(()) => {}
        }
        let record =
            JobRecord { models: models.len() as u32, host: claim.holder.host.clone(), started: claim.holder.started };
        log.publish(record)?;
        Ok(Held::Published)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::path::Path;

    use subsets::schema::{self, LogRow, Table};

    use super::*;
    use crate::Silent;
    use crate::claim::{self, ClaimInfo, Holder};
    use crate::test_run;

    #[derive(Debug)]
    enum TestError {
        Queue(Error),
        Trainer(String),
    }

    impl From<Error> for TestError {
        fn from(e: Error) -> TestError {
            TestError::Queue(e)
        }
    }

    /// A trainer whose log rows follow from the model and its documents, one part per model.
    struct FakeTrainer {
        docs: u32,
        /// The jobs it was asked to train, in order.
        trained: RefCell<Vec<u32>>,
        /// Called before each part is handed over with the job, the part and how many times
        /// the job was asked for; an error ends the job.
        before_part: Box<dyn Fn(u32, usize, usize) -> Result<(), String>>,
    }

    impl FakeTrainer {
        fn new(docs: u32) -> FakeTrainer {
            FakeTrainer::with(docs, |_, _, _| Ok(()))
        }

        fn with(docs: u32, before_part: impl Fn(u32, usize, usize) -> Result<(), String> + 'static) -> FakeTrainer {
            FakeTrainer { docs, trained: RefCell::default(), before_part: Box::new(before_part) }
        }
    }

    fn model_rows(model: u32, in_docs: &[u32], docs: u32) -> LogTable {
        let mut rows = LogTable::default();
        for doc in 0..docs {
            let in_train = in_docs.binary_search(&doc).is_ok();
            let (nll, copies) = (f64::from(model * 100 + doc), u16::from(in_train));
            rows.push(LogRow {
                checkpoint: 1.0,
                step: 10,
                model,
                doc,
                in_train,
                tokens: 4,
                nll,
                correct: 1,
                copies,
                min_k: None,
                min_k_pp: None,
            });
        }
        rows
    }

    impl Trainer for FakeTrainer {
        type Error = TestError;

        fn train_job(
            &self,
            job: u32,
            models: &[(u32, &[u32])],
            _progress: &dyn Progress,
            rows: &mut dyn FnMut(LogTable) -> Result<()>,
        ) -> Result<(), TestError> {
            self.trained.borrow_mut().push(job);
            let asked = self.trained.borrow().iter().filter(|&&j| j == job).count();
            for (part, &(model, in_docs)) in models.iter().enumerate() {
                (self.before_part)(job, part, asked).map_err(TestError::Trainer)?;
                rows(model_rows(model, in_docs, self.docs))?;
            }
            Ok(())
        }
    }

    /// What the runner told, one line per event.
    #[derive(Default)]
    struct Recorder(RefCell<Vec<String>>);

    impl Progress for Recorder {
        fn job_finished(&self, job: u32, outcome: &JobOutcome) {
            self.0.borrow_mut().push(format!("job {job}: {outcome:?}"));
        }

        fn claim_taken_over(&self, job: u32, stale: &ClaimInfo) {
            self.0.borrow_mut().push(format!("job {job}: took over {} ({:?})", stale.describe(), stale.stale));
        }

        fn waiting_for_claims(&self, jobs: &[u32]) {
            self.0.borrow_mut().push(format!("waiting for {jobs:?}"));
        }
    }

    impl Recorder {
        fn events(&self) -> Vec<String> {
            self.0.borrow().clone()
        }
    }

    /// The log a job of `queue` must have: its models' rows, one row group each.
    fn expected_log(queue: &Queue, job: u32, docs: u32) -> LogTable {
        let models = &queue.jobs()[&job];
        let in_docs = membership::read_models(&queue.run_dir().membership(), models).unwrap();
        let mut log = LogTable::default();
        for (&model, in_docs) in models.iter().zip(&in_docs) {
            log.append(model_rows(model, in_docs, docs));
        }
        log
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    fn everything() -> Selection {
        Selection::default()
    }

    #[test]
    fn every_job_runs_once_and_a_later_worker_skips_them() {
        let dir = tempfile::tempdir().unwrap();
        let queue = test_run(dir.path(), 6, 4, 2, 60.0);
        let trainer = FakeTrainer::new(6);
        let outcomes = queue.run(&trainer, &everything(), &Recorder::default()).unwrap();
        assert_eq!(outcomes, [(0, JobOutcome::Ran), (1, JobOutcome::Ran)]);
        let run = queue.run_dir();
        for job in [0, 1] {
            assert_eq!(log::state(run, job).unwrap(), LogState::Complete);
            assert_eq!(schema::read::<LogTable>(&run.log(job)).unwrap(), expected_log(&queue, job, 6));
        }
        assert!(files(&run.claims_dir()).is_empty(), "claims are released");

        let again = FakeTrainer::new(6);
        let progress = Recorder::default();
        let outcomes = queue.run(&again, &everything(), &progress).unwrap();
        assert_eq!(outcomes, [(0, JobOutcome::Skipped), (1, JobOutcome::Skipped)]);
        assert!(again.trained.borrow().is_empty());
        assert_eq!(progress.events(), ["job 0: Skipped", "job 1: Skipped"]);
    }

    #[test]
    fn a_trainer_failing_mid_job_publishes_nothing_and_the_job_is_redone() {
        let dir = tempfile::tempdir().unwrap();
        let queue = test_run(dir.path(), 6, 4, 2, 60.0);
        let failing = FakeTrainer::with(6, |job, part, _| match (job, part) {
            (1, 1) => Err("out of memory".into()),
            _ => Ok(()),
        });
        let err = queue.run(&failing, &everything(), &Recorder::default()).unwrap_err();
        assert!(matches!(&err, TestError::Trainer(m) if m == "out of memory"), "{err:?}");
        let run = queue.run_dir();
        assert_eq!(log::state(run, 0).unwrap(), LogState::Complete);
        assert_eq!(log::state(run, 1).unwrap(), LogState::NotRun, "half a job is never published");
        assert_eq!(files(&run.logs_dir()), ["job-00000.done", "job-00000.parquet"], "no temporary file is left");
        assert!(files(&run.claims_dir()).is_empty(), "the failed job's claim is released");

        let trainer = FakeTrainer::new(6);
        let outcomes = queue.run(&trainer, &everything(), &Recorder::default()).unwrap();
        assert_eq!(outcomes, [(0, JobOutcome::Skipped), (1, JobOutcome::Ran)]);
        assert_eq!(schema::read::<LogTable>(&run.log(1)).unwrap(), expected_log(&queue, 1, 6));
    }

    #[test]
    fn a_killed_workers_claim_and_temporary_log_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        // The default timeout: only the dead process makes the claim stale.
        let queue = test_run(dir.path(), 6, 4, 2, 600.0);
        let run = queue.run_dir();
        let dead = Holder { pid: claim::dead_pid(), ..Holder::current() };
        claim::write_claim(&run.claim(1), &dead);
        std::fs::write(run.logs_dir().join(".job-00001-killed.tmp"), b"half a log").unwrap();

        let progress = Recorder::default();
        let started = std::time::Instant::now();
        let outcomes = queue.run(&FakeTrainer::new(6), &everything(), &progress).unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "no wait for the heartbeat");
        assert_eq!(outcomes, [(0, JobOutcome::Ran), (1, JobOutcome::Ran)]);
        let took_over = format!("job 1: took over {}:{} (Some(HolderGone))", dead.host, dead.pid);
        assert_eq!(progress.events(), ["job 0: Ran", took_over.as_str(), "job 1: Ran"]);
        assert_eq!(files(&run.logs_dir()).len(), 4, "the temporary log is gone: {:?}", files(&run.logs_dir()));
        assert!(files(&run.claims_dir()).is_empty());
    }

    #[test]
    fn a_claim_whose_heartbeat_stopped_is_taken_over_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let queue = test_run(dir.path(), 6, 2, 2, 0.5);
        let run = queue.run_dir();
        let elsewhere = Holder { host: "elsewhere".into(), pid: 7, ..Holder::current() };
        claim::write_claim(&run.claim(0), &elsewhere);

        let progress = Recorder::default();
        let outcomes = queue.run(&FakeTrainer::new(6), &everything(), &progress).unwrap();
        assert_eq!(outcomes, [(0, JobOutcome::Ran)]);
        let events = progress.events();
        assert_eq!(events.first().map(String::as_str), Some("waiting for [0]"));
        assert_eq!(events[events.len() - 2..], ["job 0: took over elsewhere:7 (Some(NoHeartbeat))", "job 0: Ran"]);
    }

    #[test]
    fn damaged_logs_are_redone() {
        let dir = tempfile::tempdir().unwrap();
        let queue = test_run(dir.path(), 6, 6, 2, 60.0);
        queue.run(&FakeTrainer::new(6), &everything(), &Recorder::default()).unwrap();
        let run = queue.run_dir();
        let mut bytes = std::fs::read(run.log(0)).unwrap();
        bytes[10] ^= 1;
        std::fs::write(run.log(0), &bytes).unwrap();
        std::fs::write(run.log_done(1), b"not a record").unwrap();
        std::fs::remove_file(run.log(2)).unwrap();

        let trainer = FakeTrainer::new(6);
        let outcomes = queue.run(&trainer, &everything(), &Recorder::default()).unwrap();
        assert_eq!(
            outcomes,
            [
                (0, JobOutcome::Redone("log does not match its recorded checksum")),
                (1, JobOutcome::Redone("unreadable completion record")),
                (2, JobOutcome::Redone("completion record without a log")),
            ]
        );
        for job in 0..3 {
            assert_eq!(schema::read::<LogTable>(&run.log(job)).unwrap(), expected_log(&queue, job, 6));
            assert_eq!(log::state(run, job).unwrap(), LogState::Complete);
        }
    }

    #[test]
    fn the_selection_and_max_jobs_choose_what_runs() {
        let dir = tempfile::tempdir().unwrap();
        let queue = test_run(dir.path(), 6, 8, 2, 60.0);
        let trainer = FakeTrainer::new(6);
        let chosen = Selection { jobs: Some(vec![3, 1]), max_jobs: None };
        assert_eq!(queue.run(&trainer, &chosen, &Silent).unwrap(), [(3, JobOutcome::Ran), (1, JobOutcome::Ran)]);
        let at_most_one = Selection { jobs: None, max_jobs: Some(1) };
        assert_eq!(queue.run(&trainer, &at_most_one, &Silent).unwrap(), [(0, JobOutcome::Ran)]);
        assert_eq!(*trainer.trained.borrow(), [3, 1, 0]);

        let unknown = Selection { jobs: Some(vec![2, 9]), max_jobs: None };
        let err = queue.run(&trainer, &unknown, &Silent).unwrap_err();
        let jobs = queue.run_dir().jobs();
        assert!(
            matches!(&err, TestError::Queue(e) if e.to_string() == format!("{}: there is no job 9: the run has jobs 0 to 3", jobs.display())),
            "{err:?}"
        );
        assert_eq!(*trainer.trained.borrow(), [3, 1, 0], "nothing runs");
    }

    #[test]
    fn a_claim_lost_mid_job_is_waited_for_and_the_job_redone() {
        let dir = tempfile::tempdir().unwrap();
        let queue = test_run(dir.path(), 6, 2, 2, 0.5);
        let run = queue.run_dir().clone();
        let thief = Holder { host: "elsewhere".into(), pid: 7, ..Holder::current() };
        let stolen = thief.clone();
        // The first time job 0 trains, another worker breaks its claim after the first part.
        let trainer = FakeTrainer::with(6, move |_, part, asked| {
            if (part, asked) == (1, 1) {
                std::fs::remove_file(run.claim(0)).unwrap();
                claim::write_claim(&run.claim(0), &stolen);
            }
            Ok(())
        });
        let progress = Recorder::default();
        let outcomes = queue.run(&trainer, &everything(), &progress).unwrap();
        assert_eq!(outcomes, [(0, JobOutcome::Ran)]);
        assert_eq!(*trainer.trained.borrow(), [0, 0]);
        let events = progress.events();
        assert_eq!(events.first().map(String::as_str), Some("waiting for [0]"));
        assert_eq!(events[events.len() - 2..], ["job 0: took over elsewhere:7 (Some(NoHeartbeat))", "job 0: Ran"]);
        let run = queue.run_dir();
        assert_eq!(schema::read::<LogTable>(&run.log(0)).unwrap(), expected_log(&queue, 0, 6));
        assert_eq!(files(&run.logs_dir()), ["job-00000.done", "job-00000.parquet"]);
    }

    #[test]
    fn a_job_another_worker_holds_is_waited_for_until_it_is_complete() {
        let dir = tempfile::tempdir().unwrap();
        let queue = test_run(dir.path(), 6, 2, 2, 0.4);
        let run = queue.run_dir().clone();
        let Acquired::Ours { claim, .. } = Claim::acquire(&run, 0, 0.4).unwrap() else { panic!("free") };
        let expected = expected_log(&queue, 0, 6);
        let other = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(600));
            let mut log = LogWriter::create(&run, 0, 3).unwrap();
            log.write(&expected).unwrap();
            log.publish(JobRecord { models: 2, host: "other".into(), started: 0.0 }).unwrap();
            claim.release().unwrap();
        });
        let trainer = FakeTrainer::new(6);
        let progress = Recorder::default();
        let outcomes = queue.run(&trainer, &everything(), &progress).unwrap();
        other.join().unwrap();
        assert_eq!(outcomes, [(0, JobOutcome::Skipped)]);
        assert!(trainer.trained.borrow().is_empty());
        assert_eq!(progress.events().first().map(String::as_str), Some("waiting for [0]"));
        assert!(!progress.events().iter().any(|e| e.contains("took over")), "{:?}", progress.events());
    }

    #[test]
    fn job_lists_take_numbers_and_ranges() {
        assert_eq!(parse_jobs("3,7-9").unwrap(), [3, 7, 8, 9]);
        assert_eq!(parse_jobs("5").unwrap(), [5]);
        assert_eq!(parse_jobs("9-7").unwrap_err(), "the range \"9-7\" is empty");
        assert_eq!(parse_jobs("x").unwrap_err(), "\"x\" is not a job number in \"x\"");
    }
}
