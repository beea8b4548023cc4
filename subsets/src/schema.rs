//! Every Parquet file of a run, defined once: its columns, their types, and how a table is
//! written (atomically) and read back (checked column by column).
//!
//! A table is a struct of column vectors; `table!` derives its Arrow schema and the
//! conversions from the field names and types, so a column's name is written in one place.
//! Readers ignore extra columns, so files stay readable when later versions add some.
//!
//! Every file also carries Parquet key-value metadata saying what it holds, for readers
//! outside cfmem (pyarrow, pandas, DuckDB): `cfmem.version`, `cfmem.schema` (the table's
//! name, e.g. `ScoreTable`), `cfmem.schema_version` ([`SCHEMA_VERSION`]) and, for files of
//! a run, `cfmem.run_seed`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, StringBuilder, UInt16Builder, UInt32Builder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, UInt16Type, UInt32Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::{Error, Result, atomic};

/// A Rust type that is one Parquet column.
pub trait ColumnType: Sized {
    const DATA_TYPE: DataType;
    const NULLABLE: bool;
    fn to_array(values: &[Self]) -> ArrayRef;
    /// The column's values, or None when the array has another type (or nulls where none
    /// are allowed).
    fn from_array(array: &dyn Array) -> Option<Vec<Self>>;
}

macro_rules! primitive_column {
    ($ty:ty, $arrow:ty, $data_type:expr, $builder:ty) => {
        impl ColumnType for $ty {
            const DATA_TYPE: DataType = $data_type;
            const NULLABLE: bool = false;
            fn to_array(values: &[Self]) -> ArrayRef {
                let mut builder = <$builder>::with_capacity(values.len());
                builder.append_slice(values);
                Arc::new(builder.finish())
            }
            fn from_array(array: &dyn Array) -> Option<Vec<Self>> {
                let array = array.as_primitive_opt::<$arrow>()?;
                (array.null_count() == 0).then(|| array.values().to_vec())
            }
        }
    };
}

primitive_column!(u32, UInt32Type, DataType::UInt32, UInt32Builder);
primitive_column!(u16, UInt16Type, DataType::UInt16, UInt16Builder);
primitive_column!(f64, Float64Type, DataType::Float64, Float64Builder);

impl ColumnType for Option<u32> {
    const DATA_TYPE: DataType = DataType::UInt32;
    const NULLABLE: bool = true;
    fn to_array(values: &[Self]) -> ArrayRef {
        let mut builder = UInt32Builder::with_capacity(values.len());
        builder.extend(values.iter().copied());
        Arc::new(builder.finish())
    }
    fn from_array(array: &dyn Array) -> Option<Vec<Self>> {
        Some(array.as_primitive_opt::<UInt32Type>()?.iter().collect())
    }
}

impl ColumnType for Option<f64> {
    const DATA_TYPE: DataType = DataType::Float64;
    const NULLABLE: bool = true;
    fn to_array(values: &[Self]) -> ArrayRef {
        let mut builder = Float64Builder::with_capacity(values.len());
        builder.extend(values.iter().copied());
        Arc::new(builder.finish())
    }
    fn from_array(array: &dyn Array) -> Option<Vec<Self>> {
        Some(array.as_primitive_opt::<Float64Type>()?.iter().collect())
    }
}

impl ColumnType for bool {
    const DATA_TYPE: DataType = DataType::Boolean;
    const NULLABLE: bool = false;
    fn to_array(values: &[Self]) -> ArrayRef {
        let mut builder = BooleanBuilder::with_capacity(values.len());
        builder.append_slice(values);
        Arc::new(builder.finish())
    }
    fn from_array(array: &dyn Array) -> Option<Vec<Self>> {
        let array = array.as_boolean_opt()?;
        (array.null_count() == 0).then(|| array.iter().map(|v| v.unwrap_or_default()).collect())
    }
}

impl ColumnType for Option<bool> {
    const DATA_TYPE: DataType = DataType::Boolean;
    const NULLABLE: bool = true;
    fn to_array(values: &[Self]) -> ArrayRef {
        let mut builder = BooleanBuilder::with_capacity(values.len());
        builder.extend(values.iter().copied());
        Arc::new(builder.finish())
    }
    fn from_array(array: &dyn Array) -> Option<Vec<Self>> {
        Some(array.as_boolean_opt()?.iter().collect())
    }
}

impl ColumnType for Option<String> {
    const DATA_TYPE: DataType = DataType::Utf8;
    const NULLABLE: bool = true;
    fn to_array(values: &[Self]) -> ArrayRef {
        let mut builder = StringBuilder::new();
        builder.extend(values.iter().map(|v| v.as_deref()));
        Arc::new(builder.finish())
    }
    fn from_array(array: &dyn Array) -> Option<Vec<Self>> {
        string_values(array).ok()
    }
}

impl ColumnType for String {
    const DATA_TYPE: DataType = DataType::Utf8;
    const NULLABLE: bool = false;
    fn to_array(values: &[Self]) -> ArrayRef {
        let mut builder = StringBuilder::new();
        builder.extend(values.iter().map(Some));
        Arc::new(builder.finish())
    }
    fn from_array(array: &dyn Array) -> Option<Vec<Self>> {
        string_values(array).ok()?.into_iter().collect()
    }
}

/// The values of a string column in any of the encodings Arrow writers use (`Utf8`,
/// `LargeUtf8`, `Utf8View`, or a dictionary of those, as pandas writes a categorical column);
/// Err names the type found.
pub fn string_values(array: &dyn Array) -> std::result::Result<Vec<Option<String>>, String> {
    let owned = |values: &mut dyn Iterator<Item = Option<&str>>| values.map(|v| v.map(str::to_owned)).collect();
    match array.data_type() {
        DataType::Utf8 => Ok(owned(&mut array.as_string::<i32>().iter())),
        DataType::LargeUtf8 => Ok(owned(&mut array.as_string::<i64>().iter())),
        DataType::Utf8View => Ok(owned(&mut array.as_string_view().iter())),
        DataType::Dictionary(_, value_type)
            if matches!(**value_type, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) =>
        {
            let dictionary = array.as_any_dictionary();
            let values = string_values(dictionary.values().as_ref())?;
            let keys = dictionary.normalized_keys();
            Ok((0..array.len()).map(|i| if array.is_null(i) { None } else { values[keys[i]].clone() }).collect())
        }
        other => Err(format!("expected a string, found {other}")),
    }
}

/// The version of the on-disk contract: raised whenever a column of any table is removed,
/// renamed or changes type, or a table's rows change meaning (adding a column alone does not
/// break readers). 2: logs hold one row per (model, document, checkpoint), with the
/// columns `checkpoint` and `step`; logs of version 1 read as holding the final checkpoint
/// only. 3: the reliability tables hold the rows of each score (`score`: `mem_loss` or
/// `mem_acc`); files of version 2 read as holding `mem_acc`'s rows only. 4: logs hold the
/// per-token statistics of membership attacks (`min_k`, `min_k_pp`); older logs read with
/// them null.
pub const SCHEMA_VERSION: u32 = 4;

/// A Parquet table of a run: a struct of equally long column vectors.
pub trait Table: Default + Sized {
    /// The struct's name, written as `cfmem.schema` into every file of this table.
    const NAME: &'static str;
    fn schema() -> SchemaRef;
    fn to_batch(&self) -> RecordBatch;
    /// Reads the table's columns from `batch`; `path` is only for error messages.
    fn from_batch(batch: &RecordBatch, path: &Path) -> Result<Self>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn append(&mut self, other: Self);
}

/// Column `name` of `batch`; where the file has no such column, `missing` for every row if
/// given (a column added after files were written), else an error naming it.
fn column<T: ColumnType + Clone>(batch: &RecordBatch, name: &str, path: &Path, missing: Option<T>) -> Result<Vec<T>> {
    if let (None, Some(value)) = (batch.column_by_name(name), &missing) {
        return Ok(vec![value.clone(); batch.num_rows()]);
    }
    let array = batch.column_by_name(name).ok_or_else(|| Error::file(path, format!("no column `{name}`")))?;
    T::from_array(array.as_ref()).ok_or_else(|| {
        let nulls = if T::NULLABLE { "" } else { " without nulls" };
        Error::file(path, format!("column `{name}`: expected {}{nulls}, found {}", T::DATA_TYPE, array.data_type()))
    })
}

macro_rules! table {
    ($(#[$meta:meta])* pub struct $name:ident {
        $($(#[$field_meta:meta])* pub $field:ident: Vec<$ty:ty> $(= $missing:expr)?,)*
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct $name { $($(#[$field_meta])* pub $field: Vec<$ty>,)* }

        impl Table for $name {
            const NAME: &'static str = stringify!($name);
            fn schema() -> SchemaRef {
                Arc::new(Schema::new(vec![
                    $(Field::new(stringify!($field), <$ty as ColumnType>::DATA_TYPE, <$ty as ColumnType>::NULLABLE),)*
                ]))
            }
            fn to_batch(&self) -> RecordBatch {
                let columns: Vec<ArrayRef> = vec![$(<$ty as ColumnType>::to_array(&self.$field),)*];
                RecordBatch::try_new(Self::schema(), columns).expect("columns of equal length")
            }
            fn from_batch(batch: &RecordBatch, path: &Path) -> Result<Self> {
                Ok(Self { $($field: column::<$ty>(batch, stringify!($field), path, None $(.or(Some($missing)))?)?,)* })
            }
            fn len(&self) -> usize {
                let lens = [$(self.$field.len(),)*];
                lens[0]
            }
            fn append(&mut self, other: Self) {
                $(self.$field.extend(other.$field);)*
            }
        }
    };
}

table! {
    /// `corpus.parquet`: one row per document, in corpus order; `doc` is the row index.
    pub struct CorpusTable {
        pub doc: Vec<u32>,
        pub doc_id: Vec<String>,
        pub source: Vec<Option<String>>,
        pub text: Vec<String>,
        /// Tokens the models see (after `max_tokens_per_doc`, if set).
        pub tokens: Vec<u32>,
        pub sha256: Vec<String>,
        /// Set aside: no model trains on it.
        pub holdout: Vec<bool>,
        /// The sampling unit: the document itself, or its near-duplicate cluster.
        pub unit: Vec<u32>,
        /// Times the document appears in a training set that includes it.
        pub copies: Vec<u16>,
    }
}

table! {
    /// `units.parquet`: one row per level of the run and document, level by level in the
    /// run's order: the document's unit at that level (dense ids per level, numbered in
    /// order of each unit's first document) and its size, and the unit it was sampled by.
    /// A unit of more than `design.max_unit_fraction` of the documents is not sampled as
    /// one: its documents are sampled by their units of the next finer level within it
    /// (`fallback`), and have no score at this level.
    pub struct UnitTable {
        /// `document`, `cluster`, `passage` or `field:NAME`.
        pub level: Vec<String>,
        pub doc: Vec<u32>,
        pub unit: Vec<u32>,
        pub unit_size: Vec<u32>,
        /// What was IN or OUT together in this level's models (`unit` unless `fallback`).
        pub sampled_unit: Vec<u32>,
        pub fallback: Vec<bool>,
        /// For a passage: the byte range `[shared_start, shared_end)` of the document's
        /// longest run shared with other documents; 0 and 0 otherwise.
        pub shared_start: Vec<u32>,
        pub shared_end: Vec<u32>,
    }
}

table! {
    /// `background.parquet`: documents every model trains on besides its subset; never
    /// scored, not in the membership table.
    pub struct BackgroundTable {
        pub doc_id: Vec<String>,
        pub text: Vec<String>,
        /// Tokens the models see (after `max_tokens_per_doc`, if set).
        pub tokens: Vec<u32>,
    }
}

table! {
    /// `jobs.parquet`: which models each job trains.
    pub struct JobTable {
        pub job: Vec<u32>,
        pub model: Vec<u32>,
    }
}

/// The checkpoint of a log row at the end of training: the one whose rows the scores rest
/// on.
pub const FINAL_CHECKPOINT: f64 = 1.0;

table! {
    /// `logs/job-NNNNN.parquet`: one row per (model, document, checkpoint) evaluation,
    /// checkpoint by checkpoint in the order evaluated. A log written before checkpoints
    /// (schema version 1) reads as checkpoint 1.0, step 0.
    pub struct LogTable {
        /// The fraction of the model's training steps taken when it was evaluated
        /// (`train.eval_at`); [`FINAL_CHECKPOINT`] at the end of training.
        pub checkpoint: Vec<f64> = FINAL_CHECKPOINT,
        /// Training steps taken at that checkpoint.
        pub step: Vec<u32> = 0,
        pub model: Vec<u32>,
        pub doc: Vec<u32>,
        pub in_train: Vec<bool>,
        /// Predicted positions.
        pub tokens: Vec<u32>,
        /// Sum of next-token negative log-likelihood over those positions, in nats.
        pub nll: Vec<f64>,
        /// Positions where the argmax equals the target.
        pub correct: Vec<u32>,
        /// Copies of the document in the model's training set (0 when OUT).
        pub copies: Vec<u16>,
        /// Min-K%: the mean of the lowest 20% of the document's token log-probabilities
        /// (nats; [`MIN_K_FRACTION`]), null for an empty document and in logs written
        /// before it was logged (schema version 3 and older).
        pub min_k: Vec<Option<f64>> = None,
        /// Min-K%++: the same mean of each token's log-probability standardized by the mean
        /// and standard deviation of log-probabilities under the model's predicted
        /// distribution at that position.
        pub min_k_pp: Vec<Option<f64>> = None,
    }
}

/// The share of a document's tokens, its least likely ones, that Min-K% and Min-K%++
/// average: ⌈0.2 · tokens⌉, at least one.
pub const MIN_K_FRACTION: f64 = 0.2;

/// One row of a [`LogTable`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogRow {
    pub checkpoint: f64,
    pub step: u32,
    pub model: u32,
    pub doc: u32,
    pub in_train: bool,
    pub tokens: u32,
    pub nll: f64,
    pub correct: u32,
    pub copies: u16,
    pub min_k: Option<f64>,
    pub min_k_pp: Option<f64>,
}

impl EvaluationTable {
    /// The mean loss per token (nats) and accuracy over every document's tokens; 0 where
    /// there are none.
    pub fn means(&self) -> (f64, f64) {
        let tokens = self.tokens();
        let correct: u64 = self.correct.iter().map(|&c| u64::from(c)).sum();
        let per_token = |total: f64| total / tokens.max(1) as f64;
        (per_token(self.nll.iter().sum()), per_token(correct as f64))
    }

    /// Tokens over every document.
    pub fn tokens(&self) -> u64 {
        self.tokens.iter().map(|&t| u64::from(t)).sum()
    }
}

impl LogTable {
    pub fn push(&mut self, row: LogRow) {
        self.checkpoint.push(row.checkpoint);
        self.step.push(row.step);
        self.model.push(row.model);
        self.doc.push(row.doc);
        self.in_train.push(row.in_train);
        self.tokens.push(row.tokens);
        self.nll.push(row.nll);
        self.correct.push(row.correct);
        self.copies.push(row.copies);
        self.min_k.push(row.min_k);
        self.min_k_pp.push(row.min_k_pp);
    }
}

table! {
    /// `analysis/scores.parquet`: one row per document.
    pub struct ScoreTable {
        pub doc: Vec<u32>,
        pub doc_id: Vec<String>,
        pub source: Vec<Option<String>>,
        pub holdout: Vec<bool>,
        pub n_in: Vec<u32>,
        pub n_out: Vec<u32>,
        pub acc_in: Vec<Option<f64>>,
        pub acc_out: Vec<Option<f64>>,
        pub mem_acc: Vec<Option<f64>>,
        pub mem_acc_se: Vec<Option<f64>>,
        /// 95% percentile interval of mem_acc from a bootstrap over models.
        pub mem_acc_lo: Vec<Option<f64>>,
        pub mem_acc_hi: Vec<Option<f64>>,
        pub loss_in: Vec<Option<f64>>,
        pub loss_out: Vec<Option<f64>>,
        pub mem_loss: Vec<Option<f64>>,
        pub mem_loss_se: Vec<Option<f64>>,
        /// 95% percentile interval of mem_loss from the same bootstrap (null in files
        /// analyzed before it was written).
        pub mem_loss_lo: Vec<Option<f64>> = None,
        pub mem_loss_hi: Vec<Option<f64>> = None,
        pub copies: Vec<u16>,
        pub exact_dup_count: Vec<u32>,
        pub near_dup_count: Vec<u32>,
        pub max_jaccard: Vec<f64>,
        pub cluster: Vec<u32>,
        pub cluster_size: Vec<u32>,
        pub repeat_fraction: Vec<f64>,
        pub group_mem_acc: Vec<Option<f64>>,
        pub group_mem_acc_se: Vec<Option<f64>>,
        pub group_mem_loss: Vec<Option<f64>>,
        pub group_mem_loss_se: Vec<Option<f64>>,
    }
}

table! {
    /// `analysis/profile.parquet`: memorization over training, one row per checkpoint
    /// (`train.eval_at`) and document, checkpoint by checkpoint: the scores of
    /// `scores.parquet` from the models as they were at that fraction of their training.
    /// The last checkpoint's rows are `scores.parquet`'s values.
    pub struct ProfileTable {
        pub checkpoint: Vec<f64>,
        /// Training steps taken at the checkpoint (the largest over the models, should a
        /// run extended with a different model count have models of different lengths).
        pub step: Vec<u32>,
        pub doc: Vec<u32>,
        pub doc_id: Vec<String>,
        pub source: Vec<Option<String>>,
        pub n_in: Vec<u32>,
        pub n_out: Vec<u32>,
        pub acc_in: Vec<Option<f64>>,
        pub acc_out: Vec<Option<f64>>,
        pub mem_acc: Vec<Option<f64>>,
        pub mem_acc_se: Vec<Option<f64>>,
        pub mem_loss: Vec<Option<f64>>,
        pub mem_loss_se: Vec<Option<f64>>,
        /// Mean per-token loss IN and OUT (null in files analyzed before they were written).
        pub loss_in: Vec<Option<f64>> = None,
        pub loss_out: Vec<Option<f64>> = None,
    }
}

table! {
    /// `analysis/clusters.parquet`: one row per near-duplicate cluster.
    pub struct ClusterTable {
        pub cluster: Vec<u32>,
        pub cluster_size: Vec<u32>,
        pub n_in: Vec<u32>,
        pub n_out: Vec<u32>,
        pub group_acc_in: Vec<Option<f64>>,
        pub group_acc_out: Vec<Option<f64>>,
        pub group_mem_acc: Vec<Option<f64>>,
        pub group_mem_acc_se: Vec<Option<f64>>,
        pub group_loss_in: Vec<Option<f64>>,
        pub group_loss_out: Vec<Option<f64>>,
        pub group_mem_loss: Vec<Option<f64>>,
        pub group_mem_loss_se: Vec<Option<f64>>,
    }
}

table! {
    /// `analysis/copies.parquet`: one row per planted copy count.
    pub struct CopiesTable {
        pub copies: Vec<u16>,
        pub canaries: Vec<u32>,
        pub mem_acc: Vec<Option<f64>>,
        pub mem_acc_se: Vec<Option<f64>>,
        pub mem_loss: Vec<Option<f64>>,
        pub mem_loss_se: Vec<Option<f64>>,
    }
}

table! {
    /// `cfmem dups` output and `analysis/duplicates.parquet`: one row per document.
    pub struct DuplicateTable {
        pub doc: Vec<u32>,
        pub doc_id: Vec<String>,
        pub exact_dup_count: Vec<u32>,
        pub near_dup_count: Vec<u32>,
        pub max_jaccard: Vec<f64>,
        pub cluster: Vec<u32>,
        pub cluster_size: Vec<u32>,
        pub repeat_fraction: Vec<f64>,
        /// True where `near_dup_count` and `max_jaccard` are lower bounds (see docs/methods.md).
        pub near_dup_capped: Vec<bool>,
    }
}

table! {
    /// `cfmem evaluate` output: one row per document of a corpus, a model's teacher-forced
    /// evaluation of it (`nll` summed over its `tokens`, `correct` the positions whose
    /// argmax is the token).
    pub struct EvaluationTable {
        pub doc: Vec<u32>,
        pub doc_id: Vec<String>,
        pub tokens: Vec<u32>,
        pub nll: Vec<f64>,
        pub correct: Vec<u32>,
    }
}

table! {
    /// `analysis/influence.parquet`: for each target document, its top training documents
    /// by counterfactual influence (self-influence excluded), `rank` 1 the strongest.
    pub struct InfluenceTable {
        pub target: Vec<u32>,
        pub target_id: Vec<String>,
        pub source_doc: Vec<u32>,
        pub source_id: Vec<String>,
        pub rank: Vec<u32>,
        pub infl_acc: Vec<f64>,
        pub infl_acc_se: Vec<Option<f64>>,
        pub infl_loss: Vec<f64>,
        pub infl_loss_se: Vec<Option<f64>>,
    }
}

table! {
    /// `analysis/spectrum.parquet`: one row per level and document, level by level: the
    /// document's memorization when its unit of that level leaves the training set,
    /// estimated from that level's block of models. Scores are null, with the reason in
    /// `note`, where the unit was too large to sample as one or the document is held out.
    pub struct SpectrumTable {
        pub level: Vec<String>,
        pub doc: Vec<u32>,
        pub doc_id: Vec<String>,
        pub source: Vec<Option<String>>,
        pub unit: Vec<u32>,
        pub unit_size: Vec<u32>,
        pub n_in: Vec<u32>,
        pub n_out: Vec<u32>,
        pub acc_in: Vec<Option<f64>>,
        pub acc_out: Vec<Option<f64>>,
        pub mem_acc: Vec<Option<f64>>,
        pub mem_acc_se: Vec<Option<f64>>,
        /// 95% percentile interval of mem_acc from a bootstrap over the level's models.
        pub mem_acc_lo: Vec<Option<f64>>,
        pub mem_acc_hi: Vec<Option<f64>>,
        pub mem_loss: Vec<Option<f64>>,
        pub mem_loss_se: Vec<Option<f64>>,
        /// The same bootstrap's interval of mem_loss (null in older files).
        pub mem_loss_lo: Vec<Option<f64>> = None,
        pub mem_loss_hi: Vec<Option<f64>> = None,
        /// The unit's group score (member means, models with the unit all IN or all OUT).
        pub group_mem_acc: Vec<Option<f64>>,
        pub group_mem_acc_se: Vec<Option<f64>>,
        pub group_mem_loss: Vec<Option<f64>>,
        pub group_mem_loss_se: Vec<Option<f64>>,
        pub note: Vec<Option<String>>,
        /// The document's place on the spectrum, the same on each of its rows: the finest
        /// level whose score (the one `analyze` ranked by) reaches half of its largest over
        /// the levels, when that largest is significant (null: generalized at every level
        /// measured, and in older files).
        pub finest_level: Vec<Option<String>> = None,
    }
}

table! {
    /// `analysis/spectrum_units.parquet`: one row per level and unit of two or more
    /// documents: the unit's group score in that level's models.
    pub struct SpectrumUnitTable {
        pub level: Vec<String>,
        pub unit: Vec<u32>,
        pub unit_size: Vec<u32>,
        /// Whether the unit was sampled as one; if not, it has no group score.
        pub sampled: Vec<bool>,
        pub n_in: Vec<u32>,
        pub n_out: Vec<u32>,
        pub group_mem_acc: Vec<Option<f64>>,
        pub group_mem_acc_se: Vec<Option<f64>>,
        pub group_mem_loss: Vec<Option<f64>>,
        pub group_mem_loss_se: Vec<Option<f64>>,
    }
}

table! {
    /// `analysis/reliability.parquet`: how stable the ranking by each score is across
    /// models, the rows of `score` (`mem_loss`, then `mem_acc`; files of schema version 2
    /// have `mem_acc`'s only). `measure` is `split-half` (one row: `models` per half, `spearman` between the
    /// halves, `predicted` the Spearman-Brown estimate for all models) or `convergence`
    /// (one row per m: `spearman` between the ranking of the first m models and of all;
    /// `predicted` null). `models_for_stable`, on the split-half row: the models whose
    /// Spearman-Brown estimate would reach 0.9, from the halves' Spearman (null when the
    /// halves do not agree, and on convergence rows).
    pub struct ReliabilityTable {
        pub score: Vec<String> = "mem_acc".to_string(),
        pub measure: Vec<String>,
        pub models: Vec<u32>,
        pub spearman: Vec<Option<f64>>,
        pub predicted: Vec<Option<f64>>,
        pub models_for_stable: Vec<Option<u32>> = None,
    }
}

table! {
    /// `analysis/attacks.parquet`: one row per membership inference attack, evaluated with
    /// each model in turn the target and the others its shadows, the targets' scores pooled
    /// into one ROC: its `auc` and TPR at 1% and at 0.1% FPR, each with a 95% bootstrap
    /// interval over target models (`_lo`, `_hi`), the `targets` pooled (0: the attack is
    /// unavailable, `note` says why), and `spearman_mem_loss`, the Spearman correlation over
    /// documents of the attack's mean score on a document's members with its mem_loss.
    /// `cfmem attack --members` prints the same table for one target, its intervals over
    /// documents.
    pub struct AttackTable {
        pub attack: Vec<String>,
        pub auc: Vec<Option<f64>>,
        pub auc_lo: Vec<Option<f64>>,
        pub auc_hi: Vec<Option<f64>>,
        pub tpr_at_1pct_fpr: Vec<Option<f64>>,
        pub tpr_at_1pct_fpr_lo: Vec<Option<f64>> = None,
        pub tpr_at_1pct_fpr_hi: Vec<Option<f64>> = None,
        pub tpr_at_0_1pct_fpr: Vec<Option<f64>>,
        pub tpr_at_0_1pct_fpr_lo: Vec<Option<f64>> = None,
        pub tpr_at_0_1pct_fpr_hi: Vec<Option<f64>> = None,
        pub targets: Vec<u32>,
        pub spearman_mem_loss: Vec<Option<f64>>,
        pub note: Vec<Option<String>>,
    }
}

table! {
    /// `analysis/attack_roc.parquet`: each available attack's pooled ROC curve, sampled at
    /// FPRs spaced evenly in log from 10⁻⁴ to 1 (ten a decade): `tpr` is the TPR at the
    /// lowest threshold whose FPR is at most `fpr`.
    pub struct AttackRocTable {
        pub attack: Vec<String>,
        pub fpr: Vec<f64>,
        pub tpr: Vec<f64>,
    }
}

table! {
    /// `cfmem attack` output: one row per document of the run, every attack's score of the
    /// target model (higher for a member; null where an attack has none: a held-out
    /// document has no IN shadows, `reference` needs the run's base), and the target's own
    /// evaluation (`nll` summed over `tokens`). `member` is what `--members` said, null
    /// without it.
    pub struct TargetAttackTable {
        pub doc: Vec<u32>,
        pub doc_id: Vec<String>,
        pub source: Vec<Option<String>>,
        pub member: Vec<Option<bool>>,
        pub tokens: Vec<u32>,
        pub nll: Vec<f64>,
        pub lira_online: Vec<Option<f64>>,
        pub lira_offline: Vec<Option<f64>>,
        pub loss: Vec<Option<f64>>,
        pub zlib: Vec<Option<f64>>,
        pub min_k: Vec<Option<f64>>,
        pub min_k_pp: Vec<Option<f64>>,
        pub reference: Vec<Option<f64>>,
    }
}

table! {
    /// `analysis/membership.parquet`: each document's membership exposure. The statistic
    /// is a model's mean per-token log-likelihood of the document; `mu_in`, `sd_in` (`mu_out`,
    /// `sd_out`) are the median and standard deviation of the models that trained on it (did
    /// not), the deviation the document's own or pooled over documents (see
    /// `summary.json`'s `membership.variance`); `exposure_d` = (mu_in − mu_out) /
    /// √((sd_in² + sd_out²) / 2), `exposure_auc` the AUC of its IN statistics against its OUT
    /// ones. Null where a side has no models (held-out documents).
    pub struct MembershipTable {
        pub doc: Vec<u32>,
        pub doc_id: Vec<String>,
        pub source: Vec<Option<String>>,
        pub mu_in: Vec<Option<f64>>,
        pub sd_in: Vec<Option<f64>>,
        pub mu_out: Vec<Option<f64>>,
        pub sd_out: Vec<Option<f64>>,
        pub exposure_d: Vec<Option<f64>>,
        pub exposure_auc: Vec<Option<f64>>,
        /// The zlib-compressed length of the document's UTF-8 bytes (level 6): the
        /// denominator of the zlib attack.
        pub zlib_bytes: Vec<u32>,
    }
}

table! {
    /// `analysis/spectrum_reliability.parquet`: the rows of `reliability.parquet` for each
    /// level of the run, from that level's models.
    pub struct SpectrumReliabilityTable {
        pub level: Vec<String>,
        pub score: Vec<String> = "mem_acc".to_string(),
        pub measure: Vec<String>,
        pub models: Vec<u32>,
        pub spearman: Vec<Option<f64>>,
        pub predicted: Vec<Option<f64>>,
        /// Models of this level's block for a stable ranking (see `reliability.parquet`).
        pub models_for_stable: Vec<Option<u32>> = None,
    }
}

/// The key-value metadata of a file of table `T`; `run_seed` is the seed of the run the file
/// belongs to (None for a file outside a run, such as `cfmem dups` output).
pub fn metadata<T: Table>(run_seed: Option<u64>) -> HashMap<String, String> {
    let mut metadata = HashMap::from([
        ("cfmem.version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ("cfmem.schema".to_string(), T::NAME.to_string()),
        ("cfmem.schema_version".to_string(), SCHEMA_VERSION.to_string()),
    ]);
    if let Some(seed) = run_seed {
        metadata.insert("cfmem.run_seed".to_string(), seed.to_string());
    }
    metadata
}

/// The Arrow schema of `T` carrying [`metadata`] (for Arrow readers: pyarrow's
/// `schema.metadata`) and writer properties carrying it as the file's key-value metadata
/// (for Parquet readers).
fn schema_and_properties<T: Table>(run_seed: Option<u64>) -> (SchemaRef, WriterProperties) {
    let metadata = metadata::<T>(run_seed);
    let mut pairs: Vec<KeyValue> = metadata.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())).collect();
    pairs.sort_by(|a, b| a.key.cmp(&b.key));
    let props =
        WriterProperties::builder().set_compression(Compression::SNAPPY).set_key_value_metadata(Some(pairs)).build();
    (Arc::new(T::schema().as_ref().clone().with_metadata(metadata)), props)
}

/// Writes `table` to `path` atomically, as one Parquet file carrying [`metadata`]; `run_seed`
/// is the seed of the run the file belongs to, None outside a run.
pub fn write<T: Table>(path: &Path, table: &T, run_seed: Option<u64>) -> Result<()> {
    atomic::write_with(path, |file| {
        let (schema, props) = schema_and_properties::<T>(run_seed);
        let batch = table.to_batch().with_schema(schema.clone()).map_err(Error::arrow(path))?;
        let mut writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(Error::parquet(path))?;
        writer.write(&batch).map_err(Error::parquet(path))?;
        writer.close().map_err(Error::parquet(path))?;
        Ok(())
    })
}

/// Writes a table in parts, each part one row group, so that the whole table is never held
/// in memory (a job's log grows this way as its models are evaluated). The file carries
/// [`metadata`] like one written by [`write()`].
pub struct TableWriter<T: Table, W: std::io::Write + Send> {
    writer: ArrowWriter<W>,
    schema: SchemaRef,
    /// Only for error messages.
    path: std::path::PathBuf,
    table: std::marker::PhantomData<T>,
}

impl<T: Table, W: std::io::Write + Send> TableWriter<T, W> {
    pub fn new(out: W, path: &Path, run_seed: Option<u64>) -> Result<Self> {
        let (schema, props) = schema_and_properties::<T>(run_seed);
        let writer = ArrowWriter::try_new(out, schema.clone(), Some(props)).map_err(Error::parquet(path))?;
        Ok(TableWriter { writer, schema, path: path.to_path_buf(), table: std::marker::PhantomData })
    }

    /// Writes `part` as one row group and hands its bytes to the output.
    pub fn write(&mut self, part: &T) -> Result<()> {
        let batch = part.to_batch().with_schema(self.schema.clone()).map_err(Error::arrow(&self.path))?;
        self.writer.write(&batch).map_err(Error::parquet(&self.path))?;
        self.writer.flush().map_err(Error::parquet(&self.path))?;
        self.writer.sync().map_err(Error::io(&self.path))
    }

    /// Writes the footer and returns the output.
    pub fn finish(self) -> Result<W> {
        self.writer.into_inner().map_err(Error::parquet(&self.path))
    }
}

/// Writes `table` like [`write()`], with string columns `extra` (name, one value per row)
/// after its own: a corpus's group fields in `corpus.parquet`.
pub fn write_with_columns<T: Table>(
    path: &Path,
    table: &T,
    extra: &[(String, Vec<Option<String>>)],
    run_seed: Option<u64>,
) -> Result<()> {
    atomic::write_with(path, |file| {
        let metadata = metadata::<T>(run_seed);
        let (_, props) = schema_and_properties::<T>(run_seed);
        let batch = table.to_batch();
        let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut columns = batch.columns().to_vec();
        for (name, values) in extra {
            fields.push(Field::new(name, DataType::Utf8, true));
            columns.push(<Option<String> as ColumnType>::to_array(values));
        }
        let schema = Arc::new(Schema::new(fields).with_metadata(metadata));
        let batch = RecordBatch::try_new(schema.clone(), columns).map_err(Error::arrow(path))?;
        let mut writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(Error::parquet(path))?;
        writer.write(&batch).map_err(Error::parquet(path))?;
        writer.close().map_err(Error::parquet(path))?;
        Ok(())
    })
}

/// The string column `name` of the file at `path`.
pub fn read_strings(path: &Path, name: &str) -> Result<Vec<Option<String>>> {
    let mut values = Vec::new();
    for batch in record_batches(path)? {
        values.extend(column::<Option<String>>(&batch?, name, path, None)?);
    }
    Ok(values)
}

/// The record batches of the Parquet file at `path`, read one at a time.
pub fn record_batches(path: &Path) -> Result<impl Iterator<Item = Result<RecordBatch>>> {
    let file = std::fs::File::open(path).map_err(Error::io(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(Error::parquet(path))?
        .build()
        .map_err(Error::parquet(path))?;
    let path = path.to_path_buf();
    Ok(reader.map(move |batch| batch.map_err(Error::arrow(&path))))
}

/// Calls `each` with every record batch of `path` as a table, without reading the whole
/// file into memory.
pub fn for_each_batch<T: Table>(path: &Path, mut each: impl FnMut(T) -> Result<()>) -> Result<()> {
    for batch in record_batches(path)? {
        each(T::from_batch(&batch?, path)?)?;
    }
    Ok(())
}

/// Reads the whole table at `path`, checking each column's type: a job's log, for example.
///
/// ```
/// use subsets::schema::{self, LogRow, LogTable};
///
/// let path = std::env::temp_dir().join(format!("cfmem-doc-log-{}.parquet", std::process::id()));
/// let mut log = LogTable::default();
/// log.push(LogRow {
///     checkpoint: schema::FINAL_CHECKPOINT, step: 100, model: 3, doc: 0, in_train: true, tokens: 12,
///     nll: 9.5, correct: 7, copies: 1, min_k: Some(-2.0), min_k_pp: Some(-1.5),
/// });
/// schema::write(&path, &log, Some(11)).unwrap();
///
/// let read: LogTable = schema::read(&path).unwrap();
/// assert_eq!(read, log);
/// // Per-token accuracy and mean loss of model 3 on document 0.
/// assert_eq!(f64::from(read.correct[0]) / f64::from(read.tokens[0]), 7.0 / 12.0);
/// # std::fs::remove_file(&path).unwrap();
/// ```
pub fn read<T: Table>(path: &Path) -> Result<T> {
    let mut table = T::default();
    for_each_batch(path, |batch: T| {
        table.append(batch);
        Ok(())
    })?;
    Ok(table)
}

/// The table at `path`, or None where there is no such file (a file an optional step writes).
pub fn read_if_present<T: Table>(path: &Path) -> Result<Option<T>> {
    Ok(if path.exists() { Some(read(path)?) } else { None })
}

/// Every table of the run format, as (`cfmem.schema` name, Arrow schema), in the order of
/// their declarations above. It exists so that docs and tools can enumerate the run format
/// without naming each table: `tests/tests/docs_reference.rs` checks that
/// `docs/reference.md` documents every table and column listed here.
pub fn every_table() -> Vec<(&'static str, SchemaRef)> {
    fn entry<T: Table>() -> (&'static str, SchemaRef) {
        (T::NAME, T::schema())
    }
    vec![
        entry::<CorpusTable>(),
        entry::<UnitTable>(),
        entry::<BackgroundTable>(),
        entry::<JobTable>(),
        entry::<LogTable>(),
        entry::<ScoreTable>(),
        entry::<ProfileTable>(),
        entry::<ClusterTable>(),
        entry::<CopiesTable>(),
        entry::<DuplicateTable>(),
        entry::<EvaluationTable>(),
        entry::<InfluenceTable>(),
        entry::<SpectrumTable>(),
        entry::<SpectrumUnitTable>(),
        entry::<ReliabilityTable>(),
        entry::<AttackTable>(),
        entry::<AttackRocTable>(),
        entry::<TargetAttackTable>(),
        entry::<MembershipTable>(),
        entry::<SpectrumReliabilityTable>(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_evaluation_means_over_tokens_not_documents() {
        let table = EvaluationTable {
            doc: vec![0, 1],
            doc_id: vec!["a".into(), "b".into()],
            tokens: vec![1, 3],
            nll: vec![4.0, 2.0],
            correct: vec![0, 3],
        };
        assert_eq!((table.means(), table.tokens()), ((1.5, 0.75), 4));
        assert_eq!(EvaluationTable::default().means(), (0.0, 0.0));
    }

    #[test]
    fn log_table_round_trips_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.parquet");
        let table = LogTable {
            checkpoint: vec![0.25, 1.0, 1.0],
            step: vec![3, 12, 12],
            model: vec![0, 0, 3],
            doc: vec![0, 1, u32::MAX],
            in_train: vec![true, false, true],
            tokens: vec![5, 1, 9],
            nll: vec![1.25, f64::MIN_POSITIVE, 1e300],
            correct: vec![5, 0, 2],
            copies: vec![1, 0, u16::MAX],
            min_k: vec![Some(-2.5), None, Some(-0.125)],
            min_k_pp: vec![Some(-1.75), None, Some(0.5)],
        };
        write(&path, &table, None).unwrap();
        assert_eq!(read::<LogTable>(&path).unwrap(), table);
    }

    #[test]
    fn a_log_written_before_checkpoints_reads_as_the_final_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.parquet");
        let table = LogTable {
            checkpoint: vec![1.0; 2],
            step: vec![0; 2],
            model: vec![0, 1],
            doc: vec![0, 0],
            in_train: vec![true, false],
            tokens: vec![5, 5],
            nll: vec![1.5, 4.0],
            correct: vec![4, 1],
            copies: vec![1, 0],
            min_k: vec![None; 2],
            min_k_pp: vec![None; 2],
        };
        // Schema version 1's columns: the table's less the first two and the last two
        // (version 4's per-token statistics, null when absent).
        let batch = table.to_batch();
        let old = batch.project(&(2..batch.num_columns() - 2).collect::<Vec<_>>()).unwrap();
        let file = std::fs::File::create(&path).unwrap();
        let mut writer = ArrowWriter::try_new(file, old.schema(), None).unwrap();
        writer.write(&old).unwrap();
        writer.close().unwrap();
        assert_eq!(read::<LogTable>(&path).unwrap(), table);
        // A column that has no value for old files is still required.
        let no_doc = batch.project(&[0, 1, 2, 4, 5, 6, 7, 8]).unwrap();
        let file = std::fs::File::create(&path).unwrap();
        let mut writer = ArrowWriter::try_new(file, no_doc.schema(), None).unwrap();
        writer.write(&no_doc).unwrap();
        writer.close().unwrap();
        assert!(read::<LogTable>(&path).unwrap_err().to_string().contains("no column `doc`"));
    }

    #[test]
    fn nullable_columns_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copies.parquet");
        let table = CopiesTable {
            copies: vec![1, 2],
            canaries: vec![4, 4],
            mem_acc: vec![Some(0.5), None],
            mem_acc_se: vec![None, Some(0.125)],
            mem_loss: vec![Some(-1.0), Some(2.0)],
            mem_loss_se: vec![None, None],
        };
        write(&path, &table, None).unwrap();
        assert_eq!(read::<CopiesTable>(&path).unwrap(), table);
    }

    #[test]
    fn files_say_what_they_hold() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.parquet");
        write(&path, &JobTable { job: vec![0], model: vec![1] }, Some(42)).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let pairs: HashMap<String, Option<String>> = reader
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .unwrap()
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone()))
            .collect();
        let value = |key: &str| pairs[key].as_deref().unwrap();
        assert_eq!(value("cfmem.version"), env!("CARGO_PKG_VERSION"));
        assert_eq!(value("cfmem.schema"), "JobTable");
        assert_eq!(value("cfmem.schema_version"), "4");
        assert_eq!(value("cfmem.run_seed"), "42");

        write(&path, &JobTable::default(), None).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let keys: Vec<&str> =
            reader.metadata().file_metadata().key_value_metadata().unwrap().iter().map(|kv| kv.key.as_str()).collect();
        assert!(keys.contains(&"cfmem.schema") && !keys.contains(&"cfmem.run_seed"), "{keys:?}");
    }

    #[test]
    fn wrong_column_type_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.parquet");
        let wrong = ReliabilityTable {
            score: vec!["mem_loss".into()],
            measure: vec!["split-half".into()],
            models: vec![2],
            spearman: vec![None],
            predicted: vec![None],
            models_for_stable: vec![None],
        };
        write(&path, &wrong, None).unwrap();
        let err = read::<JobTable>(&path).unwrap_err().to_string();
        assert!(err.ends_with("jobs.parquet: no column `job`"), "{err}");
        let err = read::<CopiesTable>(&path).unwrap_err().to_string();
        assert!(err.contains("no column `copies`"), "{err}");
    }
}
