//! The demo, trained once and read by several tests: the planted kinds rank as theory
//! predicts, each twin is its target's top influence, the report shows the run's numbers and
//! renders cleanly, and memorization over training rises for random identifiers and stays
//! flat for repetitive text; and a spectrum demo finds the near-duplicate family memorized as a
//! cluster, the planted passage as a passage group and random identifiers at every level.
//! Real libtorch training on the CPU.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use analysis::stats::quantile;
use subsets::schema::{
    self, AttackTable, ClusterTable, InfluenceTable, MembershipTable, ProfileTable, ReliabilityTable, SpectrumTable,
};
use tests::page::{chromium, expected_plots, plots, section};
use tests::{cfmem_ok, mean, mem_acc_of, scores, training_lock};

fn demo(out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["demo", "--out", out.to_str().unwrap(), "--device", "cpu", "--seed", "0"];
    args.extend_from_slice(extra);
    cfmem_ok(&args)
}

/// The demo every test here reads, as `cfmem demo` runs it by default: 16 models, seed 0.
struct Demo {
    run: PathBuf,
    /// What `cfmem demo` printed.
    printed: String,
}

/// The shared demo, trained by its first caller. Call it before taking the training lock,
/// which that first caller takes while it trains.
fn shared_demo() -> &'static Demo {
    static DEMO: OnceLock<Demo> = OnceLock::new();
    DEMO.get_or_init(|| {
        let _one_at_a_time = training_lock();
        let run = Path::new(env!("CARGO_TARGET_TMPDIR")).join("shared-demo");
        if run.exists() {
            std::fs::remove_dir_all(&run).unwrap();
        }
        let printed = demo(&run, &[]);
        Demo { run, printed }
    })
}

#[test]
fn demo_ranks_the_planted_kinds_as_theory_predicts() {
    let demo = shared_demo();
    let summary = &demo.printed;
    assert!(summary.contains("most memorized"), "{summary}");
    assert!(summary.contains("by source:"), "{summary}");

    let scores = scores(&demo.run);
    let random = mem_acc_of(&scores, "random-id");
    let lowest_random = random.iter().copied().fold(f64::INFINITY, f64::min);
    for other in ["sentence", "repetitive", "near-duplicate", "exact-duplicate"] {
        for m in mem_acc_of(&scores, other) {
            assert!(
                lowest_random > m,
                "every random-id document ({lowest_random:.3} at least) is above every {other} one ({m:.3})"
            );
        }
    }
    let sentence = mean(&mem_acc_of(&scores, "sentence"));
    assert!(mean(&random) > sentence + 0.2, "random-id {:.3} clearly above sentences {sentence:.3}", mean(&random));
    let repetitive = mem_acc_of(&scores, "repetitive");
    assert!(mean(&repetitive) < 0.1, "repetitive documents are near zero: mean {:.3}", mean(&repetitive));
    for m in repetitive.iter().chain(&mem_acc_of(&scores, "near-duplicate")) {
        assert!(*m < 0.15, "each repetitive or near-duplicate document is low: {m:.3}");
    }
    let exact = mean(&mem_acc_of(&scores, "exact-duplicate"));
    assert!(exact < 0.15, "exact duplicates are low: mean {exact:.3}");
}

#[test]
fn on_the_demo_lira_beats_the_loss_attack_and_random_identifiers_are_the_most_exposed() {
    let demo = shared_demo();
    let attacks: AttackTable = schema::read(&demo.run.join("analysis/attacks.parquet")).unwrap();
    let row = |name: &str| attacks.attack.iter().position(|a| a == name).unwrap();
    let auc = |name: &str| attacks.auc[row(name)].unwrap();
    assert!(auc("lira_online") > auc("loss") + 0.1, "LiRA {:.3} against loss {:.3}", auc("lira_online"), auc("loss"));
    let (lo, hi) = (attacks.auc_lo[row("lira_online")].unwrap(), attacks.auc_hi[row("lira_online")].unwrap());
    assert!(lo <= auc("lira_online") && auc("lira_online") <= hi, "[{lo}, {hi}]");
    for name in ["min_k", "min_k_pp"] {
        assert_eq!(attacks.targets[row(name)], 16, "{name}: the demo's logs carry the per-token statistics");
    }
    assert!(demo.printed.contains("membership attacks (each of 16 models the target"), "{}", demo.printed);

    // The most exposed documents are random identifiers (the twins are lists of them too).
    let exposure: MembershipTable = schema::read(&demo.run.join("analysis/membership.parquet")).unwrap();
    let mut ranked: Vec<usize> = (0..exposure.doc.len()).filter(|&i| exposure.exposure_d[i].is_some()).collect();
    ranked.sort_by(|&a, &b| exposure.exposure_d[b].unwrap().total_cmp(&exposure.exposure_d[a].unwrap()));
    for &i in &ranked[..10] {
        let source = exposure.source[i].as_deref().unwrap();
        assert!(
            ["random-id", "twin"].contains(&source),
            "{} ({source}) among the ten most exposed",
            exposure.doc_id[i]
        );
    }
    // The report shows the same: the attack table, the curves, the most exposed in order.
    let html = std::fs::read_to_string(demo.run.join("analysis/report.html")).unwrap();
    let shown = section(&html, "membership");
    let lira = format!(
        "{:.3} [{:.3}, {:.3}]",
        auc("lira_online"),
        attacks.auc_lo[row("lira_online")].unwrap(),
        attacks.auc_hi[row("lira_online")].unwrap()
    );
    assert!(shown.contains(&lira) && shown.contains("data-plot=\"roc\""), "{lira} and the ROC plot: {shown}");
    let listed = &shown[shown.find("Most exposed").unwrap()..];
    let positions: Vec<usize> =
        ranked[..10].iter().map(|&i| listed.find(&format!(">{}<", exposure.doc_id[i])).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "most exposed first: {positions:?}");
}

#[test]
fn memorization_over_training_rises_for_random_ids_and_stays_flat_for_repetitive_text() {
    let demo = shared_demo();
    let profile: ProfileTable = schema::read(&demo.run.join("analysis/profile.parquet")).unwrap();
    let checkpoints = [0.25, 0.5, 0.75, 1.0];
    let docs = profile.doc.len() / checkpoints.len();
    assert_eq!(profile.doc.len(), checkpoints.len() * docs);
    let of = |c: usize, source: &str| -> Vec<f64> {
        (c * docs..(c + 1) * docs)
            .filter(|&i| profile.source[i].as_deref() == Some(source))
            .map(|i| {
                assert_eq!(profile.checkpoint[i], checkpoints[c]);
                profile.mem_acc[i].unwrap()
            })
            .collect()
    };
    let rise = |source: &str| mean(&of(3, source)) - mean(&of(0, source));
    assert!(
        rise("random-id") > rise("repetitive") + 0.2,
        "random identifiers gain {:.3} from the first checkpoint to the last, repetitive text {:.3}",
        rise("random-id"),
        rise("repetitive")
    );
    for (c, checkpoint) in checkpoints.iter().enumerate() {
        let repetitive = of(c, "repetitive");
        let mean_of_them = mean(&repetitive);
        assert!(mean_of_them.abs() < 0.05, "checkpoint {checkpoint}: repetitive mean {mean_of_them:.3}");
        assert!(repetitive.iter().all(|m| *m < 0.15), "checkpoint {checkpoint}: {repetitive:?}");
    }
    // The last checkpoint is scores.parquet.
    let scores = scores(&demo.run);
    assert_eq!(profile.mem_acc[3 * docs..], scores.mem_acc[..]);
    assert_eq!(profile.mem_acc_se[3 * docs..], scores.mem_acc_se[..]);
    let printed = &demo.printed;
    assert!(printed.contains("memorization over training: mean mem_loss by source at each checkpoint"), "{printed}");
    assert!(printed.contains("ranking over training (mem_loss): "), "{printed}");
    assert!(printed.contains("ranking over training (mem_acc): "), "{printed}");
    let html = std::fs::read_to_string(demo.run.join("analysis/report.html")).unwrap();
    assert!(section(&html, "profile").contains("Memorization against training progress, per source"));
}

/// mem_acc of the documents of `source` at `level` of a spectrum run's table.
fn level_mem_acc(spectrum: &SpectrumTable, level: &str, source: &str) -> Vec<f64> {
    (0..spectrum.doc.len())
        .filter(|&i| spectrum.level[i] == level && spectrum.source[i].as_deref() == Some(source))
        .filter_map(|i| spectrum.mem_acc[i])
        .collect()
}

#[test]
fn a_spectrum_demo_finds_each_kind_memorized_at_its_level() {
    shared_demo();
    let _one_at_a_time = training_lock();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("spectrum");
    // The spectrum rests on the end of training: no earlier checkpoints to evaluate.
    let printed = demo(&run, &["--levels", "document,cluster,passage", "--models", "18", "--eval-at", "1"]);
    assert!(
        printed.contains(
            "spectrum: median mem_loss by source and level (models per level: document 6, cluster 6, passage 6)"
        ),
        "{printed}"
    );

    let spectrum: SpectrumTable = schema::read(&run.join("analysis/spectrum.parquet")).unwrap();
    let at = |level: &str, source: &str| mean(&level_mem_acc(&spectrum, level, source));
    let (family_alone, family_together) = (at("document", "near-duplicate"), at("cluster", "near-duplicate"));
    assert!(family_alone < 0.15, "each near-duplicate alone is low: {family_alone:.3}");
    assert!(
        family_together > family_alone + 0.1,
        "the family is memorized as a cluster: {family_together:.3} against {family_alone:.3} alone"
    );
    let (passage_alone, passage_together) = (at("document", "planted-passage"), at("passage", "planted-passage"));
    assert!(
        passage_together > passage_alone + 0.1,
        "the planted passage is memorized as a group: {passage_together:.3} against {passage_alone:.3} alone"
    );
    for level in ["document", "cluster", "passage"] {
        let (random, sentence) = (at(level, "random-id"), at(level, "sentence"));
        assert!(random > sentence + 0.2, "random identifiers are high at {level}: {random:.3} against {sentence:.3}");
        assert!(
            at(level, "repetitive") < 0.1,
            "repetitive documents stay low at {level}: {:.3}",
            at(level, "repetitive")
        );
    }
    // Scores of a level come from that level's models only, every unit IN for half of them.
    for i in (0..spectrum.doc.len()).filter(|&i| spectrum.mem_acc[i].is_some()) {
        assert_eq!((spectrum.n_in[i], spectrum.n_out[i]), (3, 3), "{} {}", spectrum.level[i], spectrum.doc_id[i]);
    }
    // Each kind's place on the spectrum: most random identifiers at their own level, most of
    // the family at the cluster's, most of the passage's documents at the passage's.
    let docs = spectrum.doc.len() / 3;
    let placed = |source: &str, level: &str| -> f64 {
        let of: Vec<usize> = (0..docs).filter(|&d| spectrum.source[d].as_deref() == Some(source)).collect();
        of.iter().filter(|&&d| spectrum.finest_level[d].as_deref() == Some(level)).count() as f64 / of.len() as f64
    };
    for (source, level) in [("random-id", "document"), ("near-duplicate", "cluster"), ("planted-passage", "passage")] {
        assert!(placed(source, level) >= 0.5, "{source}: {:.0}% placed at {level}", 100.0 * placed(source, level));
    }
    assert!(printed.contains("place on the spectrum (the finest level whose mem_loss reaches 50%"), "{printed}");
    assert!(printed.contains("documents one unit OUT removes from a model's training set, mean: document 1.0"));
    // The near-duplicates are listed as memorized only at the cluster level.
    let found = printed.split("memorized only at a coarser level").nth(1).expect("a findings list");
    assert!(found.contains("near-duplicate") && found.contains("→ cluster"), "{printed}");
    assert!(found.contains("a near-duplicate cluster of 12 documents"), "{printed}");
    let html = std::fs::read_to_string(run.join("analysis/report.html")).unwrap();
    assert_eq!(plots(&html), expected_plots(&run), "the report plots the spectrum");
    let shown = section(&html, "spectrum");
    assert!(shown.contains("planted-passage") && shown.contains("a near-duplicate cluster of 12 documents"), "{shown}");
}

#[test]
fn demo_twins_are_their_targets_top_influence_and_the_tables_agree() {
    let Demo { run, printed, .. } = shared_demo();
    assert!(printed.contains("reliability (mem_loss): halves of 8 models agree at Spearman"), "{printed}");
    assert!(printed.contains("reliability (mem_acc): halves of 8 models agree at Spearman"), "{printed}");
    assert!(printed.contains("strongest pairs"), "{printed}");

    let influence: InfluenceTable = schema::read(&run.join("analysis/influence.parquet")).unwrap();
    let of_target =
        |id: &str| -> Vec<usize> { (0..influence.target.len()).filter(|&i| influence.target_id[i] == id).collect() };
    let mut weakest_twin = f64::INFINITY;
    for i in 0..3 {
        let rows = of_target(&format!("twin-target-{i:03}"));
        assert_eq!(rows.len(), 10, "top 10 by default");
        let (first, second) = (rows[0], rows[1]);
        assert_eq!(influence.source_id[first], format!("twin-{i:03}"), "the twin is the top influence");
        let (top, next) = (influence.infl_acc[first], influence.infl_acc[second].abs());
        // The runner-up is no twin: with 16 models, a document whose IN models overlap the
        // twin's in 6 or 7 of 8 inherits most of its influence (see docs/methods.md), so the margin
        // depends on the draw; the twin's own influence is large.
        assert!(top > 0.4 && top > next, "twin {i}: {top:.3} above the next {next:.3}");
        weakest_twin = weakest_twin.min(top);
    }
    for i in 0..3 {
        let rows = of_target(&format!("unseen-{i:03}"));
        let top = influence.infl_acc[rows[0]].abs();
        assert!(top < weakest_twin / 2.0, "an ordinary target's top influence {top:.3} is small");
    }

    let scores = scores(run);
    let clusters: ClusterTable = schema::read(&run.join("analysis/clusters.parquet")).unwrap();
    for doc in (0..scores.doc.len()).filter(|&d| scores.cluster_size[d] > 1) {
        let row = clusters.cluster.iter().position(|&c| c == scores.cluster[doc]).unwrap();
        assert_eq!(scores.group_mem_acc[doc], clusters.group_mem_acc[row], "{}", scores.doc_id[doc]);
    }
    let twin = scores.doc_id.iter().position(|id| id == "twin-000").unwrap();
    assert_eq!(scores.cluster_size[twin], 2, "a twin and its target are one near-duplicate cluster");

    let mut inside = 0;
    for doc in 0..scores.doc.len() {
        match (scores.mem_acc_lo[doc], scores.mem_acc[doc], scores.mem_acc_hi[doc]) {
            (Some(lo), Some(mem), Some(hi)) => {
                assert!(lo <= hi, "{lo} {hi}");
                inside += usize::from(lo <= mem && mem <= hi);
            }
            (None, None, None) => assert!(scores.holdout[doc]),
            other => panic!("interval and score disagree: {other:?}"),
        }
    }
    assert!(inside * 10 >= scores.mem_acc.iter().flatten().count() * 9, "intervals hold their estimates");

    let reliability: ReliabilityTable = schema::read(&run.join("analysis/reliability.parquet")).unwrap();
    assert_eq!((reliability.score[0].as_str(), reliability.measure[0].as_str()), ("mem_loss", "split-half"));
    assert_eq!((reliability.score[4].as_str(), reliability.measure[4].as_str()), ("mem_acc", "split-half"));
    assert_eq!(reliability.models, [8, 4, 8, 16, 8, 4, 8, 16]);
    assert!(reliability.predicted[0].unwrap() > 0.5 && reliability.predicted[4].unwrap() > 0.5, "{reliability:?}");
}

#[test]
fn the_demo_report_shows_the_numbers_of_its_parquet_files() {
    let Demo { run, printed: stdout, .. } = shared_demo();
    let report = run.join("analysis/report.html");
    assert!(stdout.contains(&format!("report: {}", report.display())), "the demo prints the report's path:\n{stdout}");
    let html = std::fs::read_to_string(&report).unwrap();

    // Numbers on the page, recomputed from scores.parquet: the demo ranks by mem_loss.
    let scores = scores(run);
    let mut by_source = std::collections::BTreeMap::<String, Vec<f64>>::new();
    for d in 0..scores.doc.len() {
        by_source.entry(scores.source[d].clone().unwrap()).or_default().extend(scores.mem_loss[d]);
    }
    let sources = section(&html, "distribution");
    // Held-out sources (the demo's influence targets) have no mem_loss and no row.
    for (source, mut values) in by_source.into_iter().filter(|(_, values)| !values.is_empty()) {
        values.sort_by(f64::total_cmp);
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let median = quantile(&values, 0.5).unwrap();
        let row =
            format!("{source}</td><td>{n}</td><td>{n}</td><td>{mean:+.3}</td><td>{median:+.3}</td>", n = values.len());
        assert!(sources.contains(&row), "per-source row {row} in\n{sources}");
    }
    // max_by keeps the last of equal maxima; scanning backwards makes that the first document,
    // as the page breaks ties.
    let best = (0..scores.doc.len())
        .rev()
        .filter(|&d| scores.mem_loss[d].is_some())
        .max_by(|&a, &b| scores.mem_loss[a].unwrap().total_cmp(&scores.mem_loss[b].unwrap()));
    let best = best.unwrap();
    let most = section(&html, "most");
    let first_row = &most[most.find("<tbody><tr>").unwrap()..];
    let expected = format!(
        "<td class=\"id\">{}<br><span class=\"source\">{}</span></td><td class=\"num\">{:+.3}</td>",
        scores.doc_id[best],
        scores.source[best].as_deref().unwrap(),
        scores.mem_loss[best].unwrap()
    );
    assert!(
        first_row.starts_with(&format!("<tbody><tr>{expected}")),
        "top document {expected} first in\n{first_row:.400}"
    );
    assert_eq!(most.matches("<details>").count(), 20, "--top defaults to 20");
    assert!(html.contains("4 of 4 jobs complete · 16 of 16 models in the analysis"), "completeness is shown");
    assert_eq!(plots(&html), expected_plots(run));
}

#[test]
#[ignore = "needs chromium: scripts/test.sh runs this wherever chromium is installed (it installs it as root)"]
fn the_demo_report_renders_cleanly_at_two_widths_in_chromium() {
    let Demo { run, .. } = shared_demo();
    let dir = tempfile::tempdir().unwrap();
    let report = run.join("analysis/report.html");
    let browser = chromium();
    let page = browser.render(&report, 1280, &dir.path().join("wide"));
    page.assert_clean();
    assert_eq!(plots(&page.dom), expected_plots(run), "the browser's DOM has one plot per section");
    page.assert_screenshot_not_blank();
    let narrow = browser.render(&report, 390, &dir.path().join("narrow"));
    narrow.assert_clean();
    narrow.assert_screenshot_not_blank();
}
