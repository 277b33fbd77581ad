//! ONNX's backend node conformance suite on retrain's graph runtime: every case that
//! scripts/make_onnx_node_cases.py wrote from the onnx wheel's own generators (a one-node
//! model, or a function body expanded into its nodes, with inputs and expected outputs).
//!
//! Each case is read by retrain's ONNX reader and run the way a model's graph runs: its
//! first float input of rank 1 to 4 is the runtime input; the other inputs become what
//! they are in exported models, float tensors initializers (`Param`s) and integer or scalar
//! ones constants. A case passes when every output of every data set has the expected
//! shape and values within the case's own tolerance (`|got − want| ≤ atol + rtol·|want|`,
//! onnx's defaults rtol 1e-3, atol 1e-7). A case is refused when the reader or the runtime
//! says cleanly that something in it is not supported (an op outside the supported set, a
//! data type, an attribute); that is not a failure. Everything else is a failure, with its
//! reason listed. The summary goes to stderr (past the test harness's capture).
//!
//! Without the cases (not committed: 12 MiB) the test says it is skipped; CI generates
//! them (scripts/test.sh) and requires them.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use retrain::graph::block::{GraphBlock, Span};
use retrain::graph::value::F;
use retrain::graph::{Graph, HostData, HostTensor, ValueInfo};
use retrain::weights::onnx::read_tensor_proto;
use retrain::weights::{DType, WeightTensor, Weights, WeightsError};
use retrain::zoo::loader::WeightLoader;

/// Cases that passed when this floor was set (onnx 1.23.2): fewer is a regression.
const PASSED_AT_LEAST: usize = 513;

enum Outcome {
    Passed,
    Refused(String),
    Failed(String),
}

fn cases_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("RETRAIN_ONNX_NODE_CASES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/onnx-node-cases"));
    if dir.is_dir() {
        return Some(dir);
    }
    common::missing(format!(
        "{} not found; run scripts/make_onnx_node_cases.py (or set RETRAIN_ONNX_NODE_CASES)",
        dir.display()
    ))
}

fn read_pb(path: &Path) -> Result<(String, HostTensor), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    read_tensor_proto(&bytes).map_err(|e| e.to_string())
}

/// The values of `dir/<prefix>_<j>.pb`, j = 0, 1, ...
fn data_set(dir: &Path, prefix: &str) -> Result<Vec<(String, HostTensor)>, String> {
    let mut out = Vec::new();
    loop {
        let p = dir.join(format!("{prefix}_{}.pb", out.len()));
        if !p.is_file() {
            return Ok(out);
        }
        out.push(read_pb(&p)?);
    }
}

/// The runtime's clean refusals say what is not supported ("the op X is not supported",
/// "at most 5 is supported", "only positive steps are supported").
fn refused_by_runtime(why: &str) -> bool {
    why.contains("supported")
}

fn refused_by_reader(e: &WeightsError) -> bool {
    matches!(e, WeightsError::Unsupported(_))
}

/// Runs one data set: binds the inputs, compiles the graph up to each expected output and
/// compares.
fn run_data_set(
    graph: &Graph,
    inputs: Vec<(String, HostTensor)>,
    expected: Vec<(String, HostTensor)>,
    tol: (f64, f64),
    device: &Device,
) -> Outcome {
    let names: Vec<&ValueInfo> = std::iter::once(&graph.input)
        .chain(&graph.extra_inputs)
        .collect();
    if names.len() != inputs.len() {
        return Outcome::Failed(format!(
            "{} graph inputs, {} input files",
            names.len(),
            inputs.len()
        ));
    }
    let mut g = graph.clone();
    g.extra_inputs.clear();
    let mut tensors = BTreeMap::new();
    let mut runtime: Option<(String, Vec<usize>, Vec<f32>)> = None;
    for (vi, (_, t)) in names.iter().zip(inputs) {
        let name = vi.name.clone();
        match t.data {
            HostData::Float(v) if runtime.is_none() && (1..=4).contains(&t.shape.len()) => {
                runtime = Some((name, t.shape, v));
            }
            HostData::Float(v) if !t.shape.is_empty() => {
                g.params.insert(name.clone(), t.shape.clone());
                let w = WeightTensor {
                    dtype: DType::F32,
                    shape: t.shape,
                    data: v,
                    strided: false,
                };
                tensors.insert(name, w);
            }
            data => {
                g.constants.insert(
                    name,
                    HostTensor {
                        shape: t.shape,
                        data,
                    },
                );
            }
        }
    }
    let (input, shape, values) =
        runtime.unwrap_or_else(|| ("retrain_unused_input".into(), vec![1], vec![0.0]));
    let weights = Weights {
        tensors,
        ..Weights::empty()
    };
    let loader = WeightLoader::new(&weights, device);
    let x = F::from_host(
        &HostTensor {
            shape: shape.clone(),
            data: HostData::Float(values),
        },
        device,
    )
    .into_r4();
    for (out_name, want) in expected {
        let span = Span {
            graph: &g,
            nodes: 0..g.nodes.len(),
            input: &input,
            input_shape: shape.clone(),
            output: &out_name,
            fixed_batch: None,
        };
        let block = match GraphBlock::build(&span, &loader) {
            Ok(b) => b,
            Err(e) if refused_by_runtime(&e.to_string()) => {
                return Outcome::Refused(e.to_string());
            }
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let shapes = match block.trace(x.clone()).map(|t| t.shapes) {
            Ok(s) => s,
            Err(e) if refused_by_runtime(&e.to_string()) => {
                return Outcome::Refused(e.to_string());
            }
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let got_shape = shapes.get(&out_name).cloned().unwrap_or_default();
        if got_shape != want.shape {
            return Outcome::Failed(format!(
                "output `{out_name}`: shape {got_shape:?}, expected {:?}",
                want.shape
            ));
        }
        // The block's output comes packed as rank 4 (a stage boundary's form): unpacked.
        let got: Vec<f32> = match block.forward(x.clone()) {
            Ok(y) if got_shape.is_empty() => F::R4(y).to_vec(),
            Ok(y) => F::from_r4(y, &got_shape).to_vec(),
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let want = want.as_floats();
        if got.len() != want.len() {
            return Outcome::Failed(format!(
                "output `{out_name}`: {} values, expected {}",
                got.len(),
                want.len()
            ));
        }
        let (rtol, atol) = tol;
        for (i, (&a, &b)) in got.iter().zip(&want).enumerate() {
            let same = (a.is_nan() && b.is_nan())
                || a == b
                || ((a - b).abs() as f64) <= atol + rtol * (b.abs() as f64);
            if !same {
                return Outcome::Failed(format!(
                    "output `{out_name}`[{i}] = {a}, expected {b} (rtol {rtol}, atol {atol})"
                ));
            }
        }
    }
    Outcome::Passed
}

fn run_case(dir: &Path, device: &Device) -> Outcome {
    let case: serde_json::Value = match std::fs::read_to_string(dir.join("case.json")) {
        Ok(s) => serde_json::from_str(&s).unwrap(),
        Err(e) => return Outcome::Failed(format!("case.json: {e}")),
    };
    let tol = (
        case["rtol"].as_f64().unwrap_or(1e-3),
        case["atol"].as_f64().unwrap_or(1e-7),
    );
    let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
    let mut weights = match Weights::from_bytes(&bytes) {
        Ok(w) => w,
        Err(e) if refused_by_reader(&e) => return Outcome::Refused(e.to_string()),
        Err(e) => return Outcome::Failed(format!("reader: {e}")),
    };
    let graph = match weights.graph.take() {
        Some(g) => *g,
        None => return Outcome::Failed("the reader gave no graph".into()),
    };
    let mut k = 0;
    loop {
        let ds = dir.join(format!("test_data_set_{k}"));
        if !ds.is_dir() {
            break;
        }
        let (inputs, expected) = match (data_set(&ds, "input"), data_set(&ds, "output")) {
            (Ok(i), Ok(o)) => (i, o),
            (Err(e), _) | (_, Err(e)) => return Outcome::Refused(format!("test data: {e}")),
        };
        // The case's float initializers (rare) stay as the reader made them.
        let mut g = graph.clone();
        for (name, t) in &weights.tensors {
            g.params
                .entry(name.clone())
                .or_insert_with(|| t.shape.clone());
        }
        let outcome = run_data_set(&g, inputs, expected, tol, device);
        if !matches!(outcome, Outcome::Passed) {
            return outcome;
        }
        k += 1;
    }
    Outcome::Passed
}

/// The op a refusal names ("the op X is not supported", "op X of domain ..."), or its
/// reason's first words.
fn refusal_kind(why: &str) -> String {
    if let Some(rest) = why.split("the op ").nth(1) {
        return format!("op {}", rest.split_whitespace().next().unwrap_or("?"));
    }
    if let Some(i) = why.find(": ") {
        let tail = &why[i + 2..];
        return tail
            .split_whitespace()
            .take(6)
            .collect::<Vec<_>>()
            .join(" ");
    }
    why.split_whitespace().take(6).collect::<Vec<_>>().join(" ")
}

#[test]
fn onnx_backend_node_conformance() {
    let Some(root) = cases_dir() else {
        return;
    };
    let device = Device::default();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    // RETRAIN_ONNX_CASE=<prefix>: only those cases, panics not caught (for a backtrace).
    let only = std::env::var("RETRAIN_ONNX_CASE").ok();
    if let Some(prefix) = &only {
        dirs.retain(|d| {
            d.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(prefix.as_str())
        });
    }
    dirs.sort();
    let (mut passed, mut refused, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    let quiet = std::panic::take_hook();
    if only.is_none() {
        std::panic::set_hook(Box::new(|_| {}));
    }
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if only.is_some() {
            let _ = run_case(dir, &device);
        }
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(dir, &device)))
                .unwrap_or_else(|p| {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    Outcome::Failed(format!("PANIC: {msg}"))
                });
        match outcome {
            Outcome::Passed => passed.push(name),
            Outcome::Refused(why) => refused.push((name, why)),
            Outcome::Failed(why) => failed.push((name, why)),
        }
    }
    std::panic::set_hook(quiet);
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for (_, why) in &refused {
        *kinds.entry(refusal_kind(why)).or_default() += 1;
    }
    let mut kinds: Vec<(String, usize)> = kinds.into_iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let run = passed.len() + failed.len();
    let mut report = format!(
        "ONNX node conformance: {} cases; {} run on supported ops: {} passed, {} failed \
         ({:.1}% pass); {} refused cleanly\n",
        dirs.len(),
        run,
        passed.len(),
        failed.len(),
        100.0 * passed.len() as f64 / run.max(1) as f64,
        refused.len()
    );
    report += "refused, by reason (cases):\n";
    for (k, n) in &kinds {
        report += &format!("  {n:4}  {k}\n");
    }
    report += "failed:\n";
    for (name, why) in &failed {
        report += &format!("  {name}: {why}\n");
    }
    let _ = std::io::stderr().write_all(report.as_bytes());
    let panics: Vec<&String> = failed
        .iter()
        .filter(|(_, w)| w.starts_with("PANIC"))
        .map(|(n, _)| n)
        .collect();
    assert!(panics.is_empty(), "cases that panicked: {panics:?}");
    assert!(
        passed.len() >= PASSED_AT_LEAST,
        "{} cases passed, fewer than the {PASSED_AT_LEAST} that passed before",
        passed.len()
    );
}
