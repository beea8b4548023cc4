//! The memorization spectrum: each document's memorization at every level of the run
//! (document, near-duplicate cluster, passage group, topic, group field), each level estimated
//! from its own block of models, in which the level's units were IN or OUT together
//! (`analysis/spectrum.parquet`, `spectrum_units.parquet`, `spectrum_reliability.parquet`);
//! and the numbers both views show of it ([`SpectrumSummary`]): per source, memorization
//! by level, the documents whose memorization appears only at a coarser level, each
//! document's place on the spectrum ([`places`]) and what one unit OUT removes.
//!
//! At one level, for document x with unit u: `mem_acc` = mean accuracy on x of the
//! level's models with u IN − of those with u OUT, and `mem_loss` = mean loss of those
//! with u OUT − of those with u IN, each with a standard error and a bootstrap interval
//! over the level's models, and the group scores of u (the members' mean, from the models
//! with all of u IN or all OUT). A document whose unit was over the
//! size limit, sampled by a finer unit instead, has no score at the level: `note` says why.
//!
//! It reads the stored units (`units.parquet`) and the logs' per-model values; which
//! documents share a unit is the plan's business.

use std::collections::BTreeMap;

use subsets::config::{RunConfig, Unit};
use subsets::layout::RunDir;
use subsets::schema::{
    self, CorpusTable, SpectrumReliabilityTable, SpectrumTable, SpectrumUnitTable, Table, UnitTable,
};
use subsets::seeds;
use subsets::units::{self, LevelUnits};

use crate::Result;
use crate::bootstrap::{self, Weights};
use crate::estimate::Metrics;
use crate::measure::{ByMeasure, Measure};
use crate::per_model::{self, ModelValues, RunLogs};
use crate::reliability::{self, Growth, Layout, Verdict};
use crate::settings::AnalyzeSettings;
use crate::stats::quantile;

/// The three spectrum tables of an analysis.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpectrumTables {
    pub documents: SpectrumTable,
    pub units: SpectrumUnitTable,
    pub reliability: SpectrumReliabilityTable,
}

impl SpectrumTables {
    /// Writes the tables under `RUN/analysis/`, each atomically.
    pub fn write(&self, run: &RunDir, seed: u64) -> Result<()> {
        schema::write(&run.spectrum(), &self.documents, Some(seed))?;
        schema::write(&run.spectrum_units(), &self.units, Some(seed))?;
        schema::write(&run.spectrum_reliability(), &self.reliability, Some(seed))?;
        Ok(())
    }
}

/// Whether `analyze` measures a spectrum for this run: one whose levels are more than the
/// document alone.
pub fn applies(config: &RunConfig) -> bool {
    config.design.levels() != [Unit::Document]
}

/// The spectrum of the run from its complete `logs` and its `units.parquet`, `stored`.
pub fn analyze(
    config: &RunConfig,
    corpus: &CorpusTable,
    stored: &UnitTable,
    logs: &RunLogs,
    settings: AnalyzeSettings,
) -> Result<SpectrumTables> {
    let docs = corpus.len();
    let values =
        per_model::read(&logs.logs, ModelValues::new(logs.models.clone(), docs, (0..docs as u32).collect(), true))?;
    let mut tables = SpectrumTables::default();
    for (index, level) in config.design.levels().iter().enumerate() {
        let units = units::of_level(stored, level, docs)?;
        let models: Vec<u32> = match config.design.spectrum.get(index) {
            Some(block) => block.model_ids(),
            None => values.models.clone(),
        };
        let rows: Vec<usize> = models.iter().filter_map(|&m| values.row(m)).collect();
        let context =
            LevelContext { units: &units, corpus, limit: config.design.max_unit_size(docs), seed: config.seed };
        measure_level(&values, &rows, &context, settings, &mut tables);
    }
    tables.documents.finest_level = places(&tables.documents, &config.design.levels(), settings.rank_by);
    Ok(tables)
}

/// The share of a document's largest score over the levels that its place on the spectrum
/// must reach: the seed's "destroys the model's performance" is the large drop, not the
/// first detectable one.
pub const PLACE_SHARE: f64 = 0.5;

/// Each row's `finest_level` in `table` (rows level by level, in the order of `levels`,
/// finest first as a run's levels are), by `measure`'s score (the one `analyze` ranks by):
/// per document, the finest level whose score reaches [`PLACE_SHARE`] of the document's
/// largest score over the levels, when that largest is significant (the lower end of its
/// interval above zero: the bootstrap's, else ± 1.96 standard errors); None otherwise.
pub fn places(table: &SpectrumTable, levels: &[Unit], measure: Measure) -> Vec<Option<String>> {
    let (score, lower_end, se) = match measure {
        Measure::Loss => (&table.mem_loss, &table.mem_loss_lo, &table.mem_loss_se),
        Measure::Accuracy => (&table.mem_acc, &table.mem_acc_lo, &table.mem_acc_se),
    };
    let docs = table.len() / levels.len().max(1);
    let place_of = |d: usize| -> Option<String> {
        let row = |l: usize| l * docs + d;
        let (largest, at) = (0..levels.len())
            .filter_map(|l| Some((score[row(l)]?, l)))
            .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))?;
        let lower = lower_end[row(at)].or_else(|| Some(largest - 1.96 * se[row(at)]?))?;
        if lower <= 0.0 {
            return None;
        }
        let level = (0..levels.len()).find(|&l| score[row(l)].is_some_and(|m| m >= PLACE_SHARE * largest))?;
        Some(levels[level].to_string())
    };
    let per_doc: Vec<Option<String>> = (0..docs).map(place_of).collect();
    (0..table.len()).map(|i| per_doc[i % docs.max(1)].clone()).collect()
}

/// What one level's measures read besides the models' values.
pub struct LevelContext<'a> {
    pub units: &'a LevelUnits,
    pub corpus: &'a CorpusTable,
    /// The size limit the plan applied, for the note of a unit over it.
    pub limit: u32,
    pub seed: u64,
}

/// Appends one level's rows, from the models of `values` rows `rows`, to `tables`.
pub fn measure_level(
    values: &ModelValues,
    rows: &[usize],
    context: &LevelContext<'_>,
    settings: AnalyzeSettings,
    tables: &mut SpectrumTables,
) {
    let LevelContext { units, corpus, limit, seed } = *context;
    let level = units.level.to_string();
    let docs = values.docs;
    let per_doc: Vec<Metrics> = (0..docs).map(|d| doc_metrics(values, rows, d)).collect();
    let groups = group_metrics(values, rows, units);

    let replicates = settings.bootstrap;
    let mut weights = Weights::new(values.models.len());
    weights.push_bootstrap_of(replicates, rows, |b| seeds::rng(seed, &format!("bootstrap-{level}"), b));
    let layout = Layout::push_rows_of(&mut weights, rows, &mut seeds::rng(seed, &format!("split-half-{level}"), 0));
    let per_doc_rows = bootstrap::map_documents(values, &weights, |_, r| {
        let intervals = ByMeasure::from_fn(|m| bootstrap::percentile_interval(&r.of(m)[..replicates]));
        (intervals, ByMeasure::from_fn(|m| r.of(m)[replicates..].to_vec()))
    });
    let (intervals, subsets): (Vec<_>, Vec<_>) = per_doc_rows.into_iter().unzip();

    let t = &mut tables.documents;
    for doc in 0..docs {
        let note = if corpus.holdout[doc] {
            Some("held out: no model trains on it".to_string())
        } else if units.fallback[doc] {
            Some(format!(
                "its {level} unit of {} documents is over the size limit of {limit}: sampled by {} units within it, \
                 no {level} score",
                units.unit_size[doc],
                units.level.finer().expect("a document is never over the limit"),
            ))
        } else {
            None
        };
        let scored = note.is_none();
        let metrics = per_doc[doc];
        let group = if units.unit_size[doc] > 1 { groups.get(&units.unit[doc]).copied() } else { Some(metrics) };
        let group = group.filter(|_| scored).unwrap_or_default();
        let [(mem_acc, mem_acc_se), (mem_loss, mem_loss_se)] = metrics.scores_if(scored);
        let acc_interval = intervals[doc].mem_acc.filter(|_| mem_acc.is_some());
        let loss_interval = intervals[doc].mem_loss.filter(|_| mem_loss.is_some());
        let (group_mem_acc, group_mem_acc_se) = group.mem_acc();
        let (group_mem_loss, group_mem_loss_se) = group.mem_loss();
        t.level.push(level.clone());
        t.doc.push(doc as u32);
        t.doc_id.push(corpus.doc_id[doc].clone());
        t.source.push(corpus.source[doc].clone());
        t.unit.push(units.unit[doc]);
        t.unit_size.push(units.unit_size[doc]);
        t.n_in.push(metrics.acc.inside.n);
        t.n_out.push(metrics.acc.outside.n);
        t.acc_in.push(metrics.acc.inside.mean().filter(|_| scored));
        t.acc_out.push(metrics.acc.outside.mean().filter(|_| scored));
        t.mem_acc.push(mem_acc);
        t.mem_acc_se.push(mem_acc_se);
        t.mem_acc_lo.push(acc_interval.map(|(lo, _)| lo));
        t.mem_acc_hi.push(acc_interval.map(|(_, hi)| hi));
        t.mem_loss.push(mem_loss);
        t.mem_loss_se.push(mem_loss_se);
        t.mem_loss_lo.push(loss_interval.map(|(lo, _)| lo));
        t.mem_loss_hi.push(loss_interval.map(|(_, hi)| hi));
        t.group_mem_acc.push(group_mem_acc);
        t.group_mem_acc_se.push(group_mem_acc_se);
        t.group_mem_loss.push(group_mem_loss);
        t.group_mem_loss_se.push(group_mem_loss_se);
        t.note.push(note);
    }

    let u = &mut tables.units;
    let mut first_doc: BTreeMap<u32, usize> = BTreeMap::new();
    for doc in (0..docs).filter(|&d| units.unit_size[d] > 1) {
        first_doc.entry(units.unit[doc]).or_insert(doc);
    }
    for (&unit, &doc) in &first_doc {
        let sampled = !units.fallback[doc];
        let group = groups.get(&unit).copied().filter(|_| sampled).unwrap_or_default();
        let (mem_acc, mem_acc_se) = group.mem_acc();
        let (mem_loss, mem_loss_se) = group.mem_loss();
        u.level.push(level.clone());
        u.unit.push(unit);
        u.unit_size.push(units.unit_size[doc]);
        u.sampled.push(sampled);
        u.n_in.push(group.acc.inside.n);
        u.n_out.push(group.acc.outside.n);
        u.group_mem_acc.push(mem_acc);
        u.group_mem_acc_se.push(mem_acc_se);
        u.group_mem_loss.push(mem_loss);
        u.group_mem_loss_se.push(mem_loss_se);
    }

    let measured = reliability::measure(&layout, &subsets);
    let r = &mut tables.reliability;
    for i in 0..measured.len() {
        r.level.push(level.clone());
        r.score.push(measured.score[i].clone());
        r.measure.push(measured.measure[i].clone());
        r.models.push(measured.models[i]);
        r.spearman.push(measured.spearman[i]);
        r.predicted.push(measured.predicted[i]);
        r.models_for_stable.push(measured.models_for_stable[i]);
    }
}

/// One document's IN and OUT sides over the models of rows `rows`.
fn doc_metrics(values: &ModelValues, rows: &[usize], doc: usize) -> Metrics {
    let mut metrics = Metrics::default();
    let loss = values.loss.as_ref().expect("the spectrum reads losses");
    for &r in rows {
        let cell = r * values.docs + doc;
        let inside = values.member[cell];
        metrics.push(inside, f64::from(values.acc[cell]), f64::from(loss[cell]));
    }
    metrics
}

/// The group score of every unit of two or more documents: per model with the unit all IN
/// or all OUT, the members' mean accuracy and loss.
fn group_metrics(values: &ModelValues, rows: &[usize], units: &LevelUnits) -> BTreeMap<u32, Metrics> {
    let mut members: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for doc in (0..values.docs).filter(|&d| units.unit_size[d] > 1) {
        members.entry(units.unit[doc]).or_default().push(doc);
    }
    let loss = values.loss.as_ref().expect("the spectrum reads losses");
    members
        .into_iter()
        .map(|(unit, docs)| {
            let mut metrics = Metrics::default();
            for &r in rows {
                let cells: Vec<usize> = docs.iter().map(|&d| r * values.docs + d).collect();
                let inside = cells.iter().filter(|&&c| values.member[c]).count();
                if inside == 0 || inside == cells.len() {
                    let n = cells.len() as f64;
                    let acc = cells.iter().map(|&c| f64::from(values.acc[c])).sum::<f64>() / n;
                    let mean_loss = cells.iter().map(|&c| f64::from(loss[c])).sum::<f64>() / n;
                    metrics.push(inside > 0, acc, mean_loss);
                }
            }
            (unit, metrics)
        })
        .collect()
}

/// mem_acc at the finest level below which, with a coarser level's interval above, a
/// document is memorized only at the coarser level.
const LOW: f64 = 0.1;
/// How much higher the coarser level's mem_acc must be.
const MARGIN: f64 = 0.1;
/// Findings listed by the views.
pub const FINDINGS: usize = 10;
/// Findings listed per unit.
const PER_UNIT: usize = 2;

/// A document memorized only at a coarser level: low at the run's finest level, and at
/// `level`, the finest level where it appears, with an interval wholly above the finest
/// level's.
#[derive(Debug, Clone, PartialEq)]
pub struct CoarserOnly {
    pub doc: usize,
    pub id: String,
    pub source: Option<String>,
    pub finest: f64,
    pub level: String,
    pub mem_acc: f64,
    pub lo: f64,
    pub hi: f64,
    /// The unit at `level`.
    pub unit: u32,
    pub unit_size: u32,
    /// What the unit shares.
    pub shared: Shared,
    /// The document's text, whole: each view cuts it to its own width.
    pub text: String,
}

/// What the documents of a unit have in common: the reason they leave a training set
/// together. The views word it.
#[derive(Debug, Clone, PartialEq)]
pub enum Shared {
    /// A near-duplicate cluster.
    Cluster,
    /// A passage; its text, whole, where the unit table locates it in the document.
    Passage(Option<String>),
    /// A topic of `topic:K`.
    Topic,
    /// The value of the group field `name` (None where the document has no value).
    Field { name: String, value: Option<String> },
}

/// One source's memorization at each level.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceLevels {
    /// None for the documents without a source.
    pub source: Option<String>,
    /// Per score, then per level, the quartiles (25%, median, 75%) of the score of its
    /// scored documents.
    pub quartiles: ByMeasure<Vec<Option<[f64; 3]>>>,
}

/// One source's scored documents by their place on the spectrum ([`places`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SourcePlaces {
    /// None for the documents without a source.
    pub source: Option<String>,
    /// Per level (finest first), the documents whose place it is.
    pub counts: Vec<usize>,
    /// Documents without a place: generalized at every level measured.
    pub unplaced: usize,
}

impl SourcePlaces {
    pub fn documents(&self) -> usize {
        self.counts.iter().sum::<usize>() + self.unplaced
    }
}

/// What a model removes from its training set when one unit of a level is OUT: the mean
/// and the largest number of documents of the units sampled as one (the seed's bound on
/// what a selection rule may remove).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Removal {
    pub mean: f64,
    pub largest: u32,
}

/// The spectrum's numbers both views show.
#[derive(Debug, Clone, PartialEq)]
pub struct SpectrumSummary {
    /// The levels, finest first, and the models of each.
    pub levels: Vec<(String, u32)>,
    /// Per source with a scored document, in order of the source.
    pub sources: Vec<SourceLevels>,
    /// Per level, documents without a score there because their unit was over the limit.
    pub fallen_back: Vec<usize>,
    /// Per level, each score's split-half reliability stepped up to the level's models
    /// (null for mem_loss in files analyzed before it had rows).
    pub reliability: Vec<ByMeasure<Option<f64>>>,
    /// The clearest documents memorized only at a coarser level, most different first.
    pub coarser_only: Vec<CoarserOnly>,
    /// Per source with a scored document, its documents by place on the spectrum.
    pub places: Vec<SourcePlaces>,
    /// Per level, what one unit OUT removes.
    pub removal: Vec<Removal>,
}

impl SpectrumSummary {
    /// The summary of `tables`, with `corpus` and `units` naming what units share.
    pub fn new(
        tables: &SpectrumTables,
        corpus: &CorpusTable,
        units: &UnitTable,
        fields: &FieldValues,
    ) -> SpectrumSummary {
        let t = &tables.documents;
        let mut levels: Vec<String> = Vec::new();
        for name in &t.level {
            if levels.last() != Some(name) {
                levels.push(name.clone());
            }
        }
        let rows_of = |level: &str| -> Vec<usize> { (0..t.len()).filter(|&i| t.level[i] == level).collect() };
        let by_level: Vec<Vec<usize>> = levels.iter().map(|l| rows_of(l)).collect();
        let reliability_rows = &tables.reliability;
        let models = |level: &str| -> u32 {
            (0..reliability_rows.len())
                .filter(|&i| reliability_rows.level[i] == level && reliability_rows.measure[i] == "convergence")
                .map(|i| reliability_rows.models[i])
                .max()
                .unwrap_or(0)
        };
        let reliability = levels
            .iter()
            .map(|level| {
                ByMeasure::from_fn(|m| {
                    (0..reliability_rows.len())
                        .find(|&i| {
                            reliability_rows.level[i] == *level
                                && reliability_rows.score[i] == m.score()
                                && reliability_rows.measure[i] == "split-half"
                        })
                        .and_then(|i| reliability_rows.predicted[i])
                })
            })
            .collect();

        let mut sources: BTreeMap<Option<String>, ByMeasure<Vec<Vec<f64>>>> = BTreeMap::new();
        for (l, rows) in by_level.iter().enumerate() {
            for &i in rows {
                let values = sources
                    .entry(t.source[i].clone())
                    .or_insert_with(|| ByMeasure::from_fn(|_| vec![Vec::new(); levels.len()]));
                values.mem_acc[l].extend(t.mem_acc[i]);
                values.mem_loss[l].extend(t.mem_loss[i]);
            }
        }
        let quartiles = |values: &mut Vec<Vec<f64>>| -> Vec<Option<[f64; 3]>> {
            values
                .iter_mut()
                .map(|v| {
                    v.sort_by(f64::total_cmp);
                    Some([quantile(v, 0.25)?, quantile(v, 0.5)?, quantile(v, 0.75)?])
                })
                .collect()
        };
        let sources = sources
            .into_iter()
            .map(|(source, mut values)| SourceLevels {
                source,
                quartiles: ByMeasure {
                    mem_loss: quartiles(&mut values.mem_loss),
                    mem_acc: quartiles(&mut values.mem_acc),
                },
            })
            .filter(|row| row.quartiles.mem_acc.iter().any(Option::is_some))
            .collect();
        let fallen_back = by_level
            .iter()
            .map(|rows| {
                rows.iter().filter(|&&i| t.note[i].as_deref().is_some_and(|n| n.contains("size limit"))).count()
            })
            .collect();

        let mut coarser_only = Vec::new();
        if let Some(finest) = by_level.first() {
            for (d, &f) in finest.iter().enumerate() {
                let (Some(low), Some(low_hi)) = (t.mem_acc[f], t.mem_acc_hi[f]) else { continue };
                if low >= LOW {
                    continue;
                }
                // The finest level at which it appears: in a unit of others, clearly higher.
                let appears = by_level[1..].iter().map(|rows| rows[d]).find(|&i| {
                    t.unit_size[i] > 1
                        && t.mem_acc[i].is_some_and(|m| m >= low + MARGIN)
                        && t.mem_acc_lo[i].is_some_and(|lo| lo > low_hi)
                });
                if let Some(i) = appears {
                    coarser_only.push(CoarserOnly {
                        doc: d,
                        id: t.doc_id[i].clone(),
                        source: t.source[i].clone(),
                        finest: low,
                        level: t.level[i].clone(),
                        mem_acc: t.mem_acc[i].expect("an interval has its estimate"),
                        lo: t.mem_acc_lo[i].expect("filtered"),
                        hi: t.mem_acc_hi[i].expect("an interval has both ends"),
                        unit: t.unit[i],
                        unit_size: t.unit_size[i],
                        shared: shared_by(&t.level[i], d, corpus, units, fields),
                        text: corpus.text[d].clone(),
                    });
                }
            }
        }
        coarser_only.sort_by(|a, b| (b.mem_acc - b.finest).total_cmp(&(a.mem_acc - a.finest)).then(a.doc.cmp(&b.doc)));
        // A few documents per unit, so that one large family does not fill the list.
        let mut listed: BTreeMap<(String, u32), usize> = BTreeMap::new();
        coarser_only.retain(|c| {
            let count = listed.entry((c.level.clone(), c.unit)).or_default();
            *count += 1;
            *count <= PER_UNIT
        });
        coarser_only.truncate(FINDINGS);
        SpectrumSummary {
            places: source_places(t, &levels, by_level.first().map_or(&[][..], Vec::as_slice)),
            removal: levels.iter().map(|level| removal(units, level)).collect(),
            levels: levels.iter().map(|l| (l.clone(), models(l))).collect(),
            sources,
            fallen_back,
            reliability,
            coarser_only,
        }
    }

    /// Read from an analyzed run's files, if it has a spectrum.
    pub fn load(run: &RunDir, corpus: &CorpusTable) -> Result<Option<SpectrumSummary>> {
        if !run.spectrum().exists() {
            return Ok(None);
        }
        let tables = SpectrumTables {
            documents: schema::read(&run.spectrum())?,
            units: schema::read(&run.spectrum_units())?,
            reliability: schema::read(&run.spectrum_reliability())?,
        };
        let units: UnitTable = schema::read(&run.units())?;
        let fields = FieldValues::read(run, &tables.documents)?;
        Ok(Some(SpectrumSummary::new(&tables, corpus, &units, &fields)))
    }

    /// The reliability verdicts of each level, `rank_by`'s first, as the printed summary
    /// words them, the run grown as `run` says (its `scale` set here, per level).
    pub fn verdicts(tables: &SpectrumTables, run: &Growth, rank_by: Measure) -> Vec<(String, Verdict)> {
        let r = &tables.reliability;
        let mut levels: Vec<String> = r.level.clone();
        levels.dedup();
        levels
            .into_iter()
            .flat_map(|level| {
                let rows: Vec<usize> = (0..r.len()).filter(|&i| r.level[i] == level).collect();
                let table = subsets::schema::ReliabilityTable {
                    score: rows.iter().map(|&i| r.score[i].clone()).collect(),
                    measure: rows.iter().map(|&i| r.measure[i].clone()).collect(),
                    models: rows.iter().map(|&i| r.models[i]).collect(),
                    spearman: rows.iter().map(|&i| r.spearman[i]).collect(),
                    predicted: rows.iter().map(|&i| r.predicted[i]).collect(),
                    models_for_stable: rows.iter().map(|&i| r.models_for_stable[i]).collect(),
                };
                let models = table.models.iter().copied().max().unwrap_or(0) as usize;
                let scale = run.run_models as f64 / models.max(1) as f64;
                let verdicts = Verdict::both(&table, rank_by, models, Some(Growth { scale, ..run.clone() }));
                verdicts.into_iter().map(move |verdict| (level.clone(), verdict))
            })
            .collect()
    }
}

/// Per source, the documents of `rows` (one per document) with a score at some level, by
/// their `finest_level` among `levels`.
fn source_places(t: &SpectrumTable, levels: &[String], rows: &[usize]) -> Vec<SourcePlaces> {
    let docs = rows.len();
    let scored = |d: usize| (0..levels.len()).any(|l| t.mem_acc.get(l * docs + d).copied().flatten().is_some());
    let mut by_source: BTreeMap<Option<String>, SourcePlaces> = BTreeMap::new();
    for &i in rows.iter().enumerate().filter(|&(d, _)| scored(d)).map(|(_, i)| i) {
        let places = by_source.entry(t.source[i].clone()).or_insert_with(|| SourcePlaces {
            source: t.source[i].clone(),
            counts: vec![0; levels.len()],
            unplaced: 0,
        });
        match t.finest_level.get(i).and_then(Option::as_ref).and_then(|place| levels.iter().position(|l| l == place)) {
            Some(l) => places.counts[l] += 1,
            None => places.unplaced += 1,
        }
    }
    by_source.into_values().collect()
}

/// What one unit of `level` OUT removes, from the units the plan sampled.
fn removal(units: &UnitTable, level: &str) -> Removal {
    let mut sizes: BTreeMap<u32, u32> = BTreeMap::new();
    for i in (0..units.len()).filter(|&i| units.level[i] == level) {
        *sizes.entry(units.sampled_unit[i]).or_default() += 1;
    }
    let total: u32 = sizes.values().sum();
    Removal { mean: f64::from(total) / sizes.len().max(1) as f64, largest: sizes.values().copied().max().unwrap_or(0) }
}

/// The values of the group fields of `field:NAME` levels, by name, from `corpus.parquet`.
#[derive(Debug, Clone, Default)]
pub struct FieldValues(pub BTreeMap<String, Vec<Option<String>>>);

impl FieldValues {
    /// The fields the levels of `table` name, read from the run's corpus.
    pub fn read(run: &RunDir, table: &SpectrumTable) -> Result<FieldValues> {
        let mut fields = BTreeMap::new();
        for level in &table.level {
            if let Some(name) = level.strip_prefix("field:")
                && !fields.contains_key(name)
            {
                let column = if name == "source" { "source".to_string() } else { level.clone() };
                fields.insert(name.to_string(), schema::read_strings(&run.corpus(), &column)?);
            }
        }
        Ok(FieldValues(fields))
    }
}

/// What document `doc`'s unit of `level` shares.
fn shared_by(level: &str, doc: usize, corpus: &CorpusTable, units: &UnitTable, fields: &FieldValues) -> Shared {
    if level == "passage" {
        let row = (0..units.len()).find(|&i| units.level[i] == level && units.doc[i] as usize == doc);
        let passage =
            row.and_then(|i| corpus.text[doc].get(units.shared_start[i] as usize..units.shared_end[i] as usize));
        return Shared::Passage(passage.map(str::to_string));
    }
    if let Some(name) = level.strip_prefix("field:") {
        let value = fields.0.get(name).and_then(|values| values[doc].clone());
        return Shared::Field { name: name.to_string(), value };
    }
    if level.starts_with("topic:") {
        return Shared::Topic;
    }
    Shared::Cluster
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic_run::{self, Row, Spec};

    #[test]
    fn a_documents_place_is_the_finest_level_reaching_half_its_largest_significant_score() {
        // Three levels, four documents: (mem_acc, lower end of the interval) per level.
        let cells: [[(Option<f64>, Option<f64>); 3]; 4] = [
            // Large only with the topic group removed: +0.2 at document level is significant
            // but below half of +0.85, so its place is the field.
            [(Some(0.2), Some(0.1)), (Some(0.25), Some(0.1)), (Some(0.85), Some(0.7))],
            // A random identifier: its own removal destroys it.
            [(Some(0.6), Some(0.5)), (Some(0.6), Some(0.5)), (Some(0.55), Some(0.4))],
            // Nothing significant anywhere: no place.
            [(Some(0.05), Some(-0.02)), (Some(0.08), Some(-0.01)), (Some(0.1), Some(-0.05))],
            // Held out at every level: no score, no place.
            [(None, None), (None, None), (None, None)],
        ];
        let mut t = SpectrumTable::default();
        for level in ["document", "cluster", "field:topic"] {
            let l = ["document", "cluster", "field:topic"].iter().position(|&x| x == level).unwrap();
            for doc in &cells {
                t.level.push(level.to_string());
                t.mem_acc.push(doc[l].0);
                t.mem_acc_lo.push(doc[l].1);
                t.mem_acc_se.push(None);
                t.mem_loss.push(None);
                t.mem_loss_lo.push(None);
                t.mem_loss_se.push(None);
                t.source.push(None);
            }
        }
        let levels = [Unit::Document, Unit::Cluster, Unit::Field("topic".into())];
        t.finest_level = places(&t, &levels, Measure::Accuracy);
        let per_doc: Vec<Option<&str>> = t.finest_level[..4].iter().map(Option::as_deref).collect();
        assert_eq!(per_doc, [Some("field:topic"), Some("document"), None, None]);
        assert_eq!(t.finest_level[4..8], t.finest_level[..4], "the same on every level's row");
        // Without an interval, ± 1.96 standard errors decide.
        t.mem_acc_lo = vec![None; 12];
        t.mem_acc_se = vec![Some(0.5); 12];
        assert!(places(&t, &levels, Measure::Accuracy).iter().all(Option::is_none), "+0.85 − 1.96 · 0.5 < 0");
        assert!(places(&t, &levels, Measure::Loss).iter().all(Option::is_none), "no mem_loss: no place");
        t.finest_level = places(&t, &levels, Measure::Accuracy);
        let shares = source_places(&t, &["document".into(), "cluster".into(), "field:topic".into()], &[0, 1, 2, 3]);
        assert_eq!((shares.len(), shares[0].unplaced, shares[0].documents()), (1, 3, 3), "held out: not counted");

        // Removal: a level's sampled units, one of 3 documents and two of 1.
        let units =
            UnitTable { level: vec!["passage".into(); 5], sampled_unit: vec![0, 0, 0, 1, 2], ..Default::default() };
        assert_eq!(removal(&units, "passage"), Removal { mean: 5.0 / 3.0, largest: 3 });
    }
    use subsets::config::Block;
    use subsets::corpus::Document;

    #[test]
    fn a_unit_all_in_or_all_out_is_a_group_observation_and_mixed_models_are_left_out() {
        // Three models, two documents forming unit 0: model 0 has both IN, model 1 both OUT,
        // model 2 one of each.
        let mut values = ModelValues::new(vec![0, 1, 2], 2, vec![0, 1], true);
        values.acc = vec![0.9, 0.7, 0.2, 0.4, 0.5, 0.5];
        values.loss = Some(vec![1.0, 2.0, 3.0, 5.0, 4.0, 4.0]);
        values.member = vec![true, true, false, false, true, false];
        let units = LevelUnits {
            level: Unit::Cluster,
            unit: vec![0, 0],
            unit_size: vec![2, 2],
            sampled: vec![0, 0],
            fallback: vec![false, false],
        };
        let groups = group_metrics(&values, &[0, 1, 2], &units);
        let group = groups[&0];
        assert_eq!((group.acc.inside.n, group.acc.outside.n), (1, 1));
        let (mem, _) = group.mem_acc();
        assert!((mem.unwrap() - (0.8 - 0.3)).abs() < 1e-6);
        let (mem_loss, _) = group.mem_loss();
        assert!((mem_loss.unwrap() - (4.0 - 1.5)).abs() < 1e-6);
        let doc = doc_metrics(&values, &[0, 2], 0);
        assert_eq!((doc.acc.inside.n, doc.acc.outside.n), (2, 0));
    }

    #[test]
    fn the_summary_lists_documents_low_alone_and_clearly_higher_in_a_unit_of_others() {
        // Two levels of four documents: document, then passage with documents 0 to 2 one
        // unit and 3 alone. Document 0 appears only as a group; document 1 is as high alone;
        // document 2's group interval overlaps its own; document 3 is alone at both.
        let mut documents = SpectrumTable::default();
        let rows = [
            ("document", 0, 1, 0.02, (-0.02, 0.06)),
            ("document", 1, 1, 0.40, (0.30, 0.50)),
            ("document", 2, 1, 0.05, (0.00, 0.20)),
            ("document", 3, 1, 0.00, (-0.01, 0.01)),
            ("passage", 0, 3, 0.45, (0.35, 0.55)),
            ("passage", 1, 3, 0.50, (0.40, 0.60)),
            ("passage", 2, 3, 0.30, (0.15, 0.45)),
            ("passage", 3, 1, 0.30, (0.25, 0.35)),
        ];
        for (level, doc, size, mem, (lo, hi)) in rows {
            documents.level.push(level.into());
            documents.doc.push(doc);
            documents.doc_id.push(format!("d{doc}"));
            documents.source.push(Some(if doc < 2 { "a" } else { "b" }.into()));
            documents.unit.push(if size > 1 { 0 } else { doc });
            documents.unit_size.push(size);
            documents.n_in.push(3);
            documents.n_out.push(3);
            documents.acc_in.push(None);
            documents.acc_out.push(None);
            documents.mem_acc.push(Some(mem));
            documents.mem_acc_se.push(None);
            documents.mem_acc_lo.push(Some(lo));
            documents.mem_acc_hi.push(Some(hi));
            documents.mem_loss.push(None);
            documents.mem_loss_se.push(None);
            documents.mem_loss_lo.push(None);
            documents.mem_loss_hi.push(None);
            documents.group_mem_acc.push(None);
            documents.group_mem_acc_se.push(None);
            documents.group_mem_loss.push(None);
            documents.group_mem_loss_se.push(None);
            documents.note.push(None);
        }
        let tables = SpectrumTables { documents, ..SpectrumTables::default() };
        let corpus = CorpusTable { text: (0..4).map(|d| format!("text {d}")).collect(), ..CorpusTable::default() };
        let summary = SpectrumSummary::new(&tables, &corpus, &UnitTable::default(), &FieldValues::default());
        let ids: Vec<&str> = summary.coarser_only.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["d0"]);
        let found = &summary.coarser_only[0];
        assert_eq!((found.level.as_str(), found.finest, found.mem_acc, found.unit_size), ("passage", 0.02, 0.45, 3));
        assert_eq!(found.shared, Shared::Passage(None));
        assert_eq!(found.text, "text 0");
        // Source a: 0.02 and 0.40 alone, 0.45 and 0.50 in the passage.
        let a = &summary.sources[0];
        assert_eq!(a.source.as_deref(), Some("a"));
        let [q1, median, q3] = a.quartiles.mem_acc[1].unwrap();
        assert_eq!(a.quartiles.mem_loss, [None, None], "no document has a mem_loss here");
        assert!((q1 - 0.4625).abs() < 1e-12 && (median - 0.475).abs() < 1e-12 && (q3 - 0.4875).abs() < 1e-12);
        assert_eq!(summary.levels.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>(), ["document", "passage"]);
        assert_eq!(summary.fallen_back, [0, 0]);
    }

    /// 12 documents: 0 to 3 one cluster, 4 to 7 one passage group (spectrum of document,
    /// cluster and passage), the rest alone.
    fn spec() -> Spec {
        let mut documents = synthetic_run::documents(12, 4);
        let shared = " and this sentence of more than fifty bytes is shared word for word by four documents";
        for doc in &mut documents[4..8] {
            doc.text.push_str(shared);
        }
        let family = "the same words again and again in one family of near-duplicates, word for word";
        for (i, doc) in documents[..4].iter_mut().enumerate() {
            *doc = Document { id: doc.id.clone(), text: format!("{family} {i}"), source: Some("family".into()) };
        }
        Spec { documents, models: 24, stack: 4, seed: 9, unit: Unit::Document, holdout_ids: vec![] }
    }

    #[test]
    fn every_level_equals_an_independent_recomputation_from_the_logs_and_the_stored_units() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path().join("run"));
        let levels = [Unit::Document, Unit::Cluster, Unit::Passage];
        // Accuracy 0.3, plus 0.4 when the document is IN, plus 0.1 for each other member of
        // its four-document group IN, plus a model's offset.
        let row = |model: u32, doc: usize, in_train: &[bool]| {
            let group = if doc < 8 { doc / 4 * 4..doc / 4 * 4 + 4 } else { doc..doc + 1 };
            let others = group.filter(|&o| o != doc && in_train[o]).count() as u32;
            let correct = 30 + 40 * u32::from(in_train[doc]) + 10 * others + model % 5;
            Row { tokens: 100, correct, nll: f64::from(200 - correct) }
        };
        let plan = synthetic_run::write_spectrum(&run, &spec(), &levels, 1.0, row).unwrap();
        let logs = RunLogs::open(&run).unwrap();
        let stored: UnitTable = schema::read(&run.units()).unwrap();
        let tables = analyze(&plan.config, &plan.corpus, &stored, &logs, AnalyzeSettings::default()).unwrap();
        let t = &tables.documents;
        assert_eq!(t.len(), 3 * 12);
        for (index, block) in plan.config.design.spectrum.iter().enumerate() {
            let units = units::of_level(&stored, &block.level, 12).unwrap();
            for doc in 0..12 {
                let i = index * 12 + doc;
                assert_eq!((t.level[i].as_str(), t.doc[i] as usize), (block.level.to_string().as_str(), doc));
                // Straight from the definition: the block's models, IN by membership.
                let (mut inside, mut outside) = (Vec::new(), Vec::new());
                for model in block.model_ids() {
                    let in_train: Vec<bool> = (0..12).map(|d| plan.membership.contains(model, d as u32)).collect();
                    let acc = f64::from(row(model, doc, &in_train).correct) / 100.0;
                    if in_train[doc] { inside.push(acc) } else { outside.push(acc) }
                }
                let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
                let expected = mean(&inside) - mean(&outside);
                assert!((t.mem_acc[i].unwrap() - expected).abs() < 1e-6, "{} doc {doc}", block.level);
                // The loss is 2 − the accuracy, so OUT − IN loss is the same difference.
                assert!((t.mem_loss[i].unwrap() - expected).abs() < 1e-6, "{} doc {doc}", block.level);
                let (lo, hi) = (t.mem_loss_lo[i].unwrap(), t.mem_loss_hi[i].unwrap());
                assert!(lo <= expected + 1e-6 && expected <= hi + 1e-6, "{} doc {doc}: [{lo}, {hi}]", block.level);
                assert_eq!((t.n_in[i], t.n_out[i]), (inside.len() as u32, outside.len() as u32));
                assert_eq!(t.unit[i], units.unit[doc]);
            }
        }
        // The planted structure: at its group's level, where its three others come IN with
        // it, a member gains 0.4 + 0.3 (give or take the models' offsets); at document
        // level 0.4 plus what chance puts IN with it among its others.
        let at = |level: usize, doc: usize| t.mem_acc[level * 12 + doc].unwrap();
        for (level, members) in [(1, 0..4), (2, 4..8)] {
            for doc in members {
                assert!((at(level, doc) - 0.7).abs() < 0.05, "level {level} doc {doc}: {}", at(level, doc));
                assert!(at(level, doc) > at(0, doc) + 0.1, "level {level} doc {doc}: {}", at(0, doc));
            }
        }
        assert_eq!(t.unit_size[2 * 12 + 5], 4, "the shared sentence joins four documents");
        let rel = &tables.reliability;
        let cluster: Vec<usize> = (0..rel.len()).filter(|&i| rel.level[i] == "cluster").collect();
        let scores: Vec<&str> = cluster.iter().map(|&i| rel.score[i].as_str()).collect();
        assert_eq!(
            scores,
            ["mem_loss", "mem_loss", "mem_loss", "mem_acc", "mem_acc", "mem_acc"],
            "split-half and two convergence rows each"
        );
        let verdicts = SpectrumSummary::verdicts(
            &tables,
            &Growth { run: "r".into(), run_models: 24, scale: 1.0, models_per_hour: None },
            Measure::Loss,
        );
        let named: Vec<(&str, Measure)> = verdicts.iter().map(|(l, v)| (l.as_str(), v.measure())).collect();
        assert_eq!(&named[..2], [("document", Measure::Loss), ("document", Measure::Accuracy)]);
        assert_eq!(named.len(), 6);
        // The family's documents share long substrings too: two passage units.
        assert_eq!(tables.units.level.iter().filter(|l| *l == "passage").count(), 2);
        let u = &tables.units;
        let p = (0..u.len()).position(|i| u.level[i] == "passage" && u.unit[i] == t.unit[2 * 12 + 5]).unwrap();
        assert_eq!((u.unit_size[p], u.n_in[p], u.n_out[p]), (4, 4, 4));
    }

    #[test]
    fn a_unit_over_the_limit_has_no_score_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path().join("run"));
        let row = |model: u32, doc: usize, in_train: &[bool]| {
            let correct = 30 + 40 * u32::from(in_train[doc]) + model % 3;
            Row { tokens: 100, correct, nll: f64::from(100 - correct) }
        };
        let plan = synthetic_run::write_spectrum(&run, &spec(), &[Unit::Document, Unit::Cluster], 0.3, row).unwrap();
        assert_eq!(plan.config.design.spectrum[1], Block { level: Unit::Cluster, models: vec![[12, 24]] });
        let logs = RunLogs::open(&run).unwrap();
        let stored: UnitTable = schema::read(&run.units()).unwrap();
        let tables = analyze(&plan.config, &plan.corpus, &stored, &logs, AnalyzeSettings::default()).unwrap();
        let t = &tables.documents;
        // The limit is 3 documents (30% of 12): the family of 4 falls back to documents.
        let member = 12;
        assert_eq!((t.level[member].as_str(), t.mem_acc[member], t.group_mem_acc[member]), ("cluster", None, None));
        assert_eq!(
            t.note[member].as_deref(),
            Some(
                "its cluster unit of 4 documents is over the size limit of 3: sampled by document units within it, no cluster score"
            )
        );
        assert!(t.mem_acc[12 + 9].is_some() && t.note[12 + 9].is_none(), "a document alone is scored");
    }
}
