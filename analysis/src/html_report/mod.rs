//! The HTML report of an analyzed run (`cfmem report`): one self-contained page with inline
//! CSS and SVG, no script, and a Content-Security-Policy that forbids every request, so it
//! opens offline (from a mail attachment too) and nothing in it can run.
//!
//! It is drawn from the run's `run.toml`, `corpus.parquet` (texts for the previews), the
//! completion records of its logs and `analysis/*.parquet`. It never trains or estimates:
//! every number shown is a value of those files or one of the run's [`Summary`] numbers,
//! the same ones the printed summary ([`crate::printed_summary`]) shows (ranking, quantiles,
//! per-source table, cluster means, copy sweep, previews and the label of a document
//! without a source). Sections for files another analysis adds (influence, reliability)
//! appear when the file exists, as does the membership section (`membership.rs`). Document text and ids are untrusted input: every
//! interpolated string goes through maud, which escapes it.
//!
//! [`write()`] draws and writes a run's page. Its files: `load.rs` reads the run
//! ([`ReportData`]), `sections.rs` and `membership.rs` draw the sections, `parts.rs` holds
//! what they share (widths, colours, number formats), [`plot`] the SVG figures, and this
//! file the page around them.

mod load;
mod membership;
mod parts;
pub mod plot;
mod sections;

pub use load::ReportData;

use std::path::{Path, PathBuf};

use maud::{DOCTYPE, Markup, PreEscaped, html};
use subsets::layout::RunDir;

use crate::Result;
use crate::measure::Measure;
use crate::summary::Summary;

use parts::SourceColors;
use sections::{
    clusters, copy_sweep, distribution, documents, duplication, glance, influence_pairs, profile_section, regime,
    spectrum_section, stability,
};

const STYLE: &str = include_str!("report.css");

/// One section of the page: its anchor, heading and content.
struct Section {
    id: &'static str,
    title: &'static str,
    body: Markup,
}

/// How many of the most and of the least memorized documents a report lists by default.
pub const DEFAULT_TOP: usize = 20;

/// Draws the report of `run` (with the `top` most and least memorized documents, ranked by
/// `rank_by` or as analyzed) and writes it atomically to `out`, by default
/// `RUN/analysis/report.html`: the path written and the page's bytes.
pub fn write(run: &RunDir, out: Option<&Path>, top: usize, rank_by: Option<Measure>) -> Result<(PathBuf, usize)> {
    let page = render(&ReportData::load(run, rank_by)?, top);
    let path = out.map_or_else(|| run.report(), Path::to_path_buf);
    subsets::atomic::write_bytes(&path, page.as_bytes())?;
    Ok((path, page.len()))
}

/// The whole report page for `data`, with the `top` most and least memorized documents.
pub fn render(data: &ReportData, top: usize) -> String {
    let summary = Summary::new(&data.scores, &data.clusters, &data.copies, data.rank_by);
    let colors = SourceColors::new(&summary);
    let mut sections = vec![
        Section { id: "glance", title: "The run at a glance", body: glance(data, &summary) },
        Section {
            id: "distribution",
            title: "Distribution of mem_loss and mem_acc",
            body: distribution(data, &summary, &colors),
        },
        Section { id: "duplicates", title: "Memorization and duplication", body: duplication(data, &colors) },
        Section { id: "clusters", title: "Near-duplicate clusters", body: clusters(&summary) },
    ];
    if let Some(diagnosis) = &data.diagnosis {
        sections.push(Section { id: "regime", title: "Do the models generalize?", body: regime(diagnosis) });
    }
    if !summary.copies.is_empty() {
        sections.push(Section { id: "copies", title: "Copy sweep", body: copy_sweep(&summary.copies, data.rank_by) });
    }
    if let Some(spectrum) = &data.spectrum {
        let body = spectrum_section(spectrum, data.rank_by);
        sections.push(Section { id: "spectrum", title: "The memorization spectrum", body });
    }
    if let Some(profile) = &data.profile {
        let body = profile_section(profile, data.rank_by);
        sections.push(Section { id: "profile", title: "Memorization over training", body });
    }
    if let Some(reliability) = &data.reliability {
        let body = stability(reliability, &data.growth, data.rank_by);
        sections.push(Section { id: "reliability", title: "Reliability of the ranking", body });
    }
    if let Some(report) = &data.membership {
        let body = membership::section(report, &data.scores, &data.texts);
        sections.push(Section { id: "membership", title: "Membership inference", body });
    }
    if let Some(influence) = &data.influence {
        sections.push(Section { id: "influence", title: "Strongest influence", body: influence_pairs(influence, top) });
    }
    sections.push(Section {
        id: "most",
        title: "Most memorized documents",
        body: documents(data, summary.most_memorized(top), &summary),
    });
    sections.push(Section {
        id: "least",
        title: "Least memorized documents",
        body: documents(data, summary.least_memorized(top), &summary),
    });

    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'";
                title { "cfmem report: " (data.name) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { "Counterfactual memorization of " code { (data.name) } }
                    p class="meta" {
                        "cfmem " (env!("CARGO_PKG_VERSION")) " · mem_loss = mean per-token loss of models not \
                         trained on a document − of models trained on it · mem_acc = mean accuracy of models trained \
                         on it − of models not · ranked by " (data.rank_by.score())
                    }
                    nav {
                        @for section in &sections {
                            a href=(format!("#{}", section.id)) { (section.title) }
                        }
                    }
                }
                main {
                    @for section in &sections {
                        section id=(section.id) {
                            h2 { (section.title) }
                            (section.body)
                        }
                    }
                }
            }
        }
    };
    page.into_string()
}

#[cfg(test)]
mod tests {
    use super::load::read_summary;
    use super::parts::{FULL_TEXT_CHARS, preview_block};
    use super::sections::interval;
    use super::*;

    use subsets::base::PretrainingRecord;
    use subsets::config::{
        Adapter, CorpusConfig, DesignConfig, JobsConfig, ModelConfig, RunConfig, TokensConfig, TrainConfig, Unit,
    };
    use subsets::schema::{ClusterTable, CopiesTable, ScoreTable};

    use crate::measure::{ByMeasure, Measure};

    /// Three documents of two sources, the third held out; one cluster of the first two.
    fn data(texts: [&str; 3]) -> ReportData {
        let design = DesignConfig { holdout: 0.3, unit: Unit::Cluster, ..DesignConfig::documents(4, 0.5) };
        let corpus = CorpusConfig { path: "c.jsonl".into(), sha256: "ab".repeat(32), documents: 3 };
        let config = RunConfig {
            seed: 5,
            corpus,
            design,
            model: ModelConfig::default(),
            train: TrainConfig::default(),
            jobs: JobsConfig::default(),
            tokens: TokensConfig {
                vocab: 256,
                bos: None,
                tokenizer_sha256: None,
                corpus: 60,
                capped: 0,
                background: 0,
            },
            background: None,
            base: None,
        };
        let scores = ScoreTable {
            doc: vec![0, 1, 2],
            doc_id: vec!["a".into(), "<b>".into(), "c".into()],
            source: vec![Some("x".into()), Some("y".into()), None],
            holdout: vec![false, false, true],
            n_in: vec![2, 2, 0],
            n_out: vec![2, 2, 4],
            mem_acc: vec![Some(0.5), Some(-0.25), None],
            mem_acc_se: vec![Some(0.1), None, None],
            mem_acc_lo: vec![None; 3],
            mem_acc_hi: vec![None; 3],
            mem_loss: vec![Some(0.0), Some(1.0), None],
            mem_loss_se: vec![Some(0.05), Some(0.05), None],
            mem_loss_lo: vec![None; 3],
            mem_loss_hi: vec![None; 3],
            loss_out: vec![Some(2.0), Some(2.5), Some(3.0)],
            exact_dup_count: vec![0, 0, 0],
            near_dup_count: vec![1, 1, 0],
            max_jaccard: vec![0.9, 0.9, 0.0],
            cluster: vec![0, 0, 2],
            cluster_size: vec![2, 2, 1],
            repeat_fraction: vec![0.0, 0.5, 0.0],
            ..ScoreTable::default()
        };
        let clusters = ClusterTable {
            cluster: vec![0],
            cluster_size: vec![2],
            group_mem_acc: vec![Some(0.75)],
            group_mem_loss: vec![Some(0.5)],
            ..ClusterTable::default()
        };
        ReportData {
            name: "run".into(),
            config,
            texts: texts.map(String::from).to_vec(),
            scores,
            clusters,
            copies: CopiesTable::default(),
            influence: None,
            reliability: None,
            diagnosis: None,
            spectrum: None,
            profile: None,
            membership: None,
            growth: ByMeasure::default(),
            rank_by: Measure::Accuracy,
            pretraining: None,
            jobs_complete: (2, 2),
            planned: None,
            last_log: None,
            analyzed: None,
        }
    }

    #[test]
    fn a_page_has_its_sections_numbers_and_escaped_text() {
        let page = render(&data(["<script>x()</script>", "a \"quoted\" & <i>marked</i> text", "held out"]), 1);
        for id in ["glance", "distribution", "duplicates", "clusters", "most", "least"] {
            assert!(page.contains(&format!("<section id=\"{id}\">")), "section {id}");
        }
        assert!(!page.contains("id=\"copies\"") && !page.contains("id=\"influence\""));
        assert!(!page.contains("<script") && !page.contains("<i>") && !page.contains("<b>"));
        assert!(page.contains("&lt;script&gt;x()&lt;/script&gt;"));
        assert!(page.contains("a &quot;quoted&quot; &amp; &lt;i&gt;marked&lt;/i&gt; text"));
        assert!(page.contains("2 scored documents: median +0.125"), "the median of +0.5 and -0.25");
        assert!(page.contains("(none)</td><td>1</td><td>0</td>"), "the held-out document has no source: {page}");
        assert!(!page.contains("(no source)"), "one label for a document without a source");
        assert!(page.contains("1 of them have a group score"));
        assert!(page.contains("2 of 2 jobs complete · 4 of 4 models in the analysis · 2 of 3 documents scored"));
        let most = &page[page.find("<section id=\"most\">").unwrap()..page.find("<section id=\"least\">").unwrap()];
        assert!(most.contains("≈[+0.304, +0.696]") && !most.contains("&lt;b&gt;"), "--top 1: only the best");
        let kinds = page.matches("<svg class=\"plot\"").count();
        assert_eq!(kinds, 7, "a histogram and a box plot per score, two scatters and the cluster plot");
    }

    #[test]
    fn a_documents_text_keeps_its_spaces_and_line_breaks() {
        let art = "  /\\_/\\\n ( o.o )   <- a cat\n  > ^ <\n\tfn main() {}";
        let page = render(&data([art, "second", "third"]), 3);
        assert!(page.contains("<pre>  /\\_/\\\n ( o.o )   &lt;- a cat\n  &gt; ^ &lt;\n\tfn main() {}</pre>"), "{page}");
        assert!(STYLE.contains("td.text pre { font-family: ui-monospace") && STYLE.contains("white-space: pre;"));
    }

    #[test]
    fn a_fine_tuning_audit_says_it_is_one_naming_its_base_and_adapters() {
        let scratch = render(&data(["first", "second", "third"]), 1);
        assert!(!section(&scratch, "glance").contains("Base"), "a run from scratch has no base");
        let mut from_base = data(["first", "second", "third"]);
        from_base.config.train.init = "/bases/gpt2-web".into();
        from_base.config.train.adapter = Adapter::Lora;
        from_base.config.base = Some(subsets::config::BaseConfig { weights_sha256: "f00d".repeat(16) });
        from_base.pretraining = Some(PretrainingRecord {
            fingerprint: "ab".into(),
            corpus: "web.jsonl".into(),
            documents: 900,
            held_out_documents: 100,
            seed: 3,
            steps: 1200,
            tokens_trained: 450_000,
            held_out_loss: Some(2.3456),
            held_out_accuracy: Some(0.5),
        });
        let glance = section(&render(&from_base, 1), "glance").to_string();
        for shown in [
            "every model fine-tuned from <code>/bases/gpt2-web</code> · gpt2 · model.safetensors sha256 <code>f00df00df00d</code>",
            "pretrained by cfmem on <code>web.jsonl</code> (900 documents, 100 held out, seed 3) for 1200 steps",
            "held-out loss 2.346 nats per token, accuracy 0.500",
            "LoRA rank 8, alpha 16 on c_attn",
        ] {
            assert!(glance.contains(shown), "{shown:?} in\n{glance}");
        }
    }

    /// The section of `page` with anchor `id`.
    fn section<'a>(page: &'a str, id: &str) -> &'a str {
        let start = page.find(&format!("<section id=\"{id}\">")).unwrap();
        &page[start..start + page[start..].find("</section>").unwrap()]
    }

    #[test]
    fn the_ranking_score_orders_the_lists_and_leads_every_section() {
        let by_accuracy = render(&data(["first", "second", "third"]), 1);
        let by_loss = render(&ReportData { rank_by: Measure::Loss, ..data(["first", "second", "third"]) }, 1);
        // mem_acc ranks a (+0.5) over <b> (−0.25); mem_loss ranks <b> (+1.0) over a (0.0).
        assert!(section(&by_accuracy, "most").contains(">a<br>"));
        assert!(section(&by_loss, "most").contains(">&lt;b&gt;<br>"), "{}", section(&by_loss, "most"));
        assert!(section(&by_loss, "least").contains(">a<br>"));
        // Both scores, each with its interval, the ranking one first.
        let most = section(&by_loss, "most");
        let header = &most[most.find("<thead>").unwrap()..most.find("</thead>").unwrap()];
        assert!(header.find("mem_loss").unwrap() < header.find("mem_acc").unwrap(), "{header}");
        assert!(most.contains("≈[+0.902, +1.098]"), "mem_loss ± 1.96 se: {most}");
        // Both distributions, the ranking score's first, and how to read mem_loss at this
        // run's scale: the median OUT loss of the scored documents is 2.25 nats.
        let distribution = section(&by_loss, "distribution");
        assert!(
            distribution.find("Histogram of mem_loss").unwrap() < distribution.find("Histogram of mem_acc").unwrap()
        );
        assert!(distribution.contains("median per-token loss of 2.25 nats"), "{distribution}");
        assert!(section(&by_loss, "duplicates").contains("mem_loss against near_dup_count"));
        assert!(by_loss.contains("ranked by mem_loss") && by_accuracy.contains("ranked by mem_acc"));
    }

    #[test]
    fn a_memorizing_regime_is_shown_with_its_warning() {
        let memorizing = |source: &str| crate::diagnosis::DocumentAccuracy {
            source: Some(source.into()),
            acc_in: Some(0.9),
            acc_out: Some(0.2),
            bigram: Some(0.25),
            unigram: Some(0.1),
            ..Default::default()
        };
        let mut report = data(["a", "b", "c"]);
        report.diagnosis = Some(crate::diagnosis::diagnose(&[memorizing("x"), memorizing("<y>")]));
        let page = render(&report, 1);
        let regime = &page[page.find("<section id=\"regime\">").unwrap()..];
        let regime = &regime[..regime.find("</section>").unwrap()];
        assert!(regime.contains("<p class=\"warning\">warning: the models do not generalize"), "{regime}");
        assert!(regime.contains("<td>&lt;y&gt;</td>"), "source names are escaped: {regime}");
        assert_eq!(regime.matches("<td>memorizing</td>").count(), 3, "overall and both sources: {regime}");
        assert!(!render(&data(["a", "b", "c"]), 1).contains("id=\"regime\""), "no summary.json, no section");
    }

    #[test]
    fn a_summary_without_a_diagnosis_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.json");
        assert!(read_summary(&path).unwrap().diagnosis.is_none(), "no file, no section");
        std::fs::write(&path, r#"{"models": 4}"#).unwrap();
        let err = read_summary(&path).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: no diagnosis in it: ", path.display())), "{err}");
        // A profile that is not one is named too.
        let diagnosis = serde_json::to_value(crate::diagnosis::diagnose(&[])).unwrap();
        std::fs::write(&path, serde_json::json!({"diagnosis": diagnosis, "profile": [1]}).to_string()).unwrap();
        let err = read_summary(&path).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: `profile`: ", path.display())), "{err}");
    }

    #[test]
    fn a_summary_as_analyze_writes_it_is_read() {
        use crate::synthetic_run::{self, Row, Spec};
        let dir = tempfile::tempdir().unwrap();
        let run = subsets::layout::RunDir::new(dir.path().join("run"));
        let documents = synthetic_run::documents(24, 2);
        let spec = Spec { documents, models: 8, stack: 4, seed: 1, unit: Unit::Document, holdout_ids: vec![] };
        // A signal of the document's number, as large as the models' noise: 8 models rank
        // unstably.
        let row = |checkpoint: f64, model: u32, doc: usize, in_train: &[bool]| {
            let signal = if in_train[doc] { (checkpoint * (doc % 7) as f64 * 2.0) as u32 } else { 0 };
            let correct = 30 + signal + (model * 7 + doc as u32 * 13) % 11;
            Row { tokens: 100, correct, nll: f64::from(200 - correct) }
        };
        synthetic_run::write_checkpoints(&run, &spec, &[0.5, 1.0], row).unwrap();
        let logs = crate::per_model::RunLogs::open(&run).unwrap();
        let analysis = crate::scores::analyze(&run, &logs, Default::default()).unwrap();
        analysis.write(&run).unwrap();
        let file = analysis.summary.file();
        let written: crate::summary_file::SummaryFile =
            serde_json::from_str(&std::fs::read_to_string(run.summary()).unwrap()).unwrap();
        assert_eq!(written, file);
        let parts = read_summary(&run.summary()).unwrap();
        assert_eq!(parts.diagnosis, Some(file.diagnosis));
        assert!(file.profile.is_some(), "two checkpoints");
        assert_eq!(parts.profile, file.profile);
        assert_eq!(parts.rank_by, Some(file.rank_by));
        let growth = |m: Measure| {
            let verdict = &file.reliability[m.score()];
            verdict.command.clone().zip(verdict.extend_to)
        };
        assert_eq!(parts.growth, ByMeasure::from_fn(growth));
        assert!(parts.growth.mem_loss.is_some(), "8 models rank unstably: {:?}", file.reliability);
    }

    #[test]
    fn a_summary_of_an_earlier_layout_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.json");
        let diagnosis = crate::diagnosis::diagnose(&[]);
        // Before cfmem ranked by either score: mem_acc's verdict alone, no rank_by.
        let verdict = serde_json::json!({"models": 4, "stable": false, "command": "cfmem plan", "extend_to": 9});
        let summary = serde_json::json!({"diagnosis": diagnosis, "reliability": verdict, "mem_acc_quantiles": null});
        std::fs::write(&path, summary.to_string()).unwrap();
        let parts = read_summary(&path).unwrap();
        assert_eq!(parts.diagnosis, Some(diagnosis));
        assert_eq!((parts.profile, parts.rank_by), (None, None));
        assert_eq!(parts.growth, ByMeasure { mem_loss: None, mem_acc: Some(("cfmem plan".to_string(), 9)) });
    }

    #[test]
    fn whole_texts_are_cut_with_a_count() {
        assert_eq!(preview_block(&"x".repeat(FULL_TEXT_CHARS + 5)).lines().last(), Some("… (5 more characters)"));
    }

    #[test]
    fn intervals_prefer_the_bootstrap() {
        let mut s = ScoreTable {
            mem_acc: vec![Some(0.5)],
            mem_acc_se: vec![Some(0.1)],
            mem_acc_lo: vec![None],
            mem_acc_hi: vec![None],
            ..ScoreTable::default()
        };
        assert_eq!(interval(&s, 0, Measure::Accuracy), "≈[+0.304, +0.696]");
        s.mem_acc_lo[0] = Some(0.25);
        s.mem_acc_hi[0] = Some(0.75);
        assert_eq!(interval(&s, 0, Measure::Accuracy), "[+0.250, +0.750]");
        s.mem_loss = vec![Some(0.2)];
        s.mem_loss_se = vec![None];
        s.mem_loss_lo = vec![None];
        s.mem_loss_hi = vec![None];
        assert_eq!(interval(&s, 0, Measure::Loss), "–", "no interval and no standard error");
    }
}
