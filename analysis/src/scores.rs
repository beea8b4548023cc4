//! `cfmem analyze`: from a run directory to `analysis/scores.parquet`,
//! `analysis/clusters.parquet`, `analysis/copies.parquet`, `analysis/duplicates.parquet`
//! and a printed summary.

use std::collections::{BTreeMap, HashMap, HashSet};

use subsets::config::RunConfig;
use subsets::layout::{LogState, RunDir};
use subsets::plan::CANARY_SOURCE;
use subsets::schema::{self, ClusterTable, CopiesTable, CorpusTable, DuplicateTable, JobTable, ScoreTable, Table};

use crate::dups::{self, DupParams};
use crate::estimate::{self, Metrics};
use crate::report::Summary;
use crate::stats::Moments;
use crate::{Error, Result};

/// Everything `cfmem analyze` writes.
pub struct Analysis {
    pub scores: ScoreTable,
    pub clusters: ClusterTable,
    pub copies: CopiesTable,
    pub duplicates: DuplicateTable,
    pub summary: Summary,
    /// The run's seed, written into every table's metadata.
    pub run_seed: u64,
}

/// Reads the run's corpus and every complete log and computes all scores. Clusters use the
/// run's near-duplicate threshold, so a `--unit cluster` run is analyzed with the clusters
/// it was planned with.
pub fn analyze(run: &RunDir) -> Result<Analysis> {
    if !run.config().exists() {
        return Err(Error::Message(format!(
            "{} is not a planned run: no run.toml here (run `cfmem plan` first)",
            run.root().display()
        )));
    }
    let config = RunConfig::from_file(&run.config())?;
    let params = DupParams { threshold: config.design.threshold, ..DupParams::default() };
    let corpus: CorpusTable = schema::read(&run.corpus())?;
    let jobs: JobTable = schema::read(&run.jobs())?;
    let mut job_ids = jobs.job.clone();
    job_ids.dedup();
    let mut logs = Vec::new();
    for &job in &job_ids {
        if run.log_state(job)? == LogState::Complete {
            logs.push(run.log(job));
        }
    }
    if logs.is_empty() {
        return Err(Error::Message(format!(
            "{}: no complete logs: run `cfmem run {}` first",
            run.root().display(),
            run.root().display()
        )));
    }

    let texts: Vec<&str> = corpus.text.iter().map(String::as_str).collect();
    let found = dups::find_duplicates(&texts, &params);
    let sizes = cluster_sizes(&found.cluster);
    let accumulated = estimate::accumulate(&logs, &found.cluster, &sizes)?;

    let mut scores = ScoreTable::default();
    for doc in 0..corpus.len() {
        let metrics = &accumulated.docs[doc];
        let cluster = found.cluster[doc];
        let group = accumulated.clusters.get(&cluster).unwrap_or(metrics);
        let (mem_acc, mem_acc_se) = metrics.mem_acc();
        let (mem_loss, mem_loss_se) = metrics.mem_loss();
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
        scores.mem_acc_lo.push(None);
        scores.mem_acc_hi.push(None);
        scores.loss_in.push(metrics.loss.inside.mean());
        scores.loss_out.push(metrics.loss.outside.mean());
        scores.mem_loss.push(mem_loss);
        scores.mem_loss_se.push(mem_loss_se);
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

    let clusters = cluster_table(&accumulated.clusters, &sizes);
    let copies = copies_table(&config, &corpus, &scores);
    let duplicates = found.to_table(&corpus.doc_id);
    let summary = Summary::new(
        &config,
        &corpus,
        &scores,
        &clusters,
        &copies,
        accumulated.models.len(),
        (logs.len(), job_ids.len()),
    );
    Ok(Analysis { scores, clusters, copies, duplicates, summary, run_seed: config.seed })
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
    /// Writes every table under `RUN/analysis/`, each atomically.
    pub fn write(&self, run: &RunDir) -> Result<()> {
        let dir = run.analysis_dir();
        std::fs::create_dir_all(&dir).map_err(subsets::Error::io(&dir))?;
        schema::write(&run.scores(), &self.scores, Some(self.run_seed))?;
        schema::write(&run.clusters(), &self.clusters, Some(self.run_seed))?;
        schema::write(&run.copies(), &self.copies, Some(self.run_seed))?;
        schema::write(&run.duplicates(), &self.duplicates, Some(self.run_seed))?;
        Ok(())
    }
}
