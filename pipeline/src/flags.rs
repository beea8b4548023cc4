//! The one table from the libraries' setting keys to the flags that set them, and the
//! translation of a library error about a setting into the words of its flag. The
//! libraries name a bad setting by its key (`design.models`, `slurm.jobs_per_task`, a
//! duplicate parameter); where a flag gave the value, the user reads the flag.

use duplicates::{InvalidParams, Param};
use queue::slurm::SlurmError;

/// Setting keys and the flags that set them.
const FLAGS: [(&str, &str); 15] = [
    ("design.models", "--models"),
    ("design.levels", "--levels"),
    ("design.max_unit_fraction", "--max-unit-fraction"),
    ("design.keep", "--keep"),
    ("design.holdout", "--holdout"),
    ("design.holdout_ids", "--holdout-ids"),
    ("design.copies", "--copies"),
    ("design.canary_ids", "--canary-ids"),
    ("threshold", "--threshold"),
    ("shingles", "--shingles"),
    ("min_repeat", "--min-repeat"),
    ("max_candidates", "--max-candidates"),
    ("slurm.jobs_per_task", "--jobs-per-task"),
    ("slurm.cpus_per_task", "--cpus-per-task"),
    ("slurm.max_parallel", "--max-parallel"),
];

/// The flag that sets `key`, if one does.
pub fn flag(key: &str) -> Option<&'static str> {
    FLAGS.iter().find(|(name, _)| *name == key).map(|(_, flag)| *flag)
}

/// A duplicate parameter's error, said in terms of its flag (the engine's own knobs, which
/// no flag sets, by their names).
pub fn duplicate_params(error: InvalidParams) -> anyhow::Error {
    let key = Param::name(error.param);
    anyhow::anyhow!("{}: {}", flag(key).unwrap_or(key), error.reason)
}

/// A library error about a setting that a flag gave, said in terms of that flag; any other
/// error as it is.
pub fn name_the_flag(error: anyhow::Error) -> anyhow::Error {
    let setting = error.downcast_ref().or(match error.downcast_ref() {
        Some(jobs::Error::Files(files)) => Some(files),
        _ => None,
    });
    let (key, message) = if let Some(subsets::Error::Setting { field, message }) = setting {
        (*field, message.clone())
    } else if let Some(queue::Error::Slurm(SlurmError::Zero { setting })) = error.downcast_ref() {
        (*setting, "must be at least 1".to_string())
    } else {
        return error;
    };
    match flag(key) {
        Some(flag) => anyhow::anyhow!("{flag}: {message}"),
        None => error,
    }
}
