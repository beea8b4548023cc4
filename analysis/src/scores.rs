//! `cfmem analyze`: from a run directory to `analysis/scores.parquet`,
//! `analysis/clusters.parquet`, `analysis/copies.parquet`, `analysis/reliability.parquet`,
//! `analysis/profile.parquet` (the scores at every checkpoint of training, [`crate::profile`]),
//! `analysis/membership.parquet` (each document's membership exposure, [`crate::membership`]),
//! `analysis/attacks.parquet` and `analysis/attack_roc.parquet` (membership inference attacks
//! on the run's models and their ROC curves, [`crate::attacks`]; skipped with
//! [`crate::settings::AnalyzeSettings::attacks`] false),
//! the printed summary ([`crate::printed_summary`]) and its numbers in `analysis/summary.json`,
//! the diagnosis of whether the models generalize ([`crate::diagnosis`]) included. The
//! duplicate scores and clusters are the ones `plan` stored (`analysis/duplicates.parquet`),
//! so there is one definition of clusters per run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use subsets::canaries::CANARY_SOURCE;
use subsets::config::{RunConfig, Unit};
use subsets::duplicate_scores;
use subsets::layout::RunDir;
use subsets::schema::{
    self, ClusterTable, CopiesTable, CorpusTable, MembershipTable, ProfileTable, ReliabilityTable, ScoreTable, Table,
    UnitTable,
};
use subsets::seeds;
use subsets::tokenizer::{RunTokens, Tokenizer};

use crate::attacks::{self, AttackSummary};
use crate::bootstrap::{self, Weights};
use crate::diagnosis::{self, Baseline, Diagnosis, DocumentAccuracy};
use crate::estimate::{self, Metrics};
use crate::measure::ByMeasure;
use crate::membership::{self, MembershipSummary};
use crate::per_model::{ModelValues, RunLogs};
use crate::printed_summary::PrintedSummary;
use crate::profile::{self, ProfileSummary};
use crate::reliability::{self, Growth, Verdict};
use crate::settings::AnalyzeSettings;
use crate::spectrum::{self, FieldValues, SpectrumSummary, SpectrumTables};
use crate::stats::Moments;
use crate::summary::Summary;
use crate::{Error, Result};

/// Everything `cfmem analyze` writes.
pub struct Analysis {
    pub scores: ScoreTable,
    pub clusters: ClusterTable,
    pub copies: CopiesTable,
    pub reliability: ReliabilityTable,
    /// The scores at every checkpoint of training (one checkpoint, the end, by default).
    pub profile: ProfileTable,
    /// Each document's membership exposure.
    pub membership: MembershipTable,
    /// The membership inference attacks evaluated on the run's models, unless skipped.
    pub attacks: Option<AttackSummary>,
    /// Memorization at each level, for runs with levels beyond the document.
    pub spectrum: Option<SpectrumTables>,
    pub summary: PrintedSummary,
    /// The run's seed, written into every table's metadata.
    pub run_seed: u64,
}

/// The rule for runs with jobs not complete: an analysis reads a complete run; asked for a
/// partial one, it reads the complete jobs' logs, and the returned notice (printed before
/// its summary) says what is missing and that the design is no longer exactly balanced.
pub fn check_completeness(run: &RunDir, verified: &queue::verify::Verified, partial: bool) -> Result<Option<String>> {
    match verified.incomplete() {
        None => Ok(None),
        Some(what) if !partial => Err(Error::Incomplete { run: run.root().to_path_buf(), what }),
        Some(what) => Ok(Some(format!(
            "partial analysis: {what}. The design is no longer exactly balanced: each document's estimate rests \
             on the n_in and n_out models of scores.parquet."
        ))),
    }
}

/// Reads the run's corpus, its stored duplicate scores and the complete logs `logs`, and
/// computes all scores.
pub fn analyze(run: &RunDir, logs: &RunLogs, settings: AnalyzeSettings) -> Result<Analysis> {
    let config = RunConfig::from_file(&run.config())?;
    let corpus: CorpusTable = schema::read(&run.corpus())?;
    let found = duplicate_scores::read(run, corpus.len())?;
    // Runs planned before units.parquet was written have none.
    let stored: Option<UnitTable> = if run.units().exists() { Some(schema::read(&run.units())?) } else { None };
    // Documents whose unit was too large to sample as one have no score at the run's level.
    let fell_back = check_units(stored.as_ref(), &config, &corpus.unit, &found.cluster)?;
    let sizes = cluster_sizes(&found.cluster);
    // A spectrum run's scores are those of its finest level, from that level's models.
    let values = logs.scored_values(&config.design, corpus.len(), (0..corpus.len() as u32).collect(), true);
    let values = if settings.attacks { values.with_token_statistics() } else { values };
    let only = values.only_these.then(|| values.models.clone());
    let values = Mutex::new(values);
    let accumulated = estimate::accumulate(&logs.logs, only.as_deref(), &found.cluster, &sizes, &values)?;
    let values = values.into_inner().expect("no panics while locked");
    values.check_complete()?;
    let (intervals, reliability) = how_sure(&values, &config, settings);
    let (membership, variance) = membership::table(&values, &corpus);

    let mut scores = ScoreTable::default();
    for (doc, interval) in intervals.into_iter().enumerate() {
        let metrics = &accumulated.docs[doc];
        let cluster = found.cluster[doc];
        // A cluster's group score, null when no model had it all IN or all OUT; a
        // singleton is its own group.
        let group = if sizes[cluster as usize] > 1 {
            accumulated.clusters.get(&cluster).copied().unwrap_or_default()
        } else {
            *metrics
        };
        let scored = !fell_back[doc];
        let [(mem_acc, mem_acc_se), (mem_loss, mem_loss_se)] = metrics.scores_if(scored);
        let (group_mem_acc, group_mem_acc_se) = group.mem_acc();
        let (group_mem_loss, group_mem_loss_se) = group.mem_loss();
        scores.doc.push(doc as u32);
        scores.doc_id.push(corpus.doc_id[doc].clone());
        scores.source.push(corpus.source[doc].clone());
        scores.holdout.push(corpus.holdout[doc]);
        scores.n_in.push(metrics.acc.inside.n);
        scores.n_out.push(metrics.acc.outside.n);
        scores.acc_in.push(metrics.acc.inside.mean());
        scores.acc_out.push(metrics.acc.outside.mean());
        scores.mem_acc.push(mem_acc);
        scores.mem_acc_se.push(mem_acc_se);
        let acc_interval = interval.mem_acc.filter(|_| mem_acc.is_some());
        scores.mem_acc_lo.push(acc_interval.map(|(lo, _)| lo));
        scores.mem_acc_hi.push(acc_interval.map(|(_, hi)| hi));
        scores.loss_in.push(metrics.loss.inside.mean());
        scores.loss_out.push(metrics.loss.outside.mean());
        scores.mem_loss.push(mem_loss);
        scores.mem_loss_se.push(mem_loss_se);
        let loss_interval = interval.mem_loss.filter(|_| mem_loss.is_some());
        scores.mem_loss_lo.push(loss_interval.map(|(lo, _)| lo));
        scores.mem_loss_hi.push(loss_interval.map(|(_, hi)| hi));
        scores.copies.push(corpus.copies[doc]);
        scores.exact_dup_count.push(found.exact_dup_count[doc]);
        scores.near_dup_count.push(found.near_dup_count[doc]);
        scores.max_jaccard.push(found.max_jaccard[doc]);
        scores.cluster.push(cluster);
        scores.cluster_size.push(found.cluster_size[doc]);
        scores.repeat_fraction.push(found.repeat_fraction[doc]);
        scores.group_mem_acc.push(group_mem_acc);
        scores.group_mem_acc_se.push(group_mem_acc_se);
        scores.group_mem_loss.push(group_mem_loss);
        scores.group_mem_loss_se.push(group_mem_loss_se);
    }

    let attacks = match settings.attacks {
        false => None,
        true => {
            let reference = attacks::reference_statistic(run, &corpus)?;
            Some(attacks::evaluate(
                &values,
                &corpus,
                &scores,
                &membership,
                (reference.as_deref(), config.base.is_some()),
                settings.bootstrap,
                config.seed,
            ))
        }
    };
    drop(values);
    let clusters = cluster_table(&accumulated.clusters, &sizes);
    let copies = copies_table(&config, &corpus, &scores);
    let growth = Growth {
        run: run.root().display().to_string(),
        run_models: config.design.models as usize,
        scale: f64::from(config.design.models)
            / config.design.spectrum.first().map_or(config.design.models, |b| b.size()) as f64,
        models_per_hour: queue::Queue::open(run.clone())?.status()?.models_per_hour,
    };
    let verdicts = Verdict::both(&reliability, settings.rank_by, accumulated.models.len(), Some(growth.clone()));
    let baselines = baselines(run, &config, &corpus)?;
    let end = Sides {
        acc_in: &scores.acc_in,
        acc_out: &scores.acc_out,
        loss_in: &scores.loss_in,
        loss_out: &scores.loss_out,
    };
    let diagnosis = diagnose_regime(&baselines, &scores, end);
    let profile = profile::table(&accumulated, &scores, &fell_back);
    // The regime at each earlier checkpoint; at the end it is the diagnosis's.
    let mut checkpoints = profile::checkpoints(&profile);
    checkpoints.pop();
    let regimes = checkpoints
        .into_iter()
        .map(|(_, _, rows)| {
            let at = Sides {
                acc_in: &profile.acc_in[rows.clone()],
                acc_out: &profile.acc_out[rows.clone()],
                loss_in: &profile.loss_in[rows.clone()],
                loss_out: &profile.loss_out[rows],
            };
            diagnose_regime(&baselines, &scores, at).overall
        })
        .chain([diagnosis.overall.clone()])
        .collect();
    let end_reliability =
        ByMeasure::from_fn(|m| verdicts.iter().find(|v| v.measure() == m).and_then(Verdict::predicted));
    let profile_summary = ProfileSummary::new(&profile, regimes, end_reliability, settings.rank_by);
    let numbers = Summary::new(&scores, &clusters, &copies, settings.rank_by);
    let spectrum = match &stored {
        Some(stored) if spectrum::applies(&config) => {
            Some(spectrum::analyze(&config, &corpus, stored, logs, settings)?)
        }
        _ => None,
    };
    let logs = (logs.logs.len(), logs.jobs);
    let mut summary = PrintedSummary::new(&config, &corpus, &scores, numbers, logs, verdicts, diagnosis);
    if let (Some(tables), Some(stored)) = (&spectrum, &stored) {
        let fields = FieldValues::read(run, &tables.documents)?;
        summary = summary.with_spectrum(
            SpectrumSummary::new(tables, &corpus, stored, &fields),
            SpectrumSummary::verdicts(tables, &growth, settings.rank_by),
        );
    }
    if let Some(profile) = profile_summary {
        summary = summary.with_profile(profile);
    }
    summary = summary.with_membership(MembershipSummary::new(&membership, variance), attacks.clone());
    Ok(Analysis {
        scores,
        clusters,
        copies,
        reliability,
        profile,
        membership,
        attacks,
        spectrum,
        summary,
        run_seed: config.seed,
    })
}

/// Each document's leave-one-out baselines: what a bigram model fit on the training pool
/// (the documents some model trains on, by their copies, and the background) without the
/// document predicts of it, tokenized as the models saw it.
fn baselines(run: &RunDir, config: &RunConfig, corpus: &CorpusTable) -> Result<Vec<Baseline>> {
    let tokenizer = Tokenizer::for_run(run, config)?;
    let RunTokens { documents, background } = tokenizer.encode_run(run, config, corpus)?;
    let weights: Vec<u32> = corpus
        .copies
        .iter()
        .zip(&corpus.holdout)
        .map(|(&copies, &held)| if held { 0 } else { copies.into() })
        .collect();
    diagnosis::leave_one_out_baselines(&documents, &weights, &background, tokenizer.vocab())
}

/// Each document's mean accuracy and loss IN and OUT at one checkpoint, by document.
struct Sides<'a> {
    acc_in: &'a [Option<f64>],
    acc_out: &'a [Option<f64>],
    loss_in: &'a [Option<f64>],
    loss_out: &'a [Option<f64>],
}

/// Whether the models generalize: each document's IN and OUT accuracy at one checkpoint
/// (`at`) against its `baselines`, the losses beside them.
fn diagnose_regime(baselines: &[Baseline], scores: &ScoreTable, at: Sides<'_>) -> Diagnosis {
    let accuracies: Vec<DocumentAccuracy> = baselines
        .iter()
        .enumerate()
        .map(|(doc, baseline)| DocumentAccuracy {
            source: scores.source[doc].clone(),
            holdout: scores.holdout[doc],
            acc_in: at.acc_in[doc],
            acc_out: at.acc_out[doc],
            loss_in: at.loss_in[doc],
            loss_out: at.loss_out[doc],
            bigram: baseline.bigram_accuracy(),
            unigram: baseline.unigram_accuracy(),
        })
        .collect();
    diagnosis::diagnose(&accuracies)
}

/// A document's bootstrap interval of each score.
type Intervals = ByMeasure<Option<(f64, f64)>>;

/// Each document's bootstrap interval of both scores and the run's reliability measures,
/// from one product of weight rows (bootstrap resamples, halves, first-m subsets) with the
/// per-model values.
fn how_sure(values: &ModelValues, config: &RunConfig, settings: AnalyzeSettings) -> (Vec<Intervals>, ReliabilityTable) {
    let replicates = settings.bootstrap;
    let mut weights = Weights::new(values.models.len());
    weights.push_bootstrap(replicates, |b| seeds::rng(config.seed, "bootstrap", b));
    let layout = reliability::Layout::push_rows(&mut weights, config.seed);
    let per_doc = bootstrap::map_documents(values, &weights, |_, rows| {
        let intervals = ByMeasure::from_fn(|m| bootstrap::percentile_interval(&rows.of(m)[..replicates]));
        (intervals, ByMeasure::from_fn(|m| rows.of(m)[replicates..].to_vec()))
    });
    let (intervals, subsets): (Vec<_>, Vec<_>) = per_doc.into_iter().unzip();
    (intervals, reliability::measure(&layout, &subsets))
}

/// `corpus.parquet`'s sampling units are those `units.parquet` stores for the run's unit,
/// and a cluster level's units are the plan's clusters, or the stored files disagree. Runs
/// planned before `units.parquet` was written are checked on their clusters alone. Returns
/// which documents fell back from the run's unit to a finer one (none in older runs).
fn check_units(stored: Option<&UnitTable>, config: &RunConfig, unit: &[u32], cluster: &[u32]) -> Result<Vec<bool>> {
    let Some(stored) = stored else {
        if config.design.unit == Unit::Cluster {
            same_partition(unit, cluster)?;
        }
        return Ok(vec![false; unit.len()]);
    };
    let level = subsets::units::of_level(stored, &config.design.unit, unit.len())?;
    if let Some(doc) = (0..unit.len()).find(|&d| level.sampled[d] != unit[d]) {
        return Err(Error::UnitsDiffer { what: "corpus.parquet's sampling units and units.parquet's", doc });
    }
    if config.design.levels().contains(&Unit::Cluster) {
        let clusters = subsets::units::of_level(stored, &Unit::Cluster, unit.len())?;
        same_partition(&clusters.unit, cluster)?;
    }
    Ok(level.fallback)
}

/// The documents' units and the duplicate scores' clusters are one partition.
fn same_partition(unit: &[u32], cluster: &[u32]) -> Result<()> {
    let mut cluster_of_unit = HashMap::new();
    let mut unit_of_cluster = HashMap::new();
    for doc in 0..unit.len() {
        let same_cluster = *cluster_of_unit.entry(unit[doc]).or_insert(cluster[doc]) == cluster[doc];
        let same_unit = *unit_of_cluster.entry(cluster[doc]).or_insert(unit[doc]) == unit[doc];
        if !(same_cluster && same_unit) {
            return Err(Error::UnitsDiffer {
                what: "the sampling units and analysis/duplicates.parquet's clusters",
                doc,
            });
        }
    }
    Ok(())
}

fn cluster_sizes(cluster: &[u32]) -> Vec<u32> {
    let mut sizes = vec![0; cluster.iter().max().map_or(0, |&c| c as usize + 1)];
    cluster.iter().for_each(|&c| sizes[c as usize] += 1);
    sizes
}

/// One row per cluster of two or more documents, in cluster order; `sizes[c]` is the size
/// of cluster c.
fn cluster_table(groups: &HashMap<u32, Metrics>, sizes: &[u32]) -> ClusterTable {
    let mut table = ClusterTable::default();
    for c in (0..sizes.len() as u32).filter(|&c| sizes[c as usize] > 1) {
        let group = groups.get(&c).copied().unwrap_or_default();
        let (mem_acc, mem_acc_se) = group.mem_acc();
        let (mem_loss, mem_loss_se) = group.mem_loss();
        table.cluster.push(c);
        table.cluster_size.push(sizes[c as usize]);
        table.n_in.push(group.acc.inside.n);
        table.n_out.push(group.acc.outside.n);
        table.group_acc_in.push(group.acc.inside.mean());
        table.group_acc_out.push(group.acc.outside.mean());
        table.group_mem_acc.push(mem_acc);
        table.group_mem_acc_se.push(mem_acc_se);
        table.group_loss_in.push(group.loss.inside.mean());
        table.group_loss_out.push(group.loss.outside.mean());
        table.group_mem_loss.push(mem_loss);
        table.group_mem_loss_se.push(mem_loss_se);
    }
    table
}

/// Per planted copy count, the mean memorization of its canaries and the standard error
/// of that mean across canaries.
fn copies_table(config: &RunConfig, corpus: &CorpusTable, scores: &ScoreTable) -> CopiesTable {
    let canary_ids: HashSet<&str> = config.design.canary_ids.iter().map(String::as_str).collect();
    let mut by_copies: BTreeMap<u16, (Moments, Moments)> = BTreeMap::new();
    for doc in 0..corpus.len() {
        let canary =
            corpus.source[doc].as_deref() == Some(CANARY_SOURCE) || canary_ids.contains(corpus.doc_id[doc].as_str());
        if !canary {
            continue;
        }
        let (acc, loss) = by_copies.entry(corpus.copies[doc]).or_default();
        if let Some(m) = scores.mem_acc[doc] {
            acc.push(m);
        }
        if let Some(m) = scores.mem_loss[doc] {
            loss.push(m);
        }
    }
    let mut table = CopiesTable::default();
    for (copies, (acc, loss)) in by_copies {
        table.copies.push(copies);
        table.canaries.push(acc.n);
        table.mem_acc.push(acc.mean());
        table.mem_acc_se.push(acc.standard_error());
        table.mem_loss.push(loss.mean());
        table.mem_loss_se.push(loss.standard_error());
    }
    table
}

impl Analysis {
    /// Writes every table under `RUN/analysis/`, each atomically (`duplicates.parquet` is
    /// the plan's and stays as it is).
    pub fn write(&self, run: &RunDir) -> Result<()> {
        let dir = run.analysis_dir();
        std::fs::create_dir_all(&dir).map_err(subsets::Error::io(&dir))?;
        let seed = Some(self.run_seed);
        schema::write(&run.scores(), &self.scores, seed)?;
        schema::write(&run.clusters(), &self.clusters, seed)?;
        schema::write(&run.copies(), &self.copies, seed)?;
        schema::write(&run.reliability(), &self.reliability, seed)?;
        schema::write(&run.profile(), &self.profile, seed)?;
        schema::write(&run.membership_exposure(), &self.membership, seed)?;
        match &self.attacks {
            Some(attacks) => {
                schema::write(&run.attacks(), &attacks.table, seed)?;
                schema::write(&run.attack_roc(), &attacks.roc, seed)?;
            }
            // No earlier analysis's attacks left beside this one's scores.
            None => {
                for path in [run.attacks(), run.attack_roc()] {
                    match std::fs::remove_file(&path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(subsets::Error::io(path)(e))?,
                        _ => (),
                    }
                }
            }
        }
        if let Some(spectrum) = &self.spectrum {
            spectrum.write(run, self.run_seed)?;
        }
        let json = serde_json::to_string_pretty(&self.summary.file()).expect("numbers and strings serialize");
        subsets::atomic::write_bytes(&run.summary(), json.as_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::Measure;
    use crate::synthetic_run::{self, Row, Spec};
    use subsets::corpus::Document;

    fn analyze_run(run: &RunDir) -> Result<Analysis> {
        analyze(run, &RunLogs::open(run)?, AnalyzeSettings::default())
    }

    /// 16 distinct documents, then 6 copies of one text (one near-duplicate cluster).
    fn spec(unit: Unit) -> Spec {
        let mut documents = synthetic_run::documents(16, 1);
        let text = "the same sentence copied six times over, word for word".to_string();
        documents.extend((0..6).map(|i| Document { id: format!("copy-{i}"), text: text.clone(), source: None }));
        Spec { documents, models: 8, stack: 4, seed: 3, unit, holdout_ids: vec![] }
    }

    /// Accuracy 0.3 + 0.05·(doc mod 10) when IN, 0.3 when OUT, plus a model's small offset.
    fn row(model: u32, doc: usize, in_train: &[bool]) -> Row {
        let correct = 30 + model % 3 + if in_train[doc] { 5 * (doc as u32 % 10) } else { 0 };
        Row { tokens: 100, correct, nll: f64::from(100 - correct) }
    }

    fn analyzed(unit: Unit) -> (tempfile::TempDir, Analysis, subsets::plan::Plan) {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path().join("run"));
        let plan = synthetic_run::write(&run, &spec(unit), row).unwrap();
        let analysis = analyze_run(&run).unwrap();
        analysis.write(&run).unwrap();
        (dir, analysis, plan)
    }

    /// Every document's group columns are its cluster's row of clusters.parquet (a
    /// singleton's are its own scores); returns the copies' cluster row.
    fn assert_scores_and_clusters_agree(a: &Analysis) -> usize {
        let (scores, clusters) = (&a.scores, &a.clusters);
        for doc in 0..scores.len() {
            if scores.cluster_size[doc] == 1 {
                assert_eq!(scores.group_mem_acc[doc], scores.mem_acc[doc], "doc {doc}");
                continue;
            }
            let row = clusters.cluster.iter().position(|&c| c == scores.cluster[doc]).expect("a row per cluster");
            assert_eq!(scores.group_mem_acc[doc], clusters.group_mem_acc[row], "doc {doc}");
            assert_eq!(scores.group_mem_acc_se[doc], clusters.group_mem_acc_se[row], "doc {doc}");
            assert_eq!(scores.group_mem_loss[doc], clusters.group_mem_loss[row], "doc {doc}");
            assert_eq!(scores.group_mem_loss_se[doc], clusters.group_mem_loss_se[row], "doc {doc}");
        }
        assert_eq!(clusters.len(), 1);
        0
    }

    #[test]
    fn group_columns_of_a_document_run_are_the_clusters_null_score_not_the_documents_own() {
        let (_dir, analysis, _) = analyzed(Unit::Document);
        let row = assert_scores_and_clusters_agree(&analysis);
        assert_eq!(analysis.clusters.cluster_size[row], 6);
        // No model has all six copies IN or all OUT, so the group has no score...
        assert_eq!(analysis.clusters.group_mem_acc[row], None);
        // ...and the copies say so, although each has a score of its own.
        let copy = 16;
        assert!(analysis.scores.mem_acc[copy].is_some());
        assert_eq!(analysis.scores.group_mem_acc[copy], None);
    }

    #[test]
    fn group_columns_of_a_cluster_run_come_from_the_plans_units() {
        let (_dir, analysis, plan) = analyzed(Unit::Cluster);
        let row = assert_scores_and_clusters_agree(&analysis);
        assert_eq!((analysis.clusters.n_in[row], analysis.clusters.n_out[row]), (4, 4));
        // Copies 16..22 have doc mod 10 = 6..9, 0, 1: IN gains 0.05·that on average, plus
        // the IN models' mean offset less the OUT models'.
        let in_models: Vec<u32> = (0..plan.membership.models()).filter(|&m| plan.membership.contains(m, 16)).collect();
        let offset = |inside: bool| (0..8).filter(|m| in_models.contains(m) == inside).map(|m| m % 3).sum::<u32>();
        let offsets = f64::from(offset(true)) / 400.0 - f64::from(offset(false)) / 400.0;
        let expected = (6 + 7 + 8 + 9 + 1) as f64 * 0.05 / 6.0 + offsets;
        let group = analysis.clusters.group_mem_acc[row].unwrap();
        assert!((group - expected).abs() < 1e-9, "{group} vs {expected}");
    }

    #[test]
    fn cluster_runs_whose_units_disagree_with_the_stored_clusters_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path().join("run"));
        synthetic_run::write(&run, &spec(Unit::Cluster), row).unwrap();
        let mut duplicates: subsets::schema::DuplicateTable = schema::read(&run.duplicates()).unwrap();
        duplicates.cluster[16] = 0;
        schema::write(&run.duplicates(), &duplicates, None).unwrap();
        let err = analyze_run(&run).err().unwrap().to_string();
        assert!(err.contains("sampling units and analysis/duplicates.parquet's clusters differ at doc"), "{err}");
    }

    #[test]
    fn a_cluster_over_the_size_limit_leaves_its_documents_unscored() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path().join("run"));
        // 22 documents at 0.2: clusters of up to 4; the six copies fall back to documents.
        synthetic_run::write_limited(&run, &spec(Unit::Cluster), 0.2, row).unwrap();
        let analysis = analyze_run(&run).unwrap();
        let s = &analysis.scores;
        for doc in 16..22 {
            assert_eq!((s.mem_acc[doc], s.mem_acc_lo[doc], s.mem_loss[doc]), (None, None, None), "copy {doc}");
            assert!(s.acc_in[doc].is_some() && s.acc_out[doc].is_some(), "what the models did is kept");
        }
        assert!(s.mem_acc[..16].iter().all(Option::is_some));
        let spectrum = analysis.spectrum.expect("a cluster run has a spectrum of one level");
        assert!(spectrum.documents.note[16].as_deref().unwrap().contains("over the size limit of 4"));
        assert!(analysis.summary.to_string().contains("cluster: 6 documents are in units over the size limit"));
    }

    #[test]
    fn bootstrap_intervals_and_reliability_of_a_clear_signal() {
        let (_dir, analysis, _) = analyzed(Unit::Document);
        let s = &analysis.scores;
        for doc in 0..16 {
            let (lo, hi, mem) = (s.mem_acc_lo[doc].unwrap(), s.mem_acc_hi[doc].unwrap(), s.mem_acc[doc].unwrap());
            // The model offsets (0, 0.01, 0.02) are the only noise: the interval is narrow.
            assert!(lo <= mem + 1e-6 && mem <= hi + 1e-6 && hi - lo < 0.03, "doc {doc}: {lo} {mem} {hi}");
        }
        // The loss is 1 − the accuracy: mem_loss equals mem_acc, and so does its interval.
        for doc in 0..16 {
            assert!((s.mem_loss[doc].unwrap() - s.mem_acc[doc].unwrap()).abs() < 1e-6, "doc {doc}");
            assert!((s.mem_loss_lo[doc].unwrap() - s.mem_acc_lo[doc].unwrap()).abs() < 1e-5, "doc {doc}");
            assert!((s.mem_loss_hi[doc].unwrap() - s.mem_acc_hi[doc].unwrap()).abs() < 1e-5, "doc {doc}");
        }
        let r = &analysis.reliability;
        assert_eq!(r.score, ["mem_loss", "mem_loss", "mem_loss", "mem_acc", "mem_acc", "mem_acc"]);
        assert_eq!(r.measure, ["split-half", "convergence", "convergence"].repeat(2));
        assert_eq!(r.models, [4, 4, 8, 4, 4, 8]);
        for split in [0, 3] {
            assert!(
                r.spearman[split].unwrap() > 0.9 && r.predicted[split].unwrap() > r.spearman[split].unwrap(),
                "{r:?}"
            );
            assert_eq!(r.spearman[split + 2], Some(1.0));
        }
        let printed = analysis.summary.to_string();
        for score in ["mem_loss", "mem_acc"] {
            assert!(printed.contains(&format!("reliability ({score}): halves of 4 models")), "{printed}");
        }
        assert!(printed.contains("enough models for a stable ranking"));
    }

    #[test]
    fn each_scores_reliability_and_models_needed_equal_a_recomputation_from_the_logs() {
        use rand::seq::SliceRandom;
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path().join("run"));
        let spec =
            Spec { documents: synthetic_run::documents(60, 2), models: 16, stack: 4, seed: 11, ..spec(Unit::Document) };
        // Memorization d mod 7 for accuracy, d mod 5 for loss, each with its own noise.
        let noise = |model: u32, doc: usize, what: &str| {
            let mut rng = seeds::rng(u64::from(model), what, doc as u64);
            normal(&mut rng)
        };
        synthetic_run::write(&run, &spec, |model, doc, in_train| {
            let inside = f64::from(u8::from(in_train[doc]));
            let accuracy = 0.4 + inside * 0.02 * (doc % 7) as f64 + 0.05 * noise(model, doc, "acc");
            let loss = 2.0 - inside * 0.03 * (doc % 5) as f64 + 0.05 * noise(model, doc, "loss");
            Row { tokens: 10_000, correct: (accuracy * 10_000.0).round() as u32, nll: loss * 10_000.0 }
        })
        .unwrap();
        let analysis = analyze_run(&run).unwrap();

        // Each model's accuracy, loss and membership per document, straight from the logs.
        let (models, docs) = (16, 60);
        let mut cells = vec![(0.0, 0.0, false); models * docs];
        for job in 0..4 {
            let log: subsets::schema::LogTable = schema::read(&run.log(job)).unwrap();
            for i in 0..log.len() {
                let tokens = f64::from(log.tokens[i]);
                let cell = (f64::from(log.correct[i]) / tokens, log.nll[i] / tokens, log.in_train[i]);
                cells[log.model[i] as usize * docs + log.doc[i] as usize] = cell;
            }
        }
        // The halves as the analysis draws them: model rows shuffled by the run's seed.
        let mut shuffled: Vec<usize> = (0..models).collect();
        shuffled.shuffle(&mut seeds::rng(11, "split-half", 0));
        let halves = [&shuffled[..8], &shuffled[8..]];
        // A score over some models: mean IN − mean OUT accuracy, mean OUT − mean IN loss.
        let score = |among: &[usize], doc: usize, loss: bool| -> f64 {
            let side = |inside: bool| {
                let values: Vec<f64> = among
                    .iter()
                    .map(|&m| cells[m * docs + doc])
                    .filter(|c| c.2 == inside)
                    .map(|c| if loss { c.1 } else { c.0 })
                    .collect();
                values.iter().sum::<f64>() / values.len() as f64
            };
            if loss { side(false) - side(true) } else { side(true) - side(false) }
        };
        let r = &analysis.reliability;
        for (name, loss) in [("mem_loss", true), ("mem_acc", false)] {
            let half_scores: Vec<Vec<f64>> =
                halves.iter().map(|half| (0..docs).map(|d| score(half, d, loss)).collect()).collect();
            let rho = crate::stats::spearman(&half_scores[0], &half_scores[1]).unwrap();
            let predicted = 2.0 * rho / (1.0 + rho);
            // Odds grow with the models: 0.9's odds (9) over the halves' odds, times 8.
            let needed = (8.0 * 9.0 / (rho / (1.0 - rho)) - 1e-9).ceil() as u32;
            let row = (0..r.len()).find(|&i| r.score[i] == name && r.measure[i] == "split-half").unwrap();
            assert!((r.spearman[row].unwrap() - rho).abs() < 1e-9, "{name}: {:?} vs {rho}", r.spearman[row]);
            assert!((r.predicted[row].unwrap() - predicted).abs() < 1e-9, "{name}");
            assert_eq!(r.models_for_stable[row], Some(needed.max(2)), "{name}: rho {rho}");
            let all: Vec<usize> = (0..models).collect();
            for size in [4, 8] {
                let first: Vec<usize> = (0..size).collect();
                let subset: Vec<f64> = (0..docs).map(|d| score(&first, d, loss)).collect();
                let whole: Vec<f64> = (0..docs).map(|d| score(&all, d, loss)).collect();
                let rho = crate::stats::spearman(&subset, &whole).unwrap();
                let row = (0..r.len())
                    .find(|&i| r.score[i] == name && r.measure[i] == "convergence" && r.models[i] as usize == size)
                    .unwrap();
                assert!((r.spearman[row].unwrap() - rho).abs() < 1e-9, "{name} first {size}");
            }
        }
        // summary.json and the printed lines carry the same numbers, mem_loss first.
        let file = analysis.summary.file();
        let printed = analysis.summary.to_string();
        let loss_line = printed.find("reliability (mem_loss)").unwrap();
        assert!(loss_line < printed.find("reliability (mem_acc)").unwrap(), "{printed}");
        for name in ["mem_loss", "mem_acc"] {
            let row = (0..r.len()).find(|&i| r.score[i] == name && r.measure[i] == "split-half").unwrap();
            assert_eq!(file.reliability[name].halves, r.spearman[row]);
            assert_eq!(file.reliability[name].models_for_stable, r.models_for_stable[row]);
        }
    }

    /// Accuracy as [`row`], the IN gain growing with training: `checkpoint` of it.
    fn row_at(checkpoint: f64, model: u32, doc: usize, in_train: &[bool]) -> Row {
        let gain = if in_train[doc] { (checkpoint * 5.0 * (doc % 10) as f64).round() as u32 } else { 0 };
        let correct = 30 + model % 3 + gain + (checkpoint * 8.0) as u32 % 3;
        Row { tokens: 100, correct, nll: f64::from(100 - correct) / checkpoint }
    }

    #[test]
    fn every_checkpoints_scores_equal_a_recomputation_from_the_logs() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path().join("run"));
        let eval_at = [0.25, 0.5, 1.0];
        synthetic_run::write_checkpoints(&run, &spec(Unit::Document), &eval_at, row_at).unwrap();
        let analysis = analyze_run(&run).unwrap();
        analysis.write(&run).unwrap();
        let profile: ProfileTable = schema::read(&run.profile()).unwrap();
        assert_eq!(profile, analysis.profile);
        let docs = analysis.scores.len();
        assert_eq!(profile.len(), 3 * docs);

        // Straight from the log files: per (checkpoint, doc), the IN and OUT accuracies and
        // losses, then textbook means, variances and their differences.
        // (accuracy, loss) of the OUT models, then of the IN ones.
        type Sides = [Vec<(f64, f64)>; 2];
        let mut rows: BTreeMap<(u64, u32), Sides> = BTreeMap::new();
        for job in 0..2 {
            let log: subsets::schema::LogTable = schema::read(&run.log(job)).unwrap();
            for i in 0..log.len() {
                let sides = rows.entry((log.checkpoint[i].to_bits(), log.doc[i])).or_default();
                let tokens = f64::from(log.tokens[i]);
                sides[usize::from(log.in_train[i])].push((f64::from(log.correct[i]) / tokens, log.nll[i] / tokens));
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let difference = |a: &[f64], b: &[f64]| {
            let var = |v: &[f64]| v.iter().map(|x| (x - mean(v)).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
            (mean(a) - mean(b), (var(a) / a.len() as f64 + var(b) / b.len() as f64).sqrt())
        };
        for i in 0..profile.len() {
            let [outside, inside] = &rows[&(profile.checkpoint[i].to_bits(), profile.doc[i])];
            let acc = |v: &[(f64, f64)]| v.iter().map(|r| r.0).collect::<Vec<_>>();
            let loss = |v: &[(f64, f64)]| v.iter().map(|r| r.1).collect::<Vec<_>>();
            let (mem_acc, mem_acc_se) = difference(&acc(inside), &acc(outside));
            let (mem_loss, mem_loss_se) = difference(&loss(outside), &loss(inside));
            let close = |got: Option<f64>, want: f64| (got.unwrap() - want).abs() < 1e-12;
            assert_eq!((profile.n_in[i], profile.n_out[i]), (inside.len() as u32, outside.len() as u32));
            assert!(close(profile.acc_in[i], mean(&acc(inside))) && close(profile.acc_out[i], mean(&acc(outside))));
            assert!(close(profile.mem_acc[i], mem_acc) && close(profile.mem_acc_se[i], mem_acc_se), "row {i}");
            assert!(close(profile.mem_loss[i], mem_loss) && close(profile.mem_loss_se[i], mem_loss_se), "row {i}");
        }
        assert_eq!(profile.checkpoint[..docs], vec![0.25; docs]);
        assert_eq!(profile.step[docs..2 * docs], vec![500; docs]);
        // The end of training is scores.parquet, exactly.
        let end = 2 * docs..3 * docs;
        assert_eq!(profile.mem_acc[end.clone()], analysis.scores.mem_acc[..]);
        assert_eq!(profile.mem_loss_se[end.clone()], analysis.scores.mem_loss_se[..]);
        assert_eq!(profile.acc_out[end], analysis.scores.acc_out[..]);

        // Document d gains 5·(d mod 10) points IN at the end, a quarter of that at 25%: the
        // ranking at 25% is the final one's up to rounding.
        // The loss at checkpoint c is (1 − accuracy) / c: the same ranking, on another scale.
        let profile = analysis.summary.file().profile.unwrap();
        assert_eq!(profile.checkpoints.len(), 3);
        let scores = &profile.scores;
        assert_eq!((scores[0].measure, scores[1].measure), (Measure::Loss, Measure::Accuracy));
        for score in scores {
            assert!(score.spearman_with_final[0].unwrap() > 0.9, "{score:?}");
            assert_eq!(score.stable_from, Some(0.25));
        }
        let printed = analysis.summary.to_string();
        assert!(
            printed.contains(
                "memorization over training: mean mem_loss by source at each checkpoint (steps 250, 500, 1000)"
            ),
            "{printed}"
        );
        for score in ["mem_loss", "mem_acc"] {
            let answer = format!(
                "ranking over training ({score}): from 25% of training (step 250 of 1000) on, the ranking of \
                 documents by {score} is the final one's"
            );
            assert!(printed.contains(&answer), "{printed}");
        }
    }

    /// A standard normal draw (Box-Muller).
    fn normal(rng: &mut impl rand::RngExt) -> f64 {
        let (u, v): (f64, f64) = (rng.random(), rng.random());
        (-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// A run of `models` over 2000 documents whose true memorization has standard deviation
    /// `signal` and whose every (model, document) accuracy has independent noise `noise`,
    /// and loss (1.5 less the memorization when IN) independent noise `loss_noise`.
    fn noisy_run(dir: &std::path::Path, models: u32, signal: f64, noise: f64, loss_noise: f64) -> Analysis {
        let run = RunDir::new(dir.join(format!("run-{models}")));
        let spec = Spec {
            documents: synthetic_run::documents(2000, 5),
            models,
            stack: 16,
            seed: 9,
            unit: Unit::Document,
            holdout_ids: vec![],
        };
        let mut rng = seeds::rng(7, "true-memorization", 0);
        let truth: Vec<f64> = (0..2000).map(|_| signal * normal(&mut rng)).collect();
        synthetic_run::write(&run, &spec, |model, doc, in_train| {
            let mut rng = seeds::rng(u64::from(model), "noise", doc as u64);
            let accuracy = 0.5 + if in_train[doc] { truth[doc] } else { 0.0 } + noise * normal(&mut rng);
            let loss = 1.5 - if in_train[doc] { truth[doc] } else { 0.0 } + loss_noise * normal(&mut rng);
            let tokens = 1_000_000;
            let correct = (accuracy.clamp(0.0, 1.0) * f64::from(tokens)).round() as u32;
            Row { tokens, correct, nll: loss * f64::from(tokens) }
        })
        .unwrap();
        analyze_run(&run).unwrap()
    }

    #[test]
    fn the_models_for_a_stable_ranking_are_estimated_from_a_known_per_model_reliability() {
        // With keep 0.5, M models estimate a document's memorization with noise variance
        // noise² · 4 / M, so the reliability of M models is s² / (s² + 4·noise²/M): 0.9 at
        // M = 36 · noise² / s² = 64 models for noise / s = 4 / 3.
        // The loss has half the accuracy's noise: 16 models for it.
        let (signal, noise, loss_noise) = (0.03, 0.04, 0.02);
        let needed = |noise: f64| 36.0 * noise * noise / (signal * signal);
        let dir = tempfile::tempdir().unwrap();
        let small = noisy_run(dir.path(), 16, signal, noise, loss_noise);
        let split_half = |r: &ReliabilityTable, score: &str| {
            (0..r.len()).find(|&i| r.score[i] == score && r.measure[i] == "split-half").unwrap()
        };
        let r = &small.reliability;
        let split = |score: &str| split_half(r, score);
        let file = small.summary.file();
        let printed = small.summary.to_string();
        for (score, truth) in [("mem_acc", needed(noise)), ("mem_loss", needed(loss_noise))] {
            let estimate = r.models_for_stable[split(score)].unwrap();
            // The halves' Spearman understates their Pearson correlation, and random halves
            // are not balanced per document as the whole run is: both make the estimate a
            // little high.
            assert!(
                (0.9 * truth..1.35 * truth).contains(&f64::from(estimate)),
                "{score}: {estimate} models estimated, {truth} true"
            );
            assert_eq!(file.reliability[score].models_for_stable, Some(estimate));
        }
        let estimate = r.models_for_stable[split("mem_acc")].unwrap();
        assert!(printed.contains(&format!("about {estimate} models would reach it")), "{printed}");
        assert_eq!(file.rank_by, Measure::Loss);
        // And that many models do rank the documents stably.
        let grown = noisy_run(dir.path(), estimate, signal, noise, loss_noise);
        let predicted = grown.reliability.predicted[split_half(&grown.reliability, "mem_acc")].unwrap();
        assert!(predicted >= 0.88, "{estimate} models: Spearman-Brown {predicted}");
    }
}
