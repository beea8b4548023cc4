//! The trainer the job queue drives ([`queue::Trainer`]): a planned run's documents and
//! background tokenized once, and its base's weights loaded once, when the trainer is
//! built, then each job's stack handed to [`train::train_and_evaluate`] on one device, and
//! a LoRA stack's adapters kept in the run directory.
//! Which job runs, claims and logs are the queue's.

use tch::{Device, Tensor};

use queue::Progress;
use subsets::architecture::Architecture;
use subsets::config::RunConfig;
use subsets::layout::RunDir;
use subsets::membership;
use subsets::schema::{self, CorpusTable, LogTable};
use subsets::tokenizer::{RunTokens, Tokenizer};

use crate::base;
use crate::train::{self, StackInput};
use crate::{Error, Result};

/// A planned run's documents, tokenized, ready to train any of its jobs on `device`.
pub struct RunTrainer {
    config: RunConfig,
    /// Token ids of every document, whole or cut to `max_tokens_per_doc`.
    documents: Vec<Vec<u32>>,
    background: Vec<Vec<u32>>,
    copies: Vec<u16>,
    holdout: Vec<bool>,
    /// The base's weights `[P]`, when the models start from one.
    base: Option<Tensor>,
    device: Device,
    run: RunDir,
}

impl RunTrainer {
    /// Reads the corpus of `run` (planned with `config`) and tokenizes it and its
    /// background with the run's tokenizer, which must be the file the plan wrote; loads
    /// the base, which must be the one the plan read.
    pub fn new(run: &RunDir, config: &RunConfig, device: Device) -> Result<RunTrainer> {
        let corpus: CorpusTable = schema::read(&run.corpus())?;
        let (_, members) = membership::header(&run.membership())?;
        if members as usize != corpus.doc.len() {
            return Err(Error::Plan {
                path: run.membership(),
                message: format!("covers {members} documents, but corpus.parquet has {}", corpus.doc.len()),
            });
        }
        let RunTokens { documents, background } = Tokenizer::for_run(run, config)?.encode_run(run, config, &corpus)?;
        let longest = documents.iter().chain(&background).map(Vec::len).max().unwrap_or(0);
        let architecture = Architecture::new(&config.model, config.tokens.layout());
        let stack = config.jobs.stack.min(config.design.models) as usize;
        train::check_memory(&architecture, stack, &config.train, longest, device)?;
        let base = match (config.train.base(), &config.base) {
            (None, _) => None,
            (Some(dir), Some(planned)) => {
                Some(base::load_weights(dir, &config.model, config.tokens.layout(), &planned.weights_sha256)?)
            }
            (Some(_), None) => {
                return Err(Error::Plan {
                    path: run.config(),
                    message: "train.init names a base but [base] records no weights_sha256".into(),
                });
            }
        };
        Ok(RunTrainer {
            config: config.clone(),
            documents,
            background,
            copies: corpus.copies,
            holdout: corpus.holdout,
            base,
            device,
            run: run.clone(),
        })
    }
}

impl queue::Trainer for RunTrainer {
    type Error = Error;

    fn train_job(
        &self,
        _job: u32,
        models: &[(u32, &[u32])],
        progress: &dyn Progress,
        rows: &mut dyn FnMut(LogTable) -> queue::Result<()>,
    ) -> Result<()> {
        let input = StackInput {
            config: &self.config,
            documents: &self.documents,
            copies: &self.copies,
            holdout: &self.holdout,
            background: &self.background,
            models,
            base: self.base.as_ref(),
        };
        let stack = train::train_and_evaluate(&input, self.device, progress, &mut |part| Ok(rows(part)?))?;
        // A LoRA model's adapters are kept (a few MB), for `cfmem export` and peft; they are
        // written before the job's completion record, so a complete job has them.
        if let Some((lora, adapters)) = stack.adapters() {
            let base_dir = self.config.train.base().expect("validated: LoRA runs start from a base");
            for (g, &(model, _)) in models.iter().enumerate() {
                lora.write_peft(&self.run.adapters(model), base_dir, &adapters.get(g as i64).detach())?;
            }
        }
        Ok(())
    }
}
