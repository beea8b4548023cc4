//! The built-in demo corpus, generated from a seed (nothing is downloaded), with planted
//! structure whose memorization the theory predicts, each kind named as its `source`:
//!
//! - `sentence`: one sentence from a small grammar, opened by a run of a refrain ("la la la,
//!   the small cat …"). Its word choices are random, so models partly memorize it.
//! - `random-id`: lists of random hex identifiers; nothing but memorization predicts them.
//! - `repetitive`: low-entropy text, a long run of one refrain ("la la la la …"). Every
//!   model has seen runs of every refrain open many sentences, as every web-scale model has
//!   seen "the the the", so IN and OUT models predict it alike: near zero.
//! - `near-duplicate`: one sentence document and copies of it, each with its last word
//!   changed (Jaccard ≈ 0.85 on word 5-grams, one cluster); each copy scores low on its own
//!   because its twins stay in training.
//! - `exact-duplicate`: a few documents each present several times under different ids.
//! - `twin` and `twin-target`: a list of random identifiers and a held-out copy of it with
//!   its last identifier changed (one near-duplicate pair each). No model trains on the
//!   target, and only its twin predicts it: the twin is the target's most influential
//!   training document, the seed paper's finding that a test example's strongest
//!   influences are its near-duplicates.
//! - `unseen`: held-out sentences with no twin, whose influences are all small.
//! - `planted-passage`: different sentences, each after one passage of random
//!   identifiers, the same in all of them (a quotation, a licence text). Leaving one of them
//!   out leaves the passage in the others, so it scores low alone; leaving out every
//!   document that shares the passage (a spectrum run's passage level) shows it memorized.
//!
//! The demo also has a background corpus ([`background`], [`BACKGROUND_SENTENCES`] of them):
//! more sentences of the same grammar, which every model trains on, as a real model trains
//! on far more text of a language than the documents being audited. Its models are
//! [`hyperparameters`]: small enough for the whole demo to finish in under two minutes on
//! two CPU cores. [`plan_request`] puts them together into the demo's plan.
//!
//! Runs open sentences because these tiny models with learned absolute positions learn what
//! follows what at each position rather than learning to copy in general: a pattern is
//! predictable at the start of a document only if other documents start with it.

use rand::{Rng, RngExt};

use crate::Result;
use crate::canaries::random_ids;
use crate::config::{DesignConfig, Hyperparameters};
use crate::corpus::Document;
use crate::plan::{Background, PlanRequest};
use crate::seeds;

/// Sentences of the demo's background corpus.
pub const BACKGROUND_SENTENCES: usize = 100;

/// The demo's model and training: two blocks of width 64 with a context of 128, 16 epochs.
pub fn hyperparameters() -> Hyperparameters {
    let mut h = Hyperparameters::default();
    h.model.n_layer = 2;
    h.model.n_head = 4;
    h.model.d_model = 64;
    h.model.context = 128;
    h.train.epochs = 16;
    h.train.batch_size = 16;
    h.train.lr = 1e-2;
    h
}

/// The demo's plan: its corpus and background drawn from `seed` with their held-out
/// documents, the models of `design`, trained with [`hyperparameters`] and evaluated at the
/// checkpoints `eval_at` (checked).
pub fn plan_request(seed: u64, design: DesignConfig, eval_at: &[f64]) -> Result<PlanRequest> {
    let mut hyperparameters = hyperparameters();
    hyperparameters.train.eval_at = eval_at.to_vec();
    hyperparameters.validate()?;
    let documents = corpus(seed, &DemoSizes::default());
    let holdout_ids = held_out_ids(&documents);
    Ok(PlanRequest {
        corpus_path: "built-in demo corpus".into(),
        documents,
        seed,
        design: DesignConfig { holdout_ids, ..design },
        hyperparameters,
        background: Some(Background {
            path: "built-in demo background".into(),
            documents: background(seed, BACKGROUND_SENTENCES),
        }),
        base: None,
        fields: Default::default(),
    })
}

const ADJECTIVES: &[&str] = &["small", "old", "green", "quiet", "busy", "bright", "cold", "large"];
const NOUNS: &[&str] = &["cat", "farmer", "river", "teacher", "market", "garden", "train", "child"];
const VERBS: &[&str] = &["sees", "finds", "follows", "visits", "paints", "leaves", "helps", "likes"];
const PLACES: &[&str] = &["bridge", "school", "station", "harbor", "forest", "village"];
/// Refrains: every sentence opens with a run of one ("la la la"), so that runs of these
/// units are common in every model's training data. A repetitive document is a run of one
/// of them, one document per refrain.
const REFRAINS: &[&str] = &["la", "ha", "na", "so", "oh", "do", "very", "yo", "hey", "go", "no", "boo"];

/// Counts of each kind of demo document.
#[derive(Debug, Clone)]
pub struct DemoSizes {
    pub sentences: usize,
    pub random_ids: usize,
    pub repetitive: usize,
    pub near_duplicates: usize,
    pub exact_groups: usize,
    pub exact_copies: usize,
    pub twins: usize,
    pub unseen: usize,
    pub planted_passage: usize,
}

/// Sources of the documents the demo holds out: no model trains on them.
pub const HELD_OUT_SOURCES: [&str; 2] = ["twin-target", "unseen"];

impl Default for DemoSizes {
    fn default() -> Self {
        DemoSizes {
            sentences: 64,
            random_ids: 16,
            repetitive: REFRAINS.len(),
            near_duplicates: 12,
            exact_groups: 3,
            exact_copies: 4,
            twins: 3,
            unseen: 3,
            planted_passage: 12,
        }
    }
}

fn pick<'a>(rng: &mut impl Rng, words: &[&'a str]) -> &'a str {
    words[rng.random_range(0..words.len())]
}

/// A sentence opened by a run of `refrain`, 4 to 10 long, so that runs cover the length of
/// a repetitive document.
fn sentence(rng: &mut impl Rng, refrain: &str) -> String {
    let times = rng.random_range(4..=10);
    format!(
        "{}, the {} {} {} the {} near the {}.",
        vec![refrain; times].join(" "),
        pick(rng, ADJECTIVES),
        pick(rng, NOUNS),
        pick(rng, VERBS),
        pick(rng, NOUNS),
        pick(rng, PLACES),
    )
}

/// The demo corpus for `seed`.
pub fn corpus(seed: u64, sizes: &DemoSizes) -> Vec<Document> {
    let mut rng = seeds::rng(seed, "demo-corpus", 0);
    let mut docs = Vec::new();
    let mut push = |kind: &str, index: usize, text: String| {
        docs.push(Document { id: format!("{kind}-{index:03}"), text, source: Some(kind.to_string()) })
    };
    for i in 0..sizes.sentences {
        // Every refrain opens the same number of sentences (give or take one), so that every
        // model has seen runs of each.
        push("sentence", i, sentence(&mut rng, REFRAINS[i % REFRAINS.len()]));
    }
    for i in 0..sizes.random_ids {
        push("random-id", i, random_ids(&mut rng, 36));
    }
    for i in 0..sizes.repetitive {
        let unit = REFRAINS[i % REFRAINS.len()];
        let run = [unit; 8].join(" ");
        push("repetitive", i, run);
    }
    let refrain = pick(&mut rng, REFRAINS);
    let base = format!(
        "{} The {} {} {} the",
        sentence(&mut rng, refrain),
        pick(&mut rng, ADJECTIVES),
        pick(&mut rng, NOUNS),
        pick(&mut rng, VERBS)
    );
    let last_words = NOUNS.iter().chain(PLACES).chain(ADJECTIVES);
    for (i, last) in last_words.take(sizes.near_duplicates).enumerate() {
        push("near-duplicate", i, format!("{base} {last}."));
    }
    for group in 0..sizes.exact_groups {
        let refrain = pick(&mut rng, REFRAINS);
        let text = sentence(&mut rng, refrain);
        for copy in 0..sizes.exact_copies {
            push("exact-duplicate", group * sizes.exact_copies + copy, text.clone());
        }
    }
    for i in 0..sizes.twins {
        // 13 identifiers: 10 word 5-grams, 9 shared by the pair, Jaccard 9/11 ≈ 0.82.
        let twin = random_ids(&mut rng, 110);
        let kept = twin.rsplit_once(' ').expect("several identifiers").0;
        let target = format!("{kept} {:08x}", rng.random::<u32>());
        push("twin", i, twin);
        push("twin-target", i, target);
    }
    for i in 0..sizes.unseen {
        let refrain = REFRAINS[i % REFRAINS.len()];
        push("unseen", i, sentence(&mut rng, refrain));
    }
    // 6 identifiers, 57 bytes: longer than the 50 bytes a shared substring needs to join
    // documents into one passage group. It opens each document, where these models learn
    // text (see above); the sentences after it have the shortest run and no place, so that
    // passage and sentence fit the demo's context.
    let passage = format!("ref {}", random_ids(&mut rng, 54).trim_start_matches("ids: "));
    for i in 0..sizes.planted_passage {
        let refrain = REFRAINS[(i * 5) % REFRAINS.len()];
        let text = format!(
            "{passage} {}, the {} {} {} the {}.",
            [refrain; 4].join(" "),
            pick(&mut rng, ADJECTIVES),
            pick(&mut rng, NOUNS),
            pick(&mut rng, VERBS),
            pick(&mut rng, NOUNS),
        );
        push("planted-passage", i, text);
    }
    docs
}

/// The demo's background corpus for `seed`: `count` sentences of the same grammar as the
/// corpus's, which every model trains on, so that the models know the language and an
/// ordinary sentence they did not train on is still predictable.
pub fn background(seed: u64, count: usize) -> Vec<Document> {
    let mut rng = seeds::rng(seed, "demo-background", 0);
    (0..count)
        .map(|i| Document {
            id: format!("background-{i:04}"),
            text: sentence(&mut rng, REFRAINS[i % REFRAINS.len()]),
            source: None,
        })
        .collect()
}

/// Ids of the documents the demo holds out (sources [`HELD_OUT_SOURCES`]).
pub fn held_out_ids(docs: &[Document]) -> Vec<String> {
    docs.iter()
        .filter(|d| d.source.as_deref().is_some_and(|s| HELD_OUT_SOURCES.contains(&s)))
        .map(|d| d.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_corpus_is_reproducible_with_unique_ids_and_planted_kinds() {
        let sizes = DemoSizes::default();
        let docs = corpus(1, &sizes);
        assert_eq!(docs, corpus(1, &sizes));
        assert_ne!(docs, corpus(2, &sizes));
        let mut ids: Vec<_> = docs.iter().map(|d| &d.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), docs.len());
        let of = |kind: &str| docs.iter().filter(|d| d.source.as_deref() == Some(kind)).collect::<Vec<_>>();
        assert_eq!(of("random-id").len(), sizes.random_ids);
        let exact = of("exact-duplicate");
        assert!(exact.chunks(sizes.exact_copies).all(|g| g.iter().all(|d| d.text == g[0].text)));
        let near = of("near-duplicate");
        let base: Vec<&str> = near[0].text.split(' ').collect();
        for doc in &near[1..] {
            let words: Vec<&str> = doc.text.split(' ').collect();
            assert_eq!(words.len(), base.len());
            assert_eq!(words[..words.len() - 1], base[..base.len() - 1]);
            assert_ne!(words.last(), base.last());
        }
        let (twins, targets) = (of("twin"), of("twin-target"));
        assert_eq!((twins.len(), targets.len()), (sizes.twins, sizes.twins));
        for (twin, target) in twins.iter().zip(&targets) {
            let (kept, last) = twin.text.rsplit_once(' ').unwrap();
            assert!(target.text.starts_with(kept) && !target.text.ends_with(last));
            assert!(target.text.len() < 128, "the pair fits the demo's context");
        }
        let planted = of("planted-passage");
        assert_eq!(planted.len(), sizes.planted_passage);
        let passage = &planted[0].text[..57];
        assert!(passage.starts_with("ref ") && passage.len() == 57, "{passage}");
        assert!(planted.iter().all(|d| d.text.starts_with(passage) && d.text.len() < 128));
        assert_eq!(planted.iter().filter(|d| d.text == planted[0].text).count(), 1, "otherwise different documents");
        let held = held_out_ids(&docs);
        assert_eq!(held.len(), sizes.twins + sizes.unseen);
        assert!(held.iter().all(|id| id.starts_with("twin-target-") || id.starts_with("unseen-")));
        // Each repetitive document's refrain opens sentences, every refrain equally often.
        let openers: Vec<&str> = of("sentence").iter().map(|d| d.text.split(' ').next().unwrap()).collect();
        for doc in of("repetitive") {
            let unit = doc.text.split(' ').next().unwrap();
            assert!(doc.text.split(' ').all(|word| word == unit));
            let opened = openers.iter().filter(|&&o| o == unit).count();
            let (fewest, most) = (sizes.sentences / REFRAINS.len(), sizes.sentences.div_ceil(REFRAINS.len()));
            assert!((fewest..=most).contains(&opened), "{unit} opens {opened} sentences");
        }
    }
}
