//! CNTK v2 files (`Function.save`): a protobuf `Dictionary` (CNTK.proto, decoded with
//! prost) holding a composite function: its variables (`inputs`: the image, parameters and
//! constants with their values) and its primitive functions (op code, inputs by uid,
//! attributes; `Block`s with their inner composite). Read into the format-neutral [`Net`].

use std::collections::BTreeMap;

use prost::Message;

use super::{Block, Func, Net, Value, Var, VarKind, corrupt, unsupported};
use crate::weights::WeightsError;

mod proto {
    //! CNTK.proto (Source/CNTKv2LibraryDll/proto/CNTK.proto in the CNTK sources).
    use std::collections::BTreeMap;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NdShape {
        #[prost(uint64, repeated, tag = "1")]
        pub shape_dim: Vec<u64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Axis {
        #[prost(int32, tag = "1")]
        pub static_axis_idx: i32,
        #[prost(string, tag = "2")]
        pub name: String,
        #[prost(bool, tag = "3")]
        pub is_ordered_dynamic_axis: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NdArrayView {
        #[prost(int32, tag = "1")]
        pub data_type: i32,
        #[prost(int32, tag = "2")]
        pub storage_format: i32,
        #[prost(message, optional, tag = "3")]
        pub shape: Option<NdShape>,
        #[prost(oneof = "Values", tags = "4, 5, 6, 7")]
        pub values: Option<Values>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Values {
        #[prost(message, tag = "4")]
        Float(FloatValues),
        #[prost(message, tag = "5")]
        Double(DoubleValues),
        #[prost(message, tag = "6")]
        Bytes(BytesValue),
        #[prost(message, tag = "7")]
        Int(IntValues),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FloatValues {
        #[prost(float, repeated, tag = "1")]
        pub value: Vec<f32>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DoubleValues {
        #[prost(double, repeated, tag = "1")]
        pub value: Vec<f64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BytesValue {
        #[prost(bytes = "vec", tag = "1")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct IntValues {
        #[prost(sint32, repeated, tag = "1")]
        pub value: Vec<i32>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Vector {
        #[prost(message, repeated, tag = "1")]
        pub value: Vec<DictionaryValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dictionary {
        #[prost(uint64, tag = "1")]
        pub version: u64,
        #[prost(btree_map = "string, message", tag = "2")]
        pub data: BTreeMap<String, DictionaryValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DictionaryValue {
        #[prost(uint64, tag = "1")]
        pub version: u64,
        #[prost(int32, tag = "2")]
        pub value_type: i32,
        #[prost(oneof = "Value", tags = "3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13")]
        pub value: Option<Value>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(bool, tag = "3")]
        Bool(bool),
        #[prost(int32, tag = "4")]
        Int(i32),
        #[prost(uint64, tag = "5")]
        SizeT(u64),
        #[prost(float, tag = "6")]
        Float(f32),
        #[prost(double, tag = "7")]
        Double(f64),
        #[prost(string, tag = "8")]
        String(String),
        #[prost(message, tag = "9")]
        Shape(NdShape),
        #[prost(message, tag = "10")]
        Axis(Axis),
        #[prost(message, tag = "11")]
        Vector(Vector),
        #[prost(message, tag = "12")]
        Dictionary(Dictionary),
        #[prost(message, tag = "13")]
        Array(NdArrayView),
    }
}

use proto::{Dictionary, DictionaryValue, NdArrayView};

/// `NDArrayView::DataType` and `StorageFormat` values.
const FLOAT: i32 = 1;
const DOUBLE: i32 = 2;
const FLOAT16: i32 = 4;
const DENSE: i32 = 0;

/// `VariableKind` (CNTKLibrary.h): Input, Output, Parameter, Constant, Placeholder.
const INPUT: u64 = 0;
const PARAMETER: u64 = 2;
const CONSTANT: u64 = 3;

/// The `PrimitiveOpType` codes (PrimitiveOpType.h) and their names, for messages and for
/// the translation, which works by name (v1 files name their nodes' types).
pub(super) const OPS: &[(u64, &str)] = &[
    (0, "Negate"),
    (1, "Sigmoid"),
    (2, "Tanh"),
    (3, "ReLU"),
    (4, "Exp"),
    (5, "Log"),
    (6, "Sqrt"),
    (7, "Floor"),
    (8, "Abs"),
    (9, "Reciprocal"),
    (10, "Softmax"),
    (11, "Hardmax"),
    (12, "TransposeAxes"),
    (13, "Where"),
    (14, "Slice"),
    (15, "Dropout"),
    (16, "Reshape"),
    (17, "Pooling"),
    (18, "SumAll"),
    (19, "Plus"),
    (20, "Minus"),
    (21, "ElementTimes"),
    (22, "Equal"),
    (23, "NotEqual"),
    (24, "Less"),
    (25, "LessEqual"),
    (26, "Greater"),
    (27, "GreaterEqual"),
    (28, "PackedIndex"),
    (29, "GatherPacked"),
    (30, "ScatterPacked"),
    (31, "Times"),
    (32, "TransposeTimes"),
    (33, "Convolution"),
    (34, "SquaredError"),
    (35, "CrossEntropyWithSoftmax"),
    (36, "ClassificationError"),
    (37, "PastValue"),
    (38, "FutureValue"),
    (39, "ReduceElements"),
    (40, "BatchNormalization"),
    (41, "Clip"),
    (42, "Select"),
    (43, "Splice"),
    (44, "Combine"),
    (45, "RandomSample"),
    (46, "RandomSampleInclusionFrequency"),
    (47, "ROIPooling"),
    (48, "Logistic"),
    (49, "OptimizedRNNStack"),
    (50, "ReconcileDynamicAxis"),
    (51, "LogSoftmax"),
    (52, "LogPlus"),
    (53, "CosDistance"),
    (54, "Sin"),
    (55, "Cos"),
    (56, "Pass"),
    (57, "Block"),
    (58, "Unpooling"),
    (59, "LambdaRank"),
    (60, "NDCG"),
    (61, "EditDistanceError"),
    (62, "NoOp"),
    (63, "LabelsToGraph"),
    (64, "StopGradient"),
    (65, "ELU"),
    (66, "ForwardBackward"),
    (67, "CosDistanceWithNegativeSamples"),
    (68, "OneHot"),
    (69, "Pow"),
    (70, "ToSequence"),
    (71, "ToSequenceLike"),
    (72, "UnpackSequence"),
    (73, "Assign"),
    (74, "Gather"),
    (75, "StableSigmoid"),
    (76, "RandomDistribution"),
    (77, "Sinh"),
    (78, "Cosh"),
    (79, "UnpackBatch"),
    (80, "ToBatch"),
    (81, "Asin"),
    (82, "Acos"),
    (83, "Pad"),
    (84, "Crop"),
    (85, "Atanh"),
    (86, "Asinh"),
    (87, "TopK"),
    (88, "Squeeze"),
    (89, "ConstantOp"),
    (90, "LatticeSequenceWithSoftmax"),
    (91, "Cast"),
    (92, "EyeLikeOp"),
    (93, "CustomProxyOp"),
    (94, "StraightThrough"),
    (95, "Tan"),
    (96, "Atan"),
];

/// A v2 file: a protobuf Dictionary whose first field is its version (1 or 2 so far) and
/// whose second is a map entry (`12 len 0a` …) keyed by one of a composite function's keys.
pub(super) fn looks_like(bytes: &[u8]) -> bool {
    let [0x08, version, 0x12, rest @ ..] = bytes else {
        return false;
    };
    if !(1..=8).contains(version) {
        return false;
    }
    // Skip the entry's varint length; the entry starts with its key (field 1, a string).
    let Some(at) = rest.iter().take(10).position(|b| b & 0x80 == 0) else {
        return false;
    };
    let entry = &rest[at + 1..];
    let [0x0a, len, key @ ..] = entry else {
        return false;
    };
    let key = &key[..(*len as usize).min(key.len())];
    [
        &b"inputs"[..],
        b"primitive_functions",
        b"root",
        b"name",
        b"type",
        b"uid",
        b"version",
        b"state",
    ]
    .contains(&key)
}

fn get<'d>(d: &'d Dictionary, key: &str) -> Option<&'d proto::Value> {
    d.data.get(key).and_then(|v| v.value.as_ref())
}

fn string(d: &Dictionary, key: &str) -> Option<String> {
    match get(d, key) {
        Some(proto::Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

fn size(d: &Dictionary, key: &str) -> Option<u64> {
    match get(d, key) {
        Some(proto::Value::SizeT(n)) => Some(*n),
        Some(proto::Value::Int(n)) if *n >= 0 => Some(*n as u64),
        _ => None,
    }
}

fn what(key: &str, whose: &str, want: &str) -> WeightsError {
    corrupt(format!("`{key}` of {whose} is not {want}"))
}

fn strings(d: &Dictionary, key: &str, whose: &str) -> Result<Vec<String>, WeightsError> {
    match get(d, key) {
        None => Ok(vec![]),
        Some(proto::Value::Vector(v)) => v
            .value
            .iter()
            .map(|e| match &e.value {
                Some(proto::Value::String(s)) => Ok(s.clone()),
                _ => Err(what(key, whose, "a list of names")),
            })
            .collect(),
        Some(_) => Err(what(key, whose, "a list of names")),
    }
}

fn dicts<'d>(d: &'d Dictionary, key: &str) -> Result<Vec<&'d Dictionary>, WeightsError> {
    match get(d, key) {
        None => Ok(vec![]),
        Some(proto::Value::Vector(v)) => v
            .value
            .iter()
            .map(|e| match &e.value {
                Some(proto::Value::Dictionary(d)) => Ok(d),
                _ => Err(what(key, "the model", "a list of dictionaries")),
            })
            .collect(),
        Some(_) => Err(what(key, "the model", "a list of dictionaries")),
    }
}

fn value(v: &DictionaryValue) -> Value {
    match &v.value {
        None => Value::None,
        Some(proto::Value::Bool(b)) => Value::Bool(*b),
        Some(proto::Value::Int(i)) => Value::Int(*i as i64),
        Some(proto::Value::SizeT(n)) => Value::Int(i64::try_from(*n).unwrap_or(i64::MAX)),
        Some(proto::Value::Float(f)) => Value::Float(*f as f64),
        Some(proto::Value::Double(f)) => Value::Float(*f),
        Some(proto::Value::String(s)) => Value::Str(s.clone()),
        Some(proto::Value::Shape(s)) => Value::Shape(s.shape_dim.clone()),
        Some(proto::Value::Axis(a)) => Value::Axis {
            static_index: a.static_axis_idx,
            name: a.name.clone(),
        },
        Some(proto::Value::Vector(v)) => Value::List(v.value.iter().map(value).collect()),
        Some(proto::Value::Dictionary(_)) => Value::Other("a dictionary"),
        Some(proto::Value::Array(_)) => Value::Other("an array"),
    }
}

/// An `NDArrayView`'s values as f32, in the file's (column-major) order.
fn array(a: &NdArrayView, shape: &[usize], uid: &str) -> Result<Vec<f32>, WeightsError> {
    if a.storage_format != DENSE {
        return Err(unsupported(format!(
            "the value of `{uid}` has sparse storage (format {}); only dense tensors are read",
            a.storage_format
        )));
    }
    let numel = super::numel(shape).ok_or_else(|| corrupt(format!("`{uid}`'s shape overflows")))?;
    let data: Vec<f32> = match (&a.values, a.data_type) {
        (Some(proto::Values::Float(v)), FLOAT) => v.value.clone(),
        (Some(proto::Values::Double(v)), DOUBLE) => v.value.iter().map(|&x| x as f32).collect(),
        // float16 values are stored two bytes each, little-endian.
        (Some(proto::Values::Bytes(v)), FLOAT16) if v.value.len() == numel * 2 => v
            .value
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        (Some(proto::Values::Int(v)), FLOAT16) => v
            .value
            .iter()
            .map(|&x| half::f16::from_bits(x as u16).to_f32())
            .collect(),
        (None, _) if numel == 0 => vec![],
        (_, t) if ![FLOAT, DOUBLE, FLOAT16].contains(&t) => {
            return Err(unsupported(format!(
                "the value of `{uid}` has data type {t}; float, double and float16 are read"
            )));
        }
        _ => {
            return Err(corrupt(format!(
                "the value of `{uid}` does not hold its data type's values"
            )));
        }
    };
    if data.len() != numel {
        return Err(corrupt(format!(
            "`{uid}` holds {} values for its shape {shape:?}",
            data.len()
        )));
    }
    Ok(data)
}

fn variable(d: &Dictionary) -> Result<(String, Option<Var>), WeightsError> {
    let uid = string(d, "uid").ok_or_else(|| corrupt("a variable has no uid"))?;
    let whose = format!("variable `{uid}`");
    let kind = size(d, "kind").ok_or_else(|| what("kind", &whose, "a number"))?;
    let kind = match kind {
        INPUT => VarKind::Input,
        PARAMETER => VarKind::Parameter,
        CONSTANT => VarKind::Constant,
        // Outputs and placeholders stand for values functions compute.
        _ => return Ok((uid, None)),
    };
    if matches!(get(d, "is_sparse"), Some(proto::Value::Bool(true))) {
        return Err(unsupported(format!(
            "input `{uid}` is sparse (text or one-hot data, not images)"
        )));
    }
    let shape = match get(d, "shape") {
        Some(proto::Value::Shape(s)) => s
            .shape_dim
            .iter()
            .map(|&n| usize::try_from(n).map_err(|_| corrupt(format!("{whose}: dimension {n}"))))
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(what("shape", &whose, "a shape")),
    };
    let value = match (kind, get(d, "value")) {
        (VarKind::Input, _) => None,
        (_, Some(proto::Value::Array(a))) => {
            let stored: Vec<usize> = a
                .shape
                .as_ref()
                .map(|s| s.shape_dim.iter().map(|&n| n as usize).collect())
                .unwrap_or_default();
            if super::numel(&stored) != super::numel(&shape) {
                return Err(corrupt(format!(
                    "{whose} has shape {shape:?} and a value of shape {stored:?}"
                )));
            }
            Some(array(a, &shape, &uid)?)
        }
        _ => return Err(what("value", &whose, "a tensor")),
    };
    Ok((
        uid,
        Some(Var {
            name: string(d, "name").unwrap_or_default(),
            kind,
            shape,
            value,
        }),
    ))
}

fn function(d: &Dictionary) -> Result<Func, WeightsError> {
    let uid = string(d, "uid").ok_or_else(|| corrupt("a function has no uid"))?;
    let whose = format!("function `{uid}`");
    let code = size(d, "op").ok_or_else(|| what("op", &whose, "an op code"))?;
    let op = OPS.iter().find(|(c, _)| *c == code).map_or_else(
        || format!("PrimitiveOpType {code}"),
        |(_, n)| (*n).to_owned(),
    );
    let inputs = strings(d, "inputs", &whose)?;
    let attrs: BTreeMap<String, Value> = match get(d, "attributes") {
        Some(proto::Value::Dictionary(a)) => {
            a.data.iter().map(|(k, v)| (k.clone(), value(v))).collect()
        }
        None => BTreeMap::new(),
        Some(_) => return Err(what("attributes", &whose, "a dictionary")),
    };
    let block = if op == "Block" {
        let composite = match get(d, "block_function_composite") {
            Some(proto::Value::Dictionary(c)) => c,
            _ => return Err(what("block_function_composite", &whose, "a dictionary")),
        };
        let root = string(composite, "root")
            .ok_or_else(|| corrupt(format!("{whose}: its composite has no root")))?;
        let keys = strings(d, "block_function_composite_arguments_map_keys", &whose)?;
        let values = strings(d, "block_function_composite_arguments_map_values", &whose)?;
        if keys.len() != values.len() {
            return Err(corrupt(format!(
                "{whose}: {} arguments for {} placeholders",
                values.len(),
                keys.len()
            )));
        }
        Some(Block {
            op_name: string(d, "block_function_op_name").unwrap_or_default(),
            root: format!("{root}_Output_0"),
            arguments: keys.into_iter().zip(values).collect(),
        })
    } else {
        None
    };
    let outputs = if op == "Combine" {
        inputs.clone()
    } else {
        vec![format!("{uid}_Output_0")]
    };
    Ok(Func {
        name: string(d, "name").unwrap_or_default(),
        uid,
        op,
        inputs,
        outputs,
        attrs,
        block,
    })
}

/// Reads a v2 file into a [`Net`].
pub(super) fn read(bytes: &[u8]) -> Result<Net, WeightsError> {
    let d = Dictionary::decode(bytes).map_err(|e| {
        if e.to_string().contains("buffer underflow") {
            WeightsError::Truncated(format!("the CNTK protobuf ends early ({e})"))
        } else {
            corrupt(format!("not a CNTK v2 Dictionary ({e})"))
        }
    })?;
    match string(&d, "type").as_deref() {
        None | Some("CompositeFunction") => {}
        Some(t) => {
            return Err(unsupported(format!(
                "a CNTK dictionary of type {t}; a model (CompositeFunction) is expected"
            )));
        }
    }
    let mut vars = BTreeMap::new();
    for v in dicts(&d, "inputs")? {
        if let (uid, Some(var)) = variable(v)? {
            vars.insert(uid, var);
        }
    }
    let funcs = dicts(&d, "primitive_functions")?
        .into_iter()
        .map(function)
        .collect::<Result<Vec<_>, _>>()?;
    let root = string(&d, "root").ok_or_else(|| corrupt("the model names no root function"))?;
    let root_func = funcs
        .iter()
        .find(|f| f.uid == root)
        .ok_or_else(|| corrupt(format!("the root function `{root}` is not in the file")))?;
    let outputs = root_func.outputs.clone();
    let version = size(&d, "version").unwrap_or(d.version);
    Ok(Net {
        description: format!("CNTK v2 model, version {version}"),
        vars,
        funcs,
        outputs,
    })
}

#[cfg(test)]
mod tests {
    use super::proto::{Dictionary, DictionaryValue, NdArrayView, NdShape, Value as V, Vector};
    use super::*;

    fn value(v: V) -> DictionaryValue {
        DictionaryValue {
            version: 1,
            value_type: 0,
            value: Some(v),
        }
    }

    fn dict(entries: Vec<(&str, V)>) -> Dictionary {
        Dictionary {
            version: 1,
            data: entries
                .into_iter()
                .map(|(k, v)| (k.to_owned(), value(v)))
                .collect(),
        }
    }

    fn list(items: Vec<V>) -> V {
        V::Vector(Vector {
            value: items.into_iter().map(value).collect(),
        })
    }

    fn parameter(storage: i32) -> V {
        V::Dictionary(dict(vec![
            ("uid", V::String("Parameter1".into())),
            ("kind", V::SizeT(PARAMETER)),
            ("shape", V::Shape(NdShape { shape_dim: vec![2] })),
            (
                "value",
                V::Array(NdArrayView {
                    data_type: FLOAT,
                    storage_format: storage,
                    shape: Some(NdShape { shape_dim: vec![2] }),
                    values: Some(proto::Values::Float(proto::FloatValues {
                        value: vec![1.0, 2.0],
                    })),
                }),
            ),
        ]))
    }

    fn model(inputs: Vec<V>, op: V) -> Vec<u8> {
        let f = V::Dictionary(dict(vec![
            ("uid", V::String("Negate2".into())),
            ("op", op),
            ("inputs", list(vec![V::String("Parameter1".into())])),
        ]));
        dict(vec![
            ("type", V::String("CompositeFunction".into())),
            ("root", V::String("Negate2".into())),
            ("inputs", list(inputs)),
            ("primitive_functions", list(vec![f])),
        ])
        .encode_to_vec()
    }

    fn error(bytes: &[u8]) -> String {
        assert!(looks_like(bytes));
        read(bytes).unwrap_err().to_string()
    }

    #[test]
    fn a_well_formed_dictionary_reads() {
        let net = read(&model(vec![parameter(DENSE)], V::SizeT(0))).unwrap();
        assert_eq!(net.funcs[0].op, "Negate");
        assert_eq!(
            net.vars["Parameter1"].value.as_deref(),
            Some(&[1.0, 2.0][..])
        );
        assert_eq!(net.outputs, ["Negate2_Output_0"]);
    }

    #[test]
    fn sparse_storage_is_refused_by_name() {
        let e = error(&model(vec![parameter(1)], V::SizeT(0)));
        assert!(e.contains("`Parameter1` has sparse storage"), "{e}");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named() {
        let e = error(&model(vec![parameter(DENSE)], V::String("Negate".into())));
        assert!(
            e.contains("`op` of function `Negate2` is not an op code"),
            "{e}"
        );
        let e = error(&model(vec![V::String("Parameter1".into())], V::SizeT(0)));
        assert!(
            e.contains("`inputs` of the model is not a list of dictionaries"),
            "{e}"
        );
    }

    #[test]
    fn a_sparse_input_is_refused_by_name() {
        let input = V::Dictionary(dict(vec![
            ("uid", V::String("Input0".into())),
            ("kind", V::SizeT(INPUT)),
            ("is_sparse", V::Bool(true)),
            (
                "shape",
                V::Shape(NdShape {
                    shape_dim: vec![100],
                }),
            ),
        ]));
        let e = error(&model(vec![input], V::SizeT(0)));
        assert!(e.contains("input `Input0` is sparse"), "{e}");
    }
}
