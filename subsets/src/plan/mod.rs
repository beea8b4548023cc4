//! Turning a corpus and a design into a run directory: `run.toml`, `corpus.parquet`,
//! `units.parquet`, `membership.bin`, `jobs.parquet`, the tokenizer (`tokenizer.json`, unless tokens are
//! bytes), the background documents (`background.parquet`, if any) and the duplicate scores
//! (`analysis/duplicates.parquet`),
//! all written into a temporary sibling directory that is renamed into place only when
//! complete; and growing a planned run to more models ([`extend`]). [`Plan::describe`]
//! says what a plan holds, as `cfmem plan` prints it.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use crate::canaries::{self, Planted};
use crate::config::{
    BackgroundConfig, BaseConfig, Block, CorpusConfig, DesignConfig, EmbeddingLayout, Hyperparameters, RunConfig,
    TokensConfig, TopicConfig, Unit,
};
use crate::corpus::{self, Document};
use crate::layout::RunDir;
use crate::membership::Membership;
use crate::schema::{self, BackgroundTable, CorpusTable, DuplicateTable, JobTable, Table, UnitTable};
use crate::tokenizer::{Extent, Tokenizer};
use crate::units::{self, Groupings, LevelUnits, Oversized};
use crate::{Error, Result, atomic, config, design, duplicate_scores, seeds};

mod describe;

/// Everything `plan` writes, built in memory first.
#[derive(Debug, Clone)]
pub struct Plan {
    pub config: RunConfig,
    pub corpus: CorpusTable,
    pub membership: Membership,
    pub jobs: JobTable,
    /// Duplicate scores of the text the models see (up to `max_tokens_per_doc`).
    pub duplicates: DuplicateTable,
    /// `tokenizer.json`, unless tokens are bytes.
    pub tokenizer_json: Option<String>,
    pub background: Option<BackgroundTable>,
    /// Every document's unit at each level of the run.
    pub units: UnitTable,
    /// The group fields the levels name (`source` aside), written into `corpus.parquet`
    /// as columns `field:NAME`.
    pub fields: Vec<(String, Vec<Option<String>>)>,
    /// Per level, the units over the size limit, with a preview of the largest one.
    pub oversized: Vec<(Unit, Oversized, String)>,
}

/// Documents every model trains on besides its subset, and where the user named them.
pub struct Background {
    pub path: String,
    pub documents: Vec<Document>,
}

/// What the request was, before any document is placed.
pub struct PlanRequest {
    /// The corpus as the user named it, recorded in `run.toml`.
    pub corpus_path: String,
    pub documents: Vec<Document>,
    pub seed: u64,
    pub design: DesignConfig,
    pub hyperparameters: Hyperparameters,
    pub background: Option<Background>,
    /// The base every model starts from, with `hyperparameters.train.init` its directory
    /// and `hyperparameters.model` its architecture and tokenizer.
    pub base: Option<PlannedBase>,
    /// Values of the group fields the levels name (`field:NAME`), one per corpus document
    /// (generated canaries have none), read with [`corpus::read_fields`].
    pub fields: BTreeMap<String, Vec<Option<String>>>,
}

impl PlanRequest {
    /// The plan of the corpus at `corpus`, with the values of the group fields `design`
    /// names, and of the background at `background`, both read and checked.
    pub fn read(
        corpus: &Path,
        background: Option<&Path>,
        seed: u64,
        design: DesignConfig,
        hyperparameters: Hyperparameters,
        base: Option<PlannedBase>,
    ) -> Result<PlanRequest> {
        let documents = corpus::read(corpus)?;
        let names = design.group_fields();
        let fields = names.iter().cloned().zip(corpus::read_fields(corpus, &names)?).collect();
        let background = match background {
            Some(path) => Some(Background { path: path.display().to_string(), documents: corpus::read(path)? }),
            None => None,
        };
        Ok(PlanRequest {
            corpus_path: corpus.display().to_string(),
            documents,
            seed,
            design,
            hyperparameters,
            background,
            base,
            fields,
        })
    }
}

/// What a plan keeps of the base its models start from.
pub struct PlannedBase {
    pub layout: EmbeddingLayout,
    pub weights_sha256: String,
    /// The base's embedding of texts (one vector per text), which `topic:K` levels group
    /// documents by; None: topics from the text itself. It runs the model, which this
    /// crate does not: the binary hands it over.
    pub embed: Option<DocumentEmbedder>,
}

/// A model's embedding of each of the texts, or why it failed.
pub type DocumentEmbedder = Box<dyn Fn(&[&str]) -> std::result::Result<Vec<Vec<f32>>, String> + Send + Sync>;

impl From<&crate::base::Base> for PlannedBase {
    fn from(base: &crate::base::Base) -> PlannedBase {
        PlannedBase { layout: base.layout, weights_sha256: base.weights_sha256.clone(), embed: None }
    }
}

/// Builds the plan, scoring the documents' duplicates with the design's settings (see
/// `build_scored`), passage groups included when a level needs them. Settings out of
/// range are refused, naming the `design` key, before any work.
pub fn build(request: PlanRequest) -> Result<Plan> {
    let mut params = request.design.duplicates.params().map_err(|e| Error::Invalid(format!("design.{e}")))?;
    params.passages = request.design.levels().iter().any(needs_passages);
    build_scored(request, |ids, texts| {
        let mut found = duplicates::find_duplicates(texts, &params);
        let passages = found.passages.take();
        (duplicate_scores::table(&found, ids), passages)
    })
}

/// Whether `level` or a finer level it may fall back to is the passage level.
fn needs_passages(level: &Unit) -> bool {
    matches!(level, Unit::Passage | Unit::Topic(_) | Unit::Field(_))
}

/// How topics are found from the text alone.
const TEXT_TOPICS: &str = "tfidf-svd";
/// How topics are found in a run from a base: the base's mean final-layer hidden states.
const BASE_TOPICS: &str = "base-hidden-mean";

/// The topics of `texts` for a run whose levels include `topic:K`, none otherwise: found by
/// `design.topics`' method, which, when the request names none, becomes the base's hidden
/// states where the run has a base that can `embed`, else the text's TF-IDF (recorded so in
/// `run.toml`).
fn topic_groups(
    design_config: &mut DesignConfig,
    texts: &[&str],
    embed: Option<&DocumentEmbedder>,
    seed: u64,
) -> Result<BTreeMap<u32, Vec<u32>>> {
    let has_topics = design_config.levels().iter().any(|level| matches!(level, Unit::Topic(_)));
    if has_topics && design_config.topics.is_none() {
        let method = if embed.is_some() { BASE_TOPICS } else { TEXT_TOPICS };
        design_config.topics = Some(TopicConfig { method: method.into(), settings: Default::default() });
    }
    match &design_config.topics {
        Some(topic_config) => find_topics(&design_config.levels(), texts, topic_config, embed, seed),
        None => Ok(BTreeMap::new()),
    }
}

/// The topics of every `topic:K` level among `levels`, found in `texts` (what the models
/// see) as `config` says, with `embed` (the base's) for the base's method, seeded from the
/// run seed.
fn find_topics(
    levels: &[Unit],
    texts: &[&str],
    config: &TopicConfig,
    embed: Option<&DocumentEmbedder>,
    seed: u64,
) -> Result<BTreeMap<u32, Vec<u32>>> {
    use duplicates::topics::{self, Embeddings};
    let seed = seeds::derive(seed, "topics", 0);
    let embeddings = match (config.method.as_str(), embed) {
        (TEXT_TOPICS, _) => topics::text_embeddings(texts, &config.settings, seed),
        (BASE_TOPICS, Some(embed)) => {
            let rows =
                embed(texts).map_err(|e| Error::Invalid(format!("embedding the documents with the base: {e}")))?;
            let dims = rows.first().map_or(0, Vec::len);
            let values = rows
                .into_iter()
                .flat_map(|row| {
                    let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                    row.into_iter().map(move |v| if norm > 0.0 { v / norm } else { 0.0 })
                })
                .collect();
            Ok(Embeddings { rows: texts.len(), dims, values })
        }
        (method, _) => return Err(Error::Invalid(format!("design.topics: unknown method {method:?}"))),
    };
    let embeddings = embeddings.map_err(|e| Error::Invalid(format!("topics: {e}")))?;
    let mut found = BTreeMap::new();
    for level in levels {
        if let Unit::Topic(k) = level {
            let labels = topics::spherical_kmeans(&embeddings, *k as usize, config.settings.kmeans_iterations, seed)
                .map_err(|e| Error::Invalid(format!("level {level}: {e}")))?;
            found.insert(*k, labels);
        }
    }
    Ok(found)
}

/// Builds the plan. `duplicates_of(ids, texts)` scores the documents' duplicates on
/// `texts`, the text each model trains and evaluates on (all of it, or what
/// `max_tokens_per_doc` leaves, an incomplete last character replaced), so that duplicates
/// are what the models see, and finds their passage groups when a level needs them; its
/// clusters and passages are the units of those levels.
fn build_scored(
    request: PlanRequest,
    duplicates_of: impl FnOnce(&[String], &[&str]) -> (DuplicateTable, Option<duplicates::Passages>),
) -> Result<Plan> {
    let PlanRequest {
        corpus_path,
        mut documents,
        seed,
        design: mut design_config,
        hyperparameters,
        background,
        base,
        fields: mut field_values,
    } = request;
    hyperparameters.validate()?;
    design_config.validate()?;
    let in_count = design::in_count(design_config.models, design_config.keep)?;
    let corpus_sha256 = corpus::checksum(&documents);
    let input_documents = documents.len();
    check_fields(&design_config.levels(), &field_values, input_documents)?;
    let Planted { copies, canary } = canaries::plant(&mut documents, &design_config, seed)?;
    let held_by_id = held_out_ids(&documents, &canary, &design_config.holdout_ids)?;
    if design_config.levels().contains(&Unit::Field("source".into())) {
        field_values.insert("source".into(), documents.iter().map(|d| d.source.clone()).collect());
    }
    field_values.values_mut().for_each(|values| values.resize(documents.len(), None));

    let background_documents = background.as_ref().map_or(&[][..], |b| &b.documents[..]);
    let all_texts = documents.iter().chain(background_documents).map(|d| d.text.as_str());
    let tokenizer = Tokenizer::for_plan(&hyperparameters.model, all_texts)?;
    let cap = hyperparameters.model.max_tokens_per_doc;
    let extents = tokenizer.measure_documents(&documents, cap)?;
    let seen: Vec<_> = documents
        .iter()
        .zip(&extents)
        .map(|(d, extent)| String::from_utf8_lossy(&d.text.as_bytes()[..extent.bytes]))
        .collect();
    let ids: Vec<String> = documents.iter().map(|d| d.id.clone()).collect();
    let texts: Vec<&str> = seen.iter().map(|t| t.as_ref()).collect();
    let (duplicates, passages) = duplicates_of(&ids, &texts);
    if duplicates.len() != documents.len() {
        return Err(Error::Invalid(format!(
            "duplicate scores cover {} documents, the corpus has {}",
            duplicates.len(),
            documents.len()
        )));
    }

    let topics = topic_groups(&mut design_config, &texts, base.as_ref().and_then(|b| b.embed.as_ref()), seed)?;
    let groupings = Groupings {
        cluster: &duplicates.cluster,
        passage: passages.as_ref().map(|p| units::Passages { group: &p.group, shared: &p.longest_shared }),
        fields: &field_values,
        topics: &topics,
    };
    let max_size = design_config.max_unit_size(documents.len());
    // run.toml records the bound the plan applied, the default's too.
    design_config.max_unit_fraction.get_or_insert(f64::from(max_size) / documents.len().max(1) as f64);
    let levels: Vec<LevelUnits> = design_config
        .levels()
        .iter()
        .map(|level| units::level_units(level, &groupings, max_size))
        .collect::<Result<_>>()?;
    let oversized = levels
        .iter()
        .map(|level| {
            let over = level.oversized();
            let preview = over.largest.map_or_else(String::new, |(_, doc)| unit_preview(level, doc, &seen, &groupings));
            (level.level.clone(), over, preview)
        })
        .collect();
    let unit_table = units::table(&levels, &groupings);
    let units = &levels[0].sampled;
    let unit_count = units.iter().max().map_or(0, |&u| u as usize + 1);
    let held_unit = design::holdout(unit_count, design_config.holdout, seed)?;

    // Canaries are the object of the copy sweep: they are never held out.
    let holdout: Vec<bool> =
        (0..documents.len()).map(|doc| (held_unit[units[doc] as usize] || held_by_id[doc]) && !canary[doc]).collect();
    let table = corpus_table(&documents, &extents, units, &holdout, &copies);
    let membership = draw_membership(&design_config, &levels, &holdout, in_count, seed)?;
    let jobs = job_table(design_config.models, hyperparameters.jobs.stack);
    let background_table = match &background {
        None => None,
        Some(background) => Some(background_table(&background.documents, &tokenizer, cap)?),
    };
    let tokenizer_json = tokenizer.to_json();
    let config = RunConfig {
        seed,
        corpus: CorpusConfig { path: corpus_path, sha256: corpus_sha256, documents: input_documents as u32 },
        design: design_config,
        model: hyperparameters.model,
        train: hyperparameters.train,
        jobs: hyperparameters.jobs,
        tokens: TokensConfig {
            vocab: base.as_ref().map_or(tokenizer.vocab(), |b| b.layout.rows),
            bos: base.as_ref().map(|b| b.layout.bos),
            tokenizer_sha256: tokenizer_json.as_ref().map(|json| corpus::sha256_hex(json.as_bytes())),
            corpus: table.tokens.iter().map(|&t| u64::from(t)).sum(),
            capped: extents[..input_documents].iter().filter(|e| e.capped).count() as u32,
            background: background_table.as_ref().map_or(0, |b| b.tokens.iter().map(|&t| u64::from(t)).sum()),
        },
        background: background.map(|b| BackgroundConfig {
            path: b.path,
            sha256: corpus::checksum(&b.documents),
            documents: b.documents.len() as u32,
        }),
        base: base.map(|b| BaseConfig { weights_sha256: b.weights_sha256 }),
    };
    field_values.remove("source");
    Ok(Plan {
        config,
        corpus: table,
        membership,
        jobs,
        duplicates,
        tokenizer_json,
        background: background_table,
        units: unit_table,
        fields: field_values.into_iter().map(|(name, values)| (format!("field:{name}"), values)).collect(),
        oversized,
    })
}

/// The seed stream of the draws of a spectrum block: one per level, so that blocks draw
/// independently.
fn block_stream(level: &Unit) -> String {
    format!("design-{level}")
}

/// Every `field:NAME` level has its values, one per document (`source` is the corpus's own).
fn check_fields(levels: &[Unit], fields: &BTreeMap<String, Vec<Option<String>>>, documents: usize) -> Result<()> {
    for level in levels {
        if let Unit::Field(name) = level {
            match fields.get(name) {
                _ if name == "source" => {}
                Some(values) if values.len() == documents => {}
                _ => return Err(Error::Invalid(format!("level {level}: the corpus's field `{name}` was not read"))),
            }
        }
    }
    Ok(())
}

/// A line saying what a unit of `level` holding document `doc` shares: the passage, the
/// field's value, or the start of the text.
fn unit_preview(
    level: &LevelUnits,
    doc: usize,
    seen: &[std::borrow::Cow<'_, str>],
    groupings: &Groupings<'_>,
) -> String {
    const CHARS: usize = 80;
    let cut = |text: &str| {
        let flat: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        if flat.chars().count() > CHARS { format!("{}…", flat.chars().take(CHARS).collect::<String>()) } else { flat }
    };
    match &level.level {
        Unit::Passage => {
            let (start, end) = groupings.passage.map_or((0, 0), |passages| passages.shared[doc]);
            format!("shared passage \"{}\"", cut(&seen[doc][start as usize..end as usize]))
        }
        Unit::Field(name) => {
            let value = groupings.fields.get(name).and_then(|values| values[doc].clone()).unwrap_or_default();
            format!("{name} = \"{}\"", cut(&value))
        }
        Unit::Document | Unit::Cluster | Unit::Topic(_) => format!("\"{}\"", cut(&seen[doc])),
    }
}

/// For each sampling unit (`unit[doc]`), its documents that are not held out.
fn trained_docs_by_unit(unit: &[u32], holdout: &[bool]) -> Vec<Vec<u32>> {
    let units = unit.iter().max().map_or(0, |&u| u as usize + 1);
    let mut docs = vec![Vec::new(); units];
    for (doc, (&unit, &held)) in unit.iter().zip(holdout).enumerate() {
        if !held {
            docs[unit as usize].push(doc as u32);
        }
    }
    docs
}

/// `corpus.parquet`: each document with its tokens, hash, holdout, sampling unit (at the
/// finest level) and copies.
fn corpus_table(
    documents: &[Document],
    extents: &[Extent],
    units: &[u32],
    holdout: &[bool],
    copies: &[u16],
) -> CorpusTable {
    let mut table = CorpusTable::default();
    for (doc, document) in documents.iter().enumerate() {
        table.doc.push(doc as u32);
        table.doc_id.push(document.id.clone());
        table.source.push(document.source.clone());
        table.text.push(document.text.clone());
        table.tokens.push(extents[doc].tokens);
        table.sha256.push(corpus::sha256_hex(document.text.as_bytes()));
        table.holdout.push(holdout[doc]);
        table.unit.push(units[doc]);
        table.copies.push(copies[doc]);
    }
    table
}

/// Who trains on what: each unit of a level IN for `keep` of its models, drawn from the
/// seed (one design over every model, or, in a spectrum, one per level's block of models,
/// each from its own stream); held-out documents IN for none.
fn draw_membership(
    design_config: &DesignConfig,
    levels: &[LevelUnits],
    holdout: &[bool],
    in_count: u32,
    seed: u64,
) -> Result<Membership> {
    let mut membership = Membership::new(design_config.models, holdout.len() as u32);
    if design_config.spectrum.is_empty() {
        for (unit, docs) in trained_docs_by_unit(&levels[0].sampled, holdout).iter().enumerate() {
            if !docs.is_empty() {
                for model in design::in_models(unit, design_config.models, in_count, seed) {
                    docs.iter().for_each(|&doc| membership.set(model, doc));
                }
            }
        }
    } else {
        for (block, level) in design_config.spectrum.iter().zip(levels) {
            let models = block.model_ids();
            let k = design::in_count(block.size(), design_config.keep)?;
            let stream = block_stream(&block.level);
            for (unit, docs) in trained_docs_by_unit(&level.sampled, holdout).iter().enumerate() {
                if !docs.is_empty() {
                    for local in design::in_models_of(&stream, unit, block.size(), k, seed) {
                        docs.iter().for_each(|&doc| membership.set(models[local as usize], doc));
                    }
                }
            }
        }
    }
    Ok(membership)
}

/// `jobs.parquet`: `models` in jobs of `stack` consecutive models.
fn job_table(models: u32, stack: u32) -> JobTable {
    let mut jobs = JobTable::default();
    for model in 0..models {
        jobs.job.push(model / stack);
        jobs.model.push(model);
    }
    jobs
}

/// `background.parquet`: the background documents with their tokens under `tokenizer`.
fn background_table(documents: &[Document], tokenizer: &Tokenizer, cap: Option<u32>) -> Result<BackgroundTable> {
    let extents = tokenizer.measure_documents(documents, cap)?;
    Ok(BackgroundTable {
        doc_id: documents.iter().map(|d| d.id.clone()).collect(),
        tokens: extents.iter().map(|e| e.tokens).collect(),
        text: documents.iter().map(|d| d.text.clone()).collect(),
    })
}

/// Which documents `holdout_ids` names; an unknown id or a canary is refused.
fn held_out_ids(documents: &[Document], canary: &[bool], holdout_ids: &[String]) -> Result<Vec<bool>> {
    let known: HashSet<&str> = documents.iter().map(|d| d.id.as_str()).collect();
    if let Some(missing) = holdout_ids.iter().find(|id| !known.contains(id.as_str())) {
        return Err(Error::setting("design.holdout_ids", format!("no document has id {missing:?}")));
    }
    let wanted: HashSet<&str> = holdout_ids.iter().map(String::as_str).collect();
    let held: Vec<bool> = documents.iter().map(|d| wanted.contains(d.id.as_str())).collect();
    if let Some(doc) = (0..documents.len()).find(|&d| held[d] && canary[d]) {
        return Err(Error::setting(
            "design.holdout_ids",
            format!("{:?} is a canary of the copy sweep, which is never held out", documents[doc].id),
        ));
    }
    Ok(held)
}

/// What [`write()`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Created,
    /// The run directory already held this exact plan; nothing was touched.
    Unchanged,
}

/// Writes `plan` into `run`. An existing run with the same configuration is left as it is;
/// one with another configuration, or a non-empty directory that is no run, is refused.
pub fn write(run: &RunDir, plan: &Plan) -> Result<Written> {
    let root = run.root();
    if root.exists() {
        if run.config().exists() {
            let existing = RunConfig::from_file(&run.config())?;
            if existing == plan.config {
                return Ok(Written::Unchanged);
            }
            return Err(Error::file(
                root,
                format!(
                    "already holds a plan with a different configuration ({}); \
                     choose another --out or delete the directory",
                    differences(&existing, &plan.config)
                ),
            ));
        }
        let empty = std::fs::read_dir(root).map_err(Error::io(root))?.next().is_none();
        if !empty {
            return Err(Error::file(root, "exists, is not empty and holds no run.toml: refusing to plan into it"));
        }
        std::fs::remove_dir(root).map_err(Error::io(root))?;
    }
    let parent = root.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
    let staging = atomic::builder(".cfmem-plan-", "", true).tempdir_in(parent).map_err(Error::io(parent))?;
    let staged = RunDir::new(staging.path());
    atomic::write_bytes(&staged.config(), plan.config.to_toml().as_bytes())?;
    let seed = Some(plan.config.seed);
    schema::write_with_columns(&staged.corpus(), &plan.corpus, &plan.fields, seed)?;
    schema::write(&staged.units(), &plan.units, seed)?;
    if let Some(json) = &plan.tokenizer_json {
        atomic::write_bytes(&staged.tokenizer(), json.as_bytes())?;
    }
    if let Some(background) = &plan.background {
        schema::write(&staged.background(), background, seed)?;
    }
    plan.membership.write(&staged.membership())?;
    schema::write(&staged.jobs(), &plan.jobs, seed)?;
    std::fs::create_dir(staged.analysis_dir()).map_err(Error::io(staged.analysis_dir()))?;
    schema::write(&staged.duplicates(), &plan.duplicates, seed)?;
    std::fs::create_dir(staged.logs_dir()).map_err(Error::io(staged.logs_dir()))?;
    std::fs::rename(staging.keep(), root).map_err(Error::io(root))?;
    atomic::sync_dir(parent)?;
    Ok(Written::Created)
}

/// What [`extend`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    pub old_models: u32,
    pub models: u32,
    /// The jobs appended for the new models.
    pub new_jobs: std::ops::Range<u32>,
}

/// Grows the planned run `run` to `models` models. Existing models keep their membership
/// rows, jobs and logs untouched; each unit gets [`design::extension_in_count`] of the new
/// models, so it is IN for exactly round(keep × models); the new models form new jobs of
/// `jobs.stack` models after the last existing job. `membership.bin`, then `jobs.parquet`,
/// then `run.toml` are replaced atomically; an extension cut short is redone the same way
/// by running it again, since `run.toml` still names the old model count.
pub fn extend(run: &RunDir, models: u32) -> Result<Extension> {
    if !run.config().exists() {
        return Err(Error::file(run.root(), "no run.toml here: not a planned run (run `cfmem plan` first)"));
    }
    let mut config = RunConfig::from_file(&run.config())?;
    let old = config.design.models;
    let added = design::extension_in_count(old, models, config.design.keep)?;
    if !config.design.spectrum.is_empty() {
        // Every block grows to its share of the new total: the split must hold for keep.
        let mut grown = config.design.clone();
        grown.models = models;
        grown.spectrum = config::blocks(&grown.levels(), models);
        grown.validate()?;
    }
    let corpus: CorpusTable = schema::read(&run.corpus())?;
    let mut membership = Membership::read(&run.membership())?;
    if membership.models() < old || membership.documents() as usize != corpus.len() {
        return Err(Error::file(
            run.membership(),
            format!(
                "holds {} models × {} documents, but run.toml has {old} models and corpus.parquet {} documents",
                membership.models(),
                membership.documents(),
                corpus.len()
            ),
        ));
    }
    membership.truncate_models(old);
    membership.add_models(models - old);
    if config.design.spectrum.is_empty() {
        for (unit, docs) in trained_docs_by_unit(&corpus.unit, &corpus.holdout).iter().enumerate() {
            if !docs.is_empty() {
                for model in design::extension_models(unit, old, models, added, config.seed) {
                    docs.iter().for_each(|&doc| membership.set(model, doc));
                }
            }
        }
    } else {
        let stored: UnitTable = schema::read(&run.units())?;
        let grown = config::blocks(&config.design.levels(), models);
        let mut next = old;
        for (block, size) in config.design.spectrum.iter_mut().zip(grown.iter().map(Block::size)) {
            let before = block.size();
            if size == before {
                continue;
            }
            let level = units::of_level(&stored, &block.level, corpus.len())?;
            let added = design::extension_in_count(before, size, config.design.keep)?;
            let ids: Vec<u32> = block.model_ids().into_iter().chain(next..next + size - before).collect();
            let stream = format!("{}-extend-from-{before}", block_stream(&block.level));
            for (unit, docs) in trained_docs_by_unit(&level.sampled, &corpus.holdout).iter().enumerate() {
                if !docs.is_empty() {
                    for local in design::extension_models_of(&stream, unit, before, size, added, config.seed) {
                        docs.iter().for_each(|&doc| membership.set(ids[local as usize], doc));
                    }
                }
            }
            block.models.push([next, next + size - before]);
            next += size - before;
        }
    }
    let planned: JobTable = schema::read(&run.jobs())?;
    let mut jobs = JobTable::default();
    for (&job, &model) in planned.job.iter().zip(&planned.model).filter(|(_, model)| **model < old) {
        jobs.job.push(job);
        jobs.model.push(model);
    }
    let first_new = jobs.job.iter().max().map_or(0, |&j| j + 1);
    for model in old..models {
        jobs.job.push(first_new + (model - old) / config.jobs.stack);
        jobs.model.push(model);
    }
    let end = jobs.job.last().map_or(first_new, |&j| j + 1);
    membership.write(&run.membership())?;
    schema::write(&run.jobs(), &jobs, Some(config.seed))?;
    config.design.models = models;
    atomic::write_bytes(&run.config(), config.to_toml().as_bytes())?;
    Ok(Extension { old_models: old, models, new_jobs: first_new..end })
}

/// The keys whose values differ, as `design.models: 8 -> 16`.
fn differences(old: &RunConfig, new: &RunConfig) -> String {
    fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
        match value {
            toml::Value::Table(table) => {
                for (key, value) in table {
                    let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                    flatten(&name, value, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut old_keys = BTreeMap::new();
    let mut new_keys = BTreeMap::new();
    flatten("", &toml::Value::try_from(old).expect("serializable"), &mut old_keys);
    flatten("", &toml::Value::try_from(new).expect("serializable"), &mut new_keys);
    let missing = "(none)".to_string();
    let mut changed: Vec<String> = old_keys
        .keys()
        .chain(new_keys.keys())
        .filter(|k| old_keys.get(*k) != new_keys.get(*k))
        .map(|k| {
            let before = old_keys.get(k).unwrap_or(&missing);
            let after = new_keys.get(k).unwrap_or(&missing);
            format!("{k}: {before} -> {after}")
        })
        .collect();
    changed.dedup();
    changed.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn design(models: u32, keep: f64) -> DesignConfig {
        DesignConfig::documents(models, keep)
    }

    fn docs(n: usize) -> Vec<Document> {
        (0..n).map(|i| Document { id: format!("d{i}"), text: format!("document number {i}"), source: None }).collect()
    }

    fn request(documents: Vec<Document>, design: DesignConfig) -> PlanRequest {
        PlanRequest {
            corpus_path: "corpus.jsonl".into(),
            documents,
            seed: 5,
            design,
            hyperparameters: Hyperparameters::default(),
            background: None,
            base: None,
            fields: BTreeMap::new(),
        }
    }

    /// Duplicate scores where `cluster` gives each document's cluster.
    fn clustered(cluster: Vec<u32>) -> DuplicateTable {
        let n = cluster.len();
        DuplicateTable {
            doc: (0..n as u32).collect(),
            doc_id: vec![String::new(); n],
            exact_dup_count: vec![0; n],
            near_dup_count: vec![0; n],
            max_jaccard: vec![0.0; n],
            cluster,
            cluster_size: vec![1; n],
            repeat_fraction: vec![0.0; n],
            near_dup_capped: vec![false; n],
        }
    }

    fn no_clusters(ids: &[String], _: &[&str]) -> (DuplicateTable, Option<duplicates::Passages>) {
        (clustered((0..ids.len() as u32).collect()), None)
    }

    #[test]
    fn membership_is_balanced_per_document_and_jobs_cover_models() {
        let plan = build_scored(request(docs(30), design(10, 0.3)), no_clusters).unwrap();
        let mut per_doc = [0; 30];
        (0..10).flat_map(|m| plan.membership.docs_of(m)).for_each(|d| per_doc[d as usize] += 1);
        assert!(per_doc.iter().all(|&n| n == 3), "{per_doc:?}");
        assert_eq!(plan.jobs.model, (0..10).collect::<Vec<_>>());
        assert_eq!(plan.jobs.job, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]);
    }

    #[test]
    fn cluster_unit_puts_members_in_together() {
        let mut d = design(6, 0.5);
        d.unit = Unit::Cluster;
        d.max_unit_fraction = Some(1.0);
        let plan = build_scored(request(docs(6), d), |_, _| (clustered(vec![9, 9, 4, 9, 4, 7]), None)).unwrap();
        assert_eq!(plan.corpus.unit, [0, 0, 1, 0, 1, 2]);
        let models_of = |doc: u32| -> Vec<u32> { (0..6).filter(|&m| plan.membership.contains(m, doc)).collect() };
        assert_eq!(models_of(0), models_of(1));
        assert_eq!(models_of(0), models_of(3));
        assert_eq!(models_of(2), models_of(4));
        assert_eq!(models_of(0).len(), 3);
    }

    /// A spectrum over `levels` of `models` models, keep 0.5, units up to half the corpus.
    fn spectrum(levels: &[Unit], models: u32) -> DesignConfig {
        let mut d = design(models, 0.5);
        d.unit = levels[0].clone();
        d.spectrum = crate::config::blocks(levels, models);
        d.max_unit_fraction = Some(0.5);
        d
    }

    /// Passage groups from `group`, no shared ranges (the sizes are not read).
    fn passages(group: Vec<u32>) -> Option<duplicates::Passages> {
        let n = group.len();
        Some(duplicates::Passages { group, group_size: vec![0; n], longest_shared: vec![(0, 0); n] })
    }

    /// Each stored unit of each level is IN for exactly round(keep × block) models of its
    /// block and for none of the other blocks' models it is not drawn for.
    fn assert_balanced(design: &DesignConfig, units: &UnitTable, membership: &Membership, holdout: &[bool]) {
        let docs = holdout.len();
        for block in &design.spectrum {
            let level = units::of_level(units, &block.level, docs).unwrap();
            let k = (design.keep * f64::from(block.size())).round() as usize;
            for doc in (0..docs).filter(|&d| !holdout[d]) {
                let models: Vec<u32> =
                    block.model_ids().into_iter().filter(|&m| membership.contains(m, doc as u32)).collect();
                assert_eq!(models.len(), k, "{} doc {doc}", block.level);
                for other in (0..docs).filter(|&o| level.sampled[o] == level.sampled[doc] && !holdout[o]) {
                    let theirs: Vec<u32> =
                        block.model_ids().into_iter().filter(|&m| membership.contains(m, other as u32)).collect();
                    assert_eq!(models, theirs, "{}: docs {doc} and {other} share a unit", block.level);
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn every_unit_of_every_level_is_in_for_exactly_its_share_of_its_block(
            models in 6u32..30, seed: u64, labels in proptest::collection::vec((0u32..4, 0u32..3), 4..24)
        ) {
            let n = labels.len();
            let cluster: Vec<u32> = labels.iter().map(|&(c, _)| c).collect();
            let group: Vec<u32> = labels.iter().map(|&(_, p)| p).collect();
            let levels = [Unit::Document, Unit::Cluster, Unit::Passage];
            let mut request = request(docs(n), spectrum(&levels, models));
            request.seed = seed;
            let plan = build_scored(request, |_, _| (clustered(cluster.clone()), passages(group.clone()))).unwrap();
            assert_balanced(&plan.config.design, &plan.units, &plan.membership, &plan.corpus.holdout);
        }
    }

    #[test]
    fn a_spectrum_extends_every_block_and_stays_balanced() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path().join("run"));
        let levels = [Unit::Document, Unit::Cluster, Unit::Passage];
        let cluster = vec![0, 0, 1, 2, 2, 3, 4, 5, 6, 7];
        let group = vec![0, 0, 0, 1, 1, 2, 3, 3, 4, 5];
        let plan = build_scored(request(docs(10), spectrum(&levels, 12)), |_, _| {
            (clustered(cluster.clone()), passages(group.clone()))
        })
        .unwrap();
        let sizes: Vec<u32> = plan.config.design.spectrum.iter().map(Block::size).collect();
        assert_eq!(sizes, [4, 4, 4]);
        write(&run, &plan).unwrap();
        extend(&run, 20).unwrap();
        let config = RunConfig::from_file(&run.config()).unwrap();
        let blocks: Vec<Vec<[u32; 2]>> = config.design.spectrum.iter().map(|b| b.models.clone()).collect();
        assert_eq!(blocks, [vec![[0, 4], [12, 15]], vec![[4, 8], [15, 18]], vec![[8, 12], [18, 20]]]);
        let grown = Membership::read(&run.membership()).unwrap();
        for model in 0..12 {
            assert_eq!(grown.docs_of(model), plan.membership.docs_of(model), "model {model} unchanged");
        }
        let units: UnitTable = schema::read(&run.units()).unwrap();
        assert_balanced(&config.design, &units, &grown, &plan.corpus.holdout);
        // One more model goes to the only block below its share.
        extend(&run, 21).unwrap();
        let config = RunConfig::from_file(&run.config()).unwrap();
        assert_eq!(config.design.spectrum[2].models, [[8, 12], [18, 20], [20, 21]]);
        assert_balanced(&config.design, &units, &Membership::read(&run.membership()).unwrap(), &plan.corpus.holdout);
    }

    #[test]
    fn a_block_too_small_for_keep_is_refused() {
        let levels = [Unit::Document, Unit::Cluster, Unit::Passage];
        let err = build_scored(request(docs(4), spectrum(&levels, 5)), no_clusters).unwrap_err().to_string();
        assert_eq!(
            err,
            "design.models: too few models for the spectrum: the block of level passage gets 1 of the 5 models, \
             and with keep 0.5 a block needs 2 or more; plan 6 models or more for 3 levels"
        );
    }

    #[test]
    fn canaries_get_planted_copy_counts_evenly() {
        let mut d = design(4, 0.5);
        d.copies = vec![1, 2, 4];
        d.canaries = 6;
        let plan = build_scored(request(docs(5), d), no_clusters).unwrap();
        assert_eq!(plan.corpus.doc_id.len(), 11);
        let mut planted: Vec<u16> = plan.corpus.copies[5..].to_vec();
        planted.sort();
        assert_eq!(planted, [1, 1, 2, 2, 4, 4]);
        assert!(plan.corpus.copies[..5].iter().all(|&c| c == 1));
        assert!(plan.corpus.source[5..].iter().all(|s| s.as_deref() == Some(canaries::CANARY_SOURCE)));
    }

    #[test]
    fn canaries_named_by_id_are_never_held_out() {
        let mut d = design(4, 0.5);
        d.holdout = 0.9;
        d.copies = vec![1];
        d.canary_ids = (0..10).map(|i| format!("d{i}")).collect();
        let plan = build_scored(request(docs(20), d), no_clusters).unwrap();
        assert!(plan.corpus.holdout[..10].iter().all(|&h| !h), "{:?}", plan.corpus.holdout);
        assert!(plan.corpus.holdout[10..].iter().filter(|&&h| h).count() >= 5, "{:?}", plan.corpus.holdout);
        let in_pairs =
            (0..4).map(|m| plan.membership.docs_of(m).iter().filter(|&&doc| doc < 10).count()).sum::<usize>();
        assert_eq!(in_pairs, 10 * 2);
    }

    #[test]
    fn holdout_ids_are_held_out_and_must_exist() {
        let mut d = design(4, 0.5);
        d.holdout_ids = vec!["d3".into(), "d5".into()];
        let plan = build_scored(request(docs(8), d.clone()), no_clusters).unwrap();
        let held: Vec<usize> = (0..8).filter(|&i| plan.corpus.holdout[i]).collect();
        assert_eq!(held, [3, 5]);
        assert!((0..4).all(|m| !plan.membership.contains(m, 3) && !plan.membership.contains(m, 5)));
        d.holdout_ids.push("d99".into());
        let err = build_scored(request(docs(8), d), no_clusters).unwrap_err().to_string();
        assert!(err.contains("design.holdout_ids: no document has id \"d99\""), "{err}");
    }

    #[test]
    fn duplicates_are_scored_on_the_text_the_models_see() {
        let mut documents = docs(3);
        documents[0].text = format!("{}é tail", "a".repeat(126));
        documents[1].text = "b".repeat(300);
        let mut request = request(documents, design(4, 0.5));
        request.hyperparameters.model.max_tokens_per_doc = Some(200);
        let mut seen = Vec::new();
        let plan = build_scored(request, |ids, texts| {
            seen = texts.iter().map(|t| t.to_string()).collect();
            no_clusters(ids, texts)
        })
        .unwrap();
        // Whole documents beyond the context; the cap of 200 byte tokens cuts the second.
        assert_eq!(seen, [format!("{}é tail", "a".repeat(126)), "b".repeat(200), "document number 2".to_string()]);
        assert_eq!(plan.corpus.tokens, [133, 200, 17]);
        assert_eq!((plan.config.tokens.capped, plan.config.tokens.corpus), (1, 350));
        let mut capped_mid_character = docs(1);
        capped_mid_character[0].text = format!("{}é", "a".repeat(199));
        let mut request = super::tests::request(capped_mid_character, design(4, 0.5));
        request.hyperparameters.model.max_tokens_per_doc = Some(200);
        build_scored(request, |ids, texts| {
            seen = texts.iter().map(|t| t.to_string()).collect();
            no_clusters(ids, texts)
        })
        .unwrap();
        assert_eq!(seen, [format!("{}\u{fffd}", "a".repeat(199))]);
    }

    #[test]
    fn a_trained_tokenizer_and_the_background_are_part_of_the_plan() {
        let dir = tempfile::tempdir().unwrap();
        let background = |text: &str| Background {
            path: "background.jsonl".into(),
            documents: (0..30)
                .map(|i| Document { id: format!("b{i}"), text: format!("{text} {i}"), source: None })
                .collect(),
        };
        let plan_with = |text: &str| {
            let mut request = request(docs(20), design(4, 0.5));
            request.hyperparameters.model.tokenizer = crate::config::TokenizerChoice::Bpe { vocab_size: 300 };
            request.background = Some(background(text));
            build_scored(request, no_clusters).unwrap()
        };
        let plan = plan_with("the background sentence number");
        assert_eq!(plan.tokenizer_json, plan_with("the background sentence number").tokenizer_json);
        let background_config = plan.config.background.clone().unwrap();
        assert_eq!((background_config.path.as_str(), background_config.documents), ("background.jsonl", 30));
        assert!(plan.config.tokens.vocab > 256 && plan.config.tokens.background > 0, "{:?}", plan.config.tokens);
        // The background is not in the membership table: it holds the corpus's 20 documents.
        assert_eq!(plan.membership.documents(), 20);
        assert_eq!((0..4).map(|m| plan.membership.docs_of(m).len()).sum::<usize>(), 20 * 2);

        let run = RunDir::new(dir.path().join("run"));
        write(&run, &plan).unwrap();
        let json = std::fs::read_to_string(run.tokenizer()).unwrap();
        assert_eq!(Some(&corpus::sha256_hex(json.as_bytes())), plan.config.tokens.tokenizer_sha256.as_ref());
        let stored: BackgroundTable = schema::read(&run.background()).unwrap();
        assert_eq!(Some(&stored), plan.background.as_ref());
        let other = plan_with("another background altogether");
        let err = write(&run, &other).unwrap_err().to_string();
        assert!(err.contains("background.sha256"), "{err}");
    }

    #[test]
    fn copy_sweep_settings_must_go_together() {
        let mut d = design(4, 0.5);
        d.copies = vec![1, 2];
        let err = build_scored(request(docs(3), d.clone()), no_clusters).unwrap_err().to_string();
        assert!(err.contains("design.copies: copy counts need canaries"), "{err}");
        d.canary_ids = vec!["nope".into()];
        let err = build_scored(request(docs(3), d), no_clusters).unwrap_err().to_string();
        assert!(err.contains("no document has id \"nope\""), "{err}");
    }

    #[test]
    fn extending_keeps_old_rows_and_jobs_and_balances_every_document() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path().join("run"));
        let mut d = design(10, 0.3);
        d.holdout = 0.2;
        let plan = build_scored(request(docs(20), d), no_clusters).unwrap();
        write(&run, &plan).unwrap();
        let extension = extend(&run, 17).unwrap();
        assert_eq!(extension, Extension { old_models: 10, models: 17, new_jobs: 3..5 });
        let grown = Membership::read(&run.membership()).unwrap();
        for model in 0..10 {
            assert_eq!(grown.docs_of(model), plan.membership.docs_of(model));
        }
        for doc in 0..20 {
            let n_in = (0..17).filter(|&m| grown.contains(m, doc)).count();
            assert_eq!(n_in, if plan.corpus.holdout[doc as usize] { 0 } else { 5 }, "round(0.3 × 17) for doc {doc}");
        }
        let jobs: JobTable = schema::read(&run.jobs()).unwrap();
        assert_eq!(jobs.job, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 3, 3, 4, 4, 4]);
        assert_eq!(jobs.model, (0..17).collect::<Vec<_>>());
        assert_eq!(RunConfig::from_file(&run.config()).unwrap().design.models, 17);
        let err = extend(&run, 17).unwrap_err().to_string();
        assert!(err.contains("design.models: 17 must be more than the run's 17 models"), "{err}");
    }

    #[test]
    fn writing_again_is_a_no_op_and_a_changed_config_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path().join("run"));
        let plan = build_scored(request(docs(8), design(4, 0.5)), no_clusters).unwrap();
        assert_eq!(write(&run, &plan).unwrap(), Written::Created);
        assert_eq!(write(&run, &plan).unwrap(), Written::Unchanged);
        let corpus: CorpusTable = schema::read(&run.corpus()).unwrap();
        assert_eq!(corpus, plan.corpus);
        let other = build_scored(request(docs(8), design(6, 0.5)), no_clusters).unwrap();
        let err = write(&run, &other).unwrap_err().to_string();
        assert!(err.contains("different configuration (design.models: 4 -> 6)"), "{err}");
        assert_eq!(RunConfig::from_file(&run.config()).unwrap(), plan.config);
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1);
    }

    #[test]
    fn the_design_settings_score_the_duplicates_and_are_checked_first() {
        let mut documents = docs(4);
        documents[2].text = "Document  NUMBER 0".into();
        let plan = build(request(documents.clone(), design(4, 0.5))).unwrap();
        assert_eq!(plan.duplicates.exact_dup_count, [1, 0, 1, 0]);
        assert_eq!(plan.duplicates.doc_id, ["d0", "d1", "d2", "d3"]);
        let mut d = design(4, 0.5);
        d.duplicates.threshold = 1.5;
        let err = build(request(documents, d)).unwrap_err().to_string();
        assert_eq!(err, "invalid setting: design.threshold: must be in (0, 1], got 1.5");
    }

    #[test]
    fn another_max_candidates_is_another_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path().join("run"));
        write(&run, &build(request(docs(8), design(4, 0.5))).unwrap()).unwrap();
        let mut d = design(4, 0.5);
        d.duplicates.max_candidates = 5;
        let err = write(&run, &build(request(docs(8), d)).unwrap()).unwrap_err().to_string();
        assert!(err.contains("different configuration (design.max_candidates: 1000 -> 5)"), "{err}");
    }
}
