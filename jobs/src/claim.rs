//! Claims: which worker trains which job, so that any number of `cfmem run` processes, on
//! one host or on several sharing the run directory, train every job once.
//!
//! A claim is `RUN/claims/job-NNNNN.claim`, created with create-exclusive (`O_EXCL`) and
//! holding the holder's host, pid, start time and a token unique to it. Its mtime is the
//! heartbeat: the holder touches it every quarter of `jobs.claim_timeout`. A claim whose
//! heartbeat is older than the timeout is stale; a worker breaks it by renaming it to a name
//! of its own (rename is atomic, so of two workers breaking one claim only one succeeds),
//! checks that what it moved is the file it judged stale (the inode), deletes it and
//! creates its own claim. Only rename and create-exclusive are relied on, so this works on
//! NFS-like shared directories; hosts' clocks must agree to well within the timeout.
//!
//! A claim says who is working; the completion record beside a log stays the only proof that
//! a job is done.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use subsets::layout::{RunDir, unix_now};

use crate::Result;

/// What a claim file says about its holder.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    /// Unix seconds when the claim was made.
    pub started: f64,
    /// host, pid and start time in nanoseconds: tells this claim from any other.
    pub token: String,
}

impl Holder {
    /// This process, now.
    pub fn current() -> Holder {
        let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
        let pid = std::process::id();
        let started = unix_now();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Holder { token: format!("{host}-{pid}-{nanos}"), host, pid, started }
    }

    fn to_toml(&self) -> String {
        toml::to_string(self).expect("a claim always serializes")
    }
}

/// A claim file as another worker sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimInfo {
    /// None when the file is empty or unreadable (its holder died while writing it).
    pub holder: Option<Holder>,
    /// Seconds since the last heartbeat.
    pub heartbeat_age: f64,
    pub stale: bool,
    /// Device, inode and mtime: tells this file from a claim made after it at the same path.
    identity: (u64, u64, u64),
}

impl ClaimInfo {
    /// `host:pid`, or a note that the claim names no holder.
    pub fn describe(&self) -> String {
        match &self.holder {
            Some(h) => format!("{}:{}", h.host, h.pid),
            None => "an unknown worker (unreadable claim)".to_string(),
        }
    }
}

/// The claim on `job`, if there is one.
pub fn inspect(run: &RunDir, job: u32, timeout: f64) -> Result<Option<ClaimInfo>> {
    read_claim(&run.claim(job), timeout)
}

fn read_claim(path: &Path, timeout: f64) -> Result<Option<ClaimInfo>> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(subsets::Error::io(path)(e).into()),
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(_) => String::new(),
    };
    let heartbeat = subsets::layout::modified_ns(&metadata) as f64 / 1e9;
    let heartbeat_age = (unix_now() - heartbeat).max(0.0);
    Ok(Some(ClaimInfo {
        holder: toml::from_str(&text).ok(),
        heartbeat_age,
        stale: heartbeat_age > timeout,
        identity: identity(&metadata),
    }))
}

/// What [`Claim::acquire`] found.
pub enum Acquired {
    /// The job is ours; `broke` is the stale claim taken over, if any.
    Ours { claim: Claim, broke: Option<ClaimInfo> },
    /// Another worker holds a live claim.
    Held(ClaimInfo),
}

/// A claim this process holds. A background thread refreshes its heartbeat and watches
/// that the claim is still ours; dropping the claim stops the thread, [`Claim::release`]
/// also deletes the file.
pub struct Claim {
    path: PathBuf,
    token: String,
    lost: Arc<AtomicBool>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
    pub holder: Holder,
}

impl Claim {
    /// Claims `job` for this process, breaking a claim whose heartbeat is older than
    /// `timeout` seconds.
    pub fn acquire(run: &RunDir, job: u32, timeout: f64) -> Result<Acquired> {
        let dir = run.claims_dir();
        std::fs::create_dir_all(&dir).map_err(subsets::Error::io(&dir))?;
        let path = run.claim(job);
        let mut broke = None;
        loop {
            let holder = Holder::current();
            match std::fs::File::options().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(holder.to_toml().as_bytes())
                        .and_then(|()| file.sync_all())
                        .map_err(subsets::Error::io(&path))?;
                    return Ok(Acquired::Ours { claim: Claim::hold(path, holder, timeout), broke });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(subsets::Error::io(&path)(e).into()),
            }
            let Some(found) = read_claim(&path, timeout)? else { continue };
            if !found.stale {
                return Ok(Acquired::Held(found));
            }
            if break_claim(&path, &found, &holder.token)? {
                broke = Some(found);
            }
        }
    }

    fn hold(path: PathBuf, holder: Holder, timeout: f64) -> Claim {
        let lost = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let interval = Duration::from_secs_f64(timeout / 4.0);
        let (beat_path, token, beat_lost) = (path.clone(), holder.token.clone(), lost.clone());
        let heartbeat = std::thread::spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                if !still_ours(&beat_path, &token) {
                    beat_lost.store(true, Ordering::SeqCst);
                    return;
                }
                if let Ok(file) = std::fs::File::options().write(true).open(&beat_path) {
                    let _ = file.set_modified(std::time::SystemTime::now());
                }
            }
        });
        Claim { path, token: holder.token.clone(), lost, stop: Some(stop), heartbeat: Some(heartbeat), holder }
    }

    /// Whether the claim is still this process's: false once another worker broke it.
    pub fn is_ours(&self) -> bool {
        !self.lost.load(Ordering::SeqCst) && still_ours(&self.path, &self.token)
    }

    /// Stops the heartbeat and deletes the claim if it is still ours.
    pub fn release(mut self) -> Result<()> {
        self.stop_heartbeat();
        if still_ours(&self.path, &self.token) {
            match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(subsets::Error::io(&self.path)(e).into());
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn stop_heartbeat(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.heartbeat.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

fn still_ours(path: &Path, token: &str) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| toml::from_str::<Holder>(&text).ok())
        .is_some_and(|holder| holder.token == token)
}

fn identity(metadata: &std::fs::Metadata) -> (u64, u64, u64) {
    (metadata.dev(), metadata.ino(), subsets::layout::modified_ns(metadata))
}

/// Renames the stale claim `found` at `path` away and deletes it; true when it was that
/// claim. If another worker replaced it in the meantime, the fresh claim is put back.
fn break_claim(path: &Path, found: &ClaimInfo, token: &str) -> Result<bool> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("claim");
    let aside = path.with_file_name(format!(".{name}.broken-by-{token}"));
    match std::fs::rename(path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(subsets::Error::io(path)(e).into()),
    }
    let moved = std::fs::metadata(&aside).map_err(subsets::Error::io(&aside))?;
    let same = identity(&moved) == found.identity;
    if !same {
        // A fresh claim made after we judged the old one stale: restore it unless yet
        // another claim took the place.
        let _ = std::fs::hard_link(&aside, path);
    }
    std::fs::remove_file(&aside).map_err(subsets::Error::io(&aside))?;
    Ok(same)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(path: &Path, seconds: u64) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(std::time::SystemTime::now() - Duration::from_secs(seconds)).unwrap();
    }

    #[test]
    fn one_claim_per_job_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let Acquired::Ours { claim, broke: None } = Claim::acquire(&run, 2, 60.0).unwrap() else { panic!("free") };
        let Acquired::Held(info) = Claim::acquire(&run, 2, 60.0).unwrap() else { panic!("taken") };
        assert_eq!(info.holder.as_ref(), Some(&claim.holder));
        assert!(!info.stale && info.heartbeat_age < 5.0);
        assert!(claim.is_ours());
        claim.release().unwrap();
        assert!(inspect(&run, 2, 60.0).unwrap().is_none());
        assert!(matches!(Claim::acquire(&run, 2, 60.0).unwrap(), Acquired::Ours { broke: None, .. }));
    }

    #[test]
    fn a_stale_claim_is_taken_over_and_its_holder_learns_it_lost() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let Acquired::Ours { claim: first, .. } = Claim::acquire(&run, 0, 60.0).unwrap() else { panic!() };
        age(&run.claim(0), 120);
        let Acquired::Ours { claim: second, broke: Some(broken) } = Claim::acquire(&run, 0, 60.0).unwrap() else {
            panic!("a stale claim is broken")
        };
        assert_eq!(broken.holder.as_ref(), Some(&first.holder));
        assert!(broken.stale && broken.heartbeat_age >= 119.0);
        assert!(!first.is_ours() && second.is_ours());
        first.release().unwrap();
        assert!(second.is_ours(), "releasing a lost claim leaves the new holder's file");
        let names: Vec<_> = std::fs::read_dir(run.claims_dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["job-00000.claim"], "the broken claim is deleted");
    }

    #[test]
    fn an_empty_claim_from_a_killed_worker_goes_stale_too() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        std::fs::create_dir_all(run.claims_dir()).unwrap();
        std::fs::write(run.claim(4), b"").unwrap();
        let Acquired::Held(info) = Claim::acquire(&run, 4, 60.0).unwrap() else { panic!("fresh") };
        assert_eq!(info.describe(), "an unknown worker (unreadable claim)");
        age(&run.claim(4), 61);
        assert!(matches!(Claim::acquire(&run, 4, 60.0).unwrap(), Acquired::Ours { broke: Some(_), .. }));
    }

    #[test]
    fn the_heartbeat_keeps_a_claim_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let Acquired::Ours { claim, .. } = Claim::acquire(&run, 1, 0.4).unwrap() else { panic!() };
        std::thread::sleep(Duration::from_millis(900));
        let info = inspect(&run, 1, 0.4).unwrap().unwrap();
        assert!(!info.stale, "heartbeat age {}", info.heartbeat_age);
        claim.release().unwrap();
    }

    #[test]
    fn breaking_checks_it_moved_the_stale_file() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        std::fs::create_dir_all(run.claims_dir()).unwrap();
        std::fs::write(run.claim(5), Holder::current().to_toml()).unwrap();
        age(&run.claim(5), 100);
        let judged = inspect(&run, 5, 60.0).unwrap().unwrap();
        // Another worker breaks it and claims the job before we rename.
        std::fs::remove_file(run.claim(5)).unwrap();
        let fresh = Holder::current().to_toml();
        std::fs::write(run.claim(5), &fresh).unwrap();
        assert!(!break_claim(&run.claim(5), &judged, "late").unwrap());
        assert_eq!(std::fs::read_to_string(run.claim(5)).unwrap(), fresh, "the fresh claim is put back");
    }
}
