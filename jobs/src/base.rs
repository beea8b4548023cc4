//! A base model's weights in and out of cfmem's parameter layout: loading
//! `model.safetensors` into one `[P]` vector a stack's models start from, and writing a
//! trained model as a base directory (`config.json`, `model.safetensors`,
//! `tokenizer.json`) that `transformers` loads as a `GPT2LMHeadModel`. What the directory
//! must hold, and how names and shapes map, is [`subsets::base`]'s.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use tch::{Device, Kind, Tensor};

use subsets::base::{Base, BaseDir, Gpt2Config, TensorSpec, check_tensors, stored_name, tensor_specs};
use subsets::config::{EmbeddingLayout, ModelConfig, Precision};
use subsets::{atomic, corpus};

use crate::model::Architecture;
use crate::train::{DocEval, Stack};
use crate::{Error, Result};

/// A base read and checked, with its weights loaded: what a stack's models start from.
pub struct LoadedBase {
    pub base: Base,
    /// `[P]`, fp32 on the CPU.
    pub weights: Tensor,
}

impl LoadedBase {
    /// Reads the base in `dir` and loads its weights.
    pub fn load(dir: &Path) -> Result<LoadedBase> {
        let (base, bytes) = Base::read_with_weights(dir)?;
        let weights = weights_from_bytes(&base.dir.weights(), &bytes, &base.model, base.layout)?;
        Ok(LoadedBase { base, weights })
    }
}

impl LoadedBase {
    /// The base's teacher-forced evaluation of `documents` (token ids), `batch_size`
    /// windows a forward, on `device`.
    pub fn evaluate(&self, documents: &[&[u32]], batch_size: usize, device: Device) -> Result<Vec<DocEval>> {
        let architecture = Architecture::new(&self.base.model, self.base.layout);
        let stack = Stack::from_rows(architecture, std::slice::from_ref(&self.weights), Precision::Fp32, device)?;
        Ok(stack.evaluate(documents, batch_size)?.remove(0))
    }
}

/// The weights of the base in `dir`, `[P]` fp32 on the CPU in the parameter layout of
/// `model` over `layout` (the architecture the base describes). A `model.safetensors`
/// whose sha256 is not `expected_sha256` (the base changed since the run was planned) is
/// refused.
pub fn load_weights(dir: &Path, model: &ModelConfig, layout: EmbeddingLayout, expected_sha256: &str) -> Result<Tensor> {
    let path = BaseDir::new(dir).weights();
    let bytes = std::fs::read(&path).map_err(subsets::Error::io(&path))?;
    let found = corpus::sha256_hex(&bytes);
    if found != expected_sha256 {
        return Err(Error::Plan {
            path,
            message: format!(
                "sha256 {found} is not the {expected_sha256} run.toml recorded: the base changed after planning; \
                 plan a new run from it"
            ),
        });
    }
    weights_from_bytes(&path, &bytes, model, layout)
}

/// The weights in `bytes` (of the file `path`), checked against `model` over `layout`.
fn weights_from_bytes(path: &Path, bytes: &[u8], model: &ModelConfig, layout: EmbeddingLayout) -> Result<Tensor> {
    let specs = tensor_specs(model, layout.rows);
    check_tensors(path, bytes, &specs)?;
    let path = path.to_path_buf();
    let file =
        SafeTensors::deserialize(bytes).map_err(|e| Error::Plan { path: path.clone(), message: format!("{e:?}") })?;
    let names = file.names();
    let parts = specs
        .iter()
        .map(|spec| {
            let name = stored_name(spec, names.iter().map(|n| n.as_str())).expect("check_tensors found every tensor");
            let view =
                file.tensor(name).map_err(|e| Error::Plan { path: path.clone(), message: format!("{name}: {e:?}") })?;
            let kind = match view.dtype() {
                Dtype::F32 => Kind::Float,
                Dtype::F16 => Kind::Half,
                Dtype::BF16 => Kind::BFloat16,
                other => unreachable!("check_tensors refused {other:?}"),
            };
            let shape: Vec<i64> = view.shape().iter().map(|&n| n as i64).collect();
            let tensor = Tensor::f_from_data_size(view.data(), &shape, kind)?.to_kind(Kind::Float);
            let tensor = if spec.transposed { tensor.transpose(0, 1) } else { tensor };
            Ok(tensor.contiguous().view([-1]))
        })
        .collect::<Result<Vec<_>>>()?;
    let weights = Tensor::cat(&parts, 0);
    let architecture = Architecture::new(model, layout);
    assert_eq!(weights.size()[0], architecture.parameters(), "the specs cover every parameter");
    Ok(weights)
}

/// Writes the model of `weights` (`[P]` in the layout of `architecture`, which is `model`
/// over `layout`) as a base directory `dir`, with `tokenizer_json` as its tokenizer. Each
/// file is written whole or not at all.
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
    let specs = tensor_specs(model, layout.rows);
    let weights = weights.to_device(Device::Cpu).to_kind(Kind::Float).detach();
    let parts = weights.split_with_sizes(architecture.parameter_sizes(), 0);
    let tensors: Vec<StoredTensor> =
        specs.iter().zip(parts).map(|(spec, part)| stored_parameter(spec, &part)).collect::<Result<_>>()?;
    // transformers reads a safetensors file only if its metadata says which framework wrote it.
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    atomic::write_bytes(&base.weights(), &serialize(&tensors, metadata)?)?;
    atomic::write_bytes(&base.tokenizer(), tokenizer_json.as_bytes())?;
    atomic::write_bytes(&base.config(), Gpt2Config::of(model, layout).to_json().as_bytes())?;
    Ok(())
}

/// One fp32 tensor as a safetensors file stores it.
pub(crate) struct StoredTensor {
    name: String,
    shape: Vec<usize>,
    /// Little-endian fp32 values.
    bytes: Vec<u8>,
}

impl StoredTensor {
    /// `tensor`, on any device, stored as `name`.
    pub(crate) fn new(name: impl Into<String>, tensor: &Tensor) -> Result<StoredTensor> {
        let values = Vec::<f32>::try_from(tensor.detach().to_device(Device::Cpu).to_kind(Kind::Float).view([-1]))?;
        Ok(StoredTensor {
            name: name.into(),
            shape: tensor.size().iter().map(|&n| n as usize).collect(),
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        })
    }
}

/// A safetensors file of `tensors` with `metadata`.
pub(crate) fn serialize(tensors: &[StoredTensor], metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|t| {
            let view = safetensors::tensor::TensorView::new(Dtype::F32, t.shape.clone(), &t.bytes)
                .map_err(|e| Error::Device(format!("{}: {e:?}", t.name)))?;
            Ok((t.name.clone(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::tensor::serialize(views, &Some(metadata))
        .map_err(|e| Error::Device(format!("serializing tensors: {e:?}")))
}

/// A parameter (`part` of the flat weights) under its name and in its shape in a base.
fn stored_parameter(spec: &TensorSpec, part: &Tensor) -> Result<StoredTensor> {
    let shape: Vec<i64> = spec.shape.iter().map(|&n| n as i64).collect();
    let tensor = if spec.transposed {
        part.view([shape[1], shape[0]]).transpose(0, 1).contiguous()
    } else {
        part.view(shape.as_slice())
    };
    // As GPT2LMHeadModel names its tensors: the head outside `transformer.`.
    let name = if spec.name.starts_with("lm_head") { spec.name.clone() } else { format!("transformer.{}", spec.name) };
    StoredTensor::new(name, &tensor)
}

#[cfg(test)]
mod tests {
    use subsets::config::Activation;
    use subsets::tokenizer::Tokenizer;

    use super::*;

    #[test]
    fn a_written_base_loads_back_as_the_same_weights_tied_or_not() {
        for tied_head in [false, true] {
            let model = ModelConfig {
                n_layer: 2,
                n_head: 2,
                d_model: 8,
                context: 6,
                tied_head,
                activation: Activation::GeluTanh,
                ..Default::default()
            };
            let layout = EmbeddingLayout::after_vocab(256);
            let weights = Architecture::new(&model, layout).initial_weights(3);
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), &model, layout, &weights, &Tokenizer::Bytes.file_json()).unwrap();
            let base = subsets::base::Base::read(dir.path()).unwrap();
            assert_eq!(base.model.tied_head, tied_head);
            let loaded = load_weights(dir.path(), &base.model, base.layout, &base.weights_sha256).unwrap();
            // The base's layout keeps the rows but makes PAD its BOS: the weights are the same.
            assert_eq!(loaded, weights);
            let err = load_weights(dir.path(), &base.model, base.layout, "00").unwrap_err().to_string();
            assert!(err.contains("the base changed after planning"), "{err}");
        }
    }
}
