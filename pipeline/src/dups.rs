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
    let in_clusters = found.cluster_size.iter().filter(|&&s| s > 1).count();
    let exact = found.exact_dup_count.iter().filter(|&&c| c > 0).count();
    let capped = found.near_dup_capped.iter().filter(|&&c| c).count();
    println!(
        "{} documents: {} near-duplicate pairs, {in_clusters} documents in clusters of two or more, \
         {exact} with exact duplicates, {capped} with near_dup_capped; wrote {}",
        ids.len(),
        found.pair_count(),
        args.out.display()
    );
    Ok(())
}
