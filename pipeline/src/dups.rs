//! `cfmem dups`: every duplicate score of a corpus, written as one Parquet table, after
//! checking that the corpus fits in memory.

use anyhow::{Result, bail};

use subsets::{corpus, duplicate_scores, schema};

use crate::DupsArgs;

const GIB: f64 = (1u64 << 30) as f64;

pub fn run(args: &DupsArgs) -> Result<()> {
    let params = args.near.params()?;
    if let Some(limit) = args.max_memory
        && (limit.is_nan() || limit <= 0.0)
    {
        bail!("--max-memory: must be a positive number of GiB, got {limit}");
    }
    let limit =
        args.max_memory.map(|gib| gib * GIB).or_else(|| jobs::device::available_memory().map(|bytes| bytes as f64));
    let documents = corpus::read(&args.corpus)?;
    let needed = duplicate_scores::memory_needed(&documents, &params) as f64;
    let texts: Vec<&str> = documents.iter().map(|d| d.text.as_str()).collect();
    if let Some(limit) = limit
        && needed > limit
    {
        bail!(
            "{}: the duplicate scores of {} documents need about {:.2} GiB (the corpus included), more than the {:.2} GiB \
             {}; raise --max-memory if more is free, or split the corpus",
            args.corpus.display(),
            texts.len(),
            needed / GIB,
            limit / GIB,
            if args.max_memory.is_some() { "allowed by --max-memory" } else { "of memory available" }
        );
    }
    let found = duplicates::find_duplicates(&texts, &params);
    let ids: Vec<String> = documents.into_iter().map(|d| d.id).collect();
    schema::write(&args.out, &duplicate_scores::table(&found, &ids), None)?;
    println!("{found}; wrote {}", args.out.display());
    Ok(())
}
