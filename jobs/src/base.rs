//! A base model's weights in and out of cfmem's parameter layout: loading a base
//! directory's weights into one `[P]` vector a stack's models start from, writing a model
//! as a base directory (`config.json`, `model.safetensors`, `tokenizer.json`) that
//! `transformers` loads as its family's CausalLM class, and exporting a LoRA run's model
//! with its adapters merged. What the directory must hold, and how names and shapes map,
//! is [`subsets::base`]'s and [`subsets::architecture`]'s.

use std::collections::HashMap;
use std::path::Path;

use tch::{Device, Kind, Tensor};

use subsets::architecture::{Architecture, TensorSpec};
use subsets::atomic;
use subsets::base::{Base, BaseDir, WeightFiles, config_json, find_tensor};
use subsets::config::{EmbeddingLayout, Hyperparameters, ModelConfig, Precision, RunConfig};
use subsets::corpus::Document;
use subsets::layout::RunDir;
use subsets::schema::EvaluationTable;
use subsets::tokenizer::Tokenizer;

use crate::lora::Lora;
use crate::stored::{StoredTensor, serialize, to_tensor};
use crate::train::{DocEval, Stack};
use crate::{Error, Result};

/// A base read and checked, with its weights loaded: what a stack's models start from.
pub struct LoadedBase {
    pub base: Base,
    /// `[P]`, fp32 on the CPU.
    pub weights: Tensor,
}

impl LoadedBase {
    /// Reads the base in `dir` and loads its weights (which reading it checked).
    pub fn load(dir: &Path) -> Result<LoadedBase> {
        let (base, files) = Base::read_with_weights(dir)?;
        LoadedBase::from_files(base, &files)
    }

    /// The base that `hyperparameters` start from, if any ([`Base::resolve`], with the
    /// `config` file that named it), loaded.
    pub fn resolve(hyperparameters: &mut Hyperparameters, config: Option<&Path>) -> Result<Option<LoadedBase>> {
        let resolved = Base::resolve(hyperparameters, config)?;
        resolved.map(|(base, files)| LoadedBase::from_files(base, &files)).transpose()
    }

    /// `base` with its weights loaded from `files`, read and checked with it.
    pub fn from_files(base: Base, files: &WeightFiles) -> Result<LoadedBase> {
        let weights = weights_from_files(files, &Architecture::new(&base.model, base.layout))?;
        Ok(LoadedBase { base, weights })
    }

    /// The base's teacher-forced evaluation of `documents` (token ids), `batch_size`
    /// windows a forward, on `device`.
    pub fn evaluate(&self, documents: &[&[u32]], batch_size: usize, device: Device) -> Result<Vec<DocEval>> {
        let architecture = Architecture::new(&self.base.model, self.base.layout);
        let stack = Stack::from_rows(architecture, std::slice::from_ref(&self.weights), Precision::Fp32, device)?;
        Ok(stack.evaluate(documents, batch_size)?.remove(0))
    }

    /// The base's evaluation of `documents` (`cfmem evaluate`), tokenized by the base, as
    /// the table of one row per document.
    pub fn evaluation_table(
        &self,
        documents: &[Document],
        batch_size: usize,
        device: Device,
    ) -> Result<EvaluationTable> {
        let ids = self.base.tokenizer.encode_documents(documents, None)?;
        let slices: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let evals = self.evaluate(&slices, batch_size, device)?;
        let doc_ids: Vec<String> = documents.iter().map(|d| d.id.clone()).collect();
        Ok(crate::train::evaluation_table(&doc_ids, &evals))
    }

    /// Each of `texts`' mean final-layer hidden state under the base in `dir`, tokenized by
    /// the base, 16 windows a forward on `device`: what `topic:K` levels group documents by
    /// in a run from a base.
    pub fn embed_texts(dir: &Path, texts: &[&str], device: Device) -> Result<Vec<Vec<f32>>> {
        let loaded = LoadedBase::load(dir)?;
        let ids = loaded.base.tokenizer.encode_all(texts, None)?;
        let slices: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        loaded.mean_hidden_states(&slices, 16, device)
    }

    /// Each document's (token ids) mean final-layer hidden state under the base, `batch_size`
    /// windows a forward, on `device`: what `topic:K` levels group documents by in a run
    /// from a base.
    pub fn mean_hidden_states(&self, documents: &[&[u32]], batch_size: usize, device: Device) -> Result<Vec<Vec<f32>>> {
        let architecture = Architecture::new(&self.base.model, self.base.layout);
        let stack = Stack::from_rows(architecture, std::slice::from_ref(&self.weights), Precision::Fp32, device)?;
        stack.mean_hidden_states(documents, batch_size)
    }
}

/// The weights of the base in `dir`, `[P]` fp32 on the CPU in the parameter layout of
/// `model` over `layout` (the architecture the base describes). Weights whose sha256 is
/// not `expected_sha256` (the base changed since the run was planned) are refused.
pub fn load_weights(dir: &Path, model: &ModelConfig, layout: EmbeddingLayout, expected_sha256: &str) -> Result<Tensor> {
    let files = WeightFiles::read(&BaseDir::new(dir))?;
    if files.sha256 != expected_sha256 {
        return Err(Error::Plan {
            path: files.path,
            message: format!(
                "sha256 {} is not the {expected_sha256} run.toml recorded: the base changed after planning; \
                 plan a new run from it",
                files.sha256
            ),
        });
    }
    let architecture = Architecture::new(model, layout);
    subsets::base::check_tensors(&files, &architecture)?;
    weights_from_files(&files, &architecture)
}

/// The weights in `files`, checked against `architecture` ([`subsets::base::check_tensors`]),
/// in its parameter layout.
fn weights_from_files(files: &WeightFiles, architecture: &Architecture) -> Result<Tensor> {
    let parsed = files.parse()?;
    let parts = architecture
        .tensors
        .iter()
        .map(|spec| {
            let ((path, file), name) = find_tensor(spec, &parsed).expect("check_tensors found every tensor");
            let view = file
                .tensor(&name)
                .map_err(|e| Error::Plan { path: path.to_path_buf(), message: format!("{name}: {e:?}") })?;
            let tensor = to_tensor(&view)?.expect("check_tensors refused other types");
            let tensor = if spec.transposed { tensor.transpose(0, 1) } else { tensor };
            Ok(tensor.contiguous().view([-1]))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 0))
}

/// Writes the model of `weights` (`[P]` in the layout of `model` over `layout`) as a base
/// directory `dir`, with `tokenizer_json` as its tokenizer. Each file is written whole or
/// not at all.
pub fn write(
    dir: &Path,
    model: &ModelConfig,
    layout: EmbeddingLayout,
    weights: &Tensor,
    tokenizer_json: &str,
) -> Result<()> {
    let base = BaseDir::new(dir);
    std::fs::create_dir_all(dir).map_err(subsets::Error::io(dir))?;
    let architecture = Architecture::new(model, layout);
    let weights = weights.to_device(Device::Cpu).to_kind(Kind::Float).detach();
    let parts = weights.split_with_sizes(architecture.parameter_sizes(), 0);
    let tensors: Vec<StoredTensor> = architecture
        .tensors
        .iter()
        .zip(parts)
        .map(|(spec, part)| stored_parameter(spec, &part))
        .collect::<Result<_>>()?;
    // transformers reads a safetensors file only if its metadata says which framework wrote it.
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    atomic::write_bytes(&base.weights(), &serialize(&tensors, metadata)?)?;
    atomic::write_bytes(&base.tokenizer(), tokenizer_json.as_bytes())?;
    atomic::write_bytes(&base.config(), config_json(model, layout).as_bytes())?;
    Ok(())
}

/// A parameter (`part` of the flat weights) under its name and in its shape in a base.
fn stored_parameter(spec: &TensorSpec, part: &Tensor) -> Result<StoredTensor> {
    let tensor = part.view(spec.shape.as_slice());
    let tensor = if spec.transposed { tensor.transpose(0, 1).contiguous() } else { tensor };
    StoredTensor::new(spec.name.clone(), &tensor)
}

/// Writes model `model` of the LoRA run `run` (planned with `config`) as a base directory
/// `out` in its family's Hugging Face layout: its adapters, as its job kept them, merged
/// into the run's base, with the run's tokenizer. Returns the merged weights `[P]`.
pub fn export(run: &RunDir, config: &RunConfig, model: u32, out: &Path) -> Result<Tensor> {
    let architecture = Architecture::new(&config.model, config.tokens.layout());
    let (Some(lora), Some(base_dir), Some(planned)) =
        (Lora::of(&architecture, &config.train)?, config.train.base(), &config.base)
    else {
        return Err(Error::Plan {
            path: run.config(),
            message: "train.adapter is \"full\": cfmem keeps no model's full weights, only a LoRA model's adapters \
                      (train.adapter = \"lora\"), which export merges into its base"
                .into(),
        });
    };
    if model >= config.design.models {
        return Err(Error::Plan {
            path: run.config(),
            message: format!("the run has models 0 to {}; there is no model {model}", config.design.models - 1),
        });
    }
    let dir = run.adapters(model);
    if !dir.join("adapter_model.safetensors").exists() {
        return Err(Error::Plan {
            path: dir,
            message: format!(
                "model {model} has no adapters yet: its job has not completed (cfmem status {0}, cfmem run {0})",
                run.root().display()
            ),
        });
    }
    let adapters = lora.read_peft(&dir)?;
    let base = load_weights(base_dir, &config.model, config.tokens.layout(), &planned.weights_sha256)?;
    let merged = lora.merge(&architecture, &base, &adapters);
    let tokenizer = Tokenizer::for_run(run, config)?;
    write(out, &config.model, config.tokens.layout(), &merged, &tokenizer.file_json())?;
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use subsets::config::Activation;
    use subsets::family::Family;

    use super::*;
    use crate::model::Compute;

    #[test]
    fn a_written_base_loads_back_as_the_same_weights_in_every_family_tied_or_not() {
        for family in Family::ALL {
            for tied_head in [false, true] {
                let model = ModelConfig {
                    architecture: family,
                    n_layer: 2,
                    n_head: 2,
                    d_model: 8,
                    context: 6,
                    tied_head,
                    activation: Activation::GeluTanh,
                    rotary_pct: (family == Family::GptNeox).then_some(0.5),
                    ..Default::default()
                };
                let layout = EmbeddingLayout::after_vocab(256);
                let weights = Architecture::new(&model, layout).initial_weights(3);
                let dir = tempfile::tempdir().unwrap();
                write(dir.path(), &model, layout, &weights, &Tokenizer::Bytes.file_json()).unwrap();
                let base = Base::read(dir.path()).unwrap();
                assert_eq!((base.model.architecture, base.model.tied_head), (family, tied_head));
                let loaded = load_weights(dir.path(), &base.model, base.layout, &base.weights_sha256).unwrap();
                // The base's layout keeps the rows but makes PAD its BOS: the weights are the same.
                assert_eq!(loaded, weights, "{family}");
                let err = load_weights(dir.path(), &base.model, base.layout, "00").unwrap_err().to_string();
                assert!(err.contains("the base changed after planning"), "{err}");
            }
        }
    }
}
