//! What every front-end that translates a file's own layers into the IR needs (TFLite's
//! operators, Keras' layers): nodes with unique names, integer and float constants, weights
//! as parameters, and the NHWC ↔ NCHW views of a value, each made once.

use std::collections::{BTreeMap, BTreeSet};

use super::{Attr, HostData, HostTensor, Node};

#[derive(Debug, Default)]
pub(crate) struct IrBuilder {
    pub nodes: Vec<Node>,
    pub params: BTreeMap<String, Vec<usize>>,
    pub constants: BTreeMap<String, HostTensor>,
    used: BTreeSet<String>,
    /// Transposes made of a value (to NHWC when `true`).
    views: BTreeMap<(String, bool), String>,
}

impl IrBuilder {
    /// A builder whose names avoid `taken` (the weights' names, say).
    pub fn avoiding(taken: impl IntoIterator<Item = String>) -> Self {
        Self {
            used: taken.into_iter().collect(),
            ..Self::default()
        }
    }

    /// `base`, or `base_2`, `base_3`, … if it is taken.
    pub fn unique(&mut self, base: &str) -> String {
        unique(&mut self.used, base)
    }

    /// A node `op` named after `base`; its one output has the node's name.
    pub fn push(
        &mut self,
        base: &str,
        op: &str,
        inputs: Vec<String>,
        attrs: Vec<(&str, Attr)>,
    ) -> String {
        let name = self.unique(base);
        self.nodes.push(Node {
            name: name.clone(),
            op: op.to_owned(),
            inputs,
            outputs: vec![name.clone()],
            attrs: attrs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        });
        name
    }

    /// A vector of integers (shapes, axes) as a constant.
    pub fn int_constant(&mut self, base: &str, data: Vec<i64>) -> String {
        let name = self.unique(base);
        self.constants
            .insert(name.clone(), HostTensor::ints(vec![data.len()], data));
        name
    }

    /// A float tensor held in the graph (not trained).
    pub fn float_constant(&mut self, base: &str, shape: Vec<usize>, data: Vec<f32>) -> String {
        let name = self.unique(base);
        self.constants.insert(
            name.clone(),
            HostTensor {
                shape,
                data: HostData::Float(data),
            },
        );
        name
    }

    /// The weight `name` (in the file's tensors, of `shape`) as a trainable parameter.
    pub fn param(&mut self, name: &str, shape: &[usize]) -> String {
        self.params.insert(name.to_owned(), shape.to_vec());
        name.to_owned()
    }

    /// A rank-4 value in the other layout: NCHW → NHWC when `to_nhwc`, else back.
    pub fn layout_view(&mut self, name: &str, to_nhwc: bool) -> String {
        if let Some(v) = self.views.get(&(name.to_owned(), to_nhwc)) {
            return v.clone();
        }
        let (suffix, perm) = if to_nhwc {
            ("nhwc", vec![0, 2, 3, 1])
        } else {
            ("nchw", vec![0, 3, 1, 2])
        };
        let v = self.push(
            &format!("{name}/{suffix}"),
            "Transpose",
            vec![name.to_owned()],
            vec![("perm", Attr::Ints(perm))],
        );
        self.views.insert((name.to_owned(), to_nhwc), v.clone());
        v
    }
}

pub(crate) fn unique(used: &mut BTreeSet<String>, base: &str) -> String {
    let mut name = base.to_owned();
    let mut n = 1;
    while !used.insert(name.clone()) {
        n += 1;
        name = format!("{base}_{n}");
    }
    name
}
