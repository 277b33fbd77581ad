//! Microsoft CNTK model files, both formats, detected by content (the model gallery's v1
//! files are named `.model` too): v2 (`v2.rs`, CNTK 2's protobuf `Dictionary`) and v1
//! (`v1.rs`, the binary network of BrainScript and CNTK 1.x, which CNTK 2 still writes as
//! its legacy format). Each is read into [`Net`], CNTK's graph in its own terms (op names,
//! attributes, column-major shapes), which `graph.rs` translates into the runtime's graph.

pub(crate) mod graph;
mod v1;
mod v2;

use std::collections::BTreeMap;

use super::{WeightTensor, WeightsError, WeightsFormat};
use crate::graph::Graph;

fn corrupt(why: impl Into<String>) -> WeightsError {
    WeightsError::Corrupt(format!("CNTK model: {}", why.into()))
}

fn unsupported(why: impl Into<String>) -> WeightsError {
    WeightsError::Unsupported(format!("CNTK model: {}", why.into()))
}

/// A shape's element count, if it does not overflow.
fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// A CNTK network: its variables by uid, its functions in the file's order, and the values
/// its root outputs.
#[derive(Debug, Clone)]
pub(crate) struct Net {
    /// "CNTK v2 model (…)" or "CNTK v1 model, version N".
    pub description: String,
    pub vars: BTreeMap<String, Var>,
    pub funcs: Vec<Func>,
    pub outputs: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarKind {
    Input,
    Parameter,
    Constant,
}

/// An input, parameter or constant.
#[derive(Debug, Clone)]
pub(crate) struct Var {
    pub name: String,
    pub kind: VarKind,
    /// CNTK's (column-major) static shape: `[W, H, C]` for an image.
    pub shape: Vec<usize>,
    /// The values in the file's (column-major) order, for parameters and constants.
    pub value: Option<Vec<f32>>,
}

/// A function: a primitive op, or a `Block` (a composite used as one op).
#[derive(Debug, Clone)]
pub(crate) struct Func {
    pub uid: String,
    pub name: String,
    /// The op's name as CNTK's `PrimitiveOpType` names it (`Convolution`, `Plus`, …).
    pub op: String,
    /// Variable uids or other functions' outputs.
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attrs: BTreeMap<String, Value>,
    pub block: Option<Block>,
}

/// A block's composite: the output its root computes and which outer value each of its
/// placeholders stands for.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    /// What the layers API called it (`Convolution`, `Dense`, `ELU`, …).
    pub op_name: String,
    pub root: String,
    pub arguments: Vec<(String, String)>,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A shape, column-major as stored.
    Shape(Vec<u64>),
    Axis {
        static_index: i32,
        name: String,
    },
    List(Vec<Value>),
    Other(&'static str),
}

/// Whether the bytes are a CNTK model, and of which format.
pub(crate) fn detect(bytes: &[u8]) -> Option<WeightsFormat> {
    if v2::looks_like(bytes) {
        return Some(WeightsFormat::CntkV2);
    }
    if v1::looks_like(bytes) {
        return Some(WeightsFormat::CntkV1);
    }
    None
}

/// Reads a CNTK model of the format [`detect`] found: its weights (by the names the
/// translation gives them, in PyTorch's conventions) and its graph.
pub(crate) fn read(
    bytes: &[u8],
    format: WeightsFormat,
) -> Result<(BTreeMap<String, WeightTensor>, Graph), WeightsError> {
    let net = if format == WeightsFormat::CntkV1 {
        v1::read(bytes)?
    } else {
        v2::read(bytes)?
    };
    graph::translate(&net)
}
