//! Planning at coarser levels with the real binary (no training): a footer shared by
//! thousands of documents is one passage unit that the size limit refuses to sample whole,
//! and plan says so; a group field becomes units and a column of `corpus.parquet`.

use std::collections::HashMap;

use subsets::membership::Membership;
use subsets::schema::{self, UnitTable};
use tests::{cfmem, plan_args};

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
    let expected = "level passage: 1 units over the limit of 32 documents (--max-unit-fraction 0.01) are not sampled \
                    as one; their 3000 documents fall back to level cluster and get no passage score. Largest: 3000 \
                    documents, shared passage \"";
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
