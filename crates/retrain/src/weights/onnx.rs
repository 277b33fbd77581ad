//! ONNX model files (`ModelProto`, decoded with prost): the graph becomes retrain's graph
//! IR ([`crate::graph::Graph`]) and the float initializers its named weights. Raw and
//! typed initializer data, float16/bfloat16/double weights and external data files (next
//! to the model, never outside its folder) are read; every length is checked against the
//! bytes that hold it, so a file cannot make the reader allocate more than it contains.

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;

use super::{DType, WeightTensor, WeightsError};
use crate::graph::{Attr, Graph, HostData, HostTensor, Node, ValueInfo};

pub(crate) mod proto {
    //! The parts of onnx.proto retrain reads and writes (field numbers as in
    //! onnx/onnx.proto).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelProto {
        #[prost(int64, tag = "1")]
        pub ir_version: i64,
        #[prost(string, tag = "2")]
        pub producer_name: String,
        #[prost(string, tag = "3")]
        pub producer_version: String,
        #[prost(string, tag = "6")]
        pub doc_string: String,
        #[prost(message, optional, tag = "7")]
        pub graph: Option<GraphProto>,
        #[prost(message, repeated, tag = "8")]
        pub opset_import: Vec<OperatorSetIdProto>,
        #[prost(message, repeated, tag = "14")]
        pub metadata_props: Vec<StringStringEntryProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct OperatorSetIdProto {
        #[prost(string, tag = "1")]
        pub domain: String,
        #[prost(int64, tag = "2")]
        pub version: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GraphProto {
        #[prost(message, repeated, tag = "1")]
        pub node: Vec<NodeProto>,
        #[prost(string, tag = "2")]
        pub name: String,
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<TensorProto>,
        #[prost(message, repeated, tag = "11")]
        pub input: Vec<ValueInfoProto>,
        #[prost(message, repeated, tag = "12")]
        pub output: Vec<ValueInfoProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NodeProto {
        #[prost(string, repeated, tag = "1")]
        pub input: Vec<String>,
        #[prost(string, repeated, tag = "2")]
        pub output: Vec<String>,
        #[prost(string, tag = "3")]
        pub name: String,
        #[prost(string, tag = "4")]
        pub op_type: String,
        #[prost(message, repeated, tag = "5")]
        pub attribute: Vec<AttributeProto>,
        #[prost(string, tag = "7")]
        pub domain: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AttributeProto {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(float, tag = "2")]
        pub f: f32,
        #[prost(int64, tag = "3")]
        pub i: i64,
        #[prost(bytes = "vec", tag = "4")]
        pub s: Vec<u8>,
        #[prost(message, optional, tag = "5")]
        pub t: Option<TensorProto>,
        #[prost(float, repeated, tag = "7")]
        pub floats: Vec<f32>,
        #[prost(int64, repeated, tag = "8")]
        pub ints: Vec<i64>,
        #[prost(bytes = "vec", repeated, tag = "9")]
        pub strings: Vec<Vec<u8>>,
        #[prost(int32, tag = "20")]
        pub r#type: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        #[prost(int64, repeated, tag = "1")]
        pub dims: Vec<i64>,
        #[prost(int32, tag = "2")]
        pub data_type: i32,
        #[prost(float, repeated, tag = "4")]
        pub float_data: Vec<f32>,
        #[prost(int32, repeated, tag = "5")]
        pub int32_data: Vec<i32>,
        #[prost(int64, repeated, tag = "7")]
        pub int64_data: Vec<i64>,
        #[prost(string, tag = "8")]
        pub name: String,
        #[prost(bytes = "vec", tag = "9")]
        pub raw_data: Vec<u8>,
        #[prost(double, repeated, tag = "10")]
        pub double_data: Vec<f64>,
        #[prost(uint64, repeated, tag = "11")]
        pub uint64_data: Vec<u64>,
        #[prost(message, repeated, tag = "13")]
        pub external_data: Vec<StringStringEntryProto>,
        #[prost(int32, tag = "14")]
        pub data_location: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StringStringEntryProto {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueInfoProto {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub r#type: Option<TypeProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeProto {
        #[prost(message, optional, tag = "1")]
        pub tensor_type: Option<TensorTypeProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorTypeProto {
        #[prost(int32, tag = "1")]
        pub elem_type: i32,
        #[prost(message, optional, tag = "2")]
        pub shape: Option<TensorShapeProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorShapeProto {
        #[prost(message, repeated, tag = "1")]
        pub dim: Vec<Dimension>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dimension {
        #[prost(int64, optional, tag = "1")]
        pub dim_value: Option<i64>,
        #[prost(string, optional, tag = "2")]
        pub dim_param: Option<String>,
    }
}

/// Integer constants larger than this are not shape arithmetic; refused.
const MAX_HOST_ELEMENTS: usize = 1 << 20;
/// Float constants (Constant nodes, scalars) up to this size stay in the graph; larger
/// ones are weights.
const MAX_FLOAT_CONSTANT: usize = 64;

/// True for a protobuf stream that starts like an ONNX ModelProto: field 1 (ir_version,
/// varint) with an IR version from 3 (ONNX 1.0) to 20 (onnx 1.23 writes 14; later ones
/// are let through to the opset check, which names what is supported).
pub fn looks_like(bytes: &[u8]) -> bool {
    match bytes {
        [0x08, v, ..] => (3..=20).contains(v),
        _ => false,
    }
}

fn corrupt(why: impl Into<String>) -> WeightsError {
    WeightsError::Corrupt(why.into())
}

/// Where an initializer's bytes live when they are not in the model file.
pub struct ExternalData<'a> {
    /// The folder of the model file.
    pub dir: Option<&'a Path>,
}

/// Reads an ONNX model: its graph and its float weights by initializer name.
pub fn read(
    bytes: &[u8],
    external: ExternalData,
) -> Result<(BTreeMap<String, WeightTensor>, Graph), WeightsError> {
    let model = proto::ModelProto::decode(bytes).map_err(|e| {
        if e.to_string().contains("buffer underflow") {
            WeightsError::Truncated(format!("the ONNX protobuf ends early ({e})"))
        } else {
            corrupt(format!("not a readable ONNX protobuf ({e})"))
        }
    })?;
    let g = model
        .graph
        .ok_or_else(|| corrupt("the ONNX model has no graph"))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(if model.ir_version <= 3 { 8 } else { 0 });
    if !(7..=28).contains(&opset) {
        return Err(WeightsError::Unsupported(format!(
            "ONNX opset {opset}: opsets 7 to 28 are supported; re-export the model with a supported opset"
        )));
    }
    let mut tensors = BTreeMap::new();
    let mut params = BTreeMap::new();
    let mut constants = BTreeMap::new();
    for t in &g.initializer {
        let (shape, data) = tensor_values(t, &external)?;
        match data {
            HostData::Float(v) if !shape.is_empty() => {
                params.insert(t.name.clone(), shape.clone());
                tensors.insert(
                    t.name.clone(),
                    WeightTensor {
                        dtype: DType::F32,
                        shape,
                        data: v,
                        strided: false,
                    },
                );
            }
            data => {
                constants.insert(t.name.clone(), HostTensor { shape, data });
            }
        }
    }
    let mut nodes = Vec::with_capacity(g.node.len());
    for (k, n) in g.node.iter().enumerate() {
        let name = if n.name.is_empty() {
            format!("{}_{k}", n.op_type)
        } else {
            n.name.clone()
        };
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return Err(WeightsError::Unsupported(format!(
                "node `{name}`: op {} of domain {} (only the standard ONNX domain is supported)",
                n.op_type, n.domain
            )));
        }
        let mut attrs = BTreeMap::new();
        for a in &n.attribute {
            if let Some(v) = attribute(a, &external)
                .map_err(|e| corrupt(format!("node `{name}`, attribute {}: {e}", a.name)))?
            {
                attrs.insert(a.name.clone(), v);
            }
        }
        let node = Node {
            name,
            op: n.op_type.clone(),
            inputs: n.input.clone(),
            outputs: n.output.clone(),
            attrs,
        };
        if node.op == "Constant" {
            constant_node(&node, &mut params, &mut tensors, &mut constants)?;
            continue;
        }
        nodes.push(node);
    }
    let value_info = |v: &proto::ValueInfoProto| ValueInfo {
        name: v.name.clone(),
        dims: v
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .and_then(|t| t.shape.as_ref())
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| d.dim_value.filter(|&v| v > 0).map(|v| v as usize))
                    .collect()
            })
            .unwrap_or_default(),
    };
    // Before IR 4 initializers are listed among the inputs too.
    let mut inputs = g
        .input
        .iter()
        .filter(|i| !params.contains_key(&i.name) && !constants.contains_key(&i.name))
        .map(value_info);
    let input = inputs.next().ok_or_else(|| {
        WeightsError::Unsupported("the ONNX graph has no input: an image model takes one".into())
    })?;
    let extra_inputs = inputs.collect();
    let output = g
        .output
        .first()
        .map(value_info)
        .ok_or_else(|| corrupt("the ONNX graph has no output"))?;
    let mut graph = Graph {
        format: "onnx".into(),
        producer: format!("{} {}", model.producer_name, model.producer_version)
            .trim()
            .to_owned(),
        opset,
        input,
        extra_inputs,
        output,
        nodes,
        params,
        constants,
        input_scaling: None,
        weights_in_constants: vec![],
    };
    graph.alias_identities();
    canonical_classifier(&mut graph, &mut tensors);
    Ok((tensors, graph))
}

/// Reads one serialised `TensorProto` (the layout of ONNX's test data, `input_0.pb`): its
/// name and its values, floats or integers (booleans as 0 and 1).
pub fn read_tensor_proto(bytes: &[u8]) -> Result<(String, HostTensor), WeightsError> {
    let t = proto::TensorProto::decode(bytes)
        .map_err(|e| corrupt(format!("not a readable ONNX TensorProto ({e})")))?;
    let (shape, data) = tensor_values(&t, &ExternalData { dir: None })?;
    Ok((t.name, HostTensor { shape, data }))
}

/// A Constant node's value: small ones stay in the graph, large float ones become weights
/// named by the node's output.
fn constant_node(
    node: &Node,
    params: &mut BTreeMap<String, Vec<usize>>,
    tensors: &mut BTreeMap<String, WeightTensor>,
    constants: &mut BTreeMap<String, HostTensor>,
) -> Result<(), WeightsError> {
    let out = node
        .outputs
        .first()
        .ok_or_else(|| corrupt(format!("Constant `{}` has no output", node.name)))?;
    let value = match node.attrs.iter().next() {
        Some((_, Attr::Tensor(t))) => t.clone(),
        Some((k, Attr::Float(f))) if k == "value_float" => HostTensor {
            shape: vec![],
            data: HostData::Float(vec![*f]),
        },
        Some((k, Attr::Floats(v))) if k == "value_floats" => HostTensor {
            shape: vec![v.len()],
            data: HostData::Float(v.clone()),
        },
        Some((k, Attr::Int(i))) if k == "value_int" => HostTensor::ints(vec![], vec![*i]),
        Some((k, Attr::Ints(v))) if k == "value_ints" => HostTensor::ints(vec![v.len()], v.clone()),
        _ => {
            return Err(WeightsError::Unsupported(format!(
                "Constant `{}`: only tensor, float(s) and int(s) values are supported",
                node.name
            )));
        }
    };
    match value.data {
        HostData::Float(v) if v.len() > MAX_FLOAT_CONSTANT && !value.shape.is_empty() => {
            params.insert(out.clone(), value.shape.clone());
            tensors.insert(
                out.clone(),
                WeightTensor {
                    dtype: DType::F32,
                    shape: value.shape,
                    data: v,
                    strided: false,
                },
            );
        }
        _ => {
            constants.insert(out.clone(), value);
        }
    }
    Ok(())
}

fn attribute(a: &proto::AttributeProto, external: &ExternalData) -> Result<Option<Attr>, String> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    // AttributeProto.AttributeType: FLOAT 1, INT 2, STRING 3, TENSOR 4, GRAPH 5, FLOATS 6,
    // INTS 7, STRINGS 8.
    Ok(match a.r#type {
        1 => Some(Attr::Float(a.f)),
        2 => Some(Attr::Int(a.i)),
        3 => Some(Attr::String(text(&a.s))),
        4 => {
            let t =
                a.t.as_ref()
                    .ok_or("a tensor attribute without its tensor")?;
            let (shape, data) = tensor_values(t, external).map_err(|e| e.to_string())?;
            Some(Attr::Tensor(HostTensor { shape, data }))
        }
        6 => Some(Attr::Floats(a.floats.clone())),
        7 => Some(Attr::Ints(a.ints.clone())),
        8 => Some(Attr::String(
            a.strings
                .iter()
                .map(|s| text(s))
                .collect::<Vec<_>>()
                .join(","),
        )),
        // Sub-graphs (If, Loop), sparse tensors, type protos: not needed by the ops run.
        _ => None,
    })
}

/// An initializer's shape and values. Floats (f32, f16, bf16, f64) as f32, integers and
/// booleans as i64.
fn tensor_values(
    t: &proto::TensorProto,
    external: &ExternalData,
) -> Result<(Vec<usize>, HostData), WeightsError> {
    let name = &t.name;
    let mut numel: usize = 1;
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        let d = usize::try_from(d)
            .map_err(|_| corrupt(format!("tensor `{name}` has a negative dimension {d}")))?;
        numel = numel
            .checked_mul(d)
            .ok_or_else(|| corrupt(format!("tensor `{name}`: dimensions {:?} overflow", t.dims)))?;
        shape.push(d);
    }
    let external_bytes;
    let raw: &[u8] = if t.data_location == 1 {
        external_bytes = read_external(t, external)?;
        &external_bytes
    } else {
        &t.raw_data
    };
    // TensorProto.DataType: FLOAT 1, UINT8 2, INT8 3, UINT16 4, INT16 5, INT32 6, INT64 7,
    // BOOL 9, FLOAT16 10, DOUBLE 11, UINT32 12, UINT64 13, BFLOAT16 16.
    let size = match t.data_type {
        1 | 6 | 12 => 4,
        2 | 3 | 9 => 1,
        4 | 5 | 10 | 16 => 2,
        7 | 11 | 13 => 8,
        other => {
            return Err(WeightsError::Unsupported(format!(
                "tensor `{name}` has ONNX data type {other} (strings and complex numbers are not supported)"
            )));
        }
    };
    let from_raw = !raw.is_empty() || t.data_location == 1;
    if from_raw {
        let want = numel.saturating_mul(size);
        if raw.len() != want {
            return Err(corrupt(format!(
                "tensor `{name}` of shape {shape:?} holds {} bytes, {want} expected",
                raw.len()
            )));
        }
    } else {
        let have = match t.data_type {
            1 => t.float_data.len(),
            7 => t.int64_data.len(),
            11 => t.double_data.len(),
            12 | 13 => t.uint64_data.len(),
            _ => t.int32_data.len(),
        };
        if have != numel {
            return Err(corrupt(format!(
                "tensor `{name}` of shape {shape:?} holds {have} values, {numel} expected"
            )));
        }
    }
    let is_float = matches!(t.data_type, 1 | 10 | 11 | 16);
    if !is_float && numel > MAX_HOST_ELEMENTS {
        return Err(WeightsError::Unsupported(format!(
            "integer tensor `{name}` of {numel} values: integer weights (a quantised model) are not supported"
        )));
    }
    let chunks = |n: usize| raw.chunks_exact(n);
    let data = if from_raw {
        match t.data_type {
            1 => HostData::Float(
                chunks(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            ),
            10 => HostData::Float(
                chunks(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            ),
            16 => HostData::Float(
                chunks(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            ),
            11 => HostData::Float(
                chunks(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default()) as f32)
                    .collect(),
            ),
            2 | 9 => HostData::Int(raw.iter().map(|&b| b as i64).collect()),
            3 => HostData::Int(raw.iter().map(|&b| b as i8 as i64).collect()),
            4 => HostData::Int(
                chunks(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]) as i64)
                    .collect(),
            ),
            5 => HostData::Int(
                chunks(2)
                    .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                    .collect(),
            ),
            6 => HostData::Int(
                chunks(4)
                    .map(|c| i32::from_le_bytes(c.try_into().unwrap_or_default()) as i64)
                    .collect(),
            ),
            12 => HostData::Int(
                chunks(4)
                    .map(|c| u32::from_le_bytes(c.try_into().unwrap_or_default()) as i64)
                    .collect(),
            ),
            _ => HostData::Int(
                chunks(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            ),
        }
    } else {
        match t.data_type {
            1 => HostData::Float(t.float_data.clone()),
            10 => HostData::Float(
                t.int32_data
                    .iter()
                    .map(|&b| half::f16::from_bits(b as u16).to_f32())
                    .collect(),
            ),
            16 => HostData::Float(
                t.int32_data
                    .iter()
                    .map(|&b| half::bf16::from_bits(b as u16).to_f32())
                    .collect(),
            ),
            11 => HostData::Float(t.double_data.iter().map(|&d| d as f32).collect()),
            7 => HostData::Int(t.int64_data.clone()),
            12 | 13 => HostData::Int(t.uint64_data.iter().map(|&u| u as i64).collect()),
            _ => HostData::Int(t.int32_data.iter().map(|&i| i as i64).collect()),
        }
    };
    Ok((shape, data))
}

/// The bytes of an initializer stored in a file beside the model (`location`, `offset`,
/// `length`), which must lie inside the model's folder.
fn read_external(t: &proto::TensorProto, external: &ExternalData) -> Result<Vec<u8>, WeightsError> {
    use std::io::{Read, Seek, SeekFrom};
    let name = &t.name;
    let get = |k: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.value.as_str())
    };
    let location = get("location")
        .ok_or_else(|| corrupt(format!("tensor `{name}` is external but names no file")))?;
    let dir = external.dir.ok_or_else(|| {
        WeightsError::Unsupported(format!(
            "tensor `{name}` is in the external file {location}: open the model by its path"
        ))
    })?;
    let rel = Path::new(location);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(corrupt(format!(
            "tensor `{name}`: external file {location} is outside the model's folder"
        )));
    }
    let path = dir.join(rel);
    let parse = |k: &str| -> Result<u64, WeightsError> {
        get(k).map_or(Ok(0), |v| {
            v.parse().map_err(|_| {
                corrupt(format!(
                    "tensor `{name}`: external {k} `{v}` is not a number"
                ))
            })
        })
    };
    let (offset, length) = (parse("offset")?, parse("length")?);
    let mut f = std::fs::File::open(&path).map_err(|e| {
        WeightsError::Unsupported(format!(
            "tensor `{name}` is in {}, which cannot be read ({e}); keep it beside the model",
            path.display()
        ))
    })?;
    let size = f
        .metadata()
        .map_err(|source| WeightsError::Io {
            path: path.clone(),
            source,
        })?
        .len();
    let length = if get("length").is_some() {
        length
    } else {
        size.saturating_sub(offset)
    };
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(WeightsError::Truncated(format!(
            "tensor `{name}` claims bytes {offset}..{} of {}, which holds {size}",
            offset.saturating_add(length),
            path.display()
        )));
    }
    let mut buf = vec![0; length as usize];
    f.seek(SeekFrom::Start(offset))
        .and_then(|_| f.read_exact(&mut buf))
        .map_err(|source| WeightsError::Io { path, source })?;
    Ok(buf)
}

/// `name` if it is an initializer whose shape passes `ok`.
fn param_shaped<'a>(
    g: &Graph,
    name: Option<&'a str>,
    ok: impl Fn(&[usize]) -> bool,
) -> Option<&'a str> {
    name.filter(|n| g.params.get(*n).is_some_and(|s| ok(s)))
}

/// Rewrites the graph's final linear layer (Gemm, or MatMul + Add, on a vector) as one
/// Gemm whose weight is `<prefix>.weight` in PyTorch's (out, in) layout and bias
/// `<prefix>.bias`, the names the zoo's classifier loader reads.
pub(crate) fn canonical_classifier(g: &mut Graph, tensors: &mut BTreeMap<String, WeightTensor>) {
    let producer = |g: &Graph, v: &str| {
        g.nodes
            .iter()
            .rposition(|n| n.outputs.iter().any(|o| o == v))
    };
    let mut v = g.output.name.clone();
    let (idx, a, w_name, transposed, b_name, remove) = loop {
        let Some(i) = producer(g, &v) else { return };
        let n = &g.nodes[i];
        if crate::graph::analyse::AFTER_CLASSIFIER.contains(&n.op.as_str()) {
            let Some(x) = n.input(0) else { return };
            v = x.to_owned();
            continue;
        }
        let param2 = |name| param_shaped(g, name, |s| s.len() == 2);
        let param1 = |name| param_shaped(g, name, |s| s.len() == 1 || s.len() == 2 && s[0] == 1);
        if n.op == "Gemm"
            && n.int("transA").unwrap_or(0) == 0
            && n.float("alpha").unwrap_or(1.0) == 1.0
            && n.float("beta").unwrap_or(1.0) == 1.0
        {
            let Some(w) = param2(n.input(1)) else { return };
            let b = n.input(2);
            if b.is_some() && param1(b).is_none() {
                return;
            }
            break (
                i,
                n.inputs[0].clone(),
                w.to_owned(),
                n.int("transB").unwrap_or(0) == 0,
                b.map(str::to_owned),
                None,
            );
        }
        if n.op == "Add" {
            // MatMul(x, W) + b, b on either side.
            let (m, b) = match (n.input(0), n.input(1)) {
                (Some(p), Some(q)) if param1(Some(q)).is_some() => (p, q),
                (Some(p), Some(q)) if param1(Some(p)).is_some() => (q, p),
                _ => return,
            };
            let Some(j) = producer(g, m) else { return };
            let mm = &g.nodes[j];
            if mm.op != "MatMul"
                || g.nodes
                    .iter()
                    .filter(|x| x.inputs.iter().any(|i| i == m))
                    .count()
                    != 1
            {
                return;
            }
            let Some(w) = param2(mm.input(1)) else { return };
            break (
                i,
                mm.inputs[0].clone(),
                w.to_owned(),
                true,
                Some(b.to_owned()),
                Some(j),
            );
        }
        if n.op == "MatMul" {
            let Some(w) = param2(n.input(1)) else { return };
            break (i, n.inputs[0].clone(), w.to_owned(), true, None, None);
        }
        return;
    };
    let Some(w) = tensors.get(&w_name).cloned() else {
        return;
    };
    let (rows, cols) = (w.shape[0], w.shape[1]);
    let (out, din) = if transposed {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let weight: Vec<f32> = if transposed {
        (0..cols)
            .flat_map(|c| (0..rows).map(move |r| (r, c)))
            .map(|(r, c)| w.data[r * cols + c])
            .collect()
    } else {
        w.data.clone()
    };
    let bias = match &b_name {
        Some(b) => match tensors.get(b) {
            Some(t) if t.data.len() == out => t.data.clone(),
            _ => return,
        },
        None => vec![0.0; out],
    };
    let used_elsewhere = |name: &str| {
        g.nodes
            .iter()
            .enumerate()
            .filter(|(k, _)| *k != idx && Some(*k) != remove)
            .any(|(_, n)| n.inputs.iter().any(|i| i == name))
    };
    let prefix = match w_name.strip_suffix(".weight") {
        Some(p) if b_name.as_deref().is_none_or(|b| b == format!("{p}.bias")) && !transposed => {
            p.to_owned()
        }
        _ if !g.params.contains_key("classifier.weight") => "classifier".to_owned(),
        _ => "graph_classifier".to_owned(),
    };
    for old in std::iter::once(&w_name).chain(b_name.as_ref()) {
        if !used_elsewhere(old) {
            tensors.remove(old);
            g.params.remove(old);
        }
    }
    let (wn, bn) = (format!("{prefix}.weight"), format!("{prefix}.bias"));
    g.params.insert(wn.clone(), vec![out, din]);
    g.params.insert(bn.clone(), vec![out]);
    tensors.insert(
        wn.clone(),
        WeightTensor {
            dtype: DType::F32,
            shape: vec![out, din],
            data: weight,
            strided: false,
        },
    );
    tensors.insert(
        bn.clone(),
        WeightTensor {
            dtype: DType::F32,
            shape: vec![out],
            data: bias,
            strided: false,
        },
    );
    let mut attrs = BTreeMap::new();
    attrs.insert("transB".to_owned(), Attr::Int(1));
    let node = Node {
        name: g.nodes[idx].name.clone(),
        op: "Gemm".into(),
        inputs: vec![a, wn, bn],
        outputs: vec![g.nodes[idx].outputs[0].clone()],
        attrs,
    };
    g.nodes[idx] = node;
    if let Some(j) = remove {
        g.nodes.remove(j);
    }
}
