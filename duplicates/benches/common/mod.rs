//! What the duplicates crate's benchmarks share: the process's peak resident memory.

/// Resets the peak resident memory, so that what follows is measured alone.
pub fn reset_peak_memory() {
    // "5" resets the peak resident set size (Linux 4.0 and later).
    if std::fs::write("/proc/self/clear_refs", "5").is_err() {
        println!("  (could not reset the peak memory counter: it includes corpus generation)");
    }
}

/// VmHWM, in bytes.
pub fn peak_memory() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?.to_owned();
            line[6..].trim().trim_end_matches("kB").trim().parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}
