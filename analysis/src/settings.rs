//! The settings of `cfmem analyze`, in a module of their own so that every estimator that
//! reads them ([`crate::scores`], [`crate::spectrum`]) depends on the settings alone and
//! not on another estimator.

use crate::measure::Measure;

/// Settings of `cfmem analyze`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnalyzeSettings {
    /// Bootstrap replicates (resamples of the models) behind the scores' intervals
    /// (`mem_acc_lo`, `mem_acc_hi`, `mem_loss_lo`, `mem_loss_hi`).
    pub bootstrap: usize,
    /// The score that orders the lists, leads the reliability verdict and is compared
    /// across checkpoints; both are computed and written either way.
    pub rank_by: Measure,
    /// Whether the membership inference attacks are evaluated (`attacks.parquet`); without
    /// them the logs' Min-K% statistics are not read either.
    pub attacks: bool,
}

impl Default for AnalyzeSettings {
    fn default() -> Self {
        AnalyzeSettings { bootstrap: 200, rank_by: Measure::default(), attacks: true }
    }
}
