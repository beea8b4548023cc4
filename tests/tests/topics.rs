//! The end of the spectrum, end to end with real training: documents written from their
//! topic's words are memorized when their whole topic leaves the training set and hardly
//! when they leave alone, random identifiers when they leave alone; each document's
//! `finest_level` says so.

use subsets::schema::{self, SpectrumTable};
use tests::{TINY_CONFIG, cfmem_ok, plan_args, training_lock};

/// Six topics of eight documents, each topic's documents drawn from its own 12 words, and
/// twelve random identifiers; one JSONL line each.
fn corpus(path: &std::path::Path) {
    let mut state = 99u64;
    let mut next = |n: usize| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as usize % n
    };
    let mut lines = String::new();
    for topic in 0..6 {
        let words: Vec<String> =
            (0..12).map(|w| format!("{}{}", ["ka", "lo", "mi", "nu", "pe", "ro"][topic], w)).collect();
        for i in 0..8 {
            let text: Vec<&str> = (0..40).map(|_| words[next(12)].as_str()).collect();
            let line =
                serde_json::json!({ "id": format!("topic{topic}-{i}"), "text": text.join(" "), "source": "topic" });
            lines += &(line.to_string() + "\n");
        }
    }
    for i in 0..12 {
        let text: String = (0..24).map(|_| char::from(b"0123456789abcdef"[next(16)])).collect();
        let line =
            serde_json::json!({ "id": format!("random-{i}"), "text": format!("id {text}"), "source": "random-id" });
        lines += &(line.to_string() + "\n");
    }
    std::fs::write(path, lines).unwrap();
}

#[test]
fn topic_documents_are_placed_at_the_topic_level_and_random_identifiers_at_their_own() {
    let _one_at_a_time = training_lock();
    let dir = tempfile::tempdir().unwrap();
    let corpus_path = dir.path().join("corpus.jsonl");
    corpus(&corpus_path);
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, TINY_CONFIG.replace("epochs = 3", "epochs = 12")).unwrap();
    // 16 models, 8 a level; topics of 8 documents, within a bound of 15% (9 documents).
    let run = dir.path().join("run");
    let extra = ["--levels", "document,topic:7", "--max-unit-fraction", "0.15", "--config", config.to_str().unwrap()];
    cfmem_ok(&plan_args(&corpus_path, &run, "16", "2", &extra));
    cfmem_ok(&["run", run.to_str().unwrap(), "--device", "cpu"]);
    let printed = cfmem_ok(&["analyze", run.to_str().unwrap()]);
    assert!(printed.contains("place on the spectrum"), "{printed}");

    let spectrum: SpectrumTable = schema::read(&run.join("analysis/spectrum.parquet")).unwrap();
    let docs = spectrum.doc.len() / 2;
    let mean_at = |level: usize, source: &str| {
        let values: Vec<f64> = (0..docs)
            .filter(|&d| spectrum.source[d].as_deref() == Some(source))
            .filter_map(|d| spectrum.mem_loss[level * docs + d])
            .collect();
        values.iter().sum::<f64>() / values.len().max(1) as f64
    };
    let (alone, together) = (mean_at(0, "topic"), mean_at(1, "topic"));
    assert!(together > 4.0 * alone, "a topic's documents: mem_loss {alone:.3} alone, {together:.3} with the topic");
    assert!(mean_at(0, "random-id") > alone, "random identifiers alone lose more than a topic's documents alone");
    let placed = |source: &str, level: &str| {
        let of: Vec<usize> = (0..docs).filter(|&d| spectrum.source[d].as_deref() == Some(source)).collect();
        of.iter().filter(|&&d| spectrum.finest_level[d].as_deref() == Some(level)).count() as f64 / of.len() as f64
    };
    let share = |source: &str, level: &str| format!("{:.0}% of {source} at {level}", 100.0 * placed(source, level));
    assert!(placed("topic", "topic:7") >= 0.75, "{}", share("topic", "topic:7"));
    // Their topic of 12 is over the bound: they have no topic score, and 8 models a level
    // leave a few of them without a significant one alone.
    assert!(placed("random-id", "document") >= 0.5, "{}", share("random-id", "document"));
    assert_eq!(placed("random-id", "topic:7"), 0.0);
}
