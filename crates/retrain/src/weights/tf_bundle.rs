//! TensorFlow 2 checkpoints and SavedModel `variables/`: a "tensor bundle".
//!
//! `<prefix>.index` is a LevelDB-style table (footer with the magic 0xdb4775248b80fb57;
//! blocks of prefix-compressed entries, each block followed by a compression byte — 0 none,
//! 1 snappy — and a masked CRC32C). The empty key holds a `BundleHeaderProto` (number of
//! data shards), every other key a `BundleEntryProto` (dtype, shape, shard, offset, size,
//! masked CRC32C of the bytes). The values live in `<prefix>.data-0000S-of-0000N`.
//!
//! Keys are object-graph paths (`model/_operations/1/_kernel/.ATTRIBUTES/VARIABLE_VALUE`);
//! the `_CHECKPOINTABLE_OBJECT_GRAPH` entry (a serialized `TrackableObjectGraph`) gives each
//! variable's own name (`Conv1/kernel`), which is the Keras layer and weight name. Variables
//! are then converted to PyTorch's conventions exactly as Keras HDF5 files are.
//!
//! Everything read is checked: block and tensor checksums, offsets and sizes against the
//! files' lengths, and a snappy block's declared length before it is unpacked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;

use super::keras::{KerasWeight, to_pytorch_conventions};
use super::{DType, WeightTensor, WeightsError};

const TABLE_MAGIC: u64 = 0xdb47_7524_8b80_fb57;
const FOOTER_LEN: usize = 48;
const OBJECT_GRAPH_KEY: &[u8] = b"_CHECKPOINTABLE_OBJECT_GRAPH";

#[derive(Clone, PartialEq, Message)]
struct BundleHeaderProto {
    #[prost(int32, tag = "1")]
    num_shards: i32,
    /// 0 little-endian, 1 big-endian.
    #[prost(int32, tag = "2")]
    endianness: i32,
}

#[derive(Clone, PartialEq, Message)]
struct BundleEntryProto {
    #[prost(int32, tag = "1")]
    dtype: i32,
    #[prost(message, optional, tag = "2")]
    shape: Option<TensorShapeProto>,
    #[prost(int32, tag = "3")]
    shard_id: i32,
    #[prost(int64, tag = "4")]
    offset: i64,
    #[prost(int64, tag = "5")]
    size: i64,
    #[prost(fixed32, tag = "6")]
    crc32c: u32,
    /// Partitioned variables (TensorSliceProto); present only for sliced variables.
    #[prost(bytes = "vec", repeated, tag = "7")]
    slices: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorShapeProto {
    #[prost(message, repeated, tag = "2")]
    dim: Vec<Dim>,
    #[prost(bool, tag = "3")]
    unknown_rank: bool,
}

#[derive(Clone, PartialEq, Message)]
struct Dim {
    #[prost(int64, tag = "1")]
    size: i64,
}

#[derive(Clone, PartialEq, Message)]
struct TrackableObjectGraph {
    #[prost(message, repeated, tag = "1")]
    nodes: Vec<TrackableObject>,
}

#[derive(Clone, PartialEq, Message)]
struct TrackableObject {
    #[prost(message, repeated, tag = "1")]
    children: Vec<ObjectReference>,
    #[prost(message, repeated, tag = "2")]
    attributes: Vec<SerializedTensor>,
}

#[derive(Clone, PartialEq, Message)]
struct ObjectReference {
    #[prost(int32, tag = "1")]
    node_id: i32,
    #[prost(string, tag = "2")]
    local_name: String,
}

#[derive(Clone, PartialEq, Message)]
struct SerializedTensor {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    full_name: String,
    #[prost(string, tag = "3")]
    checkpoint_key: String,
}

fn corrupt(what: impl std::fmt::Display) -> WeightsError {
    WeightsError::Corrupt(format!("TensorFlow checkpoint: {what}"))
}

/// True for the bytes of a bundle's `.index` file (a LevelDB table with TF's magic).
pub fn is_index(bytes: &[u8]) -> bool {
    bytes.len() >= FOOTER_LEN
        && u64::from_le_bytes(bytes[bytes.len() - 8..].try_into().unwrap()) == TABLE_MAGIC
}

/// The checkpoint prefix a user's path names, if it names one whose `<prefix>.index` exists:
/// a SavedModel folder (`variables/variables`), its `variables/` folder, a `<prefix>.index`
/// file, a shard `<prefix>.data-…`, or the prefix itself (how TensorFlow names a checkpoint).
pub fn prefix_of(path: &Path) -> Option<PathBuf> {
    prefix_named(path).filter(|p| PathBuf::from(format!("{}.index", p.display())).is_file())
}

fn prefix_named(path: &Path) -> Option<PathBuf> {
    if path.is_dir() {
        let saved_model = path.join("variables/variables");
        return Some(if saved_model.with_extension("index").is_file() {
            saved_model
        } else {
            path.join("variables")
        });
    }
    let s = path.to_string_lossy();
    if let Some(stem) = s.strip_suffix(".index") {
        return Some(PathBuf::from(stem));
    }
    if let Some((stem, _)) = s.rsplit_once(".data-") {
        return Some(PathBuf::from(stem));
    }
    (!path.exists()).then(|| path.to_owned())
}

/// A bundle as read: the index file, its parsed entries, and each data shard.
pub struct BundleFiles {
    pub index: Vec<u8>,
    entries: Vec<Entry>,
    pub shards: Vec<Vec<u8>>,
}

impl BundleFiles {
    /// Reads `<prefix>.index` and the data shards its header announces.
    pub fn open(prefix: &Path) -> Result<Self, WeightsError> {
        let read =
            |p: PathBuf| std::fs::read(&p).map_err(|source| WeightsError::Io { path: p, source });
        let index = read(PathBuf::from(format!("{}.index", prefix.display())))?;
        Self::from_index(index, |i, n| {
            read(PathBuf::from(format!(
                "{}.data-{i:05}-of-{n:05}",
                prefix.display()
            )))
        })
    }

    /// A bundle from the bytes of its `.index` file, with `shard(i, n)` giving the bytes of
    /// data shard `i` of the `n` its header announces.
    pub fn from_index(
        index: Vec<u8>,
        shard: impl FnMut(i32, i32) -> Result<Vec<u8>, WeightsError>,
    ) -> Result<Self, WeightsError> {
        let mut shard = shard;
        let entries = table_entries(&index)?;
        let n = header(&entries)?.num_shards;
        let shards = (0..n).map(|i| shard(i, n)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            index,
            entries,
            shards,
        })
    }
}

/// Whether a stored checksum matches the computed one. Fuzzing builds (`cfg(fuzzing)`, set
/// by cargo-fuzz) accept any, so that the fuzzer reaches the parsing behind the checksums.
fn checksum_ok(computed: u32, stored: u32) -> bool {
    cfg!(fuzzing) || computed == stored
}

fn header(entries: &[Entry]) -> Result<BundleHeaderProto, WeightsError> {
    let (_, v) = entries
        .iter()
        .find(|(k, _)| k.is_empty())
        .ok_or_else(|| corrupt("the index has no bundle header"))?;
    let h = BundleHeaderProto::decode(v.as_slice())
        .map_err(|e| corrupt(format!("bundle header: {e}")))?;
    if h.endianness != 0 {
        return Err(WeightsError::Unsupported(
            "a big-endian TensorFlow checkpoint".into(),
        ));
    }
    if !(1..=4096).contains(&h.num_shards) {
        return Err(corrupt(format!("{} data shards", h.num_shards)));
    }
    Ok(h)
}

/// Every variable of the bundle, by Keras layer, in PyTorch's conventions.
pub fn read(files: &BundleFiles) -> Result<BTreeMap<String, WeightTensor>, WeightsError> {
    let mut decoded = Vec::new();
    let mut graph = None;
    for (key, value) in files.entries.iter().filter(|(k, _)| !k.is_empty()) {
        let name = String::from_utf8_lossy(key).into_owned();
        let entry = BundleEntryProto::decode(value.as_slice())
            .map_err(|e| corrupt(format!("entry {name}: {e}")))?;
        if !entry.slices.is_empty() {
            return Err(WeightsError::Unsupported(format!(
                "{name} is a partitioned variable (saved in slices)"
            )));
        }
        let bytes = tensor_bytes(files, &entry, &name)?;
        if key.as_slice() == OBJECT_GRAPH_KEY {
            graph = Some(scalar_string(bytes, &entry, &name)?);
            continue;
        }
        decoded.push((name, entry, bytes));
    }
    // Checkpoint key → the variable's own name, e.g. `Conv1/kernel`, for the variables of
    // the model (not of an optimizer saved beside it).
    let graph_names = match graph {
        Some(g) => Some(model_variables(
            &TrackableObjectGraph::decode(g).map_err(|e| corrupt(format!("object graph: {e}")))?,
        )),
        None => None,
    };
    let mut layers: BTreeMap<String, Vec<KerasWeight>> = BTreeMap::new();
    let mut order = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (key, entry, bytes) in decoded {
        let full = match &graph_names {
            Some(names) => match names.get(&key) {
                Some(full) => full.clone(),
                None => continue, // optimizer state, counters
            },
            // Without an object graph (TF1 Saver files) the key is the variable's name.
            None if is_training_state(&key) => continue,
            None => key.clone(),
        };
        let full = full.split(':').next().unwrap_or(&full).to_owned();
        let Some((layer, kind)) = full.rsplit_once('/') else {
            continue; // a top-level counter such as `save_counter`
        };
        let Some(dtype) = dtype_of(entry.dtype) else {
            continue; // strings, resources: not weights
        };
        if !dtype.is_float() || kind == "seed_generator_state" || !seen.insert(full.clone()) {
            continue; // integer state (counts, RNG seeds) and variables listed twice
        }
        let shape = shape_of(&entry, &key)?;
        let numel: usize = shape.iter().product();
        if numel.checked_mul(dtype.size()) != Some(bytes.len()) {
            return Err(corrupt(format!(
                "{key}: {} bytes for shape {shape:?}",
                bytes.len()
            )));
        }
        let data = bytes
            .chunks_exact(dtype.size())
            .map(|b| dtype.to_f32(b))
            .collect();
        if !layers.contains_key(layer) {
            order.push(layer.to_owned());
        }
        layers
            .entry(layer.to_owned())
            .or_default()
            .push(KerasWeight {
                name: format!("{layer}/{kind}"),
                dtype,
                shape,
                data,
            });
    }
    let grouped = order
        .into_iter()
        .map(|l| {
            let w = layers.remove(&l).unwrap_or_default();
            (l, w)
        })
        .collect();
    to_pytorch_conventions(grouped)
}

/// The variables reachable from the root without passing through an optimizer: checkpoint
/// key → the variable's name. (An optimizer tracks the trainable variables too, and the
/// checkpoint may key them under `optimizer/_trainable_variables/N`; they are the model's
/// all the same. Its own slots and counters are reachable only through it.)
fn model_variables(g: &TrackableObjectGraph) -> BTreeMap<String, String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut stack = vec![0usize];
    let mut names = BTreeMap::new();
    while let Some(id) = stack.pop() {
        let Some(node) = g.nodes.get(id).filter(|_| seen.insert(id)) else {
            continue;
        };
        for a in &node.attributes {
            if a.name == "VARIABLE_VALUE" && !a.full_name.is_empty() {
                names.insert(a.checkpoint_key.clone(), a.full_name.clone());
            }
        }
        for c in &node.children {
            let optimizer = matches!(c.local_name.as_str(), "optimizer" | "_optimizer");
            if let (false, Ok(child)) = (optimizer, usize::try_from(c.node_id)) {
                stack.push(child);
            }
        }
    }
    names
}

/// Optimizer slots and step counters saved beside a model's weights (for checkpoints
/// without an object graph).
fn is_training_state(key: &str) -> bool {
    key.starts_with("optimizer/")
        || key.contains("/optimizer/")
        || key.contains(".OPTIMIZER_SLOT")
        || key.starts_with("save_counter")
}

fn shape_of(entry: &BundleEntryProto, key: &str) -> Result<Vec<usize>, WeightsError> {
    let shape = entry.shape.clone().unwrap_or_default();
    if shape.unknown_rank {
        return Err(corrupt(format!("{key} has an unknown rank")));
    }
    let dims: Vec<usize> = shape
        .dim
        .iter()
        .map(|d| usize::try_from(d.size).map_err(|_| corrupt(format!("{key}: dim {}", d.size))))
        .collect::<Result<_, _>>()?;
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| corrupt(format!("{key}: shape {dims:?} overflows")))?;
    Ok(dims)
}

/// TensorFlow's `DataType` enum values for the types retrain reads.
fn dtype_of(tf: i32) -> Option<DType> {
    Some(match tf {
        1 => DType::F32,
        2 => DType::F64,
        3 => DType::I32,
        4 => DType::U8,
        5 => DType::I16,
        6 => DType::I8,
        9 => DType::I64,
        10 => DType::Bool,
        14 => DType::BF16,
        19 => DType::F16,
        _ => return None,
    })
}

/// A tensor's bytes in its shard, bounds- and checksum-checked.
fn tensor_bytes<'a>(
    files: &'a BundleFiles,
    entry: &BundleEntryProto,
    key: &str,
) -> Result<&'a [u8], WeightsError> {
    let shard = usize::try_from(entry.shard_id)
        .ok()
        .and_then(|i| files.shards.get(i))
        .ok_or_else(|| corrupt(format!("{key} is in shard {}", entry.shard_id)))?;
    let (Ok(offset), Ok(size)) = (usize::try_from(entry.offset), usize::try_from(entry.size))
    else {
        return Err(corrupt(format!("{key}: negative offset or size")));
    };
    let bytes = offset
        .checked_add(size)
        .and_then(|end| shard.get(offset..end))
        .ok_or_else(|| {
            WeightsError::Truncated(format!(
                "TensorFlow checkpoint: {key} lies past the end of its data file"
            ))
        })?;
    // String tensors are checked as they are decoded (their checksum covers other bytes).
    if entry.dtype != DT_STRING && !checksum_ok(mask(crc32c::crc32c(bytes)), entry.crc32c) {
        return Err(damaged(key));
    }
    Ok(bytes)
}

const DT_STRING: i32 = 7;

fn damaged(key: &str) -> WeightsError {
    corrupt(format!(
        "{key}: checksum mismatch (the data file is damaged)"
    ))
}

/// A scalar string tensor: its length as a varint, the masked CRC32C of that length (as a
/// little-endian u32 when it fits, u64 otherwise), then the bytes. The entry's checksum runs
/// over that length, the length checksum and the bytes.
fn scalar_string<'a>(
    bytes: &'a [u8],
    entry: &BundleEntryProto,
    key: &str,
) -> Result<&'a [u8], WeightsError> {
    let mut at = 0;
    let len = varint(bytes, &mut at).ok_or_else(|| corrupt(format!("{key}: bad length")))?;
    let checksum = bytes
        .get(at..at + 4)
        .ok_or_else(|| corrupt(format!("{key}: string past its end")))?;
    let start = at + 4;
    let body = usize::try_from(len)
        .ok()
        .and_then(|len| start.checked_add(len))
        .and_then(|end| bytes.get(start..end))
        .ok_or_else(|| corrupt(format!("{key}: string past its end")))?;
    let lengths = match u32::try_from(len) {
        Ok(short) => crc32c::crc32c(&short.to_le_bytes()),
        Err(_) => crc32c::crc32c(&len.to_le_bytes()),
    };
    let all = crc32c::crc32c_append(crc32c::crc32c_append(lengths, checksum), body);
    let stored_length_crc = u32::from_le_bytes(checksum.try_into().unwrap());
    if !checksum_ok(mask(lengths), stored_length_crc) || !checksum_ok(mask(all), entry.crc32c) {
        return Err(damaged(key));
    }
    Ok(body)
}

/// LevelDB's CRC masking (so that a CRC of data holding CRCs is not trivially zero).
fn mask(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// A table entry: key, value.
type Entry = (Vec<u8>, Vec<u8>);

#[derive(Clone, Copy)]
struct BlockHandle {
    offset: usize,
    size: usize,
}

fn block_handle(bytes: &[u8], at: &mut usize) -> Option<BlockHandle> {
    let offset = usize::try_from(varint(bytes, at)?).ok()?;
    let size = usize::try_from(varint(bytes, at)?).ok()?;
    Some(BlockHandle { offset, size })
}

/// All (key, value) entries of the table, in key order.
fn table_entries(file: &[u8]) -> Result<Vec<Entry>, WeightsError> {
    if !is_index(file) {
        return Err(WeightsError::Truncated(
            "TensorFlow checkpoint: the .index file has no table footer".into(),
        ));
    }
    let footer = &file[file.len() - FOOTER_LEN..];
    let mut at = 0;
    let _metaindex = block_handle(footer, &mut at).ok_or_else(|| corrupt("footer"))?;
    let index = block_handle(footer, &mut at).ok_or_else(|| corrupt("footer"))?;
    let mut entries = Vec::new();
    for (_, handle) in block_entries(&block(file, index)?)? {
        let mut at = 0;
        let h = block_handle(&handle, &mut at).ok_or_else(|| corrupt("index block"))?;
        entries.extend(block_entries(&block(file, h)?)?);
    }
    Ok(entries)
}

/// One block's contents, checksum verified and unpacked.
fn block(file: &[u8], h: BlockHandle) -> Result<Vec<u8>, WeightsError> {
    let end = h
        .offset
        .checked_add(h.size)
        .filter(|&e| e.checked_add(5).is_some_and(|t| t <= file.len()))
        .ok_or_else(|| {
            WeightsError::Truncated("TensorFlow checkpoint: a table block lies past the end".into())
        })?;
    let contents = &file[h.offset..end];
    let kind = file[end];
    let stored = u32::from_le_bytes(file[end + 1..end + 5].try_into().unwrap());
    if !checksum_ok(
        mask(crc32c::crc32c_append(crc32c::crc32c(contents), &[kind])),
        stored,
    ) {
        return Err(corrupt(
            "table block checksum mismatch (the .index file is damaged)",
        ));
    }
    match kind {
        0 => Ok(contents.to_vec()),
        1 => {
            let len = snap::raw::decompress_len(contents)
                .map_err(|e| corrupt(format!("snappy block: {e}")))?;
            // An index block is small; a declared size past 256 MiB is damage, not data.
            if len > 256 << 20 {
                return Err(corrupt("a snappy block declares an impossible size"));
            }
            snap::raw::Decoder::new()
                .decompress_vec(contents)
                .map_err(|e| corrupt(format!("snappy block: {e}")))
        }
        k => Err(corrupt(format!("unknown block compression {k}"))),
    }
}

/// The entries of one block: prefix-compressed keys, then a restart array.
fn block_entries(block: &[u8]) -> Result<Vec<Entry>, WeightsError> {
    let bad = || corrupt("malformed table block");
    if block.len() < 4 {
        return Err(bad());
    }
    let restarts = u32::from_le_bytes(block[block.len() - 4..].try_into().unwrap()) as usize;
    let data_end = restarts
        .checked_mul(4)
        .and_then(|r| block.len().checked_sub(4 + r))
        .ok_or_else(bad)?;
    let data = &block[..data_end];
    let mut entries: Vec<Entry> = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let mut field = || {
            varint(data, &mut at)
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(bad)
        };
        let (shared, own, value_len) = (field()?, field()?, field()?);
        let last = entries.last().map_or(&[][..], |(k, _)| k.as_slice());
        let mut key = last.get(..shared).ok_or_else(bad)?.to_vec();
        let key_end = at.checked_add(own).ok_or_else(bad)?;
        key.extend_from_slice(data.get(at..key_end).ok_or_else(bad)?);
        let value_end = key_end.checked_add(value_len).ok_or_else(bad)?;
        let value = data.get(key_end..value_end).ok_or_else(bad)?.to_vec();
        at = value_end;
        entries.push((key, value));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_mask_matches_leveldb() {
        // LevelDB's crc32c_test: Unmask(Mask(crc)) == crc, Mask(crc) != crc.
        let crc = crc32c::crc32c(b"foo");
        assert_ne!(mask(crc), crc);
        assert_eq!(mask(crc).wrapping_sub(0xa282_ead8).rotate_left(15), crc);
    }

    fn put_varint(v: &mut Vec<u8>, mut x: u64) {
        while x >= 0x80 {
            v.push(x as u8 | 0x80);
            x >>= 7;
        }
        v.push(x as u8);
    }

    /// A block of unshared entries with one restart point.
    fn block_of(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut b = Vec::new();
        for (k, v) in entries {
            put_varint(&mut b, 0);
            put_varint(&mut b, k.len() as u64);
            put_varint(&mut b, v.len() as u64);
            b.extend_from_slice(k);
            b.extend_from_slice(v);
        }
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b
    }

    fn with_trailer(file: &mut Vec<u8>, contents: &[u8], kind: u8) -> (u64, u64) {
        let at = file.len() as u64;
        file.extend_from_slice(contents);
        file.push(kind);
        let crc = mask(crc32c::crc32c_append(crc32c::crc32c(contents), &[kind]));
        file.extend_from_slice(&crc.to_le_bytes());
        (at, contents.len() as u64)
    }

    /// TensorFlow writes its bundles' blocks uncompressed, but the table format allows
    /// snappy blocks (LevelDB's default): a table with a snappy data block reads the same.
    #[test]
    fn snappy_compressed_blocks() {
        let header = BundleHeaderProto {
            num_shards: 1,
            endianness: 0,
        }
        .encode_to_vec();
        let entries: [(&[u8], &[u8]); 2] = [(b"", &header), (b"layer/kernel", b"entry bytes")];
        let data = block_of(&entries);
        let packed = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        let mut file = Vec::new();
        let (off, size) = with_trailer(&mut file, &packed, 1);
        let mut handle = Vec::new();
        put_varint(&mut handle, off);
        put_varint(&mut handle, size);
        let (ioff, isize) = with_trailer(&mut file, &block_of(&[(b"m", &handle)]), 0);
        let mut footer = vec![0, 0];
        put_varint(&mut footer, ioff);
        put_varint(&mut footer, isize);
        footer.resize(40, 0);
        footer.extend_from_slice(&TABLE_MAGIC.to_le_bytes());
        file.extend_from_slice(&footer);

        let got = table_entries(&file).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], (b"layer/kernel".to_vec(), b"entry bytes".to_vec()));
        assert_eq!(header_of(&got).num_shards, 1);
        // A flipped bit in the compressed block is caught by its checksum.
        file[3] ^= 1;
        assert!(table_entries(&file).is_err());
    }

    fn header_of(entries: &[Entry]) -> BundleHeaderProto {
        header(entries).unwrap()
    }

    #[test]
    fn block_entries_undo_prefix_compression() {
        // "abc" → "v1", "abd" (shares 2) → "v22"; one restart at 0.
        let mut b = vec![0, 3, 2];
        b.extend_from_slice(b"abcv1");
        b.extend_from_slice(&[2, 1, 3]);
        b.extend_from_slice(b"dv22");
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        let e = block_entries(&b).unwrap();
        assert_eq!(e[0], (b"abc".to_vec(), b"v1".to_vec()));
        assert_eq!(e[1], (b"abd".to_vec(), b"v22".to_vec()));
        // A key that claims more shared bytes than the previous key has is refused.
        b[8] = 4;
        assert!(block_entries(&b).is_err());
        // So is a restart count larger than the block.
        let n = b.len();
        b[n - 4] = 200;
        assert!(block_entries(&b).is_err());
    }
}
