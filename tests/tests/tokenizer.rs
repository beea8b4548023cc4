//! Tokenizers end to end: a BPE trained at plan time, a user's tokenizer.json, and the
//! errors a bad or changed tokenizer file, or a bad background corpus, gets.

use std::path::Path;

use subsets::schema::{self, CorpusTable, LogTable};
use tests::{TINY_CONFIG, cfmem_err, cfmem_ok, plan_args, scores, training_lock};

const PHRASES: [&str; 6] = [
    "the quick brown fox jumps over the lazy dog",
    "a stitch in time saves nine",
    "the early bird catches the worm",
    "all that glitters is not gold",
    "the pen is mightier than the sword",
    "actions speak louder than words",
];

fn write_corpus(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("corpus.jsonl");
    let lines: String = (0..24)
        .map(|i| {
            format!("{{\"id\":\"d{i}\",\"text\":\"{}, and {} ({i})\"}}\n", PHRASES[i % 6], PHRASES[(i / 6 + i) % 6])
        })
        .collect();
    std::fs::write(&path, lines).unwrap();
    path
}

fn config(dir: &Path, name: &str, tokenizer: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let model = format!("[model]\ntokenizer = \"{tokenizer}\"\nvocab_size = 400\n");
    std::fs::write(&path, TINY_CONFIG.replace("[model]\n", &model)).unwrap();
    path
}

#[test]
fn a_bpe_trained_at_plan_time_is_stable_and_a_users_tokenizer_file_is_used_as_given() {
    let _one_at_a_time = training_lock();
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(dir.path());
    let bpe = config(dir.path(), "bpe.toml", "bpe");
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    for run in [&first, &second] {
        cfmem_ok(&plan_args(&corpus, run, "4", "3", &["--config", bpe.to_str().unwrap()]));
    }
    let trained = std::fs::read(first.join("tokenizer.json")).unwrap();
    assert_eq!(trained, std::fs::read(second.join("tokenizer.json")).unwrap(), "same corpus, same tokenizer");
    let toml = std::fs::read_to_string(first.join("run.toml")).unwrap();
    assert!(toml.contains("tokenizer_sha256 = "), "{toml}");
    let planned: CorpusTable = schema::read(&first.join("corpus.parquet")).unwrap();
    let tokens: u32 = planned.tokens.iter().sum();
    let bytes: usize = planned.text.iter().map(String::len).sum();
    assert!((tokens as usize) < bytes / 2, "{tokens} BPE tokens for {bytes} bytes");

    cfmem_ok(&["run", first.to_str().unwrap(), "--device", "cpu"]);
    cfmem_ok(&["analyze", first.to_str().unwrap()]);
    let log: LogTable = schema::read(&first.join("logs/job-00000.parquet")).unwrap();
    for (&doc, &tokens) in log.doc.iter().zip(&log.tokens) {
        assert_eq!(tokens, planned.tokens[doc as usize], "every BPE token of document {doc} is evaluated");
    }
    assert_eq!(scores(&first).doc.len(), 24);

    // `cfmem tokenizer` trains the same file; named as a user's tokenizer, it is used as given.
    let users = dir.path().join("users-tokenizer.json");
    let (corpus_arg, users_arg) = (corpus.to_str().unwrap(), users.to_str().unwrap());
    let err = cfmem_err(&["tokenizer", "--corpus", corpus_arg, "--vocab-size", "100", "--out", users_arg]);
    assert!(err.contains("'--vocab-size <VOCAB_SIZE>': 100 is not in 256..=1048576"), "{err}");
    assert!(!users.exists());
    cfmem_ok(&["tokenizer", "--corpus", corpus_arg, "--vocab-size", "400", "--out", users_arg]);
    assert_eq!(std::fs::read(&users).unwrap(), trained, "cfmem tokenizer trains what plan trains");
    let given = config(dir.path(), "given.toml", users.to_str().unwrap());
    let third = dir.path().join("third");
    cfmem_ok(&plan_args(&corpus, &third, "4", "3", &["--config", given.to_str().unwrap()]));
    assert_eq!(std::fs::read(third.join("tokenizer.json")).unwrap(), trained);
    assert_eq!(schema::read::<CorpusTable>(&third.join("corpus.parquet")).unwrap().tokens, planned.tokens);

    // A tokenizer changed after planning stops the workers.
    std::fs::write(first.join("tokenizer.json"), trained.iter().rev().copied().collect::<Vec<u8>>()).unwrap();
    std::fs::remove_dir_all(first.join("logs")).unwrap();
    std::fs::create_dir(first.join("logs")).unwrap();
    let err = cfmem_err(&["run", first.to_str().unwrap(), "--device", "cpu"]);
    assert!(err.contains("tokenizer.json: sha256") && err.contains("changed after planning"), "{err}");
}

#[test]
fn a_malformed_tokenizer_or_background_file_is_named_and_nothing_is_planned() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(dir.path());
    let bad = dir.path().join("bad-tokenizer.json");
    std::fs::write(&bad, "{\"version\": \"1.0\", \"model\": 42}").unwrap();
    let config = config(dir.path(), "bad.toml", bad.to_str().unwrap());
    let run = dir.path().join("run");
    let err = cfmem_err(&plan_args(&corpus, &run, "4", "3", &["--config", config.to_str().unwrap()]));
    assert!(err.contains(&format!("{}: not a Hugging Face tokenizer.json", bad.display())), "{err}");
    assert!(!run.exists());
    let background = dir.path().join("background.jsonl");
    std::fs::write(&background, "{\"text\": \"fine\"}\n{\"txt\": \"no text\"}\n").unwrap();
    let err = cfmem_err(&plan_args(&corpus, &run, "4", "3", &["--background", background.to_str().unwrap()]));
    assert!(err.contains(&format!("{}: line 2:", background.display())), "a bad background is named: {err}");
    assert!(!run.exists());
    let missing = dir.path().join("missing.json");
    let config = self::config(dir.path(), "missing.toml", missing.to_str().unwrap());
    let err = cfmem_err(&plan_args(&corpus, &run, "4", "3", &["--config", config.to_str().unwrap()]));
    assert!(err.contains("missing.json"), "{err}");
}
