//! Planning at coarser levels with the real binary (no training, but for one base pretrained
//! to find topics with): a footer shared by
//! thousands of documents is one passage unit that the size limit refuses to sample whole,
//! and plan says so; on a small corpus the default bound keeps a passage six documents share
//! and still refuses a footer most of them share; topics are found from the text, or from a
//! base's hidden states, and bad requests for them refused; a group field becomes units and
//! a column of `corpus.parquet`.

use std::collections::HashMap;

use subsets::membership::Membership;
use subsets::schema::{self, UnitTable};
use tests::{TINY_CONFIG, cfmem, plan_args, training_lock};

/// `level`'s rows of `units.parquet`, in document order.
fn rows_of(units: &UnitTable, level: &str) -> Vec<usize> {
    (0..units.level.len()).filter(|&i| units.level[i] == level).collect()
}

#[test]
fn a_footer_shared_by_thousands_is_caught_by_the_size_limit_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("pages.jsonl");
    let footer = "Copyright the example publishing house, all rights reserved, see terms.";
    let mut lines = String::new();
    for i in 0..3000 {
        lines += &format!("{{\"text\":\"page {i} is about item {} of the list. {footer}\"}}\n", i * 7919 % 100_003);
    }
    for i in 0..200 {
        lines += &format!("{{\"text\":\"a page without the footer, number {i}\"}}\n");
    }
    std::fs::write(&corpus, lines).unwrap();
    let run = dir.path().join("run");
    let out = cfmem(&plan_args(&corpus, &run, "4", "1", &["--unit", "passage"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let expected = "level passage: 1 units over the limit of 56 documents (1.75% of the corpus; --max-unit-fraction \
                    sets it) are not sampled as one; their 3000 documents fall back to level cluster and get no \
                    passage score. Largest: 3000 documents, shared passage \"";
    let said = stderr.split(expected).nth(1).unwrap_or_else(|| panic!("{expected}\nnot in:\n{stderr}"));
    assert!(
        said.contains("of the list. Copyright the example publishing house"),
        "the preview shows the footer: {said}"
    );

    let units: UnitTable = schema::read(&run.join("units.parquet")).unwrap();
    let passage = rows_of(&units, "passage");
    assert_eq!(passage.len(), 3200);
    let footer_unit = units.unit[passage[0]];
    for (doc, &i) in passage.iter().enumerate() {
        let with_footer = doc < 3000;
        assert_eq!(units.unit[i] == footer_unit, with_footer, "doc {doc}");
        assert_eq!(units.fallback[i], with_footer, "doc {doc}");
        assert_eq!(units.unit_size[i], if with_footer { 3000 } else { 1 });
    }
    // Sampled by their clusters (each page its own) within the footer's unit: every page is
    // IN for exactly 2 of the 4 models, not all 3000 together.
    let sampled: std::collections::HashSet<u32> = passage[..3000].iter().map(|&i| units.sampled_unit[i]).collect();
    assert_eq!(sampled.len(), 3000);
    let membership = Membership::read(&run.join("membership.bin")).unwrap();
    let per_model: Vec<usize> = (0..4).map(|m| membership.docs_of(m).len()).collect();
    assert!(per_model.iter().all(|&n| (1450..1750).contains(&n)), "{per_model:?}");
    for doc in 0..3200 {
        assert_eq!((0..4).filter(|&m| membership.contains(m, doc)).count(), 2, "doc {doc}");
    }
}

#[test]
fn on_a_small_corpus_the_default_bound_keeps_a_shared_passage_and_refuses_a_footer() {
    let dir = tempfile::tempdir().unwrap();
    let quote = "In the beginning was the word, and the word was with the reader of this quotation.";
    let footer = "This page is part of the collected manuals; all rights reserved by their authors.";
    // 70 documents each time: six quoting the passage, then 63 ending in the footer.
    for (name, shared, sharing) in [("quote", quote, 6), ("footer", footer, 63)] {
        let corpus = dir.path().join(format!("{name}.jsonl"));
        let lines: String = (0..70)
            .map(|i| {
                let own = format!("document {i} says {} things about item {}", i * 37 % 101, i * 7919 % 1009);
                let text = if i < sharing { format!("{own}. {shared}") } else { own };
                serde_json::json!({ "text": text }).to_string() + "\n"
            })
            .collect();
        std::fs::write(&corpus, lines).unwrap();
        let run = dir.path().join(name);
        let out = cfmem(&plan_args(&corpus, &run, "4", "1", &["--unit", "passage"]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let units: UnitTable = schema::read(&run.join("units.parquet")).unwrap();
        let passage = rows_of(&units, "passage");
        assert_eq!(units.unit_size[passage[0]], sharing, "{name}: one unit of the documents sharing it");
        // ⌊√70⌋ = 8 documents, more than 1% of 70.
        assert_eq!(units.fallback[passage[0]], sharing > 8, "{name}: {stderr}");
        let toml = std::fs::read_to_string(run.join("run.toml")).unwrap();
        assert!(toml.contains(&format!("max_unit_fraction = {}", 8.0 / 70.0)), "run.toml records the bound: {toml}");
    }
}

/// `per_topic` documents on each of three topics, each written with its own vocabulary
/// (no passage shared), one JSONL line each, topic after topic; the planted topic of each.
fn topic_corpus(path: &std::path::Path, per_topic: usize, seed: u64) -> Vec<u32> {
    let vocabularies = [
        "frog pond tadpole lily croak swamp amphibian leap marsh newt toad wetland spawn reed insect",
        "engine piston gearbox torque clutch exhaust cylinder valve crankshaft radiator throttle diesel brake axle",
        "violin sonata orchestra cello melody harmony concerto tempo rhythm chord symphony overture bow score",
    ];
    let (mut lines, mut planted) = (String::new(), Vec::new());
    let mut state = seed;
    for (topic, words) in vocabularies.iter().enumerate() {
        let words: Vec<&str> = words.split(' ').collect();
        for i in 0..per_topic {
            let text: Vec<&str> = (0..30)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    words[(state >> 33) as usize % words.len()]
                })
                .collect();
            lines += &(serde_json::json!({ "id": format!("t{topic}-{i}"), "text": text.join(" ") }).to_string() + "\n");
            planted.push(topic as u32);
        }
    }
    std::fs::write(path, lines).unwrap();
    planted
}

#[test]
fn topics_are_found_from_the_text_recorded_in_run_toml_and_bad_requests_refused() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("topics.jsonl");
    let planted = topic_corpus(&corpus, 20, 12345);
    let run = dir.path().join("run");
    let out =
        cfmem(&plan_args(&corpus, &run, "4", "1", &["--levels", "document,topic:3", "--max-unit-fraction", "0.5"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let units: UnitTable = schema::read(&run.join("units.parquet")).unwrap();
    let topic = rows_of(&units, "topic:3");
    let found: Vec<u32> = topic.iter().map(|&i| units.unit[i]).collect();
    let agreement = duplicates::topics::adjusted_rand(&found, &planted);
    assert!(agreement >= 0.9, "adjusted Rand {agreement} of {found:?}");
    assert!(topic.iter().all(|&i| units.unit_size[i] == 20 && !units.fallback[i]));
    let toml = std::fs::read_to_string(run.join("run.toml")).unwrap();
    assert!(toml.contains("[design.topics]") && toml.contains("method = \"tfidf-svd\""), "{toml}");
    assert!(toml.contains("dims = 100") && toml.contains("min_df = 2"), "{toml}");

    // A topic of a third of the corpus is over the default bound, and falls back.
    let bounded = dir.path().join("bounded");
    let out = cfmem(&plan_args(&corpus, &bounded, "4", "1", &["--levels", "document,topic:3"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("level topic:3: 3 units over the limit of 7 documents"), "{stderr}");

    let refused = |levels: &str| {
        let out = cfmem(&plan_args(&corpus, &dir.path().join("refused"), "4", "1", &["--levels", levels]));
        assert!(!out.status.success(), "{levels} should be refused");
        assert!(!dir.path().join("refused").exists(), "nothing written for {levels}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(refused("document,topic:0").contains("topic:0: K must be at least 1 topic"));
    assert!(refused("document,topic:x").contains("topic:x: K must be a number of topics"));
    let err = refused("document,topic:61");
    assert!(err.contains("level topic:61: K = 61 topics for 60 documents: at most one topic per document"), "{err}");
    let empty = dir.path().join("empty.jsonl");
    let lines: String =
        (0..6).map(|i| serde_json::json!({ "text": format!("{}", "?!".repeat(i + 1)) }).to_string() + "\n").collect();
    std::fs::write(&empty, lines).unwrap();
    let out = cfmem(&plan_args(&empty, &dir.path().join("refused"), "4", "1", &["--levels", "document,topic:2"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("the corpus has no vocabulary to group by topic"), "{err}");
}

#[test]
fn in_a_run_from_a_base_topics_are_found_from_the_bases_hidden_states() {
    let _one_at_a_time = training_lock();
    let dir = tempfile::tempdir().unwrap();
    // A base pretrained on text of the same kind (other documents of the same topics).
    let pretraining = dir.path().join("pretraining.jsonl");
    topic_corpus(&pretraining, 60, 777);
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, TINY_CONFIG).unwrap();
    let base = dir.path().join("base");
    let args = ["pretrain", "--corpus", pretraining.to_str().unwrap(), "--config", config.to_str().unwrap()];
    let out = cfmem(&[&args[..], &["--out", base.to_str().unwrap(), "--seed", "1", "--device", "cpu"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let corpus = dir.path().join("topics.jsonl");
    let planted = topic_corpus(&corpus, 20, 12345);
    let run = dir.path().join("run");
    let extra = ["--init", base.to_str().unwrap(), "--levels", "document,topic:3", "--max-unit-fraction", "0.5"];
    let out = cfmem(&plan_args(&corpus, &run, "4", "1", &extra));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("embedded 60 documents with the base for topics"), "{stderr}");
    let units: UnitTable = schema::read(&run.join("units.parquet")).unwrap();
    let found: Vec<u32> = rows_of(&units, "topic:3").iter().map(|&i| units.unit[i]).collect();
    let agreement = duplicates::topics::adjusted_rand(&found, &planted);
    assert!(agreement >= 0.9, "adjusted Rand {agreement} of {found:?}");
    let toml = std::fs::read_to_string(run.join("run.toml")).unwrap();
    assert!(toml.contains("method = \"base-hidden-mean\""), "{toml}");
}

#[test]
fn a_group_field_gives_units_and_a_column_of_the_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("sites.jsonl");
    let site = |i: usize| match i % 3 {
        0 => "\"site\":\"a.org\",",
        1 => "\"site\":\"b.org\",",
        _ => "",
    };
    let lines: String =
        (0..12).map(|i| format!("{{{}\"text\":\"text number {i} of a small corpus\"}}\n", site(i))).collect();
    std::fs::write(&corpus, lines).unwrap();
    let run = dir.path().join("run");
    let extra = ["--levels", "field:site,document", "--max-unit-fraction", "0.5"];
    let out = cfmem(&plan_args(&corpus, &run, "8", "1", &extra));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("level document         4 models") && stderr.contains("level field:site       4 models"));

    let column = schema::read_strings(&run.join("corpus.parquet"), "field:site").unwrap();
    let expected: Vec<Option<String>> = (0..12).map(|i| ["a.org", "b.org"].get(i % 3).map(|s| s.to_string())).collect();
    assert_eq!(column, expected);
    let units: UnitTable = schema::read(&run.join("units.parquet")).unwrap();
    let field = rows_of(&units, "field:site");
    let mut by_value: HashMap<Option<String>, Vec<u32>> = HashMap::new();
    for (doc, &i) in field.iter().enumerate() {
        by_value.entry(column[doc].clone()).or_default().push(units.unit[i]);
        assert!(!units.fallback[i]);
    }
    for value in ["a.org", "b.org"] {
        let ids = &by_value[&Some(value.to_string())];
        assert!(ids.len() == 4 && ids.iter().all(|&u| u == ids[0]), "{value}: one unit of 4");
    }
    let alone = &by_value[&None];
    assert_eq!(alone.iter().collect::<std::collections::HashSet<_>>().len(), 4, "no value: each its own unit");
    // The field's block: the four documents of a site are IN or OUT together.
    let config = std::fs::read_to_string(run.join("run.toml")).unwrap();
    assert!(config.contains("[[design.spectrum]]\nlevel = \"field:site\"\nmodels = [[4, 8]]"), "{config}");
    let membership = Membership::read(&run.join("membership.bin")).unwrap();
    for model in 4..8 {
        let of_site = |m: u32, r: usize| membership.contains(m, r as u32);
        assert!([0, 3, 6, 9].iter().all(|&d| of_site(model, d) == of_site(model, 0)), "model {model}");
    }
}
