//! `torch.save` files: the zip container (PyTorch 1.6+) and the legacy stream (pre-1.6).

use std::collections::BTreeMap;
use std::io::{Cursor, Read};

use super::pickle::{self, Node, Pickle, TensorRef};
use super::{WeightTensor, WeightsError};

/// Magic number that opens a legacy torch.save stream (pickled as a LONG1).
const LEGACY_MAGIC: u128 = 0x1950a86a20f9469cfc6c;
const LEGACY_PROTOCOL: i64 = 1001;

/// True when `bytes` start like a legacy torch.save stream.
pub fn is_legacy(bytes: &[u8]) -> bool {
    // PROTO 2, LONG1 of 10 bytes holding the magic.
    bytes.len() > 14
        && bytes[0] == 0x80
        && bytes[2] == 0x8a
        && bytes[3] == 10
        && u128::from_le_bytes({
            let mut b = [0u8; 16];
            b[..10].copy_from_slice(&bytes[4..14]);
            b
        }) == LEGACY_MAGIC
}

/// Reads a torch.save zip archive.
pub fn read_zip(bytes: &[u8]) -> Result<BTreeMap<String, WeightTensor>, WeightsError> {
    // A known archive offset of 0: zip's offset detection misreads valid torch.save archives
    // whose first central-directory entry happens to be as long as a zip64 record.
    let config = zip::read::Config {
        archive_offset: zip::read::ArchiveOffset::Known(0),
    };
    let mut archive = zip::ZipArchive::with_config(config, Cursor::new(bytes))
        .map_err(|e| WeightsError::Corrupt(format!("not a readable zip archive ({e})")))?;
    let names: Vec<String> = archive
        .file_names()
        .map(|n| n.map(|n| n.into_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| WeightsError::Corrupt(format!("unreadable zip entry name ({e})")))?;
    let pkl_name = names
        .iter()
        .find(|n| n.ends_with("/data.pkl") || *n == "data.pkl")
        .ok_or_else(|| {
            WeightsError::Corrupt("zip archive has no data.pkl: not a torch.save file".into())
        })?
        .clone();
    let root = pkl_name.trim_end_matches("data.pkl").to_owned();
    let read_entry = |archive: &mut zip::ZipArchive<Cursor<&[u8]>>, name: &str| {
        let mut f = archive
            .by_name(name)
            .map_err(|e| WeightsError::Corrupt(format!("cannot read `{name}` ({e})")))?;
        // The declared size bounds the allocation; a lying entry fails on read.
        let size = f.size();
        if size > bytes.len() as u64 * 1024 {
            return Err(WeightsError::Corrupt(format!(
                "`{name}` declares an impossible size"
            )));
        }
        let mut buf = Vec::with_capacity(size.min(1 << 30) as usize);
        f.read_to_end(&mut buf)
            .map_err(|e| WeightsError::Corrupt(format!("cannot read `{name}` ({e})")))?;
        Ok::<_, WeightsError>(buf)
    };
    let pkl = read_entry(&mut archive, &pkl_name)?;
    let pickle = pickle::parse(&pkl)?;
    let refs = state_dict_refs(&pickle)?;
    let mut out = BTreeMap::new();
    let mut storages: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut budget = element_budget(bytes.len());
    for (name, r) in refs {
        if !storages.contains_key(&r.storage_key) {
            let entry = format!("{root}data/{}", r.storage_key);
            let data = read_entry(&mut archive, &entry)?;
            storages.insert(r.storage_key.clone(), data);
        }
        let t = materialize(&name, &r, &storages[&r.storage_key], &mut budget)?;
        out.insert(name, t);
    }
    Ok(out)
}

/// Reads a legacy (pre-1.6) torch.save stream: five pickles, then the raw storages.
pub fn read_legacy(bytes: &[u8]) -> Result<BTreeMap<String, WeightTensor>, WeightsError> {
    let mut pos = 0;
    let mut next = |what: &str| -> Result<Pickle, WeightsError> {
        let p = pickle::parse(&bytes[pos..]).map_err(|e| match e {
            pickle::PickleError::Truncated(_) => {
                WeightsError::Truncated(format!("the file ends inside its {what}"))
            }
            other => other.into(),
        })?;
        pos += p.len;
        Ok(p)
    };
    next("magic number")?;
    let proto = next("protocol version")?;
    if proto.as_int(proto.root) != Some(LEGACY_PROTOCOL) {
        return Err(WeightsError::Corrupt(
            "unknown legacy torch.save protocol version".into(),
        ));
    }
    let sys_info = next("system info")?;
    check_little_endian(&sys_info)?;
    let object = next("state dict")?;
    let keys_pickle = next("storage list")?;
    let keys: Vec<String> = match keys_pickle.node(keys_pickle.root) {
        Node::List(l) => l
            .iter()
            .map(|&i| {
                keys_pickle
                    .as_str(i)
                    .map(str::to_owned)
                    .ok_or_else(|| WeightsError::Corrupt("storage key is not a string".into()))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(WeightsError::Corrupt("storage list is not a list".into())),
    };
    let refs = state_dict_refs(&object)?;
    // The storages follow in key order, each an i64 element count and its bytes. Their
    // element sizes come from the tensors that use them.
    let elem_size: BTreeMap<&str, usize> = object
        .nodes
        .iter()
        .filter_map(|n| match n {
            Node::Storage { key, dtype, .. } => Some((key.as_str(), dtype.size())),
            _ => None,
        })
        .collect();
    let mut storages: BTreeMap<String, &[u8]> = BTreeMap::new();
    for key in &keys {
        let count_bytes = bytes.get(pos..pos + 8).ok_or_else(|| {
            WeightsError::Truncated(format!("the file ends before storage `{key}`"))
        })?;
        let count = u64::from_le_bytes(count_bytes.try_into().unwrap());
        pos += 8;
        let size = *elem_size.get(key.as_str()).ok_or_else(|| {
            WeightsError::Corrupt(format!("storage `{key}` has no declared type"))
        })?;
        let n = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(size))
            .filter(|&n| n <= bytes.len() - pos)
            .ok_or_else(|| {
                WeightsError::Truncated(format!(
                    "storage `{key}` declares {count} elements but the file ends first"
                ))
            })?;
        storages.insert(key.clone(), &bytes[pos..pos + n]);
        pos += n;
    }
    let mut out = BTreeMap::new();
    let mut budget = element_budget(bytes.len());
    for (name, r) in refs {
        let data = storages.get(&r.storage_key).ok_or_else(|| {
            WeightsError::Corrupt(format!(
                "tensor `{name}` uses storage `{}`, which the file does not hold",
                r.storage_key
            ))
        })?;
        out.insert(name.clone(), materialize(&name, &r, data, &mut budget)?);
    }
    Ok(out)
}

fn check_little_endian(sys_info: &Pickle) -> Result<(), WeightsError> {
    if let Node::Dict(d) = sys_info.node(sys_info.root) {
        for &(k, v) in d {
            if sys_info.as_str(k) == Some("little_endian") && sys_info.as_int(v) == Some(0) {
                return Err(WeightsError::Unsupported(
                    "big-endian torch.save files are not supported".into(),
                ));
            }
        }
    }
    Ok(())
}

/// Keys a checkpoint may wrap its state dict under.
const WRAPPER_KEYS: &[&str] = &["state_dict", "model_state_dict", "model", "net", "params"];

/// Finds the state dict in a decoded pickle: the root dict, or one nested under a
/// conventional key. Non-tensor entries (`_metadata`, epochs, …) are ignored.
fn state_dict_refs(p: &Pickle) -> Result<Vec<(String, TensorRef)>, WeightsError> {
    let Node::Dict(root) = p.node(p.root) else {
        return Err(WeightsError::Unsupported(
            "the file holds no dictionary of tensors (save model.state_dict(), not the model)"
                .into(),
        ));
    };
    let tensors = |d: &[(usize, usize)]| -> Vec<(String, TensorRef)> {
        d.iter()
            .filter_map(|&(k, v)| match (p.as_str(k), p.node(v)) {
                (Some(name), Node::Tensor(t)) => Some((name.to_owned(), t.clone())),
                _ => None,
            })
            .collect()
    };
    let direct = tensors(root);
    if !direct.is_empty() {
        return Ok(direct);
    }
    for &(k, v) in root {
        if let (Some(key), Node::Dict(inner)) = (p.as_str(k), p.node(v))
            && WRAPPER_KEYS.contains(&key)
        {
            let nested = tensors(inner);
            if !nested.is_empty() {
                return Ok(nested);
            }
        }
    }
    Err(WeightsError::Unsupported(
        "the file's dictionary holds no tensors".into(),
    ))
}

/// Copies a (possibly strided) tensor out of its storage into row-major f32.
/// The most elements a view may have beyond those of its storage (4 MB of f32).
const MAX_REPEATED_VIEW: usize = 1 << 20;

/// How many elements the tensors of a file of `len` bytes may have in all: each element
/// takes at least one byte of the file, a few names may share one storage (tied weights),
/// and views repeating their storage get [`MAX_REPEATED_VIEW`] more.
fn element_budget(len: usize) -> usize {
    len.saturating_mul(4).saturating_add(MAX_REPEATED_VIEW)
}

/// Copies one tensor out of its storage, as f32 values in row-major order; `budget` is the
/// number of elements the file may still materialise.
fn materialize(
    name: &str,
    r: &TensorRef,
    storage: &[u8],
    budget: &mut usize,
) -> Result<WeightTensor, WeightsError> {
    let es = r.dtype.size();
    let storage_len = storage.len() / es;
    let numel = r
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| WeightsError::Corrupt(format!("tensor `{name}` has an impossible shape")))?;
    let out_of_bounds = || {
        WeightsError::Corrupt(format!(
            "tensor `{name}` reaches past the end of its storage (file truncated or corrupt)"
        ))
    };
    if numel == 0 {
        // Nothing to read, whatever the offset says.
        return Ok(WeightTensor {
            dtype: r.dtype,
            shape: r.shape.clone(),
            data: Vec::new(),
            strided: false,
        });
    }
    {
        // Highest element index the view touches must lie inside the storage.
        let last = r
            .shape
            .iter()
            .zip(&r.stride)
            .try_fold(r.offset, |a, (&d, &s)| {
                (d - 1).checked_mul(s).and_then(|x| a.checked_add(x))
            })
            .ok_or_else(out_of_bounds)?;
        if last >= storage_len {
            return Err(out_of_bounds());
        }
    }
    // A view with a zero stride repeats storage elements: it may claim far more elements
    // than the file holds. Allow what an expanded bias or mask needs, not an allocation
    // the file's size cannot justify.
    if numel > storage_len.max(MAX_REPEATED_VIEW) {
        return Err(WeightsError::Corrupt(format!(
            "tensor `{name}` is a view of {numel} elements over a storage of {storage_len}; \
             a view repeating its storage is read up to {MAX_REPEATED_VIEW} elements"
        )));
    }
    *budget = budget.checked_sub(numel).ok_or_else(|| {
        WeightsError::Corrupt(format!(
            "tensor `{name}` takes the file's tensors past what a file of this size can \
             hold: more views of the same storages than a real checkpoint has"
        ))
    })?;
    let mut data = Vec::with_capacity(numel);
    let contiguous = is_contiguous(&r.shape, &r.stride);
    if contiguous {
        let bytes = &storage[r.offset * es..(r.offset + numel) * es];
        data.extend(bytes.chunks_exact(es).map(|b| r.dtype.to_f32(b)));
    } else {
        let mut index = vec![0usize; r.shape.len()];
        for _ in 0..numel {
            let src = r.offset
                + index
                    .iter()
                    .zip(&r.stride)
                    .map(|(i, s)| i * s)
                    .sum::<usize>();
            data.push(r.dtype.to_f32(&storage[src * es..(src + 1) * es]));
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < r.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
    }
    Ok(WeightTensor {
        dtype: r.dtype,
        shape: r.shape.clone(),
        data,
        strided: !contiguous,
    })
}

fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1;
    for (&d, &s) in shape.iter().zip(stride).rev() {
        if d != 1 && s != expected {
            return false;
        }
        expected *= d;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::DType;

    #[test]
    fn contiguity() {
        assert!(is_contiguous(&[2, 3], &[3, 1]));
        assert!(!is_contiguous(&[2, 3], &[1, 2]));
        assert!(is_contiguous(&[1, 3], &[99, 1]));
    }

    #[test]
    fn strided_view_is_gathered_in_row_major_order() {
        // A 2x3 transpose view of a 3x2 storage [0..6].
        let storage: Vec<u8> = (0..6).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let r = TensorRef {
            storage_key: "0".into(),
            dtype: DType::F32,
            offset: 0,
            shape: vec![2, 3],
            stride: vec![1, 2],
        };
        let t = materialize("w", &r, &storage, &mut unlimited()).unwrap();
        assert_eq!(t.data, vec![0., 2., 4., 1., 3., 5.]);
        assert!(t.strided);
    }

    #[test]
    fn view_past_storage_end_is_refused() {
        let storage = vec![0u8; 16];
        let r = TensorRef {
            storage_key: "0".into(),
            dtype: DType::F32,
            offset: 2,
            shape: vec![3],
            stride: vec![1],
        };
        assert!(materialize("w", &r, &storage, &mut unlimited()).is_err());
    }

    fn unlimited() -> usize {
        usize::MAX
    }

    fn view(offset: usize, shape: &[usize], stride: &[usize]) -> TensorRef {
        TensorRef {
            storage_key: "0".into(),
            dtype: DType::F32,
            offset,
            shape: shape.to_vec(),
            stride: stride.to_vec(),
        }
    }

    #[test]
    fn an_empty_view_reads_nothing_whatever_its_offset() {
        let storage = vec![0u8; 16];
        for offset in [0, 4, 1 << 40, usize::MAX / 2] {
            let t = materialize("w", &view(offset, &[0, 3], &[3, 1]), &storage, &mut 10).unwrap();
            assert_eq!((t.shape, t.data.len()), (vec![0, 3], 0));
        }
    }

    #[test]
    fn a_zero_stride_view_may_not_claim_more_than_the_file_justifies() {
        let storage = vec![0u8; 4];
        // An expanded scalar of a thousand elements reads (a bias broadcast, say).
        let t = materialize("b", &view(0, &[1000], &[0]), &storage, &mut unlimited());
        assert_eq!(t.unwrap().data.len(), 1000);
        // 2^40 elements over one stored float is refused before any allocation.
        let e = materialize(
            "w",
            &view(0, &[1 << 20, 1 << 20], &[0, 0]),
            &storage,
            &mut unlimited(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("view of 1099511627776 elements"),
            "{e}"
        );
    }

    #[test]
    fn views_sharing_a_storage_stop_at_the_files_budget() {
        let storage = vec![0u8; 4096];
        let mut budget = element_budget(storage.len());
        let whole = view(0, &[1024], &[1]);
        let taken = (0..10_000)
            .take_while(|_| materialize("w", &whole, &storage, &mut budget).is_ok())
            .count();
        // 4 x 4096 + 2^20 elements: 1040 views of 1024 elements, then an error.
        assert_eq!(taken, element_budget(4096) / 1024);
    }
}
