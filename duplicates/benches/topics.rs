//! Throughput, peak memory and quality of `text_topics` on a generated corpus with planted
//! topics.
//!
//! `cargo bench -p duplicates --bench topics -- [DOCS] [--runs N]`
//!
//! DOCS documents (default 1,000,000) of 30 to 60 words, each on one of 20 planted topics:
//! a third of its words drawn from its topic's own 400 words, the rest from 200 filler
//! words shared by all topics. Each run groups them into K = 20 topics with the default
//! settings (default 1 run; with more, the median is reported), and the last run's topics
//! are scored against the planted ones by the adjusted Rand index. Peak memory is the
//! process's VmHWM, reset (through /proc/self/clear_refs) after the corpus is generated,
//! so it covers the generated texts and the runs.

mod common;

use std::time::Instant;

use duplicates::synthetic::vocabulary;
use duplicates::topics::{TopicSettings, adjusted_rand, text_topics};
use rand::{RngExt, SeedableRng};

use common::{peak_memory, reset_peak_memory};
use rand_chacha::ChaCha8Rng;

const TOPICS: usize = 20;
const TOPIC_WORDS: usize = 400;
const FILLER_WORDS: usize = 200;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let flag = |name: &str| args.iter().position(|a| a == name).map(|i| args[i + 1].clone());
    let docs: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let runs: usize = flag("--runs").map_or(1, |r| r.parse().expect("--runs N"));

    let (texts, planted) = planted_corpus(docs, 2024);
    let bytes: usize = texts.iter().map(String::len).sum();
    println!(
        "{docs} documents, {:.1} MB of text, {TOPICS} planted topics of {TOPIC_WORDS} words and \
         {FILLER_WORDS} shared filler words; {} rayon threads",
        bytes as f64 / 1e6,
        rayon::current_num_threads()
    );
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let settings = TopicSettings::default();
    println!("settings: {settings:?}, K = {TOPICS}");

    reset_peak_memory();
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        drop(last.take());
        let start = Instant::now();
        let topics = text_topics(&texts, TOPICS, &settings, 7).expect("the corpus has a vocabulary");
        let seconds = start.elapsed().as_secs_f64();
        println!("  run: {seconds:.2} s");
        times.push(seconds);
        last = Some(topics);
    }
    let peak = peak_memory();
    times.sort_by(f64::total_cmp);
    let median = times[runs / 2];
    let which = if runs == 1 { "one run".to_owned() } else { format!("median of {runs}") };
    println!("text_topics: {which} {median:.2} s, {:.0} documents/s", docs as f64 / median);
    println!(
        "peak memory (VmHWM, over all runs): {:.0} MB, of which the texts {:.0} MB",
        peak as f64 / 1e6,
        bytes as f64 / 1e6
    );
    let topics = last.expect("at least one run");
    let found = topics.iter().max().map_or(0, |&t| t + 1);
    println!("{found} topics found; adjusted Rand against the planted topics: {:.4}", adjusted_rand(&topics, &planted));
}

/// `docs` texts and the topic each was written on.
fn planted_corpus(docs: usize, seed: u64) -> (Vec<String>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut words = vocabulary(&mut rng, TOPICS * TOPIC_WORDS + FILLER_WORDS);
    let filler = words.split_off(TOPICS * TOPIC_WORDS);
    let topic_words: Vec<&[String]> = words.chunks(TOPIC_WORDS).collect();
    let mut texts = Vec::with_capacity(docs);
    let mut planted = Vec::with_capacity(docs);
    for _ in 0..docs {
        let topic = rng.random_range(0..TOPICS);
        let length = rng.random_range(30..=60);
        let text: Vec<&str> = (0..length)
            .map(|_| {
                let from = if rng.random_range(0..3) == 0 { topic_words[topic] } else { &filler };
                from[rng.random_range(0..from.len())].as_str()
            })
            .collect();
        texts.push(text.join(" "));
        planted.push(topic as u32);
    }
    (texts, planted)
}
