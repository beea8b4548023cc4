//! What `cfmem plan` says of the plan it wrote: models, documents, jobs and tokens, each
//! spectrum level's models, and the units too large to be sampled as one; and of a run it
//! grew ([`Extension`]).

use std::fmt;
use std::path::Path;

use super::{Extension, Plan, Written};
use crate::config::RunConfig;

impl Plan {
    /// Lines on the plan, written (`written`) into the run directory `out`.
    pub fn describe(&self, out: &Path, written: Written) -> String {
        let design = &self.config.design;
        let mut text = match written {
            Written::Created => format!(
                "planned {} models over {} documents in {} jobs into {}{}\n",
                design.models,
                self.corpus.doc.len(),
                self.jobs.job.iter().max().map_or(0, |j| j + 1),
                out.display(),
                describe_tokens(&self.config)
            ),
            Written::Unchanged => format!("{} already holds this plan; nothing to do\n", out.display()),
        };
        for block in &design.spectrum {
            let in_count = (design.keep * f64::from(block.size())).round();
            text += &format!(
                "  level {:<16} {} models (each unit IN for {in_count})\n",
                block.level.to_string(),
                block.size()
            );
        }
        let limit = design.max_unit_size(self.corpus.doc.len());
        for (level, over, preview) in &self.oversized {
            if let Some((size, _)) = over.largest {
                text += &format!(
                    "  level {level}: {} units over the limit of {limit} documents ({:.2}% of the corpus; \
                     --max-unit-fraction sets it) are not sampled as one; their {} documents fall back to level {} \
                     and get no {level} score. Largest: {size} documents, {preview}\n",
                    over.units,
                    100.0 * design.max_unit_fraction.unwrap_or_default(),
                    over.documents,
                    level.finer().expect("a document is never over the limit"),
                );
            }
        }
        text
    }
}

/// The plan's token counts, as `: 123456 tokens (tokenizer bytes, vocabulary 258), …`.
fn describe_tokens(config: &RunConfig) -> String {
    let t = &config.tokens;
    let mut text = format!(": {} tokens (tokenizer {}, vocabulary {})", t.corpus, config.model.tokenizer, t.vocab);
    if let Some(base) = config.train.base() {
        text += &format!(", every model starting from the base {}", base.display());
    }
    if let Some(background) = &config.background {
        text += &format!(", background of {} documents, {} tokens", background.documents, t.background);
    }
    if let (capped @ 1.., Some(cap)) = (t.capped, config.model.max_tokens_per_doc) {
        text += &format!(", {capped} documents cut to {cap} tokens");
    }
    text
}

impl fmt::Display for Extension {
    /// ` from 8 to 16 models: new jobs 4 to 7; …`, after the run's path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            " from {} to {} models: new jobs {} to {}; existing models and logs are unchanged",
            self.old_models,
            self.models,
            self.new_jobs.start,
            self.new_jobs.end - 1
        )
    }
}
