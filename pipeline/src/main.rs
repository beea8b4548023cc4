//! `cfmem`: the command line. Flags are parsed here into the plain settings of the library
//! crates (`duplicates`, `subsets`, `queue`, `jobs`, `analysis`), which never see a clap
//! type; progress is drawn here, from the events the job runner reports.

// The doc comments of the flags are `--help`, written for a terminal: a TOML table's name
// ("[train]") is text there, not a link.
#![allow(rustdoc::broken_intra_doc_links)]

mod attack;
mod bench;
mod dups;
mod evaluate;
mod export;
mod flags;
mod influence;
mod pretrain;
mod progress;
mod report;
mod slurm;
mod status;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser};

use analysis::influence::InfluenceSettings;
use analysis::measure::Measure;
use analysis::per_model::RunLogs;
use analysis::settings::AnalyzeSettings;
use duplicates::{DupParams, Settings, Shingling};
use jobs::{DeviceChoice, RunTrainer};
use queue::{Queue, Selection};
use subsets::base::Base;
use subsets::config::{DesignConfig, Hyperparameters, Unit};
use subsets::layout::RunDir;
use subsets::plan::{self, PlanRequest, PlannedBase};
use subsets::tokenizer::Tokenizer;
use subsets::{corpus, demo};

#[derive(Parser)]
#[command(name = "cfmem", version, about = "Counterfactual memorization of the documents of a training corpus")]
enum Command {
    /// Read a corpus and write a run directory: configuration, documents, balanced subsets, jobs.
    Plan(PlanArgs),
    /// Train and evaluate every model of a planned run (skips jobs already complete).
    Run(RunArgs),
    /// Compute per-document memorization from a run's logs and print a summary.
    Analyze(AnalyzeArgs),
    /// Plan, run and analyze the built-in demo corpus, and write its report.
    Demo(DemoArgs),
    /// Exact, near-duplicate and repeated-substring scores of every document of a corpus.
    Dups(DupsArgs),
    /// Training throughput of model stacks against the device's matmul peak.
    Bench(bench::BenchArgs),
    /// Train one model on a corpus and write it as a base for `plan --init` (Hugging Face
    /// GPT-2 layout); resumes from its last checkpoint when run again.
    Pretrain(pretrain::PretrainArgs),
    /// Write one model of a LoRA run, its adapters merged into the base, in the Hugging Face
    /// GPT-2 layout.
    Export(export::ExportArgs),
    /// Evaluate a base model on every document of a corpus (per-document loss and accuracy).
    Evaluate(evaluate::EvaluateArgs),
    /// Train a byte-level BPE tokenizer on a corpus and write it as tokenizer.json, for
    /// `[model] tokenizer = "PATH"` in later plans.
    Tokenizer(TokenizerArgs),
    /// Counterfactual influence: for each target document, the training documents whose
    /// presence changes the models' accuracy on it most.
    Influence(influence::InfluenceArgs),
    /// Attack a model from outside the run (exported from it, or fine-tuned elsewhere on
    /// some of its documents) with the run's models as shadows: every membership attack's
    /// score of each document, and with --members its AUC and TPR at low FPR.
    Attack(attack::AttackArgs),
    /// Jobs complete, claimed, stale, damaged or not started; models done, throughput, ETA.
    Status(StatusArgs),
    /// Write (and with --submit, submit) a Slurm job array that runs the run's jobs.
    Slurm(SlurmArgs),
    /// Write a self-contained HTML report of an analyzed run.
    Report(ReportArgs),
}

#[derive(Args)]
struct PlanArgs {
    /// JSONL file, Parquet file, or directory of .txt files.
    #[arg(long, required_unless_present = "extend")]
    corpus: Option<PathBuf>,
    /// Run directory to create.
    #[arg(long, required_unless_present = "extend")]
    out: Option<PathBuf>,
    /// Number of models to train (with --extend: the new total).
    #[arg(long)]
    models: u32,
    /// Fraction of models each document (or cluster) is IN for, strictly between 0 and 1.
    #[arg(long, required_unless_present = "extend")]
    keep: Option<f64>,
    #[arg(long, required_unless_present = "extend")]
    seed: Option<u64>,
    /// Grow this planned run to --models models, keeping its models, jobs and logs.
    #[arg(long, conflicts_with_all = ["corpus", "out", "keep", "seed", "config", "background", "init"])]
    extend: Option<PathBuf>,
    /// Start every model from this base: a directory in the Hugging Face GPT-2 layout
    /// (config.json, model.safetensors, tokenizer.json), e.g. written by `cfmem pretrain`.
    /// Overrides [train] init of --config.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Checkpoints, as fractions of training, at which every model is evaluated on every
    /// document, e.g. 0.25,0.5,1 (ending in 1). Overrides [train] eval_at of --config.
    #[arg(long, value_delimiter = ',')]
    eval_at: Vec<f64>,
    /// Fraction of documents no model trains on.
    #[arg(long, default_value_t = 0.0)]
    holdout: f64,
    /// Ids of documents no model trains on (e.g. a test set to audit), comma separated.
    #[arg(long, value_delimiter = ',')]
    holdout_ids: Vec<String>,
    /// TOML file with [model], [train] and [jobs] settings; see docs/guide/configuration.md.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Documents every model trains on besides its subset, never scored (same formats as
    /// --corpus): the realistic training mix that the audited documents sit in.
    #[arg(long)]
    background: Option<PathBuf>,
    #[command(flatten)]
    design: DesignArgs,
    #[command(flatten)]
    near: NearDupArgs,
}

#[derive(Args)]
struct DesignArgs {
    /// What is IN or OUT together: document, cluster (near-duplicates), passage (documents
    /// sharing a substring of --min-repeat bytes or more, joined transitively), topic:K (K
    /// topics found from the text: TF-IDF, truncated SVD, spherical k-means) or field:NAME
    /// (a string field of the corpus, e.g. field:url).
    #[arg(long, default_value = "document", conflicts_with = "levels")]
    unit: Unit,
    /// A spectrum run: these levels (as --unit, comma separated), each sampled by its own
    /// block of the models, e.g. document,cluster,passage,topic:20,field:source.
    #[arg(long, value_delimiter = ',')]
    levels: Vec<Unit>,
    /// Units of more than this fraction of the documents are not sampled as one: their
    /// documents fall back to the next finer level and get no score at theirs. Default:
    /// 1% of the documents or ⌊√documents⌋ of them, whichever is larger.
    #[arg(long)]
    max_unit_fraction: Option<f64>,
    /// Copy counts to plant for canaries, e.g. 1,2,4,8.
    #[arg(long, value_delimiter = ',')]
    copies: Vec<u16>,
    /// Number of random-identifier canaries to generate for the copy sweep.
    #[arg(long, default_value_t = 0)]
    canaries: u32,
    /// Ids of corpus documents to use as canaries, comma separated.
    #[arg(long, value_delimiter = ',')]
    canary_ids: Vec<String>,
}

#[derive(Args)]
struct NearDupArgs {
    /// Jaccard similarity at or above which two documents are near-duplicates.
    #[arg(long, default_value_t = Settings::default().threshold)]
    threshold: f64,
    /// Shingles: words:N or chars:N.
    #[arg(long, default_value_t = Settings::default().shingles)]
    shingles: Shingling,
    /// Shortest repeated substring, in bytes, counted by repeat_fraction.
    #[arg(long, default_value_t = Settings::default().min_repeat)]
    min_repeat: u32,
    /// Most distinct candidates examined per document; beyond, near_dup_capped is set.
    #[arg(long, default_value_t = Settings::default().max_candidates)]
    max_candidates: u32,
}

#[derive(Args)]
struct RunArgs {
    run: PathBuf,
    #[command(flatten)]
    compute: ComputeArgs,
    /// Only these jobs: numbers and ranges, e.g. 3,7-9 (repeatable).
    #[arg(long = "job", value_parser = queue::parse_jobs)]
    jobs: Vec<Vec<u32>>,
    /// Stop after training this many jobs.
    #[arg(long)]
    max_jobs: Option<usize>,
}

#[derive(Args)]
struct StatusArgs {
    run: PathBuf,
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SlurmArgs {
    run: PathBuf,
    #[arg(long)]
    partition: Option<String>,
    #[arg(long)]
    gpus_per_task: Option<u32>,
    /// Also the --threads of each task.
    #[arg(long, default_value_t = 1)]
    cpus_per_task: u32,
    /// Memory per task, e.g. 16G.
    #[arg(long)]
    mem: Option<String>,
    /// Time limit per task, e.g. 2:00:00.
    #[arg(long)]
    time: Option<String>,
    /// At most this many array tasks at once.
    #[arg(long)]
    max_parallel: Option<u32>,
    #[arg(long)]
    account: Option<String>,
    /// More sbatch options, e.g. "--qos=high --constraint=a100".
    #[arg(long, allow_hyphen_values = true)]
    extra: Option<String>,
    /// Consecutive jobs each array task runs.
    #[arg(long, default_value_t = 1)]
    jobs_per_task: u32,
    /// The --device of each task.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Submit the array with sbatch and record its job id in the run.
    #[arg(long)]
    submit: bool,
}

#[derive(Args)]
struct ComputeArgs {
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// CPU threads of libtorch; 0 keeps libtorch's default (one per core, MKL choosing
    /// fewer per product where it sees fit). Set it when several cfmem processes share a
    /// machine (oversubscribed cores slow training tenfold), and for CPU runs that must
    /// reproduce bit for bit on a loaded machine.
    #[arg(long, default_value_t = 0)]
    threads: u32,
}

#[derive(Args)]
struct AnalyzeArgs {
    run: PathBuf,
    /// Bootstrap replicates (resamples of the models) behind the scores' 95% intervals.
    #[arg(long, default_value_t = AnalyzeSettings::default().bootstrap)]
    bootstrap: usize,
    /// The score that orders the most and least memorized lists, leads the reliability
    /// verdict and its growth command, and is compared across checkpoints: loss (mem_loss,
    /// the founding definition, stable with fewer models) or accuracy (mem_acc). Both are
    /// computed and written either way.
    #[arg(long, value_name = "loss|accuracy", default_value = "loss")]
    rank_by: Measure,
    /// Analyze the complete jobs of a run whose jobs are not all complete.
    #[arg(long)]
    partial: bool,
    /// Skip the membership inference attacks (attacks.parquet), and the logs' Min-K%
    /// statistics they read: a faster analysis in less memory on a very large run.
    #[arg(long)]
    no_attacks: bool,
}

#[derive(Args)]
struct DemoArgs {
    /// Run directory for the demo.
    #[arg(long, default_value = "demo-run")]
    out: PathBuf,
    #[command(flatten)]
    compute: ComputeArgs,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(2..))]
    models: u32,
    #[arg(long, default_value = "document", conflicts_with = "levels")]
    unit: Unit,
    /// A spectrum demo, e.g. document,cluster,passage (see `plan --levels`); give it 6
    /// models or more per level.
    #[arg(long, value_delimiter = ',')]
    levels: Vec<Unit>,
    /// As for `plan`. The demo's corpus is small (137 documents): its near-duplicate family
    /// of 12 and its planted passage in 12 are sampled whole only above the default of plan.
    #[arg(long, default_value_t = 0.1)]
    max_unit_fraction: f64,
    /// Checkpoints at which every model is evaluated, as for `plan` (1 alone: only at the end).
    #[arg(long, value_delimiter = ',', default_value = "0.25,0.5,0.75,1")]
    eval_at: Vec<f64>,
}

#[derive(Args)]
struct DupsArgs {
    #[arg(long)]
    corpus: PathBuf,
    /// Parquet file to write, one row per document.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    near: NearDupArgs,
    /// Refuse, before allocating, a corpus whose scores need more memory than this, in GiB
    /// (default: the memory available when the command starts).
    #[arg(long)]
    max_memory: Option<f64>,
}

#[derive(Args)]
struct ReportArgs {
    run: PathBuf,
    /// HTML file to write (default RUN/analysis/report.html).
    #[arg(long)]
    out: Option<PathBuf>,
    /// How many of the most and of the least memorized documents to list.
    #[arg(long, default_value_t = analysis::html_report::DEFAULT_TOP as u32, value_parser = clap::value_parser!(u32).range(1..))]
    top: u32,
    /// The score that orders the lists and leads each section: loss (mem_loss) or accuracy
    /// (mem_acc); default: the one `analyze` ranked by.
    #[arg(long, value_name = "loss|accuracy")]
    rank_by: Option<Measure>,
}

impl NearDupArgs {
    /// The engine's parameters for these flags, checked; an error names the flag.
    fn params(&self) -> Result<DupParams> {
        let settings = Settings {
            threshold: self.threshold,
            shingles: self.shingles,
            min_repeat: self.min_repeat,
            max_candidates: self.max_candidates,
        };
        settings.params().map_err(flags::duplicate_params)
    }
}

fn main() -> ExitCode {
    match dispatch(Command::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> Result<()> {
    if matches!(command, Command::Run(_) | Command::Demo(_) | Command::Bench(_) | Command::Pretrain(_)) {
        jobs::device::keep_freed_memory();
    }
    match command {
        Command::Plan(args) => plan(args).map_err(flags::name_the_flag),
        Command::Run(args) => {
            let jobs = (!args.jobs.is_empty()).then(|| args.jobs.concat());
            run_jobs(&args.run, &args.compute, &Selection { jobs, max_jobs: args.max_jobs })
        }
        Command::Analyze(args) => {
            let settings =
                AnalyzeSettings { bootstrap: args.bootstrap, rank_by: args.rank_by, attacks: !args.no_attacks };
            analyze(&args.run, args.partial, settings).map(drop)
        }
        Command::Status(args) => status::status(&args.run, args.json),
        Command::Slurm(args) => {
            let (run, submit) = (args.run.clone(), args.submit);
            slurm::slurm(&run, &slurm_settings(args), submit).map_err(flags::name_the_flag)
        }
        Command::Demo(args) => run_demo(&args).map_err(flags::name_the_flag),
        Command::Bench(args) => bench::run(&args),
        Command::Pretrain(args) => pretrain::run(&args),
        Command::Evaluate(args) => evaluate::run(&args),
        Command::Export(args) => export::run(&args),
        Command::Tokenizer(args) => train_tokenizer(&args),
        Command::Dups(args) => dups::run(&args),
        Command::Influence(args) => influence::run(&args),
        Command::Attack(args) => attack::run(&args),
        Command::Report(args) => {
            report::write(&args.run, args.out.as_deref(), args.top as usize, args.rank_by).map(drop)
        }
    }
}

impl PlanArgs {
    /// The plan these flags ask for: the design and the `--config` file checked, then the
    /// corpus and the background read. Clap requires --corpus, --keep and --seed whenever
    /// --extend is absent.
    fn request(self) -> Result<PlanRequest> {
        let (unit, spectrum) = subsets::config::unit_and_blocks(&self.design.unit, &self.design.levels, self.models);
        let design = DesignConfig {
            models: self.models,
            keep: self.keep.expect("clap requires --keep without --extend"),
            holdout: self.holdout,
            unit,
            max_unit_fraction: self.design.max_unit_fraction,
            topics: None,
            spectrum,
            duplicates: self.near.params()?.settings,
            copies: self.design.copies,
            canaries: self.design.canaries,
            canary_ids: self.design.canary_ids,
            holdout_ids: self.holdout_ids,
        };
        design.validate()?;
        let mut hyperparameters = Hyperparameters::read(self.config.as_deref())?;
        if let Some(init) = &self.init {
            hyperparameters.train.init = init.display().to_string();
        }
        if !self.eval_at.is_empty() {
            hyperparameters.train.eval_at = self.eval_at;
        }
        let mut base =
            Base::resolve(&mut hyperparameters, self.config.as_deref())?.map(|(base, _)| PlannedBase::from(&base));
        if let Some(base) = base.as_mut().filter(|_| design.levels().iter().any(|l| matches!(l, Unit::Topic(_)))) {
            base.embed = Some(base_embedder(PathBuf::from(&hyperparameters.train.init)));
        }
        hyperparameters.validate()?;
        let corpus = self.corpus.expect("clap requires --corpus without --extend");
        let seed = self.seed.expect("clap requires --seed without --extend");
        Ok(PlanRequest::read(&corpus, self.background.as_deref(), seed, design, hyperparameters, base)?)
    }
}

fn plan(args: PlanArgs) -> Result<()> {
    if let Some(run) = &args.extend {
        return extend(run, args.models);
    }
    let out = args.out.clone().expect("clap requires --out without --extend");
    plan_run(&out, args.request()?)
}

/// The base in `dir`'s embedding of texts, for topics in a run from it, on the best device
/// there is.
fn base_embedder(dir: PathBuf) -> plan::DocumentEmbedder {
    Box::new(move |texts: &[&str]| {
        let device = DeviceChoice::Auto.resolve().map_err(|e| format!("{e:#}"))?;
        let started = std::time::Instant::now();
        let embedded = jobs::base::LoadedBase::embed_texts(&dir, texts, device).map_err(|e| format!("{e:#}"))?;
        let seconds = started.elapsed().as_secs_f64();
        let device = jobs::device::describe(device);
        eprintln!("embedded {} documents with the base for topics in {seconds:.1} s on {device}", texts.len());
        Ok(embedded)
    })
}

fn extend(run: &Path, models: u32) -> Result<()> {
    let extension = plan::extend(&RunDir::new(run), models)?;
    eprintln!("extended {}{extension}", run.display());
    Ok(())
}

fn plan_run(out: &Path, request: PlanRequest) -> Result<()> {
    let plan = plan::build(request)?;
    let written = plan::write(&RunDir::new(out), &plan)?;
    eprint!("{}", plan.describe(out, written));
    Ok(())
}

#[derive(Args)]
struct TokenizerArgs {
    /// JSONL file, Parquet file, or directory of .txt files.
    #[arg(long)]
    corpus: PathBuf,
    /// More text to train on (a background corpus), same formats.
    #[arg(long)]
    background: Option<PathBuf>,
    /// Vocabulary, the 256 bytes included.
    #[arg(long, default_value_t = subsets::config::DEFAULT_BPE_VOCAB, value_parser = vocab_sizes())]
    vocab_size: u32,
    /// The tokenizer.json to write.
    #[arg(long)]
    out: PathBuf,
}

/// The vocabulary sizes a BPE may have, as clap checks them.
fn vocab_sizes() -> clap::builder::RangedI64ValueParser<u32> {
    let sizes = subsets::config::BPE_VOCAB_SIZES;
    clap::value_parser!(u32).range(i64::from(*sizes.start())..=i64::from(*sizes.end()))
}

fn train_tokenizer(args: &TokenizerArgs) -> Result<()> {
    let mut documents = corpus::read(&args.corpus)?;
    if let Some(path) = &args.background {
        documents.extend(corpus::read(path)?);
    }
    let bytes: usize = documents.iter().map(|d| d.text.len()).sum();
    let started = std::time::Instant::now();
    let tokenizer = Tokenizer::train(documents.iter().map(|d| d.text.as_str()), args.vocab_size)?;
    let seconds = started.elapsed().as_secs_f64();
    let json = tokenizer.to_json().expect("a trained BPE has a file");
    subsets::atomic::write_bytes(&args.out, json.as_bytes())?;
    eprintln!(
        "trained a BPE of {} tokens on {} documents ({:.1} MB) in {seconds:.1} s; wrote {}",
        tokenizer.vocab(),
        documents.len(),
        bytes as f64 / 1e6,
        args.out.display()
    );
    Ok(())
}

fn slurm_settings(args: SlurmArgs) -> queue::slurm::ArraySettings {
    queue::slurm::ArraySettings {
        partition: args.partition,
        gpus_per_task: args.gpus_per_task,
        cpus_per_task: args.cpus_per_task,
        mem: args.mem,
        time: args.time,
        max_parallel: args.max_parallel,
        account: args.account,
        extra: args.extra.iter().flat_map(|e| e.split_whitespace().map(String::from)).collect(),
        jobs_per_task: args.jobs_per_task,
        device: args.device,
    }
}

fn run_jobs(run: &Path, compute: &ComputeArgs, selection: &Selection) -> Result<()> {
    let queue = Queue::open(RunDir::new(run))?;
    jobs::device::set_cpu_threads(compute.threads);
    let device = compute.device.resolve()?;
    let loading = std::time::Instant::now();
    let trainer = RunTrainer::new(queue.run_dir(), queue.config(), device)?;
    let loaded = loading.elapsed().as_secs_f64();
    let count = selection.jobs.as_ref().map_or(queue.job_ids().len(), Vec::len);
    eprintln!(
        "running {count} jobs on {} (documents tokenized{} in {loaded:.2} s)",
        jobs::device::describe(device),
        if queue.config().base.is_some() { " and the base loaded" } else { "" }
    );
    let bars = progress::Bars::new(count);
    let outcomes = queue.run(&trainer, selection, &bars)?;
    bars.finish();
    if selection.includes_first(queue.job_ids().first().copied()) && trainer.write_reference()? {
        eprintln!(
            "evaluated the base on every document, the membership attacks' reference: {}",
            queue.run_dir().reference().display()
        );
    }
    eprintln!("{}", queue::progress::describe_outcomes(&outcomes));
    Ok(())
}

/// Analyzes `run` and returns the complete logs it verified, for what follows to read
/// without checking them again.
fn analyze(run: &Path, partial: bool, settings: AnalyzeSettings) -> Result<RunLogs> {
    let run_dir = RunDir::new(run);
    let verified = Queue::open(run_dir.clone())?.verify()?;
    let notice = analysis::scores::check_completeness(&run_dir, &verified, partial)?;
    let logs = RunLogs::new(&verified)?;
    let analysis = analysis::scores::analyze(&run_dir, &logs, settings)?;
    analysis.write(&run_dir)?;
    if let Some(notice) = notice {
        println!("{notice}");
    }
    print!("{}", analysis.summary);
    eprintln!("wrote {}", run_dir.analysis_dir().display());
    Ok(logs)
}

fn run_demo(args: &DemoArgs) -> Result<()> {
    let (unit, spectrum) = subsets::config::unit_and_blocks(&args.unit, &args.levels, args.models);
    let max_unit_fraction = Some(args.max_unit_fraction);
    let design = DesignConfig { unit, spectrum, max_unit_fraction, ..DesignConfig::documents(args.models, 0.5) };
    let request = demo::plan_request(args.seed, design, &args.eval_at).context("--eval-at")?;
    plan_run(&args.out, request)?;
    run_jobs(&args.out, &args.compute, &Selection::default())?;
    let logs = analyze(&args.out, false, AnalyzeSettings::default())?;
    influence::write(&args.out, &logs, &InfluenceSettings::default())?;
    report::write(&args.out, None, analysis::html_report::DEFAULT_TOP, None).map(drop)
}
