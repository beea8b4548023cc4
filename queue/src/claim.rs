//! Claims: which worker trains which job, so that any number of `cfmem run` processes, on
//! one host or on several sharing the run directory, train every job once.
//!
//! A claim is `RUN/claims/job-NNNNN.claim`, created with create-exclusive (`O_EXCL`) and
//! holding the holder's host, pid, start time and a token unique to it. Its mtime is the
//! heartbeat: the holder touches it every quarter of `jobs.claim_timeout`. A claim is stale
//! when its heartbeat is older than the timeout, or at once when it was made on this
//! machine and its process is gone (see [`Holder`]); a worker breaks a stale claim by
//! renaming it to a name of its own (rename is atomic, so of two workers breaking one claim
//! only one succeeds), checks that what it moved is the file it judged stale (the inode),
//! deletes it and creates its own claim. Only rename and create-exclusive are relied on, so
//! this works on NFS-like shared directories; hosts' clocks must agree to well within the
//! timeout.
//!
//! A claim says who is working; the completion record beside a log stays the only proof that
//! a job is done.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use subsets::layout::RunDir;

use crate::Result;
use crate::log::{modified_ns, unix_now};

/// What a claim file says about its holder.
///
/// `boot_id`, `pid_namespace` and `start_ticks` let a worker on the same machine see at once
/// that the holder's process is gone, without waiting for its heartbeat to age: the host
/// name alone does not name a machine (containers' hostnames repeat), the boot id
/// (`/proc/sys/kernel/random/boot_id`) does, until the next boot; a pid means a process only
/// within its pid namespace; and a pid is reused, so the process must also have started at
/// the recorded time (field 22 of `/proc/PID/stat`, clock ticks since boot). Claims written
/// without them (by older versions, or where `/proc` is missing) keep the heartbeat rule.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    /// Unix seconds when the claim was made.
    pub started: f64,
    /// host, pid and start time in nanoseconds: tells this claim from any other.
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The target of `/proc/self/ns/pid`, e.g. `pid:[4026531836]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<u64>,
}

/// This machine and this process as `/proc` tells them; None where it cannot.
#[derive(Debug, Clone, PartialEq)]
struct ThisProcess {
    host: String,
    boot_id: Option<String>,
    pid_namespace: Option<String>,
    start_ticks: Option<u64>,
}

fn this_process() -> &'static ThisProcess {
    static THIS: OnceLock<ThisProcess> = OnceLock::new();
    THIS.get_or_init(|| ThisProcess {
        host: rustix::system::uname().nodename().to_string_lossy().into_owned(),
        boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|id| id.trim().to_string()),
        pid_namespace: std::fs::read_link("/proc/self/ns/pid").ok().map(|ns| ns.to_string_lossy().into_owned()),
        start_ticks: std::fs::read_to_string("/proc/self/stat").ok().and_then(|stat| parse_stat(&stat)).map(|s| s.1),
    })
}

/// The state (field 3) and start time (field 22) of a `/proc/PID/stat` line. The command
/// name (field 2) is in parentheses and may itself hold spaces and parentheses, so the
/// fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start_ticks = fields.nth(18)?.parse().ok()?;
    Some((state, start_ticks))
}

/// Whether the process `pid` of this machine's pid namespace that started at `start_ticks`
/// still runs. A zombie (killed, not yet reaped) does not; when `/proc` cannot tell, it
/// is taken to run, and the heartbeat decides.
fn process_runs(pid: u32, start_ticks: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => parse_stat(&stat).is_none_or(|(state, start)| start == start_ticks && !matches!(state, 'Z' | 'X')),
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

impl Holder {
    /// This process, now.
    pub fn current() -> Holder {
        let this = this_process();
        let pid = std::process::id();
        let started = unix_now();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Holder {
            token: format!("{}-{pid}-{nanos}", this.host),
            host: this.host.clone(),
            pid,
            started,
            boot_id: this.boot_id.clone(),
            pid_namespace: this.pid_namespace.clone(),
            start_ticks: this.start_ticks,
        }
    }

    /// True when the holder ran on this machine, in this pid namespace, and its process is
    /// gone; false when that cannot be told (another machine, or a claim without the fields).
    fn process_gone(&self) -> bool {
        let this = this_process();
        let (Some(boot_id), Some(namespace), Some(start_ticks)) =
            (&self.boot_id, &self.pid_namespace, self.start_ticks)
        else {
            return false;
        };
        self.host == this.host
            && this.boot_id.as_ref() == Some(boot_id)
            && this.pid_namespace.as_ref() == Some(namespace)
            && !process_runs(self.pid, start_ticks)
    }

    fn to_toml(&self) -> String {
        toml::to_string(self).expect("a claim always serializes")
    }
}

/// Why a claim is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// No heartbeat for longer than the claim timeout.
    NoHeartbeat,
    /// Made on this machine by a process that is gone.
    HolderGone,
}

/// A claim file as another worker sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimInfo {
    /// None when the file is empty or unreadable (its holder died while writing it).
    pub holder: Option<Holder>,
    /// Seconds since the last heartbeat.
    pub heartbeat_age: f64,
    /// None while the claim is live.
    pub stale: Option<Stale>,
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

    /// Why the claim is stale, in words: `its process is gone; heartbeat 3.0 s ago` or `no
    /// heartbeat for 700.0 s`.
    pub fn staleness(&self) -> String {
        let age = self.heartbeat_age;
        match self.stale {
            Some(Stale::HolderGone) => format!("its process is gone; heartbeat {age:.1} s ago"),
            Some(Stale::NoHeartbeat) | None => format!("no heartbeat for {age:.1} s"),
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
    let holder: Option<Holder> = toml::from_str(&text).ok();
    let heartbeat = modified_ns(&metadata) as f64 / 1e9;
    let heartbeat_age = (unix_now() - heartbeat).max(0.0);
    let stale = if holder.as_ref().is_some_and(Holder::process_gone) {
        Some(Stale::HolderGone)
    } else if heartbeat_age > timeout {
        Some(Stale::NoHeartbeat)
    } else {
        None
    };
    Ok(Some(ClaimInfo { holder, heartbeat_age, stale, identity: identity(&metadata) }))
}

/// What [`Claim::acquire`] found.
// Made once per job a worker claims: boxing the larger variant would save nothing.
#[allow(clippy::large_enum_variant)]
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
    /// Claims `job` for this process, breaking a stale claim (no heartbeat for `timeout`
    /// seconds, or its process gone).
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
            if found.stale.is_none() {
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
    (metadata.dev(), metadata.ino(), modified_ns(metadata))
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

/// A claim file at `path` written by `holder`, as a worker that died after claiming left it.
#[cfg(test)]
pub(crate) fn write_claim(path: &Path, holder: &Holder) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, holder.to_toml()).unwrap();
}

/// A pid of this machine that no process has now: a child that exited and was reaped.
#[cfg(test)]
pub(crate) fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
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
        assert!(info.stale.is_none() && info.heartbeat_age < 5.0);
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
        assert!(broken.stale == Some(Stale::NoHeartbeat) && broken.heartbeat_age >= 119.0);
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
        assert!(info.stale.is_none(), "heartbeat age {}", info.heartbeat_age);
        claim.release().unwrap();
    }

    #[test]
    fn breaking_checks_it_moved_the_stale_file() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        write_claim(&run.claim(5), &Holder::current());
        age(&run.claim(5), 100);
        let judged = inspect(&run, 5, 60.0).unwrap().unwrap();
        // Another worker breaks it and claims the job before we rename.
        std::fs::remove_file(run.claim(5)).unwrap();
        let fresh = Holder::current().to_toml();
        std::fs::write(run.claim(5), &fresh).unwrap();
        assert!(!break_claim(&run.claim(5), &judged, "late").unwrap());
        assert_eq!(std::fs::read_to_string(run.claim(5)).unwrap(), fresh, "the fresh claim is put back");
    }

    #[test]
    fn a_claim_records_this_machine_and_process() {
        let holder = Holder::current();
        assert!(holder.boot_id.as_ref().is_some_and(|id| id.len() == 36), "{holder:?}");
        assert!(holder.pid_namespace.as_ref().is_some_and(|ns| ns.starts_with("pid:[")), "{holder:?}");
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", holder.pid)).unwrap();
        assert_eq!(parse_stat(&stat).map(|s| s.1), holder.start_ticks);
        let text = holder.to_toml();
        assert!(text.contains("boot_id = ") && text.contains("start_ticks = "), "{text}");
        assert_eq!(toml::from_str::<Holder>(&text).unwrap(), holder);
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let fields: Vec<String> = (4..=52).map(|i| i.to_string()).collect();
        let stat = format!("4242 (a (b) c) S {}\n", fields.join(" "));
        assert_eq!(parse_stat(&stat), Some(('S', 22)));
        assert_eq!(parse_stat("4242 (truncated"), None);
    }

    /// Holds a claim on job 0 of a fresh run written by `holder`, with a fresh heartbeat.
    fn claimed_by(holder: &Holder) -> (tempfile::TempDir, RunDir) {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        write_claim(&run.claim(0), holder);
        (dir, run)
    }

    #[test]
    fn a_claim_of_a_dead_process_on_this_machine_is_stale_at_once() {
        let holder = Holder { pid: dead_pid(), ..Holder::current() };
        let (_dir, run) = claimed_by(&holder);
        let info = inspect(&run, 0, 600.0).unwrap().unwrap();
        assert!(info.heartbeat_age < 5.0);
        assert_eq!(info.stale, Some(Stale::HolderGone));
        let Acquired::Ours { broke: Some(broken), .. } = Claim::acquire(&run, 0, 600.0).unwrap() else {
            panic!("the dead worker's claim is taken over")
        };
        assert_eq!(broken.holder, Some(holder));
    }

    #[test]
    fn a_reused_pid_with_another_start_time_is_another_process() {
        let this = Holder::current();
        let holder = Holder { start_ticks: this.start_ticks.map(|t| t + 1), ..this };
        let (_dir, run) = claimed_by(&holder);
        assert_eq!(inspect(&run, 0, 600.0).unwrap().unwrap().stale, Some(Stale::HolderGone));
    }

    #[test]
    fn claims_of_other_machines_and_old_claims_keep_the_heartbeat_rule() {
        let dead = Holder { pid: dead_pid(), ..Holder::current() };
        for holder in [
            Holder { boot_id: Some("another boot".into()), ..dead.clone() },
            Holder { host: "another-host".into(), ..dead.clone() },
            Holder { pid_namespace: Some("pid:[1]".into()), ..dead.clone() },
            Holder { boot_id: None, pid_namespace: None, start_ticks: None, ..dead.clone() },
        ] {
            let (_dir, run) = claimed_by(&holder);
            assert!(matches!(Claim::acquire(&run, 0, 600.0).unwrap(), Acquired::Held(_)), "{holder:?}");
            age(&run.claim(0), 700);
            let info = inspect(&run, 0, 600.0).unwrap().unwrap();
            assert_eq!(info.stale, Some(Stale::NoHeartbeat), "{holder:?}");
        }
        let old = "host = \"h\"\npid = 1\nstarted = 1.0\ntoken = \"h-1-1\"\n";
        let holder: Holder = toml::from_str(old).unwrap();
        assert_eq!((holder.boot_id, holder.pid_namespace, holder.start_ticks), (None, None, None));
    }

    #[test]
    fn the_claim_of_a_live_process_on_this_machine_stays_live() {
        let (_dir, run) = claimed_by(&Holder::current());
        assert!(matches!(Claim::acquire(&run, 0, 600.0).unwrap(), Acquired::Held(ClaimInfo { stale: None, .. })));
    }
}
