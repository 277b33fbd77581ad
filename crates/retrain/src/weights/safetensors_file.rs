//! safetensors: an 8-byte header length, a JSON header, then raw little-endian data.

use std::collections::BTreeMap;

use safetensors::{Dtype, SafeTensors};

use super::{DType, WeightTensor, WeightsError};

/// A header length that fits the file and a JSON object after it.
pub fn looks_like(bytes: &[u8]) -> bool {
    if bytes.len() < 10 {
        return false;
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    n >= 2 && n <= (bytes.len() - 8) as u64 && bytes[8] == b'{'
}

pub fn read(bytes: &[u8]) -> Result<BTreeMap<String, WeightTensor>, WeightsError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| match e {
        safetensors::SafeTensorError::MetadataIncompleteBuffer
        | safetensors::SafeTensorError::InvalidHeaderLength => {
            WeightsError::Truncated(format!("{e}"))
        }
        other => WeightsError::Corrupt(format!("{other}")),
    })?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let dtype = match view.dtype() {
            Dtype::F32 => DType::F32,
            Dtype::F64 => DType::F64,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            Dtype::I64 => DType::I64,
            Dtype::I32 => DType::I32,
            Dtype::I16 => DType::I16,
            Dtype::I8 => DType::I8,
            Dtype::U8 => DType::U8,
            Dtype::BOOL => DType::Bool,
            other => {
                return Err(WeightsError::Unsupported(format!(
                    "tensor `{name}` has dtype {other:?}"
                )));
            }
        };
        let es = dtype.size();
        let data = view
            .data()
            .chunks_exact(es)
            .map(|b| dtype.to_f32(b))
            .collect();
        out.insert(
            name,
            WeightTensor {
                dtype,
                shape: view.shape().to_vec(),
                data,
                strided: false,
            },
        );
    }
    Ok(out)
}

/// Serialises named f32 tensors (row-major) to safetensors bytes, with string metadata.
pub fn write(
    tensors: &[(String, Vec<usize>, &[f32])],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>, WeightsError> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            let bytes: &[u8] = bytemuck_f32(data);
            safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| WeightsError::Corrupt(format!("{e}")))
        })
        .collect::<Result<_, _>>()?;
    safetensors::serialize(views, metadata).map_err(|e| WeightsError::Corrupt(format!("{e}")))
}

/// Views f32s as little-endian bytes (every supported target is little-endian).
fn bytemuck_f32(data: &[f32]) -> &[u8] {
    #[cfg(target_endian = "big")]
    compile_error!("retrain writes little-endian files and needs a little-endian target");
    // SAFETY: f32 has no padding and any byte pattern is a valid u8.
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data)) }
}
