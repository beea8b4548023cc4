//! A job's log (`RUN/logs/job-NNNNN.parquet`) and its completion record
//! (`RUN/logs/job-NNNNN.done`): writing them, and whether a log can be trusted.
//!
//! A log is written by [`LogWriter`] row group by row group into a temporary file, hashed as
//! its bytes are written, then renamed into place; its completion record comes last and is
//! the only proof that a job is complete. Where the files are is [`RunDir`]'s to say; what
//! a log's rows are is `subsets::schema`'s.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use subsets::layout::RunDir;
use subsets::schema::{LogTable, Table, TableWriter};
use subsets::{Error as FileError, atomic};

use crate::{Error, Result};

/// Whether a job's log can be trusted, from its completion record and its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogState {
    /// The log matches the record written at completion.
    Complete,
    /// Neither a log nor a completion record: the job has not run.
    NotRun,
    /// The log or its record is missing, unreadable, or they disagree; the reason says
    /// which. The job is redone.
    Damaged(&'static str),
}

/// The state of `job`'s log, every byte hashed against the recorded sha256 and the row
/// count read from the log's footer (what `analyze` trusts).
pub fn state(run: &RunDir, job: u32) -> Result<LogState> {
    checked_state(run, job, true)
}

/// The state of `job`'s log from its size and mtime when they are as recorded, hashing the
/// bytes only when they are not (what `run` and `status` use on every start).
pub fn quick_state(run: &RunDir, job: u32) -> Result<LogState> {
    checked_state(run, job, false)
}

fn checked_state(run: &RunDir, job: u32, full: bool) -> Result<LogState> {
    let log = run.log(job);
    let recorded = match Completion::read(&run.log_done(job)) {
        Ok(recorded) => recorded,
        Err(Error::Files(FileError::File { .. })) => return Ok(LogState::Damaged("unreadable completion record")),
        Err(e) => return Err(e),
    };
    let Some(recorded) = recorded else {
        return Ok(if log.exists() { LogState::Damaged("log has no completion record") } else { LogState::NotRun });
    };
    let metadata = match std::fs::metadata(&log) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(LogState::Damaged("completion record without a log"));
        }
        Err(e) => return Err(FileError::io(&log)(e).into()),
    };
    if !full && recorded.bytes == metadata.len() && recorded.modified_ns == modified_ns(&metadata) {
        return Ok(LogState::Complete);
    }
    let bytes = std::fs::read(&log).map_err(FileError::io(&log))?;
    if subsets::corpus::sha256_hex(&bytes) != recorded.sha256 {
        return Ok(LogState::Damaged("log does not match its recorded checksum"));
    }
    if full && footer_rows(bytes) != Some(recorded.rows) {
        return Ok(LogState::Damaged("log's row count differs from its completion record"));
    }
    Ok(LogState::Complete)
}

/// Deletes the temporary files of `job`'s log and completion record that a killed worker
/// left; only the holder of the job's claim may call this.
pub fn remove_temporaries(run: &RunDir, job: u32) -> Result<usize> {
    let prefix = run.log_temp_prefix(job);
    remove_matching(&run.logs_dir(), |name| name.starts_with(&prefix) && name.ends_with(".tmp"))
}

/// Deletes temporary files that killed workers left in `logs/` and `claims/` (other than
/// job logs, which [`remove_temporaries`] cleans) once they are older than `seconds`, so
/// that no live worker's file is touched.
pub fn remove_old_temporaries(run: &RunDir, seconds: f64) -> Result<usize> {
    let old = |dir: PathBuf, name: &str| {
        let modified = std::fs::metadata(dir.join(name)).map_or(f64::INFINITY, |m| modified_ns(&m) as f64 / 1e9);
        unix_now() - modified > seconds
    };
    let mut removed = 0;
    if run.logs_dir().exists() {
        removed += remove_matching(&run.logs_dir(), |name| {
            name.starts_with(".cfmem-") && name.ends_with(".tmp") && old(run.logs_dir(), name)
        })?;
    }
    if run.claims_dir().exists() {
        removed +=
            remove_matching(&run.claims_dir(), |name| name.contains(".broken-by-") && old(run.claims_dir(), name))?;
    }
    Ok(removed)
}

/// Deletes the files of `dir` whose names `matches`; returns how many.
fn remove_matching(dir: &Path, matches: impl Fn(&str) -> bool) -> Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).map_err(FileError::io(dir))? {
        let entry = entry.map_err(FileError::io(dir))?;
        if entry.file_name().to_str().is_some_and(&matches) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(FileError::io(entry.path())(e).into()),
            }
        }
    }
    Ok(removed)
}

/// The row count in the footer of the Parquet file `bytes`, None when it has no valid footer.
fn footer_rows(bytes: Vec<u8>) -> Option<u64> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).ok()?;
    u64::try_from(reader.metadata().file_metadata().num_rows()).ok()
}

/// Nanoseconds since the Unix epoch of a file's last modification (0 when unknown).
pub fn modified_ns(metadata: &std::fs::Metadata) -> u64 {
    metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The record a job writes beside its log when the log is complete. `sha256` and `rows` are
/// of the bytes and rows as they were written; `bytes` and `modified_ns` let a later
/// `cfmem run` trust an unchanged log without reading it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Completion {
    pub sha256: String,
    pub rows: u64,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub modified_ns: u64,
    /// The models of the job.
    #[serde(default)]
    pub models: u32,
    /// Where the job ran.
    #[serde(default)]
    pub host: String,
    /// Unix seconds when the job was claimed and when its log was published.
    #[serde(default)]
    pub started: f64,
    #[serde(default)]
    pub finished: f64,
}

impl Completion {
    /// Writes the record of `job` of `run`, through a temporary file named like the job's
    /// log's, which the job's next claimant removes should this writer be killed midway.
    pub fn write(&self, run: &RunDir, job: u32) -> Result<()> {
        let text = toml::to_string(self).expect("a completion record always serializes");
        let path = run.log_done(job);
        Ok(atomic::write_with_prefix(&path, &run.log_temp_prefix(job), |file| {
            file.write_all(text.as_bytes()).map_err(FileError::io(&path))
        })?)
    }

    /// The record at `path`, or None when there is none; an error naming the file when it is
    /// not a record.
    pub fn read(path: &Path) -> Result<Option<Completion>> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map(Some).map_err(|e| FileError::file(path, e.to_string()).into()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(FileError::file(path, e.to_string()).into()),
            Err(e) => Err(FileError::io(path)(e).into()),
        }
    }
}

/// A file that hashes and counts the bytes written to it.
struct HashingFile {
    file: std::fs::File,
    hasher: Sha256,
    bytes: u64,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.file.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Who ran a job and when, for its completion record.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub models: u32,
    pub host: String,
    pub started: f64,
}

/// A job's log being written: each part is a row group of a temporary file in `logs/`,
/// hashed as it is written, so the log is never held whole; [`LogWriter::publish`] renames
/// it into place and writes the completion record. Dropped unpublished, the temporary file
/// is deleted.
pub struct LogWriter {
    run: RunDir,
    job: u32,
    writer: TableWriter<LogTable, HashingFile>,
    temp: tempfile::TempPath,
    rows: u64,
}

impl LogWriter {
    /// A log for `job` of the run whose seed is `run_seed` (written into its metadata).
    pub fn create(run: &RunDir, job: u32, run_seed: u64) -> Result<LogWriter> {
        let dir = run.logs_dir();
        std::fs::create_dir_all(&dir).map_err(FileError::io(&dir))?;
        let prefix = run.log_temp_prefix(job);
        let temp = atomic::builder(&prefix, ".tmp", false).tempfile_in(&dir).map_err(FileError::io(&dir))?;
        let (file, temp) = temp.into_parts();
        let writer = TableWriter::new(HashingFile { file, hasher: Sha256::new(), bytes: 0 }, &temp, Some(run_seed))?;
        Ok(LogWriter { run: run.clone(), job, writer, temp, rows: 0 })
    }

    /// Appends `part` as one row group.
    pub fn write(&mut self, part: &LogTable) -> Result<()> {
        self.rows += part.len() as u64;
        Ok(self.writer.write(part)?)
    }

    /// Ends the file, makes it durable, renames it over the job's log and writes the
    /// completion record (any older record is removed first).
    pub fn publish(self, job: JobRecord) -> Result<Completion> {
        let log = self.run.log(self.job);
        let done = self.run.log_done(self.job);
        let HashingFile { file, hasher, bytes } = self.writer.finish()?;
        file.sync_all().map_err(FileError::io(&*self.temp))?;
        drop(file);
        match std::fs::remove_file(&done) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(FileError::io(&done)(e).into()),
            _ => {}
        }
        self.temp.persist(&log).map_err(|e| FileError::Io { path: log.clone(), source: e.error })?;
        atomic::sync_dir(&self.run.logs_dir())?;
        let metadata = std::fs::metadata(&log).map_err(FileError::io(&log))?;
        let record = Completion {
            sha256: hex::encode(hasher.finalize()),
            rows: self.rows,
            bytes,
            modified_ns: modified_ns(&metadata),
            models: job.models,
            host: job.host,
            started: job.started,
            finished: unix_now(),
        };
        record.write(&self.run, self.job)?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use subsets::schema;

    fn rows(model: u32, docs: u32) -> LogTable {
        LogTable {
            checkpoint: vec![1.0; docs as usize],
            step: vec![7; docs as usize],
            model: vec![model; docs as usize],
            doc: (0..docs).collect(),
            in_train: (0..docs).map(|d| d % 2 == 0).collect(),
            tokens: vec![4; docs as usize],
            nll: (0..docs).map(f64::from).collect(),
            correct: vec![1; docs as usize],
            copies: (0..docs).map(|d| (d % 2 == 0).into()).collect(),
            min_k: (0..docs).map(|d| Some(-f64::from(d))).collect(),
            min_k_pp: vec![None; docs as usize],
        }
    }

    fn record() -> JobRecord {
        JobRecord { models: 2, host: "here".into(), started: 1.0 }
    }

    #[test]
    fn a_streamed_log_is_published_with_the_checksum_of_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let mut log = LogWriter::create(&run, 3, 0).unwrap();
        log.write(&rows(0, 5)).unwrap();
        assert_eq!(quick_state(&run, 3).unwrap(), LogState::NotRun, "nothing is published before the end");
        log.write(&rows(1, 5)).unwrap();
        let completion = log.publish(record()).unwrap();
        let bytes = std::fs::read(run.log(3)).unwrap();
        assert_eq!(completion.sha256, subsets::corpus::sha256_hex(&bytes));
        assert_eq!((completion.rows, completion.bytes, completion.models), (10, bytes.len() as u64, 2));
        assert_eq!(Completion::read(&run.log_done(3)).unwrap(), Some(completion));
        let mut both = rows(0, 5);
        both.append(rows(1, 5));
        assert_eq!(schema::read::<LogTable>(&run.log(3)).unwrap(), both);
        let file = std::fs::File::open(run.log(3)).unwrap();
        let row_groups = parquet::file::reader::FileReader::num_row_groups(
            &parquet::file::reader::SerializedFileReader::new(file).unwrap(),
        );
        assert_eq!(row_groups, 2, "one row group per part");
        assert_eq!(std::fs::read_dir(run.logs_dir()).unwrap().count(), 2, "no temporary file is left");
        assert_eq!(quick_state(&run, 3).unwrap(), LogState::Complete);
        assert_eq!(state(&run, 3).unwrap(), LogState::Complete);
    }

    #[test]
    fn state_trusts_only_a_log_that_matches_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        std::fs::create_dir_all(run.logs_dir()).unwrap();
        assert_eq!(state(&run, 3).unwrap(), LogState::NotRun);
        let mut log = LogWriter::create(&run, 3, 0).unwrap();
        log.write(&rows(0, 4)).unwrap();
        let completion = log.publish(record()).unwrap();

        // Same size, another byte: the mtime changed, so even the quick check hashes.
        let mut bytes = std::fs::read(run.log(3)).unwrap();
        bytes[10] ^= 1;
        std::fs::write(run.log(3), &bytes).unwrap();
        let file = std::fs::File::options().write(true).open(run.log(3)).unwrap();
        file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1)).unwrap();
        assert_eq!(quick_state(&run, 3).unwrap(), LogState::Damaged("log does not match its recorded checksum"));
        assert_eq!(state(&run, 3).unwrap(), LogState::Damaged("log does not match its recorded checksum"));

        // A record whose row count is wrong passes the hash but not the full check.
        bytes[10] ^= 1;
        std::fs::write(run.log(3), &bytes).unwrap();
        let metadata = std::fs::metadata(run.log(3)).unwrap();
        let wrong_rows = Completion { rows: 5, modified_ns: modified_ns(&metadata), ..completion.clone() };
        wrong_rows.write(&run, 3).unwrap();
        assert_eq!(quick_state(&run, 3).unwrap(), LogState::Complete);
        assert_eq!(state(&run, 3).unwrap(), LogState::Damaged("log's row count differs from its completion record"));

        std::fs::write(run.log_done(3), b"sha256 = [not a record").unwrap();
        assert_eq!(quick_state(&run, 3).unwrap(), LogState::Damaged("unreadable completion record"));
        std::fs::remove_file(run.log_done(3)).unwrap();
        assert_eq!(state(&run, 3).unwrap(), LogState::Damaged("log has no completion record"));
        completion.write(&run, 3).unwrap();
        std::fs::remove_file(run.log(3)).unwrap();
        assert_eq!(state(&run, 3).unwrap(), LogState::Damaged("completion record without a log"));
    }

    #[test]
    fn an_unpublished_log_leaves_nothing_and_leftovers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let mut log = LogWriter::create(&run, 7, 0).unwrap();
        log.write(&rows(0, 3)).unwrap();
        drop(log);
        assert_eq!(std::fs::read_dir(run.logs_dir()).unwrap().count(), 0);
        std::fs::write(run.logs_dir().join(".job-00007-abc.tmp"), b"killed").unwrap();
        std::fs::write(run.logs_dir().join(".job-00008-abc.tmp"), b"another job's").unwrap();
        assert_eq!(remove_temporaries(&run, 7).unwrap(), 1);
        assert_eq!(std::fs::read_dir(run.logs_dir()).unwrap().count(), 1);
    }
}
