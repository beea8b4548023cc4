//! `cfmem report`: the page's numbers against the Parquet files and against the summary
//! `cfmem analyze` prints, hostile document text shown as text, the
//! influence/reliability/interval sections from files written here, and the demo's report
//! rendered in headless Chromium (no console error, no request, a screenshot that is not
//! blank, one plot per section the run has).

use std::path::{Path, PathBuf};

use analysis::synthetic_run::{self, Row, Spec};
use subsets::config::Unit;
use subsets::layout::RunDir;
use subsets::schema::{self, InfluenceTable, ReliabilityTable};
use tests::page::{chromium, expected_plots, plots, section};
use tests::{TINY_CONFIG, cfmem_err, cfmem_ok, plan_args, scores, training_lock};

/// The text of each cell of each row of `table`'s body: tags removed, a line break as "\n".
fn body_rows(table: &str) -> Vec<Vec<String>> {
    let body = &table[table.find("<tbody>").expect("a table body")..];
    body.split("<tr>")
        .skip(1)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|cell| {
                    let cell = &cell[cell.find('>').unwrap() + 1..cell.find("</td>").unwrap()];
                    // The tags inside a cell: a line break, a source's span, a colour swatch.
                    let mut text = String::new();
                    let mut in_tag = false;
                    for c in cell.replace("<br>", "\n").chars() {
                        match c {
                            '<' => in_tag = true,
                            '>' => in_tag = false,
                            _ if !in_tag => text.push(c),
                            _ => {}
                        }
                    }
                    text
                })
                .collect()
        })
        .collect()
}

/// The lines of `summary` after the line starting with `heading`, up to the next empty line.
fn block<'a>(summary: &'a str, heading: &str) -> Vec<&'a str> {
    let lines = summary.lines().skip_while(|line| !line.starts_with(heading)).skip(1);
    lines.take_while(|line| !line.is_empty()).collect()
}

/// A run whose logs are written here (no training): sources "alpha", "beta" and none in
/// turn, six copies of one text as a cluster, accuracies that tie across documents, and a
/// loss that ranks the documents otherwise than the accuracy.
fn synthetic(run: &Path) {
    let mut documents = synthetic_run::documents(40, 7);
    for (i, document) in documents.iter_mut().enumerate() {
        document.source = [Some("alpha".to_string()), Some("beta".to_string()), None][i % 3].clone();
    }
    let text = "the same sentence copied six times over, word for word";
    documents.extend((0..6).map(|i| subsets::corpus::Document {
        id: format!("copy-{i}"),
        text: text.to_string(),
        source: (i % 2 == 1).then(|| "beta".to_string()),
    }));
    let spec = Spec { documents, models: 8, stack: 4, seed: 3, unit: Unit::Cluster, holdout_ids: vec!["doc-5".into()] };
    synthetic_run::write(&RunDir::new(run), &spec, |model, doc, in_train| {
        let correct = 30 + model % 3 + if in_train[doc] { 5 * (doc as u32 % 7) } else { 0 };
        let gain = if in_train[doc] { f64::from(doc as u32 % 6) * 3.0 } else { 0.0 };
        Row { tokens: 100, correct, nll: f64::from(100 - correct) - gain }
    })
    .unwrap();
}

#[test]
fn the_printed_summary_and_the_report_show_the_same_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    synthetic(&run);
    let printed = cfmem_ok(&["analyze", run.to_str().unwrap()]);
    cfmem_ok(&["report", run.to_str().unwrap(), "--top", "10"]);
    let html = std::fs::read_to_string(run.join("analysis/report.html")).unwrap();

    // The ten most memorized documents: the same ids, sources, mem_loss and mem_acc in the
    // same order.
    let printed_top: Vec<Vec<&str>> = block(&printed, "most memorized")
        .iter()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .map(|words| vec![words[6], words[5], words[1], words[4]])
        .collect();
    let page_top: Vec<Vec<String>> = body_rows(section(&html, "most"))
        .into_iter()
        .map(|cells| {
            let (id, source) = cells[0].split_once('\n').expect("id, then source");
            vec![id.to_string(), source.to_string(), cells[1].clone(), cells[3].clone()]
        })
        .collect();
    assert_eq!(printed_top.len(), 10);
    assert_eq!(page_top, printed_top, "printed:\n{printed}");
    assert!(printed_top.iter().any(|doc| doc[1] == "(none)"), "a document without a source is among them");
    assert!(!html.contains("(no source)"), "one label for a document without a source");

    // Per source: count of scored documents, median and mean of mem_loss, then of mem_acc.
    let page_sources = body_rows(section(&html, "distribution"));
    let by_source = block(&printed, "by source:");
    assert_eq!(by_source.len(), 2, "alpha and beta; documents without a source have no printed row:\n{printed}");
    for line in by_source {
        let [source, count, median, mean, acc_median, acc_mean] = line.split_whitespace().collect::<Vec<_>>()[..]
        else {
            panic!("{line}")
        };
        let row = page_sources.iter().find(|cells| cells[0] == source).expect("a row per source");
        assert_eq!(
            [&row[2], &row[4], &row[3], &row[10], &row[9]],
            [count, median, mean, acc_median, acc_mean],
            "{source}"
        );
    }
    assert!(page_sources.iter().any(|cells| cells[0] == "(none)"), "the page has a row for them");

    // The median of all scored documents, and the cluster's group and member mean.
    let median = printed.split("median ").nth(1).unwrap().split_whitespace().next().unwrap();
    assert!(section(&html, "distribution").contains(&format!("scored documents: median {median},")), "{median}");
    let cluster = block(&printed, "near-duplicate clusters")[0].split_whitespace().collect::<Vec<_>>();
    let point = format!(
        "cluster {} of {} documents: group mem_loss {}, members' mean mem_loss {}",
        cluster[1], cluster[3], cluster[5], cluster[7]
    );
    assert!(section(&html, "clusters").contains(&point), "{point}");
}

/// The ids of `scores`' documents ranked by `column`, most memorized first, ties in
/// document order, as far as `n`.
fn ranked(scores: &subsets::schema::ScoreTable, column: &[Option<f64>], n: usize) -> Vec<String> {
    let mut docs: Vec<usize> = (0..column.len()).filter(|&d| column[d].is_some()).collect();
    docs.sort_by(|&a, &b| column[b].unwrap().total_cmp(&column[a].unwrap()).then(a.cmp(&b)));
    docs.into_iter().take(n).map(|d| scores.doc_id[d].clone()).collect()
}

/// The ids of a printed summary's most memorized list.
fn printed_ids(printed: &str) -> Vec<String> {
    block(printed, "most memorized").iter().map(|line| line.split_whitespace().nth(6).unwrap().to_string()).collect()
}

/// The ids of a report's list `id` ("most" or "least").
fn page_ids(html: &str, id: &str) -> Vec<String> {
    body_rows(section(html, id)).iter().map(|cells| cells[0].split_once('\n').unwrap().0.to_string()).collect()
}

#[test]
fn mem_loss_ranks_by_default_and_rank_by_accuracy_gives_the_mem_acc_lists() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    synthetic(&run);
    let run_arg = run.to_str().unwrap();
    let by_loss = cfmem_ok(&["analyze", run_arg]);
    let table = scores(&run);
    let (loss_top, acc_top) = (ranked(&table, &table.mem_loss, 10), ranked(&table, &table.mem_acc, 10));
    assert_ne!(loss_top, acc_top, "the two scores rank these documents differently");
    assert_eq!(printed_ids(&by_loss), loss_top);
    assert!(by_loss.contains("most memorized by mem_loss (mem_loss ± se, mem_acc,"), "{by_loss}");
    let summary = |run: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(run.join("analysis/summary.json")).unwrap()).unwrap()
    };
    assert_eq!(summary(&run)["rank_by"], "loss");

    // --rank-by accuracy: the lists by mem_acc, as before mem_loss ranked; the tables are
    // the same either way.
    let by_accuracy = cfmem_ok(&["analyze", run_arg, "--rank-by", "accuracy"]);
    assert_eq!(printed_ids(&by_accuracy), acc_top);
    assert!(by_accuracy.contains("most memorized by mem_acc (mem_acc ± se, mem_loss,"), "{by_accuracy}");
    assert_eq!(scores(&run), table, "scores.parquet does not depend on the ranking");
    assert_eq!(summary(&run)["rank_by"], "accuracy");
    let acc_line = by_accuracy.find("reliability (mem_acc)").unwrap();
    assert!(acc_line < by_accuracy.find("reliability (mem_loss)").unwrap(), "the ranking score's verdict leads");

    // The report ranks as the analysis did unless told otherwise.
    cfmem_ok(&["report", run_arg, "--top", "10"]);
    let html = std::fs::read_to_string(run.join("analysis/report.html")).unwrap();
    assert_eq!(page_ids(&html, "most"), acc_top);
    cfmem_ok(&["report", run_arg, "--top", "10", "--rank-by", "loss"]);
    let html = std::fs::read_to_string(run.join("analysis/report.html")).unwrap();
    assert_eq!(page_ids(&html, "most"), loss_top);
    let mut least = ranked(&table, &table.mem_loss, usize::MAX);
    least.reverse();
    least.truncate(10);
    assert_eq!(page_ids(&html, "least"), least);
    let err = cfmem_err(&["analyze", run_arg, "--rank-by", "perplexity"]);
    assert!(err.contains("unknown measure \"perplexity\"") && err.contains("--rank-by"), "{err}");
}

#[test]
fn a_run_analyzed_before_both_scores_were_reported_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    synthetic(&run);
    let run_arg = run.to_str().unwrap();
    cfmem_ok(&["analyze", run_arg]);
    // The files as the cfmem before this one wrote them: no mem_loss intervals, reliability
    // rows of mem_acc alone, and summary.json's reliability that of mem_acc, flat.
    let mut old = scores(&run);
    old.mem_loss_lo = vec![None; old.doc.len()];
    old.mem_loss_hi = vec![None; old.doc.len()];
    schema::write(&run.join("analysis/scores.parquet"), &old, Some(3)).unwrap();
    let path = run.join("analysis/reliability.parquet");
    let mut reliability: ReliabilityTable = schema::read(&path).unwrap();
    let keep: Vec<usize> = (0..reliability.score.len()).filter(|&i| reliability.score[i] == "mem_acc").collect();
    let pick = |column: &[Option<f64>]| keep.iter().map(|&i| column[i]).collect::<Vec<_>>();
    reliability = ReliabilityTable {
        score: vec!["mem_acc".into(); keep.len()],
        measure: keep.iter().map(|&i| reliability.measure[i].clone()).collect(),
        models: keep.iter().map(|&i| reliability.models[i]).collect(),
        spearman: pick(&reliability.spearman),
        predicted: pick(&reliability.predicted),
        models_for_stable: keep.iter().map(|&i| reliability.models_for_stable[i]).collect(),
    };
    schema::write(&path, &reliability, Some(3)).unwrap();
    let summary_path = run.join("analysis/summary.json");
    let mut summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();
    let mut flat = summary["reliability"]["mem_acc"].take();
    flat["extend_to"] = serde_json::json!(99);
    flat["command"] = serde_json::json!("cfmem plan --extend RUN --models 99");
    summary["reliability"] = flat;
    summary.as_object_mut().unwrap().remove("rank_by");
    std::fs::write(&summary_path, summary.to_string()).unwrap();

    cfmem_ok(&["report", run_arg]);
    let html = std::fs::read_to_string(run.join("analysis/report.html")).unwrap();
    let stable = section(&html, "reliability");
    assert!(stable.contains("the mem_acc rankings of two halves") && !stable.contains("mem_loss rankings"), "{stable}");
    assert!(
        stable.contains("the run needs about 99 models: <code>cfmem plan --extend RUN --models 99</code>"),
        "{stable}"
    );
    assert!(html.contains("ranked by mem_loss"), "a run that recorded no ranking reads ranked by mem_loss");
    assert!(section(&html, "most").contains("≈["), "mem_loss without its bootstrap interval: ± 1.96 se");
}

/// Documents a report must show as text: markup, script, quotes, a closing textarea.
const HOSTILE: [(&str, &str); 5] = [
    ("<script>alert(1)</script>", "<script>document.title='pwned'</script> then ordinary words follow here"),
    ("\"><img src=x onerror=alert(2)>", "</textarea><img src=x onerror=alert(3)> and \"double\" 'single' quotes"),
    ("a&amp;b", "<!-- an unclosed comment <style>body{display:none}</style> ]]> <svg onload=alert(4)>"),
    ("plain-1", "<iframe src=\"https://example.com/\"></iframe> & a lone ampersand < and a lone bracket"),
    ("plain-2", "just a sentence about a small cat that sits on a warm mat all day long"),
];

/// Plans, trains (tiny models) and analyzes a corpus of hostile and ordinary documents.
fn hostile_run(dir: &Path) -> PathBuf {
    let corpus = dir.join("corpus.jsonl");
    let mut lines = String::new();
    for (i, (id, text)) in HOSTILE.iter().enumerate() {
        let source = if i % 2 == 0 { "<b>bold\"source</b>" } else { "web" };
        lines += &serde_json::json!({ "id": id, "text": text, "source": source }).to_string();
        lines.push('\n');
    }
    for i in 0..7 {
        lines += &serde_json::json!({ "id": format!("filler-{i}"), "text": format!("filler document {i}: {}", "abc ".repeat(i + 2)) }).to_string();
        lines.push('\n');
    }
    std::fs::write(&corpus, lines).unwrap();
    let config = dir.join("tiny.toml");
    std::fs::write(&config, TINY_CONFIG).unwrap();
    let run = dir.join("run");
    let _one_at_a_time = training_lock();
    cfmem_ok(&plan_args(&corpus, &run, "4", "3", &["--config", config.to_str().unwrap()]));
    cfmem_ok(&["run", run.to_str().unwrap(), "--device", "cpu", "--threads", "1"]);
    cfmem_ok(&["analyze", run.to_str().unwrap()]);
    run
}

#[test]
fn document_text_is_shown_as_text_never_as_markup() {
    let dir = tempfile::tempdir().unwrap();
    let run = hostile_run(dir.path());
    let out = dir.path().join("page.html");
    cfmem_ok(&["report", run.to_str().unwrap(), "--out", out.to_str().unwrap(), "--top", "12"]);
    let html = std::fs::read_to_string(&out).unwrap();
    let lower = html.to_lowercase();
    for tag in ["<script", "<img", "<iframe", "<textarea", "<!--", "<b>"] {
        assert!(!lower.contains(tag), "{tag} must appear only escaped");
    }
    assert_eq!(lower.matches("<style").count(), 1, "only the page's own style element");
    assert_eq!(lower.matches("<svg").count(), plots(&html).len(), "only the page's own plots");
    assert!(html.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;"), "the text is shown, escaped");
    assert!(html.contains("&lt;/textarea&gt;&lt;img src=x onerror=alert(3)&gt; and &quot;double&quot;"));
    assert!(html.contains("<td class=\"id\">&quot;&gt;&lt;img src=x onerror=alert(2)&gt;<br>"));
    assert!(html.contains("<span class=\"source\">&lt;b&gt;bold&quot;source&lt;/b&gt;</span>"), "sources too");
    assert!(html.contains("a&amp;amp;b"), "an id that looks like an entity is shown as written");
}

#[test]
fn influence_reliability_and_bootstrap_intervals_appear_when_the_analysis_has_them() {
    let dir = tempfile::tempdir().unwrap();
    let run = hostile_run(dir.path());
    let run_arg = run.to_str().unwrap();
    // First an analysis without its optional parts, as older runs have them.
    std::fs::remove_file(run.join("analysis/reliability.parquet")).unwrap();
    let mut bare = scores(&run);
    bare.mem_acc_lo = vec![None; bare.doc.len()];
    bare.mem_acc_hi = vec![None; bare.doc.len()];
    bare.mem_loss_lo = vec![None; bare.doc.len()];
    bare.mem_loss_hi = vec![None; bare.doc.len()];
    schema::write(&run.join("analysis/scores.parquet"), &bare, Some(3)).unwrap();
    let html = {
        cfmem_ok(&["report", run_arg]);
        std::fs::read_to_string(run.join("analysis/report.html")).unwrap()
    };
    for id in ["influence", "reliability"] {
        assert!(!html.contains(&format!("<section id=\"{id}\">")), "no {id} section without its file");
    }
    assert!(html.contains("≈["), "without bootstrap columns the interval is ± 1.96 se");

    let top = add_influence_and_intervals(&run);

    cfmem_ok(&["report", run_arg]);
    let html = std::fs::read_to_string(run.join("analysis/report.html")).unwrap();
    let pairs = section(&html, "influence");
    let strongest = "<td class=\"id\">&lt;script&gt;alert(1)&lt;/script&gt;</td>\
                     <td class=\"id\">&quot;&gt;&lt;img src=x onerror=alert(2)&gt;</td><td>1</td><td>+0.500</td><td>–</td>\
                     <td>+1.500</td><td>0.125</td>";
    assert!(pairs.contains(strongest), "the strongest pair first:\n{pairs}");
    assert!(pairs.find(strongest).unwrap() < pairs.find("plain-1").unwrap());
    assert!(pairs.contains("<td>+0.070</td><td>0.020</td><td>-0.250</td><td>–</td>"), "{pairs}");
    let stable = section(&html, "reliability");
    assert!(stable.contains("two halves of 2 models agree with Spearman 0.625"), "{stable}");
    assert!(stable.contains("prediction for all models is 0.769"), "{stable}");
    assert!(stable.contains("first 3 models: Spearman 0.750"), "{stable}");
    let m = scores(&run).mem_acc[top].unwrap();
    let interval = format!("[{:+.3}, {:+.3}]", m - 0.125, m + 0.25);
    assert!(section(&html, "most").contains(&format!("<td class=\"num\">{interval}</td>")), "bootstrap interval shown");
    assert!(!html.contains("≈["), "every interval is the bootstrap one");
    assert_eq!(plots(&html), expected_plots(&run));
    assert!(plots(&html).contains(&"convergence".to_string()));
}

#[test]
fn analyze_without_attacks_leaves_no_earlier_attacks_and_the_report_says_they_were_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    synthetic(&run);
    let run_arg = run.to_str().unwrap();
    let printed = cfmem_ok(&["analyze", run_arg]);
    assert!(printed.contains("membership attacks (each of 8 models the target"), "{printed}");
    assert!(run.join("analysis/attacks.parquet").exists() && run.join("analysis/attack_roc.parquet").exists());
    let printed = cfmem_ok(&["analyze", run_arg, "--no-attacks"]);
    assert!(!printed.contains("membership attacks") && printed.contains("membership exposure"), "{printed}");
    assert!(!run.join("analysis/attacks.parquet").exists() && !run.join("analysis/attack_roc.parquet").exists());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("analysis/summary.json")).unwrap()).unwrap();
    assert!(summary["attacks"].is_null() && summary["membership"].is_object(), "{summary}");
    cfmem_ok(&["report", run_arg]);
    let html = std::fs::read_to_string(run.join("analysis/report.html")).unwrap();
    let shown = section(&html, "membership");
    assert!(shown.contains("skipped the attacks") && shown.contains("Most exposed documents"), "{shown}");
}

#[test]
fn report_refuses_a_run_that_was_not_analyzed() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    std::fs::write(&corpus, "{\"text\":\"one\"}\n{\"text\":\"two\"}\n").unwrap();
    let run = dir.path().join("run");
    cfmem_ok(&plan_args(&corpus, &run, "4", "1", &[]));
    let err = cfmem_err(&["report", run.to_str().unwrap()]);
    assert!(err.contains("no analysis/scores.parquet: run `cfmem analyze"), "{err}");
    assert!(!run.join("analysis/report.html").exists(), "nothing written");
    let err = cfmem_err(&["report", dir.path().to_str().unwrap()]);
    assert!(err.contains("is not a planned run"), "{err}");
    let err = cfmem_err(&["report", run.to_str().unwrap(), "--top", "0"]);
    assert!(err.contains("--top"), "{err}");
}

/// The hostile run's report, in a browser: no element is built from a document's text, and
/// with influence and intervals every plot renders.
#[test]
#[ignore = "needs chromium: scripts/test.sh runs this wherever chromium is installed (it installs it as root)"]
fn a_report_of_hostile_text_builds_no_element_from_it_and_renders_cleanly_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let run = hostile_run(dir.path());
    let out = dir.path().join("page.html");
    cfmem_ok(&["report", run.to_str().unwrap(), "--out", out.to_str().unwrap(), "--top", "12"]);
    let browser = chromium();
    let page = browser.render(&out, 1280, &dir.path().join("browser"));
    page.assert_clean();
    let dom = page.dom.to_lowercase();
    for tag in ["<script", "<img", "<iframe", "<textarea", "<b>"] {
        assert!(!dom.contains(tag), "the browser built no {tag} element");
    }
    assert!(page.dom.contains("<title>cfmem report: run</title>"), "the page title was not changed by a script");
    assert!(page.dom.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;"), "the text is text in the DOM");

    add_influence_and_intervals(&run);
    cfmem_ok(&["report", run.to_str().unwrap()]);
    let page = browser.render(&run.join("analysis/report.html"), 1280, &dir.path().join("full"));
    page.assert_clean();
    assert_eq!(plots(&page.dom), expected_plots(&run));
}

/// Gives an analyzed run bootstrap intervals (the top document by mem_acc: −0.125, +0.25),
/// two influence pairs and a reliability table as an analysis before mem_loss had rows wrote
/// it; returns the top document.
fn add_influence_and_intervals(run: &Path) -> usize {
    let mut scores = scores(run);
    let top = (0..scores.doc.len()).max_by(|&a, &b| scores.mem_acc[a].unwrap().total_cmp(&scores.mem_acc[b].unwrap()));
    let top = top.unwrap();
    scores.mem_acc_lo = scores.mem_acc.iter().map(|m| m.map(|m| m - 0.125)).collect();
    scores.mem_acc_hi = scores.mem_acc.iter().map(|m| m.map(|m| m + 0.25)).collect();
    scores.mem_loss_lo = scores.mem_loss.iter().map(|m| m.map(|m| m - 0.5)).collect();
    scores.mem_loss_hi = scores.mem_loss.iter().map(|m| m.map(|m| m + 0.5)).collect();
    schema::write(&run.join("analysis/scores.parquet"), &scores, Some(3)).unwrap();
    let influence = InfluenceTable {
        target: vec![4, 1],
        target_id: vec!["plain-2".into(), "\"><img src=x onerror=alert(2)>".into()],
        source_doc: vec![3, 0],
        source_id: vec!["plain-1".into(), "<script>alert(1)</script>".into()],
        rank: vec![1, 1],
        infl_acc: vec![0.07, 0.5],
        infl_acc_se: vec![Some(0.02), None],
        infl_loss: vec![-0.25, 1.5],
        infl_loss_se: vec![None, Some(0.125)],
    };
    schema::write(&run.join("analysis/influence.parquet"), &influence, Some(3)).unwrap();
    // As an analysis before mem_loss had rows wrote it (schema version 2: mem_acc's alone).
    let reliability = ReliabilityTable {
        score: vec!["mem_acc".into(); 4],
        measure: vec!["split-half".into(), "convergence".into(), "convergence".into(), "convergence".into()],
        models: vec![2, 2, 3, 4],
        spearman: vec![Some(0.625), Some(0.5), Some(0.75), Some(1.0)],
        predicted: vec![Some(0.769), None, None, None],
        models_for_stable: vec![Some(6), None, None, None],
    };
    schema::write(&run.join("analysis/reliability.parquet"), &reliability, Some(3)).unwrap();
    top
}

/// The checks below must be able to fail: a page with a console error and a request to the
/// network is caught by both.
#[test]
#[ignore = "needs chromium: scripts/test.sh runs this wherever chromium is installed (it installs it as root)"]
fn the_browser_checks_catch_console_errors_and_requests_in_chromium() {
    let browser = chromium();
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("bad.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><body><p>x</p><img src=\"http://example.com/pixel.png\">\
         <script>console.error('broken page')</script></body></html>",
    )
    .unwrap();
    let rendered = browser.render(&page, 800, &dir.path().join("browser"));
    assert!(rendered.console.iter().any(|line| line.contains("broken page")), "{:?}", rendered.console);
    assert_eq!(rendered.requests, ["http://example.com/pixel.png"]);
}
