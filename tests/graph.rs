//! ONNX files run as their own graph: torch.onnx exports (TorchScript exporter at opsets 9,
//! 13 and 17, the dynamo exporter at 18, external data, a symbolic batch) of reduced
//! torchvision networks, against onnxruntime's outputs (scripts/make_onnx_fixtures.py);
//! one of them behind an NHWC and a greyscale input (scripts/make_onnx_input_fixtures.py);
//! tf2onnx's conversions of Keras models (scripts/make_tf2onnx_fixtures.py). Tolerance:
//! 1e-4 absolute, f32, as loaded and with BatchNorm folded.
//!
//! TFLite files run as their own graph too, without `--model`: the Keras models of the
//! TFLite parity fixtures (scripts/make_tf_fixtures.py) against Keras' outputs (float
//! weights, 1e-4) and the TFLite interpreter's (float16 weights 1e-4; int8 weights and full
//! integer quantisation, computed here in f32, 2% of the largest output), and TF1 graphs
//! with TF-slim names, float and uint8 (scripts/make_tflite_tf1_fixtures.py), and small
//! files for single operators and metadata (scripts/make_tflite_op_fixtures.py).

mod common;

use burn::prelude::*;
use common::*;
use retrain::graph;
use retrain::weights::{Weights, WeightsFormat};
use retrain::zoo::Model;

const TOL: f32 = 1e-4;

fn check(name: &str) {
    let dir = fixtures().join("onnx").join(name);
    let device = Device::default();
    let weights = Weights::load(&dir.join("model.onnx")).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(weights.format, WeightsFormat::Onnx);
    let spec = graph::analyse::model_spec(&weights, name, None, &device)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let model =
        Model::from_spec(&spec, &weights, &device).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (shape, x) = npy(&dir.join("input.npy"));
    let want_logits = npy(&dir.join("logits.npy"));
    let want_features = npy(&dir.join("features.npy"));
    let (f, l) = model
        .network
        .features_and_logits(tensor4(&shape, x.clone(), &device))
        .unwrap();
    let df = max_abs_diff("features", values(f), want_features.clone());
    let dl = max_abs_diff(
        "logits",
        values(l.expect("a classifier")),
        want_logits.clone(),
    );
    eprintln!(
        "{name}: {} stages; max |diff| features {df:.2e}, logits {dl:.2e}",
        model.stage_names.len()
    );
    assert!(
        df <= TOL && dl <= TOL,
        "{name}: features {df:e}, logits {dl:e} > {TOL:e}"
    );

    let folded = model.for_inference();
    let (f, l) = folded
        .network
        .features_and_logits(tensor4(&shape, x, &device))
        .unwrap();
    let df = max_abs_diff("features", values(f), want_features);
    let dl = max_abs_diff("logits", values(l.unwrap()), want_logits);
    assert!(
        df <= TOL && dl <= TOL,
        "{name} folded: features {df:e}, logits {dl:e}"
    );
}

macro_rules! parity {
    ($($test:ident),* $(,)?) => {
        $(#[test]
        fn $test() {
            check(stringify!($test));
        })*
    };
}

parity!(
    resnet_op9,
    resnet_op13,
    resnet_op17,
    resnet_dynamo,
    mobilenet_v2_op9,
    mobilenet_v2_op13,
    mobilenet_v2_op17,
    mobilenet_v2_dynamo,
    mobilenet_v2_op13_external,
    // An NHWC image input, as tf2onnx writes it, and a greyscale one fed RGB
    // (scripts/make_onnx_input_fixtures.py).
    mobilenet_v2_nhwc,
    mobilenet_v2_grey,
    mobilenet_v3_op9,
    mobilenet_v3_op13,
    mobilenet_v3_op17,
    efficientnet_op9,
    efficientnet_op13,
    efficientnet_op17,
    convnext_op9,
    convnext_op13,
    convnext_op17,
    vit_op14,
    vit_op17,
    // tf2onnx's conversions of Keras models (scripts/make_tf2onnx_fixtures.py): NHWC input
    // with a symbolic batch, BatchNorm as per-channel Mul and Add, Dense as MatMul + Add
    // behind a Squeeze, a final Softmax; against onnxruntime (which matches Keras).
    keras_mobilenet_v2_tf2onnx_op13,
    keras_residual_tf2onnx_op17,
);

/// dL/d(input) through the graph, L = Σ logits · probe, equals torch autograd's on the
/// same network (eval mode: BatchNorm folded, as the origin's inference).
fn check_gradient(name: &str) {
    let dir = fixtures().join("onnx").join(name);
    let ad = Device::default().autodiff();
    let weights = Weights::load(&dir.join("model.onnx")).unwrap();
    let spec = graph::analyse::model_spec(&weights, name, None, &ad).unwrap();
    let model = Model::from_spec(&spec, &weights, &ad)
        .unwrap()
        .for_inference();
    let (shape, x) = npy(&dir.join("input.npy"));
    let (pshape, probe) = npy(&dir.join("probe.npy"));
    let x = tensor4(&shape, x, &ad).require_grad();
    let logits = model.network.logits(x.clone()).unwrap().unwrap();
    let probe = Tensor::<2>::from_data(TensorData::new(probe, [pshape[0], pshape[1]]), &ad);
    let grads = (logits * probe).sum().backward();
    let g = x.grad(&grads).expect("the input has a gradient");
    let got = (
        g.dims().to_vec(),
        g.into_data().convert::<f32>().try_to_vec::<f32>().unwrap(),
    );
    let d = max_abs_diff("grad_input", got, npy(&dir.join("grad_input.npy")));
    eprintln!("{name}: gradient max |diff| {d:.2e}");
    assert!(d <= TOL, "{name}: gradient {d:e} > {TOL:e}");
}

macro_rules! gradient {
    ($($test:ident: $fixture:literal),* $(,)?) => {
        $(#[test]
        fn $test() {
            check_gradient($fixture);
        })*
    };
}

gradient!(
    gradient_resnet_op13: "resnet_op13",
    gradient_resnet_dynamo: "resnet_dynamo",
    gradient_mobilenet_v2_op9: "mobilenet_v2_op9",
    gradient_mobilenet_v3_op17: "mobilenet_v3_op17",
    gradient_efficientnet_op13: "efficientnet_op13",
    gradient_convnext_op17: "convnext_op17",
    gradient_convnext_op9: "convnext_op9",
    gradient_vit_op17: "vit_op17",
    gradient_vit_op14: "vit_op14",
);

/// A graph exported for a batch of 2 (its Reshape names the 2) runs any batch, in
/// chunks: 3 images give what they give one by one.
#[test]
fn a_fixed_batch_export_runs_other_batch_sizes() {
    let dir = fixtures().join("onnx").join("resnet_dynamo");
    let device = Device::default();
    let weights = Weights::load(&dir.join("model.onnx")).unwrap();
    let spec = graph::analyse::model_spec(&weights, "r", None, &device).unwrap();
    let retrain::zoo::ArchConfig::Graph(cfg) = &spec.config else {
        panic!("a graph")
    };
    assert_eq!(cfg.fixed_batch, Some(2));
    let model = Model::from_spec(&spec, &weights, &device).unwrap();
    let (shape, x) = npy(&dir.join("input.npy"));
    let per = x.len() / shape[0];
    let mut three = x.clone();
    three.extend_from_slice(&x[..per]);
    let l3 = values(
        model
            .network
            .logits(tensor4(&[3, shape[1], shape[2], shape[3]], three, &device))
            .unwrap()
            .unwrap(),
    );
    let want = npy(&dir.join("logits.npy"));
    let classes = want.0[1];
    let first_two = (vec![2, classes], l3.1[..2 * classes].to_vec());
    assert!(max_abs_diff("logits", first_two, want.clone()) <= TOL);
    let third = (vec![1, classes], l3.1[2 * classes..].to_vec());
    assert!(
        max_abs_diff(
            "logits",
            third,
            (vec![1, classes], want.1[..classes].to_vec())
        ) <= TOL
    );
}

/// A token model's shape arithmetic (Shape → Gather → Concat → Reshape, per attention
/// layer) is folded at load: its encoder blocks become cut points. The first block's
/// output, and its tokens' mean as the embedding there, equal onnxruntime's value
/// (scripts/make_onnx_cut_references.py).
#[test]
fn vit_encoder_blocks_are_cut_points() {
    let dir = fixtures().join("onnx/vit_op17");
    let device = Device::default();
    let weights = Weights::load(&dir.join("model.onnx")).unwrap();
    let spec = graph::analyse::model_spec(&weights, "vit", None, &device).unwrap();
    let retrain::zoo::ArchConfig::Graph(config) = &spec.config else {
        panic!("not a graph spec");
    };
    assert!(
        config.graph.nodes.iter().all(|n| n.op != "Shape"),
        "every Shape is folded"
    );
    let names: Vec<&str> = config.stages.iter().map(|s| s.name.as_str()).collect();
    for block in [
        "encoder_layer_0/Add",
        "encoder_layer_0/Add_1",
        "encoder_layer_1/Add",
    ] {
        assert!(
            names.iter().any(|n| n.ends_with(block)),
            "no cut at {block}: {names:?}"
        );
    }
    let model = Model::from_spec(&spec, &weights, &device).unwrap();
    let at = config
        .stage_index("/encoder/layers/encoder_layer_0/Add_1")
        .unwrap();
    assert_eq!(spec.config.stages()[at].channels, 32);
    let (shape, x) = npy(&dir.join("input.npy"));
    let (tshape, tokens) = npy(&dir.join("tokens_layer0.npy"));
    let [n, t, d] = tshape[..] else { panic!() };
    // Packed as [n, width, tokens, 1]: the stage's channels are the token width.
    let map = model
        .network
        .features_through(tensor4(&shape, x.clone(), &device), at)
        .unwrap();
    assert_eq!(map.dims(), [n, d, t, 1]);
    let got: Vec<f32> = map.swap_dims(1, 2).into_data().try_into_vec().unwrap();
    let diff = got
        .iter()
        .zip(&tokens)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff <= TOL, "tokens differ by {diff:e}");
    let pooled = model
        .network
        .embed(tensor4(&shape, x, &device), at)
        .unwrap();
    let mean: Vec<f32> = (0..n * d)
        .map(|k| {
            (0..t)
                .map(|j| tokens[(k / d) * t * d + j * d + k % d])
                .sum::<f32>()
                / t as f32
        })
        .collect();
    let dm = max_abs_diff("token mean", values(pooled), (vec![n, d], mean));
    assert!(dm <= TOL, "token mean differs by {dm:e}");
}

/// For inference, each BatchNorm after a convolution is folded into it and the
/// activation that alone reads it runs fused with the convolution: MobileNetV2 at opset 9
/// (BatchNorm kept by the exporter) has no BatchNorm, Identity or ReLU6 step left; its
/// outputs stay within 1e-4 (checked by `mobilenet_v2_op9`).
#[test]
fn inference_fuses_conv_batchnorm_and_activation() {
    let dir = fixtures().join("onnx/mobilenet_v2_op9");
    let device = Device::default();
    let weights = Weights::load(&dir.join("model.onnx")).unwrap();
    let spec = graph::analyse::model_spec(&weights, "m", None, &device).unwrap();
    let steps = |m: &Model| -> Vec<String> {
        m.network
            .stages
            .iter()
            .flat_map(|s| &s.blocks)
            .flat_map(|b| match b {
                retrain::zoo::layers::Block::Graph(g) => g.step_ops(),
                _ => vec![],
            })
            .map(str::to_owned)
            .collect()
    };
    let model = Model::from_spec(&spec, &weights, &device).unwrap();
    let trained = steps(&model);
    let count = |v: &[String], op: &str| v.iter().filter(|s| *s == op).count();
    assert_eq!(count(&trained, "BatchNormalization"), 16);
    let folded = steps(&model.for_inference());
    assert_eq!(
        count(&folded, "Conv+BatchNormalization+Clip"),
        11,
        "{folded:?}"
    );
    assert_eq!(count(&folded, "Conv+BatchNormalization"), 5, "{folded:?}");
    for gone in ["BatchNormalization", "Clip", "Identity"] {
        assert_eq!(count(&folded, gone), 0, "{gone} left: {folded:?}");
    }
}

fn tiny_graph(nodes: Vec<retrain::graph::Node>, output: &str) -> (retrain::graph::Graph, Weights) {
    use retrain::graph::{Graph, ValueInfo};
    let mut tensors = std::collections::BTreeMap::new();
    tensors.insert(
        "w".to_owned(),
        retrain::weights::WeightTensor {
            dtype: retrain::weights::DType::F32,
            shape: vec![5],
            data: vec![1.0; 5],
            strided: false,
        },
    );
    let g = Graph {
        format: "onnx".into(),
        producer: "test".into(),
        opset: 17,
        input: ValueInfo {
            name: "x".into(),
            dims: vec![Some(1), Some(3), Some(8), Some(8)],
        },
        extra_inputs: vec![],
        output: ValueInfo {
            name: output.into(),
            dims: vec![],
        },
        nodes,
        params: [("w".to_owned(), vec![5])].into(),
        constants: [(
            "huge".to_owned(),
            retrain::graph::HostTensor::ints(vec![2], vec![1 << 20, 1 << 20]),
        )]
        .into(),
        input_scaling: None,
        weights_in_constants: vec![],
    };
    let w = Weights {
        tensors,
        ..Weights::empty()
    };
    (g, w)
}

fn node(op: &str, inputs: &[&str], output: &str) -> retrain::graph::Node {
    retrain::graph::Node {
        name: format!("n_{output}"),
        op: op.into(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: vec![output.into()],
        attrs: Default::default(),
    }
}

/// Broken graphs are one-line errors naming the node, never a panic or a huge allocation.
#[test]
fn broken_graphs_are_errors_naming_the_node() {
    let device = Device::default();
    let cases = [
        (
            vec![node("FooBar", &["x"], "y")],
            "y",
            "n_y",
            "the op FooBar is not supported",
        ),
        (
            vec![node("Relu", &["nowhere"], "y")],
            "y",
            "n_y",
            "not produced by any earlier node",
        ),
        (
            vec![node("Relu", &["z"], "y"), node("Relu", &["y"], "z")],
            "z",
            "n_y",
            "a cycle or a dangling input",
        ),
        (
            vec![node("Add", &["x", "w"], "y")],
            "y",
            "n_y",
            "do not broadcast",
        ),
        (
            vec![node("ConstantOfShape", &["huge"], "y")],
            "y",
            "n_y",
            "would exceed",
        ),
        (
            vec![node("Relu", &["x"], "y")],
            "q",
            "q",
            "computed by no node",
        ),
    ];
    for (nodes, out, at, why) in cases {
        let (g, w) = tiny_graph(nodes, out);
        let e = retrain::graph::analyse(&g, &w, None, &device).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(at) && msg.contains(why), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
}

/// An op that fails only when the network runs (here a Reshape that fits the traced
/// 8×8 input but not a 16×16 one) is an error naming the node, not a panic.
#[test]
fn an_op_failing_at_run_time_is_an_error_naming_the_node() {
    let device = Device::default();
    let mut reshape = node("Reshape", &["x", "to"], "flat");
    reshape.name = "flatten_fixed".into();
    let (mut g, mut w) = tiny_graph(
        vec![reshape, node("Unsqueeze", &["flat", "axes"], "y")],
        "y",
    );
    g.constants.insert(
        "to".into(),
        retrain::graph::HostTensor::ints(vec![2], vec![0, 192]),
    );
    g.constants.insert(
        "axes".into(),
        retrain::graph::HostTensor::ints(vec![2], vec![2, 3]),
    );
    g.params.clear();
    w.tensors.clear();
    w.graph = Some(Box::new(g));
    let spec = graph::analyse::model_spec(&w, "runtime", None, &device).unwrap();
    let model = Model::from_spec(&spec, &w, &device).unwrap();
    let ok = model
        .network
        .penultimate(Tensor::zeros([2, 3, 8, 8], &device));
    assert_eq!(ok.unwrap().dims(), [2, 192]);
    let e = model
        .network
        .penultimate(Tensor::zeros([2, 3, 16, 16], &device))
        .unwrap_err()
        .to_string();
    assert!(e.contains("flatten_fixed") && e.contains("Reshape"), "{e}");
    assert!(!e.contains('\n'), "{e}");
}

/// Every truncation of an ONNX file is an error (or, cut at a field boundary, a graph
/// that fails to analyse cleanly), never a panic.
#[test]
fn truncated_onnx_files_fail_cleanly() {
    let device = Device::default();
    let bytes = std::fs::read(fixtures().join("onnx/resnet_op13/model.onnx")).unwrap();
    for k in 1..=97 {
        let cut = bytes.len() * k / 100;
        if let Ok(w) = Weights::from_bytes(&bytes[..cut]) {
            let _ = graph::analyse::model_spec(&w, "cut", None, &device);
        }
    }
    // Flipped bytes: decoding errors or graphs that are refused, never a panic.
    for k in (0..bytes.len()).step_by(bytes.len() / 61) {
        let mut b = bytes.clone();
        b[k] ^= 0xA5;
        if let Ok(w) = Weights::from_bytes(&b) {
            let _ = graph::analyse::model_spec(&w, "flipped", None, &device);
        }
    }
}

/// External data named outside the model's folder is refused.
#[test]
fn external_data_stays_in_the_model_folder() {
    let src = fixtures().join("onnx/mobilenet_v2_op13_external");
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(src.join("model.onnx")).unwrap();
    // Same length as "model.onnx.data", pointing up a folder.
    let evil = bytes
        .windows(15)
        .position(|w| w == b"model.onnx.data")
        .expect("the location string");
    let mut b = bytes.clone();
    b[evil..evil + 15].copy_from_slice(b"../../etc/passw");
    std::fs::write(tmp.path().join("model.onnx"), &b).unwrap();
    let e = Weights::load(&tmp.path().join("model.onnx"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("outside the model's folder"), "{e}");
    // And a missing data file says where it should be.
    std::fs::write(tmp.path().join("model.onnx"), &bytes).unwrap();
    let e = Weights::load(&tmp.path().join("model.onnx"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.onnx.data") && e.contains("keep it beside the model"),
        "{e}"
    );
}

/// Runs `dir/file` as its own graph on `dir/input.npy` and compares its features and
/// logits with `dir/<want>features.npy` and `dir/<want>logits.npy`, within `tol(largest
/// |value|)`.
fn check_tflite(dir: &str, file: &str, want: &str, tol: fn(f32) -> f32) {
    check_file_graph(dir, file, WeightsFormat::Tflite, "", want, tol);
}

/// Runs `dir/file` as its own graph (no `--model`) on `dir/<input>input.npy` and compares
/// the classifier's input and output with `dir/<want>features.npy` and `<want>logits.npy`.
fn check_file_graph(
    dir: &str,
    file: &str,
    format: WeightsFormat,
    input: &str,
    want: &str,
    tol: fn(f32) -> f32,
) {
    let dir = fixtures().join(dir);
    let device = Device::default();
    let weights = Weights::load(&dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    assert_eq!(weights.format, format);
    let spec =
        retrain::zoo::spec_for(None, &weights, &device).unwrap_or_else(|e| panic!("{file}: {e}"));
    let model =
        Model::from_spec(&spec, &weights, &device).unwrap_or_else(|e| panic!("{file}: {e}"));
    let (shape, x) = npy(&dir.join(format!("{input}input.npy")));
    let (f, l) = model
        .network
        .features_and_logits(tensor4(&shape, x, &device))
        .unwrap();
    for (what, got) in [
        ("features", values(f)),
        ("logits", values(l.expect("a classifier"))),
    ] {
        let want = npy(&dir.join(format!("{want}{what}.npy")));
        let scale = want.1.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = max_abs_diff(what, got, want);
        eprintln!(
            "{file} as a graph ({} stages): {what} max |diff| {d:.2e} (largest |value| {scale:.2e})",
            model.stage_names.len()
        );
        assert!(d <= tol(scale), "{file} {what}: {d:e} > {:e}", tol(scale));
    }
}

/// Float TFLite files as graphs: MobileNetV2 (depthwise convolutions, ReLU6, residual
/// ADDs), ResNet (biased convolutions, PAD, max pooling) and MobileNet v1 (a 1×1
/// convolution as the classifier, reshaped to the logits), against Keras within 1e-4.
#[test]
fn tflite_float_files_run_as_their_graph() {
    for dir in ["tf_mobilenet_v2", "tf_resnet", "keras_mobilenet"] {
        check_tflite(dir, "model.tflite", "", |_| TOL);
    }
}

/// Float16 weights (behind DEQUANTIZE operators) within 1e-4 of the interpreter; int8
/// weights and full integer quantisation within 2% of the largest output (the interpreter
/// rounds activations to int8; retrain computes them in f32).
#[test]
fn quantised_tflite_files_run_as_their_graph() {
    check_tflite("tf_mobilenet_v2", "model_f16.tflite", "tflite_f16_", |_| {
        TOL
    });
    check_tflite(
        "tf_mobilenet_v2",
        "model_int8.tflite",
        "tflite_int8_",
        |s| 0.02 * s,
    );
    check_tflite(
        "tf_mobilenet_v2",
        "model_full_int8.tflite",
        "tflite_full_int8_",
        |s| 0.02 * s,
    );
}

/// A TF1 graph converted from its session (scripts/make_tflite_tf1_fixtures.py): TF-slim
/// scopes (`MobilenetV1/Conv2d_1_depthwise/depthwise`), a 1×1-convolution head over 1001
/// classes squeezed to a vector; float32, and uint8 throughout (weights and activations,
/// trained with fake quantisation; its input's scale 1 and zero point 0 say it takes
/// pixels as they are). Float within 1e-4 of the interpreter; uint8 within 3% of the
/// largest output (the interpreter rounds every activation to uint8, retrain keeps f32).
#[test]
fn tf1_tflite_files_run_as_their_graph() {
    check_tflite("tflite_tf1", "model.tflite", "float_", |_| TOL);
    check_tflite("tflite_tf1", "model_uint8.tflite", "uint8_", |s| 0.03 * s);
    let device = Device::default();
    let w = Weights::load(&fixtures().join("tflite_tf1/model_uint8.tflite")).unwrap();
    let spec = retrain::zoo::spec_for(None, &w, &device).unwrap();
    assert_eq!(spec.preprocess.mean, [0.0; 3]);
    assert!((spec.preprocess.std[0] - 1.0 / 255.0).abs() < 1e-12);
    assert_eq!(spec.preprocess.crop, 56);
}

/// Operators from scripts/make_tflite_op_fixtures.py, against the TFLite interpreter's
/// builtin kernels within 1e-4: FULLY_CONNECTED with keep_num_dims on a conv output (rank
/// 4, held NCHW here) and on a rank-3 tensor; MIRROR_PAD REFLECT and SYMMETRIC (uneven
/// pads, a channel pad, pads as wide as TFLite allows); a float model with metadata.
#[test]
fn tflite_operator_files_run_as_their_graph() {
    for stem in ["dense_keep_dims", "mirror_pad", "metadata"] {
        let (file, want) = (format!("{stem}.tflite"), format!("{stem}_"));
        check_file_graph(
            "tflite_ops",
            &file,
            WeightsFormat::Tflite,
            "",
            &want,
            |_| TOL,
        );
    }
}

/// A float model's TFLite metadata (NormalizationOptions: mean and std per channel on 0..255
/// pixels) is its input scaling: the graph holds the file's values over 255, the spec
/// preprocesses with them, and pixels so scaled give the interpreter's output on the pixels
/// normalised as the metadata says. `--preprocess` still wins; a file without metadata
/// keeps the default.
#[test]
fn tflite_metadata_normalisation_is_the_input_scaling() {
    use retrain::zoo::{InputOverride, PixelScaling, spec_with_input};
    let device = Device::default();
    let dir = fixtures().join("tflite_ops");
    let weights = Weights::load(&dir.join("metadata.tflite")).unwrap();
    let s = weights
        .graph
        .as_ref()
        .unwrap()
        .input_scaling
        .expect("the metadata's scaling");
    let (mean, std) = ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375]);
    for c in 0..3 {
        assert!((s.mean[c] - mean[c] / 255.0).abs() < 1e-6, "{s:?}");
        assert!((s.std[c] - std[c] / 255.0).abs() < 1e-6, "{s:?}");
    }
    assert!(!s.bgr);
    let spec = retrain::zoo::spec_for(None, &weights, &device).unwrap();
    assert_eq!((spec.preprocess.mean, spec.preprocess.std), (s.mean, s.std));

    // Pixels scaled as the library scales them (data.rs: x · 1/(255·std) − mean/std).
    let model = Model::from_spec(&spec, &weights, &device).unwrap();
    let (shape, pixels) = npy(&dir.join("pixels.npy"));
    let plane = shape[2] * shape[3];
    let p = &spec.preprocess;
    let x: Vec<f32> = pixels
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let k = (i / plane) % 3;
            v * (1.0 / (255.0 * p.std[k])) as f32 - (p.mean[k] / p.std[k]) as f32
        })
        .collect();
    let logits = model
        .network
        .logits(tensor4(&shape, x, &device))
        .unwrap()
        .unwrap();
    let want = npy(&dir.join("metadata_pixels_logits.npy"));
    let d = max_abs_diff("logits", values(logits), want);
    eprintln!("metadata.tflite on pixels scaled by its metadata: logits max |diff| {d:.2e}");
    assert!(d <= TOL, "{d:e}");

    let tf = InputOverride {
        scaling: Some(PixelScaling::Tf),
        ..Default::default()
    };
    let spec = spec_with_input(None, &weights, &tf, &device).unwrap();
    assert_eq!(
        (spec.preprocess.mean, spec.preprocess.std),
        ([0.5; 3], [0.5; 3])
    );
    let plain = Weights::load(&dir.join("mirror_pad.tflite")).unwrap();
    assert_eq!(plain.graph.as_ref().unwrap().input_scaling, None);
}

/// Keras full models as graphs (scripts/make_keras_graph_fixtures.py): a plain CNN
/// (Sequential, Flatten of a 5x5 map), a transfer model around a nested Functional base,
/// and a residual net (SeparableConv2D, PReLU, Concatenate, Cropping2D, squeeze-excitation,
/// Reshape, config-given Normalization), each as saved by Keras 3 (`.keras` and `.h5`);
/// the CNN also by Keras 2 (tf_keras). Against Keras within 1e-4.
#[test]
fn keras_full_models_of_custom_networks_run_as_their_graph() {
    for name in ["cnn", "nested", "residual"] {
        let (input, want) = (format!("{name}_"), format!("{name}_"));
        for (file, format) in [
            (format!("{name}.keras"), WeightsFormat::Keras),
            (format!("{name}.h5"), WeightsFormat::KerasH5),
        ] {
            check_file_graph("keras_graph", &file, format, &input, &want, |_| TOL);
        }
    }
    check_file_graph(
        "keras_graph",
        "cnn_keras2.h5",
        WeightsFormat::KerasH5,
        "cnn_",
        "cnn_",
        |_| TOL,
    );
}

/// Keras Applications of every family as full models, from Keras' own application code,
/// reduced (scripts/make_keras_app_fixtures.py): Xception, InceptionV3, ResNet50V2,
/// DenseNet121, NASNet, MobileNetV3Small (Keras 3 operations on tensors, a 1x1-convolution
/// classifier), EfficientNetV2, ConvNeXt (LayerNormalization, Dense on maps, LayerScale, a
/// nested Sequential; also as a legacy .h5), InceptionResNetV2's CustomScaleLayer and a
/// Keras 2 model of TensorFlow operations (TFOpLambda layers), against Keras within 1e-4.
#[test]
fn keras_applications_of_every_family_run_as_their_graph() {
    for name in [
        "xception",
        "inception_v3",
        "resnet50v2",
        "densenet121",
        "nasnet",
        "mobilenet_v3_small",
        "efficientnet_v2",
        "convnext",
        "custom_scale",
    ] {
        let prefix = format!("{name}_");
        let file = format!("{name}.keras");
        check_file_graph(
            "keras_apps",
            &file,
            WeightsFormat::Keras,
            &prefix,
            &prefix,
            |_| TOL,
        );
    }
    // Keras 2's TFOpLambda layers (`x / 255.0`, `a + b`, `tf.nn.relu(x + 3.0) * (1 / 6)`).
    check_file_graph(
        "keras_apps",
        "tf_ops_keras2.h5",
        WeightsFormat::KerasH5,
        "tf_ops_keras2_",
        "tf_ops_keras2_",
        |_| TOL,
    );
    // It divides its own pixels by 255: it takes 0..255.
    let w = Weights::load(&fixtures().join("keras_apps/tf_ops_keras2.h5")).unwrap();
    let spec = retrain::zoo::spec_for(None, &w, &Device::default()).unwrap();
    assert_eq!(spec.preprocess.mean, [0.0; 3]);
    assert!((spec.preprocess.std[0] - 1.0 / 255.0).abs() < 1e-12);
    // Resized to the model's input size, as Keras loads images: no 256/224 crop.
    assert_eq!((spec.preprocess.resize, spec.preprocess.crop), (16, 16));
    check_file_graph(
        "keras_apps",
        "convnext.h5",
        WeightsFormat::KerasH5,
        "convnext_",
        "convnext_",
        |_| TOL,
    );
}

/// Keras Applications' own code as full models: MobileNetV2 (ZeroPadding2D, ReLU(6),
/// residual Adds; `.keras` and `.h5`) and EfficientNet (the model's own Rescaling and
/// Normalization, swish, squeeze-excitation through Reshape and Multiply), against Keras.
#[test]
fn keras_applications_full_models_run_as_their_graph() {
    for (dir, file, format) in [
        ("keras_mobilenet_v2", "model.keras", WeightsFormat::Keras),
        ("keras_mobilenet_v2", "model.h5", WeightsFormat::KerasH5),
        ("keras_efficientnet", "model.keras", WeightsFormat::Keras),
    ] {
        check_file_graph(dir, file, format, "", "", |_| TOL);
    }
}

/// CNTK models built with CNTK's layers API, saved by CNTK 2.7 as v2 files
/// (scripts/make_cntk_fixtures.py): a ConvNet (auto-padded convolutions with odd and even
/// kernels and strides, grouped convolution, spatial and per-element BatchNorm, ELU and
/// LeakyReLU blocks, reflection padding, max and average pooling, Dense on a map), a
/// net reshaping activations (Slice along one and two axes, TransposeAxes, Reshape,
/// ReduceElements), a convolution in 4 groups, a plain net (pooling that
/// counts its padding, a strided window starting inside the input) and a ResNet (residual
/// blocks, a strided projection, Splice, average pooling not counting padding, global
/// pooling, x * sigmoid(x)), against CNTK within 1e-4.
#[test]
fn cntk_v2_models_run_as_their_graph() {
    let names = ["convnet", "plain", "resnet", "shapes", "grouped"];
    check_cntk(&names, ".model", WeightsFormat::CntkV2);
}

/// Each `tests/fixtures/cntk/<name><ending>` against `<name>_features.npy` and
/// `<name>_logits.npy`, within 1e-4.
fn check_cntk(names: &[&str], ending: &str, format: WeightsFormat) {
    for name in names {
        let prefix = format!("{name}_");
        let file = format!("{name}{ending}");
        check_file_graph("cntk", &file, format, &prefix, &prefix, |_| TOL);
    }
}

/// The same networks saved by CNTK 2.7 in its legacy v1 format (model version 31), which
/// holds what v1 nodes can (the ConvNet's ELU cannot be loaded back by CNTK), and a grouped
/// convolution, whose groups the v1 format leaves out (inferred from the kernel), and the
/// activation reshaping net (v1's Slice, TransposeDimensions, Reshape): the same
/// outputs within 1e-4.
#[test]
fn cntk_v1_models_run_as_their_graph() {
    let names = ["plain", "resnet", "grouped", "shapes"];
    check_cntk(&names, "_v1.dnn", WeightsFormat::CntkV1);
}

/// A CNTK model imported from ONNX (scripts/make_cntk_imported_fixtures.py: torchvision's
/// MobileNetV2, reduced, exported at opset 9 and imported by CNTK 2.7): its batch a static
/// axis unpacked around each convolution, weights as constants reshaped and scaled in the
/// graph, explicit padding, ReLU6 as Clip, depthwise convolutions as groups, the Gemm as a
/// block; against CNTK's logits within 1e-4, with ImageNet scaling as an ONNX file's.
#[test]
fn cntk_models_imported_from_onnx_run_as_their_graph() {
    let dir = fixtures().join("cntk");
    let device = Device::default();
    let weights = Weights::load(&dir.join("mobilenet_v2_small.model")).unwrap();
    assert_eq!(weights.format, WeightsFormat::CntkV2);
    let spec = retrain::zoo::spec_for(None, &weights, &device).unwrap();
    assert_eq!(spec.preprocess.mean, [0.485, 0.456, 0.406]);
    let model = Model::from_spec(&spec, &weights, &device).unwrap();
    let (shape, x) = npy(&dir.join("mobilenet_v2_small_input.npy"));
    let got = values(
        model
            .network
            .logits(tensor4(&shape, x, &device))
            .unwrap()
            .unwrap(),
    );
    let d = max_abs_diff(
        "logits",
        got,
        npy(&dir.join("mobilenet_v2_small_logits.npy")),
    );
    eprintln!("imported MobileNetV2: logits max |diff| {d:.2e}");
    assert!(d <= TOL, "{d:e}");
}

/// Real CNTK files with trained weights (../shared/data/cntk): the tutorial's MNIST conv
/// net on two real digits (its output is a softmax), the CIFAR-10 ConvNet of CNTK 2.0 beta
/// (a training graph: its root combines the model with its loss and metric) and the
/// BrainScript ResNet-20 (a v1 file, model version 18) on two photographs, and a conv +
/// BatchNorm file whose statistics have no sample count; against
/// CNTK 2.7's outputs (tests/fixtures/cntk/real), 1e-4 of the largest value, and CNTK's
/// top-1.
#[test]
fn real_cntk_files_give_cntks_outputs() {
    let Some(dir) = cntk_files() else { return };
    let refs = fixtures().join("cntk/real");
    let device = Device::default();
    for (file, format, softmax) in [
        ("mnist_conv.cmf", WeightsFormat::CntkV2, true),
        (
            "ConvNet_CIFAR10_DataAug_13.dnn",
            WeightsFormat::CntkV2,
            false,
        ),
        ("ResNet20_CIFAR10_DataAug.dnn", WeightsFormat::CntkV1, false),
        (
            "batch.norm.no.sample.count.v2.bin",
            WeightsFormat::CntkV2,
            false,
        ),
    ] {
        let weights = Weights::load(&dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(weights.format, format, "{file}");
        let spec = retrain::zoo::spec_for(None, &weights, &device)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let model =
            Model::from_spec(&spec, &weights, &device).unwrap_or_else(|e| panic!("{file}: {e}"));
        let (mut shape, mut x) = npy(&refs.join(format!("{file}_input.npy")));
        if shape[1] == 1 {
            // A grey model runs on RGB images: equal channels are the grey image.
            let plane = shape[2] * shape[3];
            x = x
                .chunks(plane)
                .flat_map(|p| p.iter().chain(p).chain(p).copied().collect::<Vec<_>>())
                .collect();
            shape[1] = 3;
        }
        let input = tensor4(&shape, x, &device);
        let got = match model.network.logits(input.clone()).unwrap() {
            Some(l) if softmax => values(burn::tensor::activation::softmax(l, 1)),
            Some(l) => values(l),
            None => {
                let last = model.stage_names.len() - 1;
                values(
                    model
                        .network
                        .features_through(input, last)
                        .unwrap()
                        .flatten::<2>(1, 3),
                )
            }
        };
        let want = npy(&refs.join(format!("{file}_output.npy")));
        let scale = want.1.iter().fold(0f32, |m, v| m.max(v.abs()));
        let argmax = |v: &[f32], n: usize| -> Vec<usize> {
            v.chunks(v.len() / n)
                .map(|r| (0..r.len()).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap())
                .collect()
        };
        let n = want.0[0];
        assert_eq!(argmax(&got.1, n), argmax(&want.1, n), "{file}: top-1");
        let d = max_abs_diff(file, got, want);
        eprintln!("{file}: max |diff| {d:.2e} (largest |value| {scale:.2e})");
        assert!(d <= TOL * scale.max(1.0), "{file}: {d:e}");
    }
}
