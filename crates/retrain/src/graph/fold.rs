//! Constant folding of the shape arithmetic exporters emit (Shape → Gather → Unsqueeze →
//! Concat → Reshape). The load-time run computes every host value; each one that is the
//! same at every batch size becomes a constant of the graph, and each one that follows
//! the batch size linearly (`n`, `n · heads`) a [`BATCH_SHAPE`] node with no inputs. The
//! nodes that only fed them are dropped, so a tensor is no longer kept alive for its
//! shape alone: a token model's blocks get cut points between them, and nothing is
//! recomputed per batch.

use std::collections::{BTreeMap, BTreeSet};

use super::{Attr, Graph, HostData, HostTensor, Node};

/// retrain's op for a folded value that depends on the batch size `n`:
/// `base + per_batch · n`, elementwise (attributes `base`, a tensor, and `per_batch`).
pub const BATCH_SHAPE: &str = "retrain.BatchShape";

/// The host values of one run of the graph, with the batch size it ran at.
pub struct HostRun<'a> {
    pub batch: usize,
    pub hosts: &'a BTreeMap<String, HostTensor>,
}

/// How a host value varies with the batch size, from its values at several batch sizes.
enum Folded {
    Constant(HostTensor),
    Linear {
        base: HostTensor,
        per_batch: Vec<i64>,
    },
}

fn fold_value(runs: &[HostRun], name: &str) -> Option<Folded> {
    let first = runs.first()?.hosts.get(name)?;
    let values: Vec<&HostTensor> = runs
        .iter()
        .map(|r| r.hosts.get(name))
        .collect::<Option<_>>()?;
    if values.iter().all(|v| *v == first) {
        return Some(Folded::Constant(first.clone()));
    }
    // Only integer values of one shape can follow the batch size.
    let ints: Vec<&[i64]> = values
        .iter()
        .map(|v| match &v.data {
            HostData::Int(d) if v.shape == first.shape => Some(d.as_slice()),
            _ => None,
        })
        .collect::<Option<_>>()?;
    // Two runs define the line; a third must lie on it.
    if runs.len() < 3 {
        return None;
    }
    let (b0, b1) = (runs[0].batch as i64, runs[1].batch as i64);
    if b1 == b0 {
        return None;
    }
    let mut base = Vec::with_capacity(ints[0].len());
    let mut per_batch = Vec::with_capacity(ints[0].len());
    for (&v0, &v1) in ints[0].iter().zip(ints[1]) {
        let rise = v1.checked_sub(v0)?;
        if rise % (b1 - b0) != 0 {
            return None;
        }
        let slope = rise / (b1 - b0);
        base.push(v0.checked_sub(slope.checked_mul(b0)?)?);
        per_batch.push(slope);
    }
    for (r, v) in runs.iter().zip(&ints).skip(2) {
        let n = r.batch as i64;
        if (0..base.len()).any(|k| base[k] + per_batch[k] * n != v[k]) {
            return None;
        }
    }
    Some(Folded::Linear {
        base: HostTensor::ints(first.shape.clone(), base),
        per_batch,
    })
}

/// The graph with every node of `g.nodes[..end]` whose outputs are all host values folded
/// as `runs` show them, and the nodes nothing needs any more removed; `None` when nothing
/// changes. `runs` holds one run for a graph fixed to one batch size (everything is then a
/// constant), or runs at three batch sizes. Parameters that only shape arithmetic read
/// (a `Shape` of a weight) become unused: they are listed in `weights_in_constants`.
pub fn fold_shapes(g: &Graph, end: usize, runs: &[HostRun]) -> Option<Graph> {
    let mut out = g.clone();
    let mut changed = false;
    let mut nodes = Vec::with_capacity(g.nodes.len());
    // Host values computed from shapes and constants only. A host value computed from a
    // tensor's values (a Cast of a small map to integers) depends on the image or on
    // trained weights, and is never folded.
    let mut of_shapes: BTreeSet<&str> = g.constants.keys().map(String::as_str).collect();
    for (i, n) in g.nodes.iter().enumerate() {
        let outputs: Vec<&String> = n.outputs.iter().filter(|o| !o.is_empty()).collect();
        let hosts = runs.first().map(|r| r.hosts);
        let static_inputs = n.inputs.iter().enumerate().all(|(k, x)| {
            x.is_empty() || (n.op == "Shape" && k == 0) || of_shapes.contains(x.as_str())
        });
        if !(i < end
            && static_inputs
            && !outputs.is_empty()
            && outputs
                .iter()
                .all(|o| hosts.is_some_and(|h| h.contains_key(*o))))
        {
            nodes.push(n.clone());
            continue;
        }
        of_shapes.extend(outputs.iter().map(|o| o.as_str()));
        let folds: Option<Vec<Folded>> = (n.op != BATCH_SHAPE)
            .then(|| outputs.iter().map(|o| fold_value(runs, o)).collect())
            .flatten();
        let Some(folds) = folds else {
            nodes.push(n.clone());
            continue;
        };
        changed = true;
        for (o, f) in outputs.into_iter().zip(folds) {
            match f {
                Folded::Constant(t) => {
                    out.constants.insert(o.clone(), t);
                }
                Folded::Linear { base, per_batch } => nodes.push(Node {
                    name: format!("{}#batch", o),
                    op: BATCH_SHAPE.into(),
                    inputs: vec![],
                    outputs: vec![o.clone()],
                    attrs: [
                        ("base".to_owned(), Attr::Tensor(base)),
                        ("per_batch".to_owned(), Attr::Ints(per_batch)),
                    ]
                    .into(),
                }),
            }
        }
    }
    if !changed {
        return None;
    }
    // Dead nodes go, last to first: a node stays if the output or a kept node reads it.
    let mut needed: BTreeSet<String> = BTreeSet::from([g.output.name.clone()]);
    let mut kept = Vec::with_capacity(nodes.len());
    for n in nodes.into_iter().rev() {
        if n.outputs.iter().any(|o| needed.contains(o)) {
            needed.extend(n.inputs.iter().filter(|i| !i.is_empty()).cloned());
            kept.push(n);
        }
    }
    kept.reverse();
    out.nodes = kept;
    out.constants.retain(|name, _| needed.contains(name));
    let unused: Vec<String> = out
        .params
        .keys()
        .filter(|p| !needed.contains(*p))
        .cloned()
        .collect();
    for p in unused {
        out.params.remove(&p);
        out.weights_in_constants.push(p);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(batch: usize, v: Vec<i64>) -> (usize, BTreeMap<String, HostTensor>) {
        (
            batch,
            [("v".to_owned(), HostTensor::ints(vec![v.len()], v))].into(),
        )
    }

    fn folded(runs: &[(usize, BTreeMap<String, HostTensor>)]) -> Option<Folded> {
        let runs: Vec<HostRun> = runs
            .iter()
            .map(|(batch, hosts)| HostRun {
                batch: *batch,
                hosts,
            })
            .collect();
        fold_value(&runs, "v")
    }

    #[test]
    fn values_fold_to_constants_or_lines_in_the_batch_size() {
        let same = [
            run(1, vec![3, 16]),
            run(2, vec![3, 16]),
            run(3, vec![3, 16]),
        ];
        assert!(matches!(folded(&same), Some(Folded::Constant(t)) if t.as_ints() == [3, 16]));
        // [n, n·4, 16]
        let heads = [
            run(1, vec![1, 4, 16]),
            run(2, vec![2, 8, 16]),
            run(3, vec![3, 12, 16]),
        ];
        match folded(&heads) {
            Some(Folded::Linear { base, per_batch }) => {
                assert_eq!(base.as_ints(), [0, 0, 16]);
                assert_eq!(per_batch, [1, 4, 0]);
            }
            _ => panic!("not folded as a line"),
        }
        // n² is no line: the third run shows it.
        let square = [run(1, vec![1]), run(2, vec![4]), run(3, vec![9])];
        assert!(folded(&square).is_none());
        // A value that changes with the batch in a single run's worth of evidence is kept.
        assert!(folded(&[run(1, vec![1]), run(1, vec![2])]).is_none());
    }
}
