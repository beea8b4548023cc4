//! A model from outside a run evaluated on the run's documents, for `cfmem attack`: a model
//! exported from the run, or fine-tuned elsewhere on some of its documents. The run's models
//! can only stand as its shadows if it reads the documents as they do, so it must have their
//! architecture family, their start-of-document token, and a tokenizer that cuts every
//! document into the run's tokens; what differs is named, and nothing is evaluated then.

use std::path::Path;

use subsets::architecture::Architecture;
use subsets::layout::RunDir;
use subsets::schema::{self, CorpusTable};
use subsets::tokenizer::Tokenizer;

use crate::base::LoadedBase;
use crate::train::DocEval;
use crate::trainer::RunTrainer;
use crate::{Error, Result};

/// The model in `dir` (a base directory: `config.json`, `model.safetensors`,
/// `tokenizer.json`) evaluated on every document of the run `trainer` serves, in corpus
/// order, after checking that it is compatible with the run's models.
pub fn evaluate_on_run(trainer: &RunTrainer, run: &RunDir, dir: &Path) -> Result<Vec<DocEval>> {
    let loaded = LoadedBase::load(dir)?;
    check_compatible(trainer, run, &loaded, dir)?;
    let architecture = Architecture::new(&loaded.base.model, loaded.base.layout);
    trainer.evaluate_weights(architecture, &loaded.weights)
}

fn check_compatible(trainer: &RunTrainer, run: &RunDir, loaded: &LoadedBase, dir: &Path) -> Result<()> {
    let config = trainer.config();
    let refuse = |file: &str, message: String| {
        Err(Error::Plan {
            path: dir.join(file),
            message: format!("{message}: the run's models cannot stand as its shadows"),
        })
    };
    let (target, ours) = (&loaded.base.model, &config.model);
    if target.architecture != ours.architecture {
        return refuse(
            "config.json",
            format!("model_type {}, but the run's models are {}", target.architecture, ours.architecture),
        );
    }
    let (target_bos, our_bos) = (loaded.base.layout.bos, config.tokens.layout().bos);
    if target_bos != our_bos {
        return refuse(
            "config.json",
            format!("documents begin with token id {target_bos}, the run's models begin them with {our_bos}"),
        );
    }
    let tokenizer = &loaded.base.tokenizer;
    let corpus: CorpusTable = schema::read(&run.corpus())?;
    let ids = match tokenizer.encode_all(&corpus.text, ours.max_tokens_per_doc) {
        Ok(ids) => ids,
        Err(e) => return refuse("tokenizer.json", format!("it cannot read the run's documents: {e}")),
    };
    let run_vocab = Tokenizer::for_run(run, config)?.vocab();
    for (doc, (theirs, ours)) in ids.iter().zip(trainer.documents()).enumerate() {
        if let Some(at) = (0..theirs.len().max(ours.len())).find(|&i| theirs.get(i) != ours.get(i)) {
            let token = |ids: &[u32]| ids.get(at).map_or("none".to_string(), u32::to_string);
            return refuse(
                "tokenizer.json",
                format!(
                    "it cuts document {:?} (corpus row {doc}) differently from the run's tokenizer: token {at} is {} \
                     there, {} in the run (vocabularies of {} and {} tokens)",
                    corpus.doc_id[doc],
                    token(theirs),
                    token(ours),
                    tokenizer.vocab(),
                    run_vocab,
                ),
            );
        }
    }
    Ok(())
}
