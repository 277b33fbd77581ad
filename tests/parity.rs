//! Parity with the origin frameworks: reduced variants of every zoo family, built and saved
//! by PyTorch (scripts/make_fixtures.py), Keras (scripts/make_keras_fixtures.py) or
//! TensorFlow (scripts/make_tf_fixtures.py), must give the same logits and features.
//! Tolerance: 1e-4 absolute, f32, for the network as loaded and with BatchNorm folded.

mod common;

use burn::prelude::*;
use common::*;
use retrain::weights::{DType, Weights, WeightsFormat};
use retrain::zoo::{Model, ModelSpec};

const TOL: f32 = 1e-4;

fn check(name: &str, expect_format: WeightsFormat) {
    let dir = fixtures().join(name);
    let weights_file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_stem().is_some_and(|s| s == "weights"))
        .expect("fixture has a weights file");
    check_file(name, &weights_file, expect_format);
}

fn check_file(name: &str, weights_file: &std::path::Path, expect_format: WeightsFormat) {
    let dir = fixtures().join(name);
    let device = Device::default();
    let spec: ModelSpec =
        serde_json::from_str(&std::fs::read_to_string(dir.join("model.json")).unwrap()).unwrap();
    let weights = Weights::load(weights_file).unwrap();
    assert_eq!(weights.format, expect_format, "{name}: detected format");
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
    let dl = max_abs_diff("logits", values(l.unwrap()), want_logits.clone());
    eprintln!("{name}: max |diff| features {df:.2e}, logits {dl:.2e}");
    assert!(
        df <= TOL && dl <= TOL,
        "{name}: features {df:e}, logits {dl:e} > {TOL:e}"
    );

    // Export under origin names gives back the file's tensors exactly (TFLite excepted: it
    // holds the BatchNorms folded, an export writes them unfolded).
    if expect_format != WeightsFormat::Tflite {
        check_export(name, &spec, &weights, &model);
    }

    let folded = model.for_inference();
    let (f, l) = folded
        .network
        .features_and_logits(tensor4(&shape, x.clone(), &device))
        .unwrap();
    batch_invariant(name, &folded.network, &shape, &x, &device);
    let df = max_abs_diff("features", values(f), want_features);
    let dl = max_abs_diff("logits", values(l.unwrap()), want_logits);
    assert!(
        df <= TOL && dl <= TOL,
        "{name} (BN folded): features {df:e}, logits {dl:e} > {TOL:e}"
    );
}

/// The network on each image alone (inference on the CPU runs so) gives the very bits of
/// the whole batch run at once, stage by stage: retrain's kernels give an image the same
/// bits however it is batched.
fn batch_invariant(
    name: &str,
    net: &retrain::zoo::network::Network,
    shape: &[usize],
    x: &[f32],
    device: &Device,
) {
    let last = net.stages.len() - 1;
    let bits = |t: Tensor<4>| (t.dims(), t.into_data().try_into_vec::<f32>().unwrap());
    let each = bits(
        net.features_through(tensor4(shape, x.to_vec(), device), last)
            .unwrap(),
    );
    let mut whole = tensor4(shape, x.to_vec(), device);
    for s in &net.stages {
        whole = s.forward(whole).unwrap();
    }
    if shape[0] < 2 {
        return; // one image: nothing to compare
    }
    let (whole, each) = (bits(whole), each);
    // The transformers' attention and MLP products are burn's own batched matrix products,
    // whose sums are grouped by the batch's shape: equal to float rounding there.
    let transformer = ["vit", "swin", "deit", "dinov2", "maxvit"]
        .iter()
        .any(|t| name.contains(t));
    if whole != each {
        let d = max_abs_diff(
            name,
            (vec![whole.1.len()], whole.1),
            (vec![each.1.len()], each.1),
        );
        assert!(
            transformer && d <= 1e-5,
            "{name}: each image alone differs from the whole batch by {d:e}"
        );
    }
}

fn check_export(name: &str, spec: &ModelSpec, weights: &Weights, model: &Model) {
    let mut exported = Default::default();
    for stage in &model.network.stages {
        stage.export(&mut exported);
    }
    assert!(!exported.is_empty());
    let dir = fixtures().join(name);
    for (k, t) in &exported {
        // A position embedding resampled for the size the model runs at (timm) exports as
        // resampled: what timm's checkpoint filter made of the file's (pos_embed.npy).
        if k == "pos_embed" && dir.join("pos_embed.npy").is_file() {
            let (shape, want) = npy(&dir.join("pos_embed.npy"));
            assert_eq!(t.shape, shape, "{name}: resampled `{k}`");
            let d = max_abs_diff(
                "pos_embed",
                (t.shape.clone(), t.data.clone()),
                (shape, want),
            );
            eprintln!("{name}: resampled pos_embed max |diff| {d:.2e}");
            assert!(d <= TOL, "{name}: resampled pos_embed {d:e} > {TOL:e}");
            continue;
        }
        let orig = weights
            .get(k)
            .or_else(|| weights.get(&old_densenet_name(k)))
            .unwrap_or_else(|| panic!("{name}: exported unknown `{k}`"));
        // Keras files hold some tensors in another but equivalent shape (the loader's
        // `same_layout`): a Keras 3 depthwise kernel reads as (1, C, k, k) and exports as
        // PyTorch's (C, 1, k, k); VGG's fc1 exports as (out, in, 1, 1).
        if name.starts_with("keras") || name.starts_with("tf_") {
            assert!(
                retrain::zoo::loader::same_layout(&orig.shape, &t.shape),
                "{name}: `{k}` {:?} vs {:?}",
                t.shape,
                orig.shape
            );
        } else {
            assert_eq!(t.shape, orig.shape, "{name}: `{k}`");
        }
        assert_eq!(t.data, orig.data, "{name}: `{k}`");
    }
    // GoogLeNet's and Inception v3's auxiliary classifiers are read past: not part of the
    // network, not exported.
    let in_file = weights
        .tensors
        .keys()
        // Buffers an architecture computes (Swin's relative position index and V2's
        // coordinates table) are read when present and never exported.
        .filter(|k| {
            !k.ends_with("num_batches_tracked")
                && !k.ends_with("relative_position_index")
                && !k.ends_with("relative_coords_table")
                && !is_aux(k)
        })
        .count();
    let (hidden, out) = spec.config.classifier_prefixes();
    let classifier = weights
        .tensors
        .keys()
        .filter(|k| k.starts_with(&out) || hidden.is_some_and(|h| k.starts_with(h)))
        .count();
    assert_eq!(
        exported.len() + classifier,
        in_file,
        "{name}: every backbone tensor exported"
    );
}

fn is_aux(k: &str) -> bool {
    ["aux1.", "aux2.", "AuxLogits."]
        .iter()
        .any(|p| k.starts_with(p))
}

/// A dense layer's part as torchvision named it before 0.3 (`norm1` → `norm.1`): exports
/// use today's names.
fn old_densenet_name(k: &str) -> String {
    let mut k = k.to_owned();
    if k.contains(".denselayer") {
        for (new, old) in [
            (".norm1.", ".norm.1."),
            (".norm2.", ".norm.2."),
            (".conv1.", ".conv.1."),
            (".conv2.", ".conv.2."),
        ] {
            k = k.replace(new, old);
        }
    }
    k
}

#[test]
fn resnet_basic_blocks_from_torch_zip() {
    check("resnet_basic", WeightsFormat::TorchZip);
}

#[test]
fn resnet_bottlenecks_from_legacy_dataparallel_checkpoint() {
    check("resnet_bottleneck", WeightsFormat::TorchLegacy);
}

#[test]
fn mobilenet_v2_from_safetensors() {
    check("mobilenet_v2", WeightsFormat::Safetensors);
}

#[test]
fn mobilenet_v3_with_se_and_hardswish() {
    check("mobilenet_v3", WeightsFormat::TorchZip);
}

#[test]
fn efficientnet_b_family() {
    check("efficientnet", WeightsFormat::TorchZip);
}

#[test]
fn efficientnet_lite_with_static_same_padding() {
    check("efficientnet_lite", WeightsFormat::TorchLegacy);
}

/// ResNeXt (torchvision's `groups` 4, `width_per_group` 8: the bottleneck narrower than
/// its planes) and Wide ResNet (`width_per_group` 128: twice as wide).
#[test]
fn resnext_and_wide_resnet_bottlenecks() {
    check("resnext", WeightsFormat::Safetensors);
    check("wide_resnet", WeightsFormat::TorchZip);
}

/// torchvision VGG, `features.N` as `make_layers` numbers them, with and without
/// BatchNorm: the adaptive pool spreads a 2x2 map (overlapping windows) or a 1x1 map to 7x7
/// before `classifier.0`; the features are `classifier.3`'s output after its ReLU.
#[test]
fn vgg_with_and_without_batchnorm() {
    check("vgg", WeightsFormat::TorchZip);
    check("vgg_bn", WeightsFormat::Safetensors);
}

/// torchvision DenseNet: three blocks; and four blocks whose transitions halve odd channel
/// counts, saved under the dense-layer names of torchvision before 0.3 (`norm.1`).
#[test]
fn densenet_current_and_old_names() {
    check("densenet", WeightsFormat::Safetensors);
    check("densenet_old_names", WeightsFormat::TorchZip);
}

/// torchvision AlexNet (`features.{0,3,6,8,10}`, stem 11x11 stride 4 padding 2): the
/// adaptive pool spreads a 1x1 map to 6x6 before `classifier.1`; the features are
/// `classifier.4`'s output after its ReLU.
#[test]
fn alexnet_from_torch_zip() {
    check("alexnet", WeightsFormat::TorchZip);
}

/// torchvision SqueezeNet 1.0 and 1.1: ceil-mode max pools and Fire modules; the logits are
/// the origin's `avgpool(relu(conv1x1(x)))` (the classifier runs on the last map, some
/// positions clipped by its ReLU), the features the pooled map it reads.
#[test]
fn squeezenet_1_0_and_1_1() {
    check("squeezenet1_0", WeightsFormat::Safetensors);
    check("squeezenet1_1", WeightsFormat::TorchZip);
}

/// A new head on SqueezeNet, as a bundle stores it (2-D `classifier.1`), is a Linear on the
/// pooled features like every other family's head, not the origin's convolution + ReLU.
#[test]
fn squeezenet_new_head_is_linear_on_the_features() {
    let dir = fixtures().join("squeezenet1_1");
    let device = Device::default();
    let spec: ModelSpec =
        serde_json::from_str(&std::fs::read_to_string(dir.join("model.json")).unwrap()).unwrap();
    let pretrained = Weights::load(&dir.join("weights.pt")).unwrap();
    let (classes, dim) = (3, spec.config.feature_dim());
    let weight: Vec<f32> = (0..classes * dim)
        .map(|i| ((i * 7) % 11) as f32 / 11.0 - 0.5)
        .collect();
    let bias = vec![-1.0, 0.0, 1.0];
    let tensors =
        retrain::bundle::replace_classifier(&pretrained, &spec, weight.clone(), bias.clone());
    let weights = Weights {
        tensors,
        ..Weights::empty()
    };
    let model = Model::from_spec(&spec, &weights, &device).unwrap();
    let (shape, x) = npy(&dir.join("input.npy"));
    let (f, l) = model
        .network
        .features_and_logits(tensor4(&shape, x, &device))
        .unwrap();
    let (_, f) = values(f);
    let (lshape, l) = values(l.unwrap());
    let want: Vec<f32> = f
        .chunks(dim)
        .flat_map(|row| {
            (0..classes).map(|k| {
                let w = &weight[k * dim..(k + 1) * dim];
                row.iter().zip(w).map(|(a, b)| a * b).sum::<f32>() + bias[k]
            })
        })
        .collect();
    assert!(
        want.iter().any(|&v| v < 0.0),
        "a ReLU would have clipped these"
    );
    let d = max_abs_diff("logits", (lshape.clone(), l), (lshape, want));
    assert!(d <= TOL, "squeezenet new head: {d:e}");
}

/// torchvision GoogLeNet with `transform_input=True` (as its published weights run) and
/// ceil-mode max pools; the file holds the auxiliary classifiers `aux1`/`aux2`, which are
/// read past; the same file without them loads too.
#[test]
fn googlenet_with_and_without_auxiliary_classifiers() {
    check("googlenet", WeightsFormat::Safetensors);
    let dir = fixtures().join("googlenet");
    let full = Weights::load(&dir.join("weights.safetensors")).unwrap();
    let kept: Vec<(String, Vec<usize>, &[f32])> = full
        .tensors
        .iter()
        .filter(|(k, t)| !is_aux(k) && t.dtype.is_float())
        .map(|(k, t)| (k.clone(), t.shape.clone(), t.data.as_slice()))
        .collect();
    assert!(kept.len() < full.tensors.len());
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("weights.safetensors");
    std::fs::write(
        &path,
        retrain::weights::write_safetensors(&kept, None).unwrap(),
    )
    .unwrap();
    check_file("googlenet", &path, WeightsFormat::Safetensors);
}

/// torchvision Inception v3 with `transform_input=True` at its smallest input (75x75):
/// 1x7/7x1 and 1x3/3x1 kernels, average-pool branches counting their padding, InceptionE's
/// split branches; a file without AuxLogits.
#[test]
fn inception_v3_from_safetensors() {
    check("inception_v3", WeightsFormat::Safetensors);
}

#[test]
fn keras_mobilenet_v2_from_keras_h5_weights() {
    check("keras_mobilenet_v2", WeightsFormat::KerasH5);
}

/// Keras' full-model file (`model.save("x.h5")`) holds the same weights under
/// `/model_weights`.
#[test]
fn keras_full_model_file_reads_like_its_weights_file() {
    let dir = fixtures().join("keras_mobilenet_v2");
    let a = Weights::load(&dir.join("weights.h5")).unwrap();
    let b = Weights::load(&dir.join("model.h5")).unwrap();
    assert_eq!(b.format, WeightsFormat::KerasH5);
    // The same tensors, in the same order; a depthwise kernel is (C, 1, kh, kw) where the
    // file's config says the layer is depthwise, (1, C, kh, kw) where only weights are known.
    assert!(a.tensors.keys().eq(b.tensors.keys()));
    for (name, t) in &a.tensors {
        let u = &b.tensors[name];
        assert_eq!((&t.data, t.numel()), (&u.data, u.numel()), "{name}");
        if t.shape != u.shape {
            assert!(name.contains("depthwise") && t.shape[0] == 1, "{name}");
        }
    }
    check_file(
        "keras_mobilenet_v2",
        &dir.join("model.h5"),
        WeightsFormat::KerasH5,
    );
}

/// Keras 3's `.keras` archive (`/layers/<class>_N/vars/i` inside): same network, same
/// outputs.
#[test]
fn keras_3_archive() {
    let dir = fixtures().join("keras_mobilenet_v2");
    check_file(
        "keras_mobilenet_v2",
        &dir.join("model.keras"),
        WeightsFormat::Keras,
    );
}

/// Keras MobileNet v1 at an odd input size (its stride-2 layers pad (0, 1), not TF SAME's
/// (1, 1)), with a 1x1-convolution classifier.
#[test]
fn keras_mobilenet_v1_from_keras_h5_weights() {
    check("keras_mobilenet", WeightsFormat::KerasH5);
}

/// Keras' ResNet (v1 layout: stride on the first 1x1, biased convolutions before BN).
#[test]
fn keras_resnet_from_keras_h5_weights() {
    check("keras_resnet", WeightsFormat::KerasH5);
}

/// VGG16's layers with the top: Flatten of the NHWC activation, so fc1's rows keep Keras'
/// order; the embedding is fc2's output.
#[test]
fn keras_vgg_with_top_from_keras_h5_weights() {
    check("keras_vgg", WeightsFormat::KerasH5);
}

/// Keras EfficientNet (B0's code, narrowed): the model's own Rescaling + Normalization
/// (stored mean/variance), squeeze-excitation, swish, TF SAME padding; from `.h5` and from
/// a Keras 3 `.keras` archive.
#[test]
fn keras_efficientnet_with_its_normalization_layer() {
    check("keras_efficientnet", WeightsFormat::KerasH5);
    let dir = fixtures().join("keras_efficientnet");
    check_file(
        "keras_efficientnet",
        &dir.join("model.keras"),
        WeightsFormat::Keras,
    );
}

/// A TensorFlow 2 checkpoint (`tf.train.Checkpoint(model=m).write`, object-graph keys such
/// as `model/_operations/1/_kernel/.ATTRIBUTES/VARIABLE_VALUE`) split into two data shards,
/// named by its prefix as TensorFlow names it, and by its `.index` file.
#[test]
fn tf_checkpoint_in_two_shards() {
    let dir = fixtures().join("tf_mobilenet_v2/checkpoint");
    check_file(
        "tf_mobilenet_v2",
        &dir.join("model"),
        WeightsFormat::TfCheckpoint,
    );
    check_file(
        "tf_mobilenet_v2",
        &dir.join("model.index"),
        WeightsFormat::TfCheckpoint,
    );
}

/// A training checkpoint (model and SGD optimizer): the optimizer's slots are left out, and
/// the trainable variables it keys under `optimizer/_trainable_variables/N` are the model's.
#[test]
fn tf_training_checkpoint_with_its_optimizer() {
    check_file(
        "tf_resnet",
        &fixtures().join("tf_resnet/training_checkpoint/ckpt"),
        WeightsFormat::TfCheckpoint,
    );
}

/// Keras 2 (tf_keras) `model.save_weights` in TensorFlow's format: `layer_with_weights-N`
/// keys, named by the object graph.
#[test]
fn keras2_tf_format_weights() {
    check_file(
        "tf_keras2_resnet",
        &fixtures().join("tf_keras2_resnet/checkpoint/weights"),
        WeightsFormat::TfCheckpoint,
    );
}

/// A SavedModel (`model.export`) named by its folder: `variables/variables.*` inside.
#[test]
fn tf_saved_model_variables() {
    check_file(
        "tf_resnet",
        &fixtures().join("tf_resnet/saved_model"),
        WeightsFormat::TfCheckpoint,
    );
}

/// TFLite, float32 weights: BatchNorm folded into the convolutions by the converter, Keras 3
/// scope suffixes removed; MobileNetV2 (depthwise filters 1×kh×kw×C), ResNet (biased
/// convolutions, max pooling) and MobileNet v1 (the Keras fixture converted by TF: 1x1-conv
/// classifier, odd input size). Same outputs as the Keras model within 1e-4.
#[test]
fn tflite_float_models() {
    for name in ["tf_mobilenet_v2", "tf_resnet", "keras_mobilenet"] {
        check_file(
            name,
            &fixtures().join(name).join("model.tflite"),
            WeightsFormat::Tflite,
        );
    }
}

/// TFLite with float16 weights (the converter's `supported_types = [tf.float16]`): each
/// weight is stored as float16 behind a DEQUANTIZE operator, and the interpreter computes
/// in float32 on the widened values, as retrain does. Same outputs as the interpreter
/// within 1e-4 (float16 rounding puts both 1.4e-4 from the float32 Keras model).
#[test]
fn tflite_float16_weights_match_the_interpreter() {
    matches_the_interpreter("model_f16.tflite", "f16", &[DType::F16], |_| 1e-4);
}

/// The tf_mobilenet_v2 fixture read from one of its TFLite files (which must store tensors
/// of each of `stores`): its features and logits against the interpreter's,
/// `tflite_<stem>_*.npy`, within `tol(largest |value|)`.
fn matches_the_interpreter(file: &str, stem: &str, stores: &[DType], tol: fn(f32) -> f32) {
    let dir = fixtures().join("tf_mobilenet_v2");
    let device = Device::default();
    let spec: ModelSpec =
        serde_json::from_str(&std::fs::read_to_string(dir.join("model.json")).unwrap()).unwrap();
    let weights = Weights::load(&dir.join(file)).unwrap();
    assert_eq!(weights.format, WeightsFormat::Tflite);
    for &d in stores {
        let n = weights.tensors.values().filter(|t| t.dtype == d).count();
        assert!(n > 0, "{file} stores {d:?} tensors");
    }
    let model = Model::from_spec(&spec, &weights, &device).unwrap();
    let (shape, x) = npy(&dir.join("input.npy"));
    let (f, l) = model
        .network
        .features_and_logits(tensor4(&shape, x, &device))
        .unwrap();
    for (what, got) in [("features", values(f)), ("logits", values(l.unwrap()))] {
        let want = npy(&dir.join(format!("tflite_{stem}_{what}.npy")));
        let scale = want.1.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = max_abs_diff(what, got, want);
        eprintln!("{file} {what}: max |diff| {d:.2e} (largest |value| {scale:.2e})");
        assert!(d <= tol(scale), "{file} {what}: {d:e} > {:e}", tol(scale));
    }
}

/// TFLite with int8 weights: the converter's Optimize.DEFAULT (int8 weights, per-output-
/// channel scales, float activations) and full integer quantisation (int8 activations too,
/// int32 biases whose scale is input scale × weight scale). retrain dequantises the weights
/// and computes in f32; the TFLite interpreter computes with int8 activations (quantised on
/// the fly, or throughout), so the two differ by activation rounding. Stated tolerance: 2%
/// of the largest output magnitude (the interpreter itself is 1.3e-3 to 2.6e-3 from the
/// unquantised Keras model here).
#[test]
fn tflite_int8_weights_match_the_interpreter() {
    matches_the_interpreter("model_int8.tflite", "int8", &[DType::I8], |s| 0.02 * s);
    matches_the_interpreter(
        "model_full_int8.tflite",
        "full_int8",
        &[DType::I8, DType::I32],
        |s| 0.02 * s,
    );
}

/// torchvision's VisionTransformer (patch embedding, class token, position embedding,
/// pre-norm encoder blocks with multi-head attention and a GELU MLP, final LayerNorm),
/// reduced (scripts/make_token_fixtures.py).
#[test]
fn vit_from_safetensors() {
    check("vit", WeightsFormat::Safetensors);
}

/// timm's VisionTransformer under timm's names (`patch_embed.proj`, `cls_token`,
/// `pos_embed`, `blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}`, `norm`,
/// `head`), augreg-style (qkv bias, mean/std 0.5), reduced (scripts/make_timm_fixtures.py);
/// features: `forward_head(pre_logits=True)`.
#[test]
fn timm_vit_augreg_from_safetensors() {
    check("timm_vit_augreg", WeightsFormat::Safetensors);
}

/// timm's average-pooled ViT: the mean of the patch tokens through `fc_norm`.
#[test]
fn timm_vit_avg_pool_from_safetensors() {
    check("timm_vit_avg", WeightsFormat::Safetensors);
}

/// A DeiT-style timm ViT (three heads, three blocks, ImageNet mean/std).
#[test]
fn timm_deit_from_safetensors() {
    check("timm_deit", WeightsFormat::Safetensors);
}

/// DINOv2-style: layer scale (`ls1.gamma`, `ls2.gamma`), its position embedding (for 5x5
/// patches) resampled as timm does to the 4x4 patches of the 56x56 input it runs at.
#[test]
fn timm_dinov2_downsampled_position_from_safetensors() {
    check("timm_dinov2", WeightsFormat::Safetensors);
}

/// DINOv2 with four registers (`reg_token`, `no_embed_class`: the position embedding
/// covers the patches only), its position embedding (3x3 patches) upsampled to 4x4.
#[test]
fn timm_dinov2_registers_upsampled_position_from_safetensors() {
    check("timm_dinov2_reg4", WeightsFormat::Safetensors);
}

/// timm's ResNet (`timm.models.resnet.ResNet`: torchvision's names and layout), reduced
/// (scripts/make_timm_fixtures.py); features: `forward_head(pre_logits=True)`.
#[test]
fn timm_resnet_from_safetensors() {
    check("timm_resnet", WeightsFormat::Safetensors);
}

/// timm's EfficientNet under timm's names (`conv_stem`, `blocks.S.B.{conv_pw, conv_dw,
/// se.conv_reduce, se.conv_expand, conv_pwl}`, a `DepthwiseSeparableConv` first,
/// `conv_head`, `classifier`), reduced, torch zip.
#[test]
fn timm_efficientnet_from_torch_zip() {
    check("timm_efficientnet", WeightsFormat::TorchZip);
}

/// timm's ConvNeXt under timm's names (`stem`, `stages.S.downsample`, `stages.S.blocks.N`
/// with a `[C]` `gamma`, `head.norm`, `head.fc`).
#[test]
fn timm_convnext_from_safetensors() {
    check("timm_convnext", WeightsFormat::Safetensors);
}

/// timm's RegNetY under timm's names (`stem.conv`, `sS.bN.{conv1, conv2, se, conv3,
/// downsample}`, `head.fc`), its widths fitted to the groups by timm's rounding.
#[test]
fn timm_regnet_from_safetensors() {
    check("timm_regnet", WeightsFormat::Safetensors);
}

/// timm's Swin V1 under timm's names (`patch_embed`, `layers.S.downsample`,
/// `layers.S.blocks.N`, `norm`, `head.fc`), shifted windows in the first stages.
#[test]
fn timm_swin_from_safetensors() {
    check("timm_swin", WeightsFormat::Safetensors);
}

/// torchvision's ConvNeXt (patchify stem, depthwise 7×7 blocks with channels-last
/// LayerNorm, GELU MLP and layer scale, LayerNorm2d + 2×2 downsampling, normalised pooled
/// features), reduced (scripts/make_token_fixtures.py).
#[test]
fn convnext_from_torch_zip() {
    check("convnext", WeightsFormat::TorchZip);
}

/// State dicts as training code saves them (scripts/make_wrapped_fixtures.py): the network
/// under a wrapper's prefix beside the wrapper's own parts (`model.encoder.` beside
/// `model.decoder.`; `module.pre.` beside `module.loss.`, in the legacy format), a replaced
/// 7-way head, storages tagged `cuda:0`. The prefix is found by matching and the head's size
/// read from the file: torchvision's features and logits within 1e-4. So is the same network
/// under `backbone.` in a safetensors file beside a `neck.`.
#[test]
fn wrapped_state_dicts_from_gpu_training_load_by_matching() {
    let dir = fixtures().join("wrapped");
    let device = Device::default();
    let spec: ModelSpec =
        serde_json::from_str(&std::fs::read_to_string(dir.join("model.json")).unwrap()).unwrap();
    let (shape, x) = npy(&dir.join("input.npy"));
    let run = |what: &str, weights: &Weights| {
        let model =
            Model::from_spec(&spec, weights, &device).unwrap_or_else(|e| panic!("{what}: {e}"));
        let (f, l) = model
            .network
            .features_and_logits(tensor4(&shape, x.clone(), &device))
            .unwrap();
        let df = max_abs_diff("features", values(f), npy(&dir.join("features.npy")));
        let dl = max_abs_diff("logits", values(l.unwrap()), npy(&dir.join("logits.npy")));
        eprintln!("{what}: max |diff| features {df:.2e}, logits {dl:.2e}");
        assert!(df <= TOL && dl <= TOL, "{what}: {df:e}, {dl:e} > {TOL:e}");
    };
    let encoder = Weights::load(&dir.join("encoder_cuda.pt")).unwrap();
    assert_eq!(encoder.format, WeightsFormat::TorchZip);
    assert!(encoder.get("model.decoder.weight").is_some());
    run("model.encoder. (torch zip, cuda:0)", &encoder);
    let legacy = Weights::load(&dir.join("pre_cuda_legacy.pt")).unwrap();
    assert_eq!(legacy.format, WeightsFormat::TorchLegacy);
    run("module.pre. (legacy torch.save, cuda:0)", &legacy);

    let inner = retrain::zoo::unwrapped(&encoder);
    assert!(inner.get("features.0.0.weight").is_some() && inner.get("decoder.weight").is_none());
    let mut named: Vec<(String, Vec<usize>, &[f32])> = inner
        .tensors
        .iter()
        .map(|(k, t)| (format!("backbone.{k}"), t.shape.clone(), &t.data[..]))
        .collect();
    let neck = vec![0.5f32; 6];
    named.push(("neck.weight".into(), vec![2, 3], &neck));
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("backbone.safetensors");
    std::fs::write(
        &path,
        retrain::weights::write_safetensors(&named, None).unwrap(),
    )
    .unwrap();
    run("backbone. (safetensors)", &Weights::load(&path).unwrap());
}

/// torchvision's RegNetY (grouped bottlenecks with squeeze-excitation at a quarter of the
/// block's input width, widths from `BlockParams.from_init_params`) and RegNetX (no SE,
/// bottleneck multipliers other than 1), reduced (scripts/make_mobile_fixtures.py).
#[test]
fn regnet_x_and_y() {
    check("regnet_y", WeightsFormat::Safetensors);
    check("regnet_x", WeightsFormat::TorchZip);
}

/// torchvision's EfficientNetV2 (FusedMBConv with and without expansion, then MBConv with
/// SE; BatchNorm epsilon 1e-3), reduced (scripts/make_mobile_fixtures.py).
#[test]
fn efficientnet_v2_fused_and_mbconv() {
    check("efficientnet_v2", WeightsFormat::TorchZip);
}

/// torchvision's MNASNet (version 2 stem, stacks of inverted residuals), reduced
/// (scripts/make_mobile_fixtures.py).
#[test]
fn mnasnet_from_safetensors() {
    check("mnasnet", WeightsFormat::Safetensors);
}

/// torchvision's ShuffleNetV2 (two-branch units, channel split, concatenation and channel
/// shuffle), reduced (scripts/make_mobile_fixtures.py).
#[test]
fn shufflenet_v2_split_and_shuffle() {
    check("shufflenet_v2", WeightsFormat::TorchZip);
}

/// torchvision's Swin Transformer (patchify stem, shifted-window attention with a relative
/// position bias table, patch merging, final LayerNorm averaged), reduced, with a 4×3
/// window on maps that are not multiples of it (padding, the shift mask, the vertical shift
/// dropped where the window covers the map), from a file without the computed
/// `relative_position_index` buffers (scripts/make_window_fixtures.py).
#[test]
fn swin_from_safetensors() {
    check("swin", WeightsFormat::Safetensors);
}

/// torchvision's Swin Transformer V2 (cosine attention with clamped logit scales, the
/// continuous position bias MLP, res-post-norm, PatchMergingV2 on a padded map), reduced,
/// from a file with the buffers (scripts/make_window_fixtures.py).
#[test]
fn swin_v2_from_torch_zip() {
    check("swin_v2", WeightsFormat::TorchZip);
}

/// torchvision's MaxViT (BatchNorm + GELU stem, MBConv with squeeze-excitation and a pooled
/// shortcut, block and grid attention with relative position bias, LayerNorm + Linear +
/// Tanh pre-logits, a head without bias), reduced (scripts/make_window_fixtures.py).
#[test]
fn maxvit_from_torch_zip() {
    check("maxvit", WeightsFormat::TorchZip);
}

/// A fine-tuned file whose classifier was replaced by a deeper head, `nn.Sequential(Linear,
/// ReLU, Linear, ReLU, Linear)` under a name of its own (`head.0`, `head.2`, `head.4`,
/// saved in another order than they run): the head's depth, widths and order are read from
/// the file (each layer's input the previous one's output); the backbone's features are
/// the fixture's, and the logits the head's own, computed here with ReLU between layers.
/// Two layers that could both come next are not guessed at: the load fails.
#[test]
fn a_head_of_three_dense_layers_is_read_from_the_file() {
    let dir = fixtures().join("timm_resnet");
    let spec: ModelSpec =
        serde_json::from_str(&std::fs::read_to_string(dir.join("model.json")).unwrap()).unwrap();
    let plain = Weights::load(&dir.join("weights.safetensors")).unwrap();
    let widths = [256, 12, 8, 4];
    let mut next = xorshift(7);
    let mut value = || ((next() % 2001) as f32 / 1000.0 - 1.0) * 0.3;
    let layers: Vec<(Vec<f32>, Vec<f32>)> = widths
        .windows(2)
        .map(|w| {
            let weight = (0..w[0] * w[1]).map(|_| value()).collect();
            let bias = (0..w[1]).map(|_| value()).collect();
            (weight, bias)
        })
        .collect();
    let mut named: Vec<(String, Vec<usize>, &[f32])> = plain
        .tensors
        .iter()
        .filter(|(k, _)| !k.starts_with("fc."))
        .map(|(k, t)| (k.clone(), t.shape.clone(), &t.data[..]))
        .collect();
    // Saved as head.4, head.0, head.2: the order comes from the shapes, not the names.
    for i in [2, 0, 1] {
        let (w, b) = &layers[i];
        let name = format!("head.{}", 2 * i);
        named.push((format!("{name}.weight"), vec![widths[i + 1], widths[i]], w));
        named.push((format!("{name}.bias"), vec![widths[i + 1]], b));
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("deep_head.safetensors");
    let bytes = retrain::weights::write_safetensors(&named, None).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let device = Device::default();
    let weights = Weights::load(&path).unwrap();
    let model = Model::from_spec(&spec, &weights, &device).unwrap_or_else(|e| panic!("{e}"));
    let (shape, x) = npy(&dir.join("input.npy"));
    let (f, l) = model
        .network
        .features_and_logits(tensor4(&shape, x, &device))
        .unwrap();
    let features = values(f);
    let d = max_abs_diff("features", features.clone(), npy(&dir.join("features.npy")));
    assert!(d <= TOL, "features {d:e}");
    let logits = values(l.unwrap()).1;
    for (n, row) in features.1.chunks(widths[0]).enumerate() {
        let mut h = row.to_vec();
        for (i, (w, b)) in layers.iter().enumerate() {
            let (din, dout) = (widths[i], widths[i + 1]);
            h = (0..dout)
                .map(|o| b[o] + (0..din).map(|j| w[o * din + j] * h[j]).sum::<f32>())
                .map(|v| if i + 1 < layers.len() { v.max(0.0) } else { v })
                .collect();
        }
        for (c, want) in h.iter().enumerate() {
            let got = logits[n * widths[3] + c];
            assert!((got - want).abs() <= TOL, "{n},{c}: {got} vs {want}");
        }
    }

    // A fourth layer from 12 to 8 beside head.2: two layers take 12 features.
    let extra = vec![0.0f32; 12 * 8];
    let extra_bias = vec![0.0f32; 8];
    named.push(("other.weight".into(), vec![8, 12], &extra));
    named.push(("other.bias".into(), vec![8], &extra_bias));
    let bytes = retrain::weights::write_safetensors(&named, None).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let weights = Weights::load(&path).unwrap();
    let err = Model::from_spec(&spec, &weights, &device)
        .err()
        .expect("an ambiguous head is refused");
    let msg = err.to_string();
    assert!(
        msg.contains("8 unexpected") && msg.contains("head.0.weight"),
        "{msg}"
    );
}
