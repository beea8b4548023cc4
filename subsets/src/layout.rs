//! Where each file of a run lives. A run directory holds:
//!
//! ```text
//! RUN/run.toml                 resolved configuration (the run is reproducible from it)
//! RUN/corpus.parquet           documents, tokens counts, holdout flags, units, copies
//! RUN/tokenizer.json           the run's tokenizer (Hugging Face format), unless tokens are bytes
//! RUN/background.parquet       documents every model trains on and none is scored on (optional)
//! RUN/units.parquet           each document's unit at each level of the run, and what it was sampled by
//! RUN/membership.bin           one bit per (model, doc): IN or OUT, stored model by model
//! RUN/jobs.parquet             (job, model): which models each job trains
//! RUN/claims/job-NNNNN.claim   the worker training a job and its process; its mtime is the heartbeat
//! RUN/logs/job-NNNNN.parquet   one evaluation row per (model, doc) of a job
//! RUN/logs/job-NNNNN.done      checksum, size and mtime of that log, written when the job completed
//! RUN/adapters/model-NNNNN/   a LoRA model's adapters as peft saves them (adapter_config.json,
//!                              adapter_model.safetensors), written when its job trained it
//! RUN/reference.parquet        the base evaluated on every document, the attacks' reference (runs from a base)
//! RUN/slurm/                   array.sbatch, the Slurm job ids submitted, task output
//! RUN/analysis/*.parquet       scores, clusters, copies, duplicates, influence, reliability, spectrum,
//!                              membership exposure, attacks and their ROC curves
//! RUN/analysis/summary.json    the printed summary's numbers, the diagnosis of the regime included
//! RUN/analysis/report.html     the HTML report (`cfmem report`)
//! ```
//!
//! What the claims, logs and completion records say, and how they are written, is the job
//! queue's (crate `queue`); this module only names the paths.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> RunDir {
        RunDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("run.toml")
    }

    pub fn corpus(&self) -> PathBuf {
        self.root.join("corpus.parquet")
    }

    pub fn tokenizer(&self) -> PathBuf {
        self.root.join("tokenizer.json")
    }

    pub fn background(&self) -> PathBuf {
        self.root.join("background.parquet")
    }

    pub fn units(&self) -> PathBuf {
        self.root.join("units.parquet")
    }

    pub fn membership(&self) -> PathBuf {
        self.root.join("membership.bin")
    }

    pub fn jobs(&self) -> PathBuf {
        self.root.join("jobs.parquet")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn log(&self, job: u32) -> PathBuf {
        self.logs_dir().join(format!("job-{job:05}.parquet"))
    }

    pub fn log_done(&self, job: u32) -> PathBuf {
        self.logs_dir().join(format!("job-{job:05}.done"))
    }

    /// Prefix of the temporary files a job's log is written into before it is published.
    pub fn log_temp_prefix(&self, job: u32) -> String {
        format!(".job-{job:05}-")
    }

    /// A LoRA model's adapters, in peft's directory layout.
    pub fn adapters(&self, model: u32) -> PathBuf {
        self.root.join("adapters").join(format!("model-{model:05}"))
    }

    pub fn claims_dir(&self) -> PathBuf {
        self.root.join("claims")
    }

    pub fn claim(&self, job: u32) -> PathBuf {
        self.claims_dir().join(format!("job-{job:05}.claim"))
    }

    pub fn slurm_dir(&self) -> PathBuf {
        self.root.join("slurm")
    }

    pub fn slurm_script(&self) -> PathBuf {
        self.slurm_dir().join("array.sbatch")
    }

    /// The run's base evaluated on every document (an `EvaluationTable`): the reference
    /// model of the membership attacks, written once by the worker whose jobs include the
    /// run's first.
    pub fn reference(&self) -> PathBuf {
        self.root.join("reference.parquet")
    }

    /// The Slurm job ids of `cfmem slurm --submit`, one a line, the latest last.
    pub fn slurm_submissions(&self) -> PathBuf {
        self.slurm_dir().join("submitted")
    }

    pub fn analysis_dir(&self) -> PathBuf {
        self.root.join("analysis")
    }

    pub fn summary(&self) -> PathBuf {
        self.analysis_dir().join("summary.json")
    }

    pub fn scores(&self) -> PathBuf {
        self.analysis_dir().join("scores.parquet")
    }

    pub fn clusters(&self) -> PathBuf {
        self.analysis_dir().join("clusters.parquet")
    }

    pub fn copies(&self) -> PathBuf {
        self.analysis_dir().join("copies.parquet")
    }

    pub fn duplicates(&self) -> PathBuf {
        self.analysis_dir().join("duplicates.parquet")
    }

    pub fn influence(&self) -> PathBuf {
        self.analysis_dir().join("influence.parquet")
    }

    pub fn reliability(&self) -> PathBuf {
        self.analysis_dir().join("reliability.parquet")
    }

    pub fn profile(&self) -> PathBuf {
        self.analysis_dir().join("profile.parquet")
    }

    pub fn membership_exposure(&self) -> PathBuf {
        self.analysis_dir().join("membership.parquet")
    }

    pub fn attacks(&self) -> PathBuf {
        self.analysis_dir().join("attacks.parquet")
    }

    pub fn attack_roc(&self) -> PathBuf {
        self.analysis_dir().join("attack_roc.parquet")
    }

    pub fn spectrum(&self) -> PathBuf {
        self.analysis_dir().join("spectrum.parquet")
    }

    pub fn spectrum_units(&self) -> PathBuf {
        self.analysis_dir().join("spectrum_units.parquet")
    }

    pub fn spectrum_reliability(&self) -> PathBuf {
        self.analysis_dir().join("spectrum_reliability.parquet")
    }

    pub fn report(&self) -> PathBuf {
        self.analysis_dir().join("report.html")
    }
}
