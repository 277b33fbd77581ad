//! CNTK v1 files: the binary network BrainScript and CNTK 1.x save, and CNTK 2 as its
//! legacy format (`save_as_legacy_model`, model version 31). Layout (ComputationNetwork.cpp
//! `Load`, each node class's `Load`): UTF-16 markers (`BCN`, `BVersion` …), a u64 model
//! version, the nodes (precision, op name, node name, then the op's own fields by model
//! version; parameters with a `BMAT` matrix), the relations (each node's inputs by name),
//! the root node groups. Nodes carry no length: an op whose fields are not known here
//! cannot be skipped, and is refused by name.
//!
//! Read into the format-neutral [`Net`] with v2's op names and attributes, so one
//! translation serves both formats. Versions 1 to 31 are read.

use std::collections::{BTreeMap, BTreeSet};

use super::{Func, Net, Value, Var, VarKind, corrupt, numel, unsupported};
use crate::weights::WeightsError;

type R<T> = Result<T, WeightsError>;

/// The newest model version CNTK writes (2.7).
const NEWEST: u64 = 31;

/// A wide string longer than this is not a name (a file is untrusted input).
const MAX_STRING: usize = 1 << 16;

/// `BCN` as UTF-16LE with its terminator.
const MAGIC: &[u8] = b"B\0C\0N\0\0\0";

pub(super) fn looks_like(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

struct Reader<'b> {
    bytes: &'b [u8],
    at: usize,
}

impl<'b> Reader<'b> {
    fn take(&mut self, n: usize, what: &str) -> R<&'b [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| {
            WeightsError::Truncated(format!(
                "the CNTK network ends inside {what} (at byte {})",
                self.at
            ))
        })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> R<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("length taken"))
    }

    fn u64(&mut self, what: &str) -> R<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &str) -> R<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn i32(&mut self, what: &str) -> R<i32> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &str) -> R<i64> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    fn f32(&mut self, what: &str) -> R<f32> {
        Ok(f32::from_le_bytes(self.array(what)?))
    }

    fn f64(&mut self, what: &str) -> R<f64> {
        Ok(f64::from_le_bytes(self.array(what)?))
    }

    fn bool(&mut self, what: &str) -> R<bool> {
        Ok(self.take(1, what)?[0] != 0)
    }

    /// A count of items each at least `size` bytes long, checked against what is left.
    fn count(&mut self, size: usize, what: &str) -> R<usize> {
        let n = self.u64(what)?;
        let left = (self.bytes.len() - self.at) as u64;
        if n.saturating_mul(size.max(1) as u64) > left {
            return Err(corrupt(format!(
                "{what}: {n} items in the {left} bytes left"
            )));
        }
        Ok(n as usize)
    }

    /// A zero-terminated UTF-16LE string (no length is stored).
    fn wstr(&mut self, what: &str) -> R<String> {
        let mut units = Vec::new();
        loop {
            let u = u16::from_le_bytes(self.array(what)?);
            if u == 0 {
                break;
            }
            if units.len() == MAX_STRING {
                return Err(corrupt(format!("{what} is not a terminated string")));
            }
            units.push(u);
        }
        Ok(String::from_utf16_lossy(&units))
    }

    fn marker(&mut self, want: &str) -> R<()> {
        let at = self.at;
        let got = self.wstr(want)?;
        if got != want {
            return Err(corrupt(format!(
                "expected the marker {want} at byte {at}, found {:?}",
                got.chars().take(40).collect::<String>()
            )));
        }
        Ok(())
    }

    /// Whether the next string is `want` (consumed if it is).
    fn try_marker(&mut self, want: &str) -> bool {
        let at = self.at;
        match self.wstr(want) {
            Ok(s) if s == want => true,
            _ => {
                self.at = at;
                false
            }
        }
    }

    /// A `TensorShape`: u32 rank, then u32 dimensions (column-major).
    fn shape(&mut self, what: &str) -> R<Vec<usize>> {
        let rank = self.u32(what)? as usize;
        if rank > 16 {
            return Err(corrupt(format!("{what} has rank {rank}")));
        }
        (0..rank).map(|_| Ok(self.u32(what)? as usize)).collect()
    }

    /// A `TensorShape` as InputValue (and old LearnableParameters) read it: a first
    /// dimension of 0 means the old `u64 W, H, C` layout (HWC: [C, W, H]).
    fn legacy_shape(&mut self, what: &str) -> R<Vec<usize>> {
        let start = self.at;
        let rank = self.u32(what)? as usize;
        if rank == 0 {
            return Ok(vec![]);
        }
        let first = self.u32(what)?;
        if first != 0 {
            self.at = start;
            return self.shape(what);
        }
        self.at = start;
        let w = self.u64(what)? as usize;
        let h = self.u64(what)? as usize;
        let c = self.u64(what)? as usize;
        Ok(vec![c, w, h])
    }

    fn bools(&mut self, what: &str) -> R<Vec<bool>> {
        let n = self.count(1, what)?;
        (0..n).map(|_| self.bool(what)).collect()
    }

    /// A `BMAT` … `EMAT` matrix block: its values (column-major), rows and columns.
    fn matrix(&mut self, element: usize, what: &str) -> R<(Vec<f32>, usize)> {
        let kind = self.take(1, what)?[0];
        if kind != b'd' {
            return Err(unsupported(format!(
                "{what} is a sparse matrix; only dense parameters are read"
            )));
        }
        self.marker("BMAT")?;
        let size = self.u64(what)? as usize;
        if size != element {
            return Err(corrupt(format!(
                "{what} has {size}-byte elements in a node of {element}-byte precision"
            )));
        }
        self.wstr(what)?;
        let format = self.i32(what)?;
        if format != 0 {
            return Err(unsupported(format!("{what} has matrix format {format}")));
        }
        let rows = self.u64(what)?;
        let cols = self.u64(what)?;
        let n = rows
            .checked_mul(cols)
            .and_then(|n| n.checked_mul(size as u64))
            .filter(|&b| b <= (self.bytes.len() - self.at) as u64)
            .ok_or_else(|| {
                WeightsError::Truncated(format!(
                    "{what}: a {rows} x {cols} matrix does not fit in the file"
                ))
            })? as usize;
        let raw = self.take(n, what)?;
        let data = match size {
            4 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            8 => raw
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
                .collect(),
            _ => raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        };
        self.marker("EMAT")?;
        Ok((data, n / size))
    }
}

/// A node as read: its op and fields, before the relations give its inputs.
enum Node {
    Var(Var),
    Func {
        op: String,
        attrs: BTreeMap<String, Value>,
    },
}

fn shape_value(s: &[usize]) -> Value {
    Value::Shape(s.iter().map(|&d| d as u64).collect())
}

fn axis(i: i64) -> Value {
    Value::Axis {
        static_index: i as i32,
        name: String::new(),
    }
}

/// The fields every convolution and pooling node shares (`ConvolutionNodeBase`), as v2
/// attributes; `pool` is the pooling kind (0 none, 1 max, 2 average).
fn convolution_base(
    r: &mut Reader,
    v: u64,
    attrs: &mut BTreeMap<String, Value>,
) -> R<(i32, Vec<usize>)> {
    let what = "a convolution's geometry";
    let kernel = r.shape(what)?;
    let _map_count = r.shape(what)?;
    let strides = r.shape(what)?;
    let sharing = r.bools(what)?;
    let auto_pad = r.bools(what)?;
    let lower = r.shape(what)?;
    let upper = r.shape(what)?;
    let pool = r.i32(what)?;
    let layout = r.i32(what)?;
    r.u64(what)?;
    if layout != 1 {
        return Err(unsupported(
            "a convolution in the legacy HWC image layout (cuDNN's CHW is read)",
        ));
    }
    if sharing.iter().any(|s| !s) {
        return Err(unsupported("a convolution without weight sharing"));
    }
    if v >= 9 && r.bool(what)? {
        attrs.insert("transpose".into(), Value::Bool(true));
    }
    if v >= 20 {
        r.shape(what)?;
    }
    if v >= 21 {
        attrs.insert("ceilOutDim".into(), Value::Bool(r.bool(what)?));
    }
    if v >= 23 {
        attrs.insert("includePad".into(), Value::Bool(r.bool(what)?));
    }
    attrs.insert("strides".into(), shape_value(&strides));
    attrs.insert(
        "autoPadding".into(),
        Value::List(auto_pad.into_iter().map(Value::Bool).collect()),
    );
    attrs.insert("lowerPad".into(), shape_value(&lower));
    attrs.insert("upperPad".into(), shape_value(&upper));
    Ok((pool, kernel))
}

/// Reads one node's fields (after its precision, op and name; `short` is the name without
/// a v2 uid).
fn node(r: &mut Reader, v: u64, op: &str, name: &str, short: String, element: usize) -> R<Node> {
    let what = format!("node `{name}` ({op})");
    let w = what.as_str();
    let mut attrs = BTreeMap::new();
    let op = match op {
        "LearnableParameter" => {
            let (trained, shape) = if v >= 3 {
                let rate = r.f32(w)?;
                (rate != 0.0, r.shape(w)?)
            } else {
                let trained = r.bool(w)?;
                let rows = r.u64(w)? as usize;
                let cols = r.u64(w)? as usize;
                let shape = if rows != 0 {
                    vec![rows, cols]
                } else {
                    let mut s = r.legacy_shape(w)?;
                    if cols > 1 {
                        s.push(cols);
                    }
                    s
                };
                (trained, shape)
            };
            let (data, n) = r.matrix(element, w)?;
            if numel(&shape) != Some(n) {
                return Err(corrupt(format!("{what}: shape {shape:?} for {n} values")));
            }
            return Ok(Node::Var(Var {
                name: short,
                kind: if trained {
                    VarKind::Parameter
                } else {
                    VarKind::Constant
                },
                shape,
                value: Some(data),
            }));
        }
        "InputValue" | "SparseInputValue" => {
            let rows = r.u64(w)? as usize;
            r.u64(w)?;
            let mut shape = r.legacy_shape(w)?;
            if rows != 0 && Some(rows) != numel(&shape) {
                shape = vec![rows];
            }
            if v >= 8 && r.u32(w)? == 1 {
                r.wstr(w)?;
            }
            if v >= 10 {
                r.f32(w)?;
            }
            if op == "SparseInputValue" {
                // Labels or text; an image model's input is dense.
                return Ok(Node::Func {
                    op: "SparseInput".into(),
                    attrs,
                });
            }
            return Ok(Node::Var(Var {
                name: short,
                kind: VarKind::Input,
                shape,
                value: None,
            }));
        }
        "Convolution" => {
            if v < 5 {
                return Err(unsupported(format!(
                    "{what}: a CNTK 1 convolution of model version {v} (before N-d convolutions)"
                )));
            }
            let (_, kernel) = convolution_base(r, v, &mut attrs)?;
            if r.bool(w)? {
                return Err(unsupported(format!(
                    "{what}: the legacy NDL 2-d convolution syntax (a [K, kW*kH*C] weight)"
                )));
            }
            if v >= 18 {
                attrs.insert("dilation".into(), shape_value(&r.shape(w)?));
            }
            attrs.insert("kernelShape".into(), shape_value(&kernel));
            "Convolution"
        }
        "Pooling" => {
            let (pool, kernel) = convolution_base(r, v, &mut attrs)?;
            let kind = match pool {
                1 => 0,
                2 => 1,
                k => {
                    return Err(unsupported(format!("{what}: pooling kind {k}")));
                }
            };
            attrs.insert("poolingType".into(), Value::Int(kind));
            attrs.insert("poolingWindowShape".into(), shape_value(&kernel));
            "Pooling"
        }
        "MaxPooling" | "AveragePooling" => {
            let width = r.u32(w)? as usize;
            let layout = r.u32(w)?;
            let height = r.u64(w)? as usize;
            let across = r.u64(w)? as usize;
            let down = r.u64(w)? as usize;
            if layout != 1 {
                return Err(unsupported(format!(
                    "{what}: the legacy HWC image layout (cuDNN's CHW is read)"
                )));
            }
            let kind = if op == "MaxPooling" { 0 } else { 1 };
            attrs.insert("poolingType".into(), Value::Int(kind));
            attrs.insert("poolingWindowShape".into(), shape_value(&[width, height]));
            attrs.insert("strides".into(), shape_value(&[across, down]));
            "Pooling"
        }
        "BatchNormalization" => {
            if v < 6 {
                return Err(unsupported(format!(
                    "{what}: a batch normalisation of model version {v}"
                )));
            }
            attrs.insert("spatial".into(), Value::Bool(r.bool(w)?));
            r.f64(w)?;
            r.f64(w)?;
            r.i32(w)?;
            if v == 19 {
                r.bool(w)?;
            } else {
                r.u64(w)?;
            }
            attrs.insert("epsilon".into(), Value::Float(r.f64(w)?));
            r.bool(w)?;
            // Before version 13 the fifth input holds 1/stddev, not the variance.
            attrs.insert("invStdDev".into(), Value::Bool(v < 13));
            "BatchNormalization"
        }
        "Times" | "TransposeTimes" => {
            let rank = if v >= 3 { r.u64(w)? } else { 1 };
            attrs.insert("outputRank".into(), Value::Int(rank.min(64) as i64));
            if v >= 12 {
                r.i32(w)?;
            }
            op
        }
        "Dropout" | "RandomSample" | "RandomSampleInclusionFrequency" => {
            if op != "Dropout" {
                r.bool(w)?;
                r.u64(w)?;
            }
            if v >= 16 {
                // Version 16's seed is an `unsigned long`: 4 bytes from Windows, 8 from
                // Linux. Files of that version are read as Windows wrote them.
                if v == 16 {
                    r.u32(w)?;
                } else {
                    r.u64(w)?;
                }
                r.u64(w)?;
            }
            op
        }
        "Reshape" => {
            let begin = r.i32(w)? as i64;
            let end = r.i32(w)? as i64;
            let shape = r.shape(w)?;
            attrs.insert("newShape".into(), shape_value(&shape));
            // 1-based; 0 = from the first axis / to the last.
            attrs.insert("beginAxis".into(), axis((begin - 1).max(0)));
            if end > 0 {
                attrs.insert("endAxis".into(), axis(end - 1));
            }
            "Reshape"
        }
        "RowStack" => {
            let dim = if v >= 3 { r.i32(w)? as i64 } else { 1 };
            attrs.insert("axis".into(), axis(dim - 1));
            "Splice"
        }
        "Slice" | "RowSlice" => {
            let n = if v >= 22 { r.i32(w)?.clamp(0, 16) } else { 1 };
            let (mut axes, mut begins, mut ends, mut strides) = (vec![], vec![], vec![], vec![]);
            for _ in 0..n {
                let begin = r.i64(w)?;
                // Stored as begin and length (end - begin).
                let end = begin.saturating_add(r.i64(w)?);
                let index = if v >= 3 { r.i32(w)? as i64 } else { 1 };
                let stride = if v >= 27 { r.i32(w)? as i64 } else { 1 };
                axes.push(axis((index - 1).max(0)));
                begins.push(Value::Int(begin));
                ends.push(Value::Int(end));
                strides.push(Value::Int(stride));
            }
            attrs.insert("axisVec".into(), Value::List(axes));
            attrs.insert("beginIndexVec".into(), Value::List(begins));
            attrs.insert("endIndexVec".into(), Value::List(ends));
            attrs.insert("sliceStridesVec".into(), Value::List(strides));
            "Slice"
        }
        "TransposeDimensions" | "Transpose" => {
            // 1-based axes to swap, or (0, 0) and a 0-based permutation.
            let (a, b) = if v >= 3 {
                (r.i32(w)? as i64, r.i32(w)? as i64)
            } else {
                (1, 2)
            };
            if v >= 25 && a == 0 && b == 0 {
                let n = r.count(8, w)?;
                let perm = (0..n)
                    .map(|_| Ok(axis(r.u64(w)?.min(64) as i64)))
                    .collect::<R<Vec<_>>>()?;
                attrs.insert("axisVec".into(), Value::List(perm));
            } else {
                attrs.insert("axis1".into(), axis(a - 1));
                attrs.insert("axis2".into(), axis(b - 1));
            }
            "TransposeAxes"
        }
        "ReduceElements" => {
            let n = if v >= 27 { r.i32(w)?.clamp(0, 16) } else { 1 };
            let axes: Vec<i64> = (0..n).map(|_| Ok(r.i32(w)? as i64)).collect::<R<_>>()?;
            let operation = r.wstr(w)?;
            let keep = if v >= 24 {
                r.bool(w)?
            } else {
                !axes.iter().any(|&a| a == 0 || a == -1)
            };
            // 1-based; 0 = all static axes (v2's sentinel).
            let axes = axes
                .iter()
                .map(|&a| {
                    axis(if a == 0 {
                        super::graph::ALL_STATIC_AXES as i64
                    } else {
                        a - 1
                    })
                })
                .collect();
            attrs.insert("axisVec".into(), Value::List(axes));
            let operation = if operation == "Plus" {
                "Sum".to_owned()
            } else {
                operation
            };
            attrs.insert("reductionOpName".into(), Value::Str(operation));
            attrs.insert("reductionKeepDimensions".into(), Value::Bool(keep));
            "ReduceElements"
        }
        "Mean" | "InvStdDev" => {
            r.bool(w)?;
            r.matrix(element, w)?;
            op
        }
        "PastValue" | "FutureValue" | "Delay" => {
            r.i32(w)?;
            if v > 3 {
                r.shape(w)?;
            } else {
                r.u64(w)?;
                r.u64(w)?;
            }
            if v >= 2 {
                r.take(element, w)?;
            }
            "PastValue"
        }
        "Where" => {
            if v >= 11 {
                r.wstr(w)?;
            }
            op
        }
        // Ops without fields of their own (v2's names where they differ).
        "RectifiedLinear" => "ReLU",
        "ExponentialLinearUnit" => "ELU",
        "ColumnElementTimes" | "RowElementTimes" | "Scale" | "ElementTimes" => "ElementTimes",
        "ErrorPrediction" | "ClassificationError" => "ClassificationError",
        "Plus"
        | "Minus"
        | "Negate"
        | "Abs"
        | "Sqrt"
        | "Exp"
        | "Log"
        | "Floor"
        | "Reciprocal"
        | "Sigmoid"
        | "StableSigmoid"
        | "Tanh"
        | "Softmax"
        | "LogSoftmax"
        | "Hardmax"
        | "Clip"
        | "Pass"
        | "StopGradient"
        | "CrossEntropyWithSoftmax"
        | "CrossEntropy"
        | "SquareError"
        | "Logistic"
        | "SumElements"
        | "DynamicAxis"
        | "ReconcileDynamicAxis"
        | "PerDimMeanVarNormalization"
        | "Pow"
        | "Sin"
        | "Cosine"
        | "LogPlus" => op,
        other => {
            return Err(unsupported(format!(
                "the v1 node type {other} (node `{name}`) is not read; its fields are unknown here"
            )));
        }
    };
    Ok(Node::Func {
        op: op.to_owned(),
        attrs,
    })
}

/// A v2-written node's name, `__v2libuid__<uid>__v2libname__<name>`: (uid, name).
fn split_name(full: &str) -> (String, String) {
    if let Some(rest) = full.strip_prefix("__v2libuid__")
        && let Some((uid, name)) = rest.split_once("__v2libname__")
    {
        return (uid.to_owned(), name.to_owned());
    }
    (full.to_owned(), full.to_owned())
}

/// Reads a v1 file into a [`Net`].
pub(super) fn read(bytes: &[u8]) -> R<Net> {
    let mut r = Reader { bytes, at: 0 };
    r.marker("BCN")?;
    let version = if r.try_marker("BVersion") {
        let v = r.u64("the model version")?;
        r.marker("EVersion")?;
        v
    } else {
        1
    };
    if version > NEWEST {
        return Err(unsupported(format!(
            "model version {version}; CNTK wrote versions up to {NEWEST}"
        )));
    }
    // A node takes at least its three strings' terminators.
    let count = r.count(6, "the node count")?;
    r.marker("BNodeList")?;
    let mut nodes: Vec<(String, String, String, Node)> = Vec::with_capacity(count);
    for _ in 0..count {
        let element = if version >= 7 {
            match r.wstr("a node's precision")?.as_str() {
                "float" => 4,
                "double" => 8,
                "half" => 2,
                p => return Err(corrupt(format!("node precision {p:?}"))),
            }
        } else {
            4
        };
        let op = r.wstr("a node's operation")?;
        let full = r.wstr("a node's name")?;
        let (uid, short) = split_name(&full);
        let n = node(&mut r, version, &op, &full, short.clone(), element)?;
        nodes.push((full, uid, short, n));
    }
    r.marker("ENodeList")?;
    r.marker("BRelation")?;
    let mut relations: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for _ in 0..count {
        let name = r.wstr("a relation's node")?;
        let n = r.count(2, "a node's input count")?;
        let inputs = (0..n)
            .map(|_| r.wstr("an input's name"))
            .collect::<R<Vec<_>>>()?;
        relations.insert(name, inputs);
    }
    r.marker("ERelation")?;
    r.marker("BRootNodes")?;
    let mut outputs = Vec::new();
    for group in [
        "Feature",
        "Label",
        "Criterion",
        "NodesReqMultiSeqHandling",
        "Eval",
        "Output",
        "Pair",
    ] {
        let begin = format!("B{group}Nodes");
        let opened =
            r.try_marker(&begin) || (group == "Criterion" && r.try_marker("BCriteriaNodes"));
        if opened {
            let n = r.count(2, "a root group's size")?;
            let names = (0..n)
                .map(|_| r.wstr("a root node's name"))
                .collect::<R<Vec<_>>>()?;
            if group == "Output" {
                outputs = names;
            }
            let end = format!("E{group}Nodes");
            if !(r.try_marker(&end) || (group == "Criterion" && r.try_marker("ECriterionNodes"))) {
                return Err(corrupt(format!("the root group {group} is not closed")));
            }
        } else if group == "Label" {
            r.marker("ELabelNodes")?;
        }
    }
    r.marker("ERootNodes")?;
    r.marker("ECN")?;

    // Node names → uids (v2-written files prefix them), then the net.
    let uid_of: BTreeMap<String, String> = nodes
        .iter()
        .map(|(f, u, _, _)| (f.clone(), u.clone()))
        .collect();
    let id = |full: &str| -> R<String> {
        uid_of
            .get(full)
            .cloned()
            .ok_or_else(|| corrupt(format!("`{full}` is an input of a node but not a node")))
    };
    let mut vars = BTreeMap::new();
    let mut funcs = Vec::new();
    let mut read_by = BTreeSet::new();
    let mut inv_std = Vec::new();
    for (full, uid, name, n) in nodes {
        let inputs = relations
            .get(&full)
            .ok_or_else(|| corrupt(format!("node `{full}` has no relation")))?
            .iter()
            .map(|i| id(i))
            .collect::<R<Vec<_>>>()?;
        // v1's ClipNode takes (min, max, x); v2's Clip (x, min, max).
        let inputs = match (&n, inputs.as_slice()) {
            (Node::Func { op, .. }, [min, max, x]) if op == "Clip" => {
                vec![x.clone(), min.clone(), max.clone()]
            }
            _ => inputs,
        };
        match n {
            Node::Var(v) => {
                vars.insert(uid, v);
            }
            Node::Func { op, attrs } => {
                read_by.extend(inputs.iter().cloned());
                if op == "BatchNormalization" && attrs.get("invStdDev") == Some(&Value::Bool(true))
                {
                    let eps = match attrs.get("epsilon") {
                        Some(Value::Float(e)) => *e,
                        _ => 0.0,
                    };
                    if let Some(v) = inputs.get(4) {
                        inv_std.push((v.clone(), eps));
                    }
                }
                funcs.push(Func {
                    name,
                    outputs: vec![uid.clone()],
                    uid,
                    op,
                    inputs,
                    attrs,
                    block: None,
                });
            }
        }
    }
    // Version < 13 stored 1/stddev; CNTK's loader makes it a variance as 1/isd² + eps.
    for (v, eps) in inv_std {
        if let Some(var) = vars.get_mut(&v)
            && let Some(values) = &mut var.value
        {
            for x in values.iter_mut() {
                *x = 1.0 / (*x * *x) + eps as f32;
            }
        }
    }
    let mut outputs: Vec<String> = outputs.iter().map(|o| id(o)).collect::<R<_>>()?;
    if outputs.is_empty() {
        // CNTK 2 leaves the groups empty: the outputs are what no node reads.
        outputs = funcs
            .iter()
            .filter(|f| !read_by.contains(&f.uid) && f.op != "DynamicAxis")
            .map(|f| f.uid.clone())
            .collect();
    }
    Ok(Net {
        description: format!("CNTK v1 model, version {version}"),
        vars,
        funcs,
        outputs,
    })
}
