//! The trainer the job queue drives ([`queue::Trainer`]): a planned run's documents and
//! background tokenized once, and its base's weights loaded once, when the trainer is
//! built, then each job's stack handed to [`train::train_and_evaluate`] on one device, and
//! a LoRA stack's adapters kept in the run directory; and the base's own evaluation of
//! every document, the reference model of the membership attacks (`RUN/reference.parquet`).
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
use crate::train::{self, DocEval, StackInput};
use crate::{Error, Result};

/// A planned run's documents, tokenized, ready to train any of its jobs on `device`.
pub struct RunTrainer {
    config: RunConfig,
    doc_ids: Vec<String>,
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
            doc_ids: corpus.doc_id,
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

impl RunTrainer {
    /// The run's documents as its models read them: token ids, whole or cut.
    pub fn documents(&self) -> &[Vec<u32>] {
        &self.documents
    }

    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Evaluates `weights` (`[P]`, of the run's architecture) on every document, as the
    /// jobs evaluate their models but in fp32.
    pub fn evaluate_weights(&self, architecture: Architecture, weights: &Tensor) -> Result<Vec<DocEval>> {
        let stack = train::Stack::from_rows(
            architecture,
            std::slice::from_ref(weights),
            subsets::config::Precision::Fp32,
            self.device,
        )?;
        let documents: Vec<&[u32]> = self.documents.iter().map(Vec::as_slice).collect();
        Ok(stack.evaluate(&documents, self.config.train.eval_batch_size as usize)?.remove(0))
    }

    /// Writes `RUN/reference.parquet`, the base evaluated on every document, unless the run
    /// has no base or the file is there; returns whether it wrote it.
    pub fn write_reference(&self) -> Result<bool> {
        let path = self.run.reference();
        let Some(base) = self.base.as_ref().filter(|_| !path.exists()) else {
            return Ok(false);
        };
        let architecture = Architecture::new(&self.config.model, self.config.tokens.layout());
        let evals = self.evaluate_weights(architecture, base)?;
        schema::write(&path, &train::evaluation_table(&self.doc_ids, &evals), Some(self.config.seed))?;
        Ok(true)
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
