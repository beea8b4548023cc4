//! Reading the HTML report in tests: its sections and plots as text, and the page as
//! headless Chromium renders it (console, requests, DOM, screenshot).

use std::path::{Path, PathBuf};
use std::process::Command;

use subsets::schema::{self, AttackRocTable, ClusterTable, CopiesTable, ProfileTable, ReliabilityTable, ScoreTable};

/// The text between `<section id="ID">` and its end.
pub fn section<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html.find(&format!("<section id=\"{id}\">")).unwrap_or_else(|| panic!("no section {id}"));
    let end = html[start..].find("</section>").expect("section ends") + start;
    &html[start..end]
}

/// Plots in `html`, by their `data-plot` kind.
pub fn plots(html: &str) -> Vec<String> {
    html.split("<svg class=\"plot\" data-plot=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].to_string())
        .collect()
}

/// The plots a report of `run` must draw, from its Parquet files.
pub fn expected_plots(run: &Path) -> Vec<String> {
    // A histogram and a box plot per score the analysis wrote (mem_loss, then mem_acc).
    let scores: ScoreTable = schema::read(&run.join("analysis/scores.parquet")).unwrap();
    let mut kinds = Vec::new();
    for column in [&scores.mem_loss, &scores.mem_acc] {
        if column.iter().any(Option::is_some) {
            kinds.extend(["histogram", "box"]);
        }
    }
    kinds.extend(["near-dups", "repeats"]);
    let clusters: ClusterTable = schema::read(&run.join("analysis/clusters.parquet")).unwrap();
    if clusters.group_mem_acc.iter().any(Option::is_some) {
        kinds.push("clusters");
    }
    let copies: CopiesTable = schema::read(&run.join("analysis/copies.parquet")).unwrap();
    if copies.mem_acc.iter().any(Option::is_some) {
        kinds.push("copies");
    }
    if run.join("analysis/spectrum.parquet").exists() {
        kinds.extend(["spectrum", "places"]);
    }
    let profile = run.join("analysis/profile.parquet");
    if profile.exists() {
        let table: ProfileTable = schema::read(&profile).unwrap();
        if table.checkpoint.iter().any(|&c| c != table.checkpoint[0]) {
            kinds.push("profile");
        }
    }
    let reliability = run.join("analysis/reliability.parquet");
    if reliability.exists() {
        let table: ReliabilityTable = schema::read(&reliability).unwrap();
        if table.measure.iter().zip(&table.spearman).any(|(m, s)| m == "convergence" && s.is_some()) {
            kinds.push("convergence");
        }
    }
    let roc = run.join("analysis/attack_roc.parquet");
    if roc.exists() && !schema::read::<AttackRocTable>(&roc).unwrap().attack.is_empty() {
        kinds.push("roc");
    }
    kinds.into_iter().map(String::from).collect()
}

/// Headless Chromium.
pub struct Chromium {
    binary: PathBuf,
}

/// Headless Chromium; the test fails where it is not installed.
pub fn chromium() -> Chromium {
    let binary = std::env::var_os("CFMEM_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("chromium"));
    if Command::new(&binary).arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Chromium { binary };
    }
    crate::missing(&format!(
        "the browser checks need {} (scripts/test.sh installs Debian's chromium with apt as root)",
        binary.display()
    ))
}

/// What the browser made of a page.
pub struct Rendered {
    /// Console messages: errors, warnings, CSP violations, uncaught exceptions.
    pub console: Vec<String>,
    /// URLs the page asked for, other than its own file.
    pub requests: Vec<String>,
    pub dom: String,
    pub screenshot: PathBuf,
}

impl Chromium {
    /// Loads `page` in a window `width` pixels wide, behind a proxy that leads nowhere, in a
    /// fresh profile under `work`: one pass for the screenshot, console and network log, one
    /// for the DOM.
    pub fn render(&self, page: &Path, width: u32, work: &Path) -> Rendered {
        std::fs::create_dir_all(work).unwrap();
        let url = format!("file://{}", page.canonicalize().unwrap().display());
        let run = |extra: &[String]| {
            let output = Command::new(&self.binary)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--proxy-server=http://127.0.0.1:9",
                    "--enable-logging=stderr",
                    "--v=0",
                    &format!("--user-data-dir={}", work.join("profile").display()),
                    &format!("--window-size={width},1000"),
                ])
                .args(extra)
                .arg(&url)
                .output()
                .expect("chromium runs");
            assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
            output
        };
        let screenshot = work.join("screenshot.png");
        let net_log = work.join("net-log.json");
        let shot =
            run(&[format!("--screenshot={}", screenshot.display()), format!("--log-net-log={}", net_log.display())]);
        let console = String::from_utf8_lossy(&shot.stderr)
            .lines()
            .filter(|line| line.contains(":CONSOLE"))
            .map(String::from)
            .collect();
        let dom = String::from_utf8(run(&["--dump-dom".to_string()]).stdout).unwrap();
        Rendered { console, requests: page_requests(&net_log), dom, screenshot }
    }
}

/// URLs requested on behalf of a page in a Chromium net log. The browser's own background
/// requests carry the initiator "not an origin"; a page's carry its origin ("null" for a file).
fn page_requests(net_log: &Path) -> Vec<String> {
    let log: serde_json::Value = serde_json::from_slice(&std::fs::read(net_log).unwrap()).unwrap();
    let start_job = &log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"];
    assert!(start_job.is_u64(), "the net log names its event types");
    let mut urls: Vec<String> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| &event["type"] == start_job)
        .filter(|event| event["params"]["initiator"] != "not an origin")
        .filter_map(|event| event["params"]["url"].as_str())
        .filter(|url| !url.starts_with("file:"))
        .map(String::from)
        .collect();
    urls.dedup();
    urls
}

impl Rendered {
    pub fn assert_clean(&self) {
        assert!(self.console.is_empty(), "console messages: {:#?}", self.console);
        assert!(self.requests.is_empty(), "the page made requests: {:?}", self.requests);
    }

    /// The screenshot has ink: over 2% of its pixels are not the background colour.
    pub fn assert_screenshot_not_blank(&self) {
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&self.screenshot).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut pixels).unwrap();
        let channels = info.color_type.samples();
        let pixels: Vec<&[u8]> = pixels[..info.buffer_size()].chunks(channels).collect();
        let background = pixels[0];
        let ink = pixels.iter().filter(|p| p[..3] != background[..3]).count();
        assert!(
            ink * 50 > pixels.len(),
            "screenshot {} is blank ({ink} of {} pixels)",
            self.screenshot.display(),
            pixels.len()
        );
    }
}
