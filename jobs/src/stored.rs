//! Tensors in and out of safetensors files: fp32 tensors stored under their names, and a
//! stored tensor of any floating-point type read back as an fp32 libtorch tensor. Which
//! tensors a file holds, and what they mean, is the caller's.

use std::collections::HashMap;

use safetensors::Dtype;
use safetensors::tensor::TensorView;
use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// One fp32 tensor as a safetensors file stores it.
pub struct StoredTensor {
    name: String,
    shape: Vec<usize>,
    /// Little-endian fp32 values.
    bytes: Vec<u8>,
}

impl StoredTensor {
    /// `tensor`, on any device, stored as `name`.
    pub fn new(name: impl Into<String>, tensor: &Tensor) -> Result<StoredTensor> {
        let values = Vec::<f32>::try_from(tensor.detach().to_device(Device::Cpu).to_kind(Kind::Float).view([-1]))?;
        Ok(StoredTensor {
            name: name.into(),
            shape: tensor.size().iter().map(|&n| n as usize).collect(),
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        })
    }
}

/// A safetensors file of `tensors` with `metadata`.
pub fn serialize(tensors: &[StoredTensor], metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|t| {
            let view = TensorView::new(Dtype::F32, t.shape.clone(), &t.bytes)
                .map_err(|e| Error::Serialize { what: format!("tensor {}", t.name), message: e.to_string() })?;
            Ok((t.name.clone(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::tensor::serialize(views, &Some(metadata))
        .map_err(|e| Error::Serialize { what: "safetensors".into(), message: e.to_string() })
}

/// A stored tensor (F32, F16 or BF16) as an fp32 tensor of its stored shape, on the CPU;
/// None for another type.
pub fn to_tensor(view: &TensorView<'_>) -> Result<Option<Tensor>> {
    let kind = match view.dtype() {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        _ => return Ok(None),
    };
    let shape: Vec<i64> = view.shape().iter().map(|&n| n as i64).collect();
    Ok(Some(Tensor::f_from_data_size(view.data(), &shape, kind)?.to_kind(Kind::Float)))
}
