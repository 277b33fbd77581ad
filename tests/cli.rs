//! The `retrain` program as a user runs it: outputs, and bad input (corrupt images, wrong or
//! truncated weights, empty folders, unwritable outputs) giving a clear one-line error, a
//! non-zero exit and no partial output.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{fixtures, retrain, stderr, stdout};
use retrain::outputs::read_npy;

/// The reduced MobileNetV2 fixture, through a model spec file.
fn model_args() -> Vec<String> {
    let d = fixtures().join("mobilenet_v2");
    vec![
        "--model".into(),
        d.join("model.json").display().to_string(),
        "--weights".into(),
        d.join("weights.safetensors").display().to_string(),
    ]
}

fn images() -> PathBuf {
    fixtures().join("images")
}

fn run_embed(out: &Path, extra: &[&str], inputs: &[&Path]) -> Output {
    let mut args: Vec<String> = vec!["embed".into()];
    args.extend(model_args());
    args.extend(["--out".into(), out.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(inputs.iter().map(|p| p.display().to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    retrain(&refs)
}

fn assert_fails(o: &Output, needle: &str) {
    assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(o));
    let e = stderr(o);
    assert!(e.starts_with("error: "), "{e}");
    assert!(e.contains(needle), "expected `{needle}` in: {e}");
}

#[test]
fn embed_writes_every_format_with_paths_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let img = images();
    // Every image kind in the fixtures: PNG, gray, CMYK JPEG, GIF, BMP, WebP, EXIF-rotated.
    let expected: Vec<String> = {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&img)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v.iter().map(|p| p.display().to_string()).collect()
    };
    assert_eq!(expected.len(), 7);

    let npy = dir.path().join("f.npy");
    let o = run_embed(&npy, &[], &[&img]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (shape, values) = read_npy(&std::fs::read(&npy).unwrap()).unwrap();
    assert_eq!(shape, vec![7, 1280]);
    assert!(values.iter().all(|v| v.is_finite()));
    assert_eq!(sidecar(&dir.path().join("f.paths.jsonl")), expected);

    let csv = dir.path().join("f.csv");
    assert!(run_embed(&csv, &[], &[&img]).status.success());
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 8);
    assert!(rows[0].starts_with("path,f0,f1,"));
    assert_eq!(rows[0].split(',').count(), 1281);
    let first: Vec<f32> = rows[1]
        .split(',')
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(first, values[..1280].to_vec(), "csv and npy agree exactly");
    assert!(rows[1].starts_with(&expected[0]));

    let st = dir.path().join("f.safetensors");
    assert!(run_embed(&st, &[], &[&img]).status.success());
    let bytes = std::fs::read(&st).unwrap();
    let w = retrain::weights::Weights::from_bytes(&bytes).unwrap();
    let e = w.get("embeddings").unwrap();
    assert_eq!(
        (e.shape.clone(), e.data.clone()),
        (vec![7, 1280], values.clone())
    );

    let pq = dir.path().join("f.parquet");
    assert!(run_embed(&pq, &[], &[&img]).status.success());
    let file = std::fs::File::open(&pq).unwrap();
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(file).unwrap();
    assert_eq!(reader.metadata().file_metadata().num_rows(), 7);
    let mut rows = reader.get_row_iter(None).unwrap();
    let row = rows.next().unwrap().unwrap();
    let s = row.to_string();
    assert!(s.contains(&expected[0]), "{s}");
}

#[test]
fn embed_from_a_named_stage() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.npy");
    let o = run_embed(
        &out,
        &["--layer", "stage2", "--json"],
        &[&images().join("rgb.png")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (v["layer"].as_str(), v["dim"].as_u64(), v["images"].as_u64()),
        (Some("stage2"), Some(16), Some(1))
    );
    let (shape, _) = read_npy(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(
        shape,
        vec![1, 16],
        "stage2 of the width-0.5 fixture has 16 channels"
    );
    let o = run_embed(&out, &["--layer", "nope"], &[&images().join("rgb.png")]);
    assert_fails(&o, "has no stage `nope`; choose one of: stem, stage1");
}

#[test]
fn corrupt_image_is_skipped_with_a_warning_or_fatal_when_strict() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("imgs");
    std::fs::create_dir(&data).unwrap();
    std::fs::copy(images().join("rgb.png"), data.join("a.png")).unwrap();
    let bytes = std::fs::read(images().join("cmyk.jpg")).unwrap();
    std::fs::write(data.join("b_truncated.jpg"), &bytes[..bytes.len() / 3]).unwrap();
    std::fs::write(data.join("c_not_an_image.png"), b"definitely not a png").unwrap();

    let out = dir.path().join("out.npy");
    let o = run_embed(&out, &[], &[&data]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("warning: skipping") && e.contains("c_not_an_image.png"),
        "{e}"
    );
    assert!(e.contains("b_truncated.jpg"), "{e}");
    let (shape, _) = read_npy(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(shape[0], 1);

    // --strict: fails naming the file, and the earlier output is left as it was.
    std::fs::write(&out, b"earlier result").unwrap();
    let o = run_embed(&out, &["--strict"], &[&data]);
    assert_fails(&o, "b_truncated.jpg");
    assert_eq!(std::fs::read(&out).unwrap(), b"earlier result");
}

#[test]
fn weights_for_another_architecture() {
    let d = fixtures().join("mobilenet_v2");
    let w = d.join("weights.safetensors").display().to_string();
    let o = retrain(&[
        "predict",
        "--model",
        "resnet18",
        "--weights",
        &w,
        &images().join("rgb.png").display().to_string(),
    ]);
    assert_fails(&o, "weights do not fit resnet18");
    assert!(stderr(&o).contains("missing"), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "one line: {}", stderr(&o));
}

#[test]
fn truncated_weights_file() {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "resnet_basic/weights.pt",
        "efficientnet_lite/weights.pth",
        "mobilenet_v2/weights.safetensors",
    ] {
        let bytes = std::fs::read(fixtures().join(f)).unwrap();
        let cut = dir.path().join(Path::new(f).file_name().unwrap());
        std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let o = retrain(&["inspect", &cut.display().to_string()]);
        assert_eq!(o.status.code(), Some(1), "{f}");
        let e = stderr(&o);
        assert!(e.contains("truncated") || e.contains("corrupt"), "{f}: {e}");
    }
}

#[test]
fn empty_folder_and_missing_paths() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.npy");
    let o = run_embed(&out, &[], &[dir.path()]);
    assert_fails(&o, "no images in folder");
    assert!(!out.exists());
    let o = run_embed(&out, &[], &[&dir.path().join("missing")]);
    assert_fails(&o, "no such file or folder");
    let mut args: Vec<String> = vec!["predict".into(), "--model".into(), "mobilenet_v2".into()];
    args.extend([
        "--weights".into(),
        dir.path().join("nope.pth").display().to_string(),
    ]);
    args.push(images().display().to_string());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_fails(&retrain(&refs), "does not exist");
}

#[test]
fn unwritable_output_fails_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a_file");
    std::fs::write(&blocker, b"x").unwrap();
    let out = blocker.join("out.npy");
    let o = run_embed(&out, &[], &[&images()]);
    assert_fails(&o, "does not exist");
    let o = run_embed(&dir.path().join("out.xyz"), &[], &[&images()]);
    assert_fails(&o, "use a .npy, .safetensors, .parquet or .csv extension");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary or partial files");
}

#[test]
fn hostile_weights_are_refused() {
    let w = fixtures().join("files/malicious.pt").display().to_string();
    let o = retrain(&["inspect", &w]);
    assert_fails(&o, "refused to load");
}

#[test]
fn predict_json_and_text() {
    let mut args: Vec<String> = vec![
        "predict".into(),
        "--top".into(),
        "3".into(),
        "--json".into(),
    ];
    args.extend(model_args());
    args.push(images().display().to_string());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = retrain(&refs);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let preds = v["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 7);
    let top = preds[0]["top"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    // A 5-class head has no ImageNet labels.
    assert!(top[0]["label"].is_null());
    let p: Vec<f64> = top
        .iter()
        .map(|t| t["probability"].as_f64().unwrap())
        .collect();
    assert!(p[0] >= p[1] && p[1] >= p[2] && p[0] <= 1.0);
}

#[test]
fn models_and_inspect() {
    let o = retrain(&["models", "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let lite0 = v
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "efficientnet_lite0")
        .unwrap();
    assert_eq!(lite0["parameters"], 4652008);
    assert_eq!(lite0["feature_dim"], 1280);
    assert_eq!(lite0["family"], "efficientnet_lite");
    assert_eq!(v.as_array().unwrap().len(), 180);
    // The text lists each family under one heading, every entry of it there: one heading
    // per family and origin, in the catalogue's order.
    let text = stdout(&retrain(&["models"]));
    let mut headings = Vec::new();
    let mut under = std::collections::BTreeMap::new();
    for line in text.lines().skip(1).filter(|l| !l.is_empty()) {
        if line.contains(" — ") {
            headings.push(line.to_owned());
        } else {
            let name = line.split_whitespace().next().unwrap();
            under.insert(name.to_owned(), headings.last().cloned().unwrap());
        }
    }
    let unique: std::collections::BTreeSet<_> = headings.iter().collect();
    assert_eq!(
        unique.len(),
        headings.len(),
        "a family's entries are together"
    );
    assert_eq!(under["resnet50"], "resnet — torchvision");
    assert_eq!(under["resnext50_32x4d"], "resnet — torchvision");
    assert_eq!(under["vit_b_16"], "vit — torchvision");
    for m in v.as_array().unwrap() {
        let name = m["name"].as_str().unwrap();
        let family = m["family"].as_str().unwrap();
        assert!(under[name].starts_with(&format!("{family} — ")), "{name}");
    }
    // Trainable and non-trainable parameters of keras.applications.MobileNetV2 /
    // MobileNet(alpha) / ResNet50 / VGG16 / EfficientNetB0 (weights=None), as Keras 3.15
    // counts them (the entries built from Keras' configs: tests/keras_applications.rs).
    for (name, trainable, frozen) in [
        ("keras_mobilenet_v2_035", 1677128, 14080),
        ("keras_mobilenet_v2_050", 1968680, 18544),
        ("keras_mobilenet_v2_075", 2636424, 26640),
        ("keras_mobilenet_v2", 3504872, 34112),
        ("keras_mobilenet_v2_130", 5386792, 44256),
        ("keras_mobilenet_v2_140", 6108776, 47936),
        ("keras_mobilenet_025", 470072, 5472),
        ("keras_mobilenet_050", 1331592, 10944),
        ("keras_mobilenet_075", 2585560, 16416),
        ("keras_mobilenet", 4231976, 21888),
        ("keras_resnet50", 25583592, 53120),
        ("keras_vgg16", 138357544, 0),
        ("keras_efficientnet_b0", 5288548, 42023),
    ] {
        let m = v.as_array().unwrap().iter().find(|m| m["name"] == name);
        let m = m.unwrap();
        assert_eq!(m["parameters"], trainable, "{name}");
        assert_eq!(m["non_trainable_parameters"], frozen, "{name}");
    }

    let w = fixtures()
        .join("resnet_basic/weights.pt")
        .display()
        .to_string();
    let o = retrain(&["inspect", "--json", &w]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["format"], "torch-zip");
    assert_eq!(v["parameters"], 97522);

    // A Keras file that fits a zoo entry exactly is named; one of a custom width gets the
    // closest entry and what did not map.
    let keras = |f: &str| fixtures().join(f).display().to_string();
    let o = retrain(&["inspect", &keras("keras_mobilenet/weights.h5")]);
    assert!(
        stdout(&o).contains("architecture: keras_mobilenet_025 (every tensor matches)"),
        "{}",
        stdout(&o)
    );
    let o = retrain(&["inspect", &keras("keras_mobilenet_v2/weights.h5")]);
    let out = stdout(&o);
    assert!(out.contains("format:      Keras HDF5"), "{out}");
    assert!(
        out.contains("closest is keras_mobilenet_v2")
            && out.contains("not mapped: ")
            && out.contains("Conv1.weight (model ["),
        "{out}"
    );
    let o = retrain(&[
        "inspect",
        "--json",
        &keras("keras_mobilenet_v2/model.keras"),
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["format"], "keras");
    assert!(
        v["closest"]["shape_mismatches"].as_array().unwrap().len() > 100,
        "{v}"
    );
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    assert_eq!(retrain(&["embed"]).status.code(), Some(2));
    assert_eq!(retrain(&["frobnicate"]).status.code(), Some(2));
    for cmd in ["models", "inspect", "predict", "embed"] {
        let o = retrain(&[cmd, "--help"]);
        assert!(o.status.success() && stdout(&o).contains("Usage"), "{cmd}");
    }
}

/// The paths of a `<name>.paths.jsonl` sidecar: one JSON string per line.
fn sidecar(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.ends_with('\n'), "{text:?}");
    text.lines()
        .map(|l| serde_json::from_str::<String>(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// The `path` column of a CSV file read per RFC 4180 (quoted fields may hold commas,
/// quotes doubled, and line breaks).
fn csv_paths(text: &str) -> Vec<String> {
    let mut rows = vec![vec![String::new()]];
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        let row = rows.last_mut().unwrap();
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                row.last_mut().unwrap().push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => row.last_mut().unwrap().push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(String::new()),
            (false, '\n') => rows.push(vec![String::new()]),
            (false, c) => row.last_mut().unwrap().push(c),
        }
    }
    rows.pop_if(|r| r.len() == 1 && r[0].is_empty());
    assert_eq!(rows[0][0], "path");
    rows[1..].iter().map(|r| r[0].clone()).collect()
}

#[test]
fn a_file_name_with_a_newline_survives_every_embedding_format() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    let odd = photos.join("two\nlines, \"quoted\".png");
    std::fs::copy(images().join("rgb.png"), &odd).unwrap();
    std::fs::copy(images().join("gray.png"), photos.join("plain.png")).unwrap();
    let expected = vec![
        photos.join("plain.png").display().to_string(),
        odd.display().to_string(),
    ];
    let mut sorted = expected.clone();
    sorted.sort();
    for ext in ["npy", "safetensors", "parquet", "csv"] {
        let out = dir.path().join(format!("f.{ext}"));
        let o = run_embed(&out, &[], &[&photos]);
        assert!(o.status.success(), "{ext}: {}", stderr(&o));
        let got = match ext {
            "npy" => sidecar(&dir.path().join("f.paths.jsonl")),
            "safetensors" => {
                assert_eq!(sidecar(&dir.path().join("f.paths.jsonl")), sorted);
                let bytes = std::fs::read(&out).unwrap();
                let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
                let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
                serde_json::from_str(header["__metadata__"]["paths"].as_str().unwrap()).unwrap()
            }
            "parquet" => {
                use parquet::file::reader::{FileReader, SerializedFileReader};
                use parquet::record::RowAccessor;
                let reader = SerializedFileReader::new(std::fs::File::open(&out).unwrap()).unwrap();
                reader
                    .get_row_iter(None)
                    .unwrap()
                    .map(|r| r.unwrap().get_string(0).unwrap().clone())
                    .collect()
            }
            _ => csv_paths(&std::fs::read_to_string(&out).unwrap()),
        };
        assert_eq!(got, sorted, "{ext}");
    }
}

/// A folder of one normal image, two headers claiming 65500×65500 pixels (PNG and JPEG)
/// and a 10000×2 PNG.
fn hostile_folder(root: &Path) -> PathBuf {
    let d = root.join("hostile");
    std::fs::create_dir(&d).unwrap();
    std::fs::copy(images().join("rgb.png"), d.join("a-normal.png")).unwrap();
    common::png_claiming(&d.join("huge.png"), 65500, 65500);
    common::jpeg_claiming(&d.join("huge.jpg"), 65500, 65500);
    common::png_of_size(&d.join("wide.png"), 10000, 2);
    d
}

#[test]
fn images_claiming_a_huge_size_are_skipped_and_fail_with_strict() {
    let dir = tempfile::tempdir().unwrap();
    let d = hostile_folder(dir.path());
    let out = dir.path().join("f.npy");
    let o = run_embed(&out, &[], &[&d]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    for f in ["huge.png", "huge.jpg"] {
        let line = format!(
            "warning: skipping {}: image claims 65500x65500 pixels",
            d.join(f).display()
        );
        assert_eq!(e.matches(&line).count(), 1, "{e}");
    }
    let (shape, values) = read_npy(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(shape[0], 2, "the normal and the wide image");
    assert!(values.iter().all(|v| v.is_finite()));
    assert_eq!(
        sidecar(&dir.path().join("f.paths.jsonl")),
        [d.join("a-normal.png"), d.join("wide.png")].map(|p| p.display().to_string())
    );

    let o = run_embed(&dir.path().join("g.npy"), &["--strict"], &[&d]);
    assert_fails(&o, "image claims 65500x65500 pixels");
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(!dir.path().join("g.npy").exists());

    // The limit is a flag: the normal image (80x48) is refused under 1000 pixels.
    let o = run_embed(
        &dir.path().join("h.npy"),
        &["--max-pixels", "1000", "--strict"],
        &[&images().join("rgb.png")],
    );
    assert_fails(
        &o,
        "image claims 80x48 pixels (3840), over the limit of 1000 pixels",
    );
    let o = run_embed(&dir.path().join("h.npy"), &["--max-pixels", "0"], &[&d]);
    assert_fails(&o, "--max-pixels must be at least 1, got 0");
}

#[test]
fn hostile_images_stay_within_a_memory_bound() {
    let dir = tempfile::tempdir().unwrap();
    let d = hostile_folder(dir.path());
    let out = dir.path().join("f.npy");
    let mut args: Vec<String> = vec!["embed".into()];
    args.extend(model_args());
    args.extend([
        "--out".into(),
        out.display().to_string(),
        d.display().to_string(),
    ]);
    let bin = Path::new(env!("CARGO_BIN_EXE_retrain"));
    // 3 GiB of address space: decoding either 65500x65500 header would need over 12 GB.
    let Some(o) = common::under_memory_limit(3 << 30, bin, &args) else {
        return;
    };
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
    assert_eq!(read_npy(&std::fs::read(&out).unwrap()).unwrap().0[0], 2);
}

#[test]
fn a_symlink_loop_is_walked_once_and_hidden_files_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    let sub = photos.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::copy(images().join("rgb.png"), photos.join("a.png")).unwrap();
    std::fs::copy(images().join("gray.png"), sub.join("b.png")).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("..", sub.join("loop")).unwrap();
    // Junk that a Mac or Windows leaves behind; none of it is an image.
    std::fs::create_dir(photos.join("__MACOSX")).unwrap();
    std::fs::write(photos.join("__MACOSX/x.jpg"), b"resource fork").unwrap();
    std::fs::write(photos.join(".DS_Store"), b"\0\0\0\x01Bud1").unwrap();
    std::fs::write(photos.join("._a.png"), b"AppleDouble").unwrap();
    std::fs::write(photos.join("Thumbs.db"), b"thumbs").unwrap();
    std::fs::create_dir(photos.join(".hidden")).unwrap();
    std::fs::write(photos.join(".hidden/c.png"), b"not a png").unwrap();

    let out = dir.path().join("f.npy");
    let o = run_embed(&out, &[], &[&photos]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    let warnings: Vec<&str> = e.lines().filter(|l| l.starts_with("warning:")).collect();
    if cfg!(unix) {
        assert_eq!(warnings.len(), 1, "{e}");
        assert!(
            warnings[0].contains(&format!(
                "{}: a symbolic-link loop",
                sub.join("loop").display()
            )),
            "{e}"
        );
    } else {
        assert!(warnings.is_empty(), "{e}");
    }
    assert_eq!(
        sidecar(&dir.path().join("f.paths.jsonl")),
        [photos.join("a.png"), sub.join("b.png")].map(|p| p.display().to_string())
    );
}

#[test]
fn an_unreadable_sub_folder_is_a_warning_or_an_error_with_strict() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    let locked = photos.join("locked");
    std::fs::create_dir_all(&locked).unwrap();
    std::fs::copy(images().join("rgb.png"), photos.join("a.png")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    if std::fs::read_dir(&locked).is_ok() {
        common::skipped(
            "folder permissions do not stop this user (root?): unreadable folders not checked",
        );
        return;
    }
    let o = run_embed(&dir.path().join("f.npy"), &[], &[&photos]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "warning: skipping {}: cannot list folder",
            locked.display()
        )),
        "{}",
        stderr(&o)
    );
    let o = run_embed(&dir.path().join("g.npy"), &["--strict"], &[&photos]);
    assert_fails(&o, "run without --strict to skip it");
}

/// An ONNX file needs no --model: inspect shows its graph and cut points, embed and fit
/// run it as its graph, and the bundle (which stores the graph) predicts.
#[test]
fn an_onnx_file_runs_as_its_graph_in_every_command() {
    let onnx = fixtures().join("onnx/resnet_op13/model.onnx");
    let j = graph_file_in_every_command(&onnx, "/layer2/layer2.0/relu_1/Relu", 8);
    assert_eq!(j["format"], "onnx");
    assert_eq!(j["graph"]["opset"], 13);
    assert_eq!(j["graph"]["classifier"], "fc");
}

/// A TFLite file runs as its graph without --model too, its stages named by the Keras
/// layers.
#[test]
fn a_tflite_file_runs_as_its_graph_in_every_command() {
    let tflite = fixtures().join("tf_mobilenet_v2/model_int8.tflite");
    let j = graph_file_in_every_command(&tflite, "block_6_project", 24);
    assert_eq!(j["graph"]["classifier"], "predictions");
    let stages = j["graph"]["stages"].as_array().unwrap();
    assert!(
        stages.iter().any(|s| s["name"] == "block_5_add"),
        "{stages:?}"
    );
}

/// A Keras full model runs as its graph without --model, its stages named by its layers.
#[test]
fn a_keras_full_model_runs_as_its_graph_in_every_command() {
    let keras = fixtures().join("keras_graph/residual.keras");
    let j = graph_file_in_every_command(&keras, "add", 12);
    assert_eq!(j["format"], "keras");
    assert_eq!(j["graph"]["classifier"], "head");
}

/// Keras Applications as full models run in every command too: MobileNetV3 (whose 1x1
/// convolution classifier is replaced by fit) and ConvNeXt (LayerNormalization trains).
#[test]
fn keras_applications_run_as_their_graph_in_every_command() {
    let mobilenet = fixtures().join("keras_apps/mobilenet_v3_small.keras");
    let j = graph_file_in_every_command(&mobilenet, "expanded_conv_5_add", 8);
    assert_eq!(j["graph"]["classifier"], "logits");
    let convnext = fixtures().join("keras_apps/convnext.keras");
    let j = graph_file_in_every_command(&convnext, "convnext_tiny_downsampling_conv_1", 24);
    assert_eq!(j["graph"]["classifier"], "convnext_tiny_head_dense");
}

/// CNTK files run as their graph in every command: a v2 model (stages named by the layers
/// API's blocks) and a v1 network saved by CNTK 2 (named by the functions' uids); inspect
/// says which format and model version.
#[test]
fn cntk_files_run_as_their_graph_in_every_command() {
    let v2 = fixtures().join("cntk/resnet.model");
    let j = graph_file_in_every_command(&v2, "concat", 22);
    assert_eq!(j["format"], "cntk-v2");
    assert_eq!(j["graph"]["classifier"], "classifier");
    assert_eq!(j["graph"]["producer"], "CNTK v2 model, version 3");
    let v1 = fixtures().join("cntk/plain_v1.dnn");
    let j = graph_file_in_every_command(&v1, "pool2", 12);
    assert_eq!(j["format"], "cntk-v1");
    assert_eq!(j["graph"]["producer"], "CNTK v1 model, version 31");
}

/// A graph file without --model: `inspect` lists `layer` among its stages, `embed` cuts
/// there (`width` values an image), `fit` freezes up to it and the bundle predicts.
/// Returns what `inspect --json` said.
fn graph_file_in_every_command(file: &Path, layer: &str, width: usize) -> serde_json::Value {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::toy_folder_with(tmp.path(), 2);
    let file = file.to_str().unwrap();

    let o = retrain(&["inspect", "--json", file]);
    assert!(o.status.success(), "{}", stderr(&o));
    let inspected: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let stages: Vec<&str> = inspected["graph"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(stages.contains(&layer), "{stages:?}");

    let out = tmp.path().join("e.npy");
    let o = retrain(&[
        "embed",
        "--weights",
        file,
        "--layer",
        layer,
        "--out",
        out.to_str().unwrap(),
        data.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(common::npy(&out).0, vec![12, width]);

    let bundle = tmp.path().join("b");
    let o = retrain(&[
        "fit",
        "--weights",
        file,
        "--strategy",
        "freeze",
        "--freeze-until",
        layer,
        "--epochs",
        "1",
        "--val-split",
        "0.34",
        "--data",
        data.to_str().unwrap(),
        "--out",
        bundle.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    common::bundle_predicts_a_toy_class(&bundle, &data, file);
    inspected
}

/// A file of weights only still needs --model, and says so.
#[test]
fn a_weights_only_file_without_model_says_what_to_give() {
    let w = fixtures().join("resnet_basic/weights.pt");
    let o = retrain(&[
        "predict",
        "--weights",
        w.to_str().unwrap(),
        fixtures().join("images/rgb.png").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o)
            .contains("holds weights only and fits no zoo architecture as they are: give --model"),
        "{}",
        stderr(&o)
    );
}

/// `--jpeg-draft` decodes a large JPEG at a reduced DCT scale: the embedding moves a
/// little, and not at all for a JPEG too small to reduce or in CMYK.
#[test]
fn jpeg_draft_changes_only_jpegs_large_enough_to_reduce() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.jpg");
    let img = image::RgbImage::from_fn(1600, 1200, |x, y| {
        image::Rgb([(x / 7) as u8, (y / 5) as u8, ((x + y) / 11) as u8])
    });
    img.save(&big).unwrap();
    let (rotated, cmyk) = (images().join("rotated.jpg"), images().join("cmyk.jpg"));
    let embed = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let o = run_embed(&out, extra, &[&big, &rotated, &cmyk]);
        assert!(o.status.success(), "{}", stderr(&o));
        read_npy(&std::fs::read(&out).unwrap()).unwrap()
    };
    let ((shape, full), (_, draft)) = (
        embed("full.npy", &[]),
        embed("draft.npy", &["--jpeg-draft"]),
    );
    let d = shape[1];
    let diff =
        |r: std::ops::Range<usize>| r.map(|i| (full[i] - draft[i]).abs()).fold(0f32, f32::max);
    assert!(
        diff(0..d) > 0.0,
        "the 1600x1200 JPEG is decoded at a reduced scale"
    );
    let scale = full[..d].iter().fold(0f32, |m, v| m.max(v.abs()));
    eprintln!(
        "draft: max |diff| {:.2e} of max |value| {scale:.2e}",
        diff(0..d)
    );
    assert!(diff(0..d) < 0.05 * scale, "and its embedding stays close");
    assert_eq!(diff(d..3 * d), 0.0, "small and CMYK JPEGs decode in full");
}

/// `--preprocess` and `--size` change what the network sees: another pixel scaling gives
/// another embedding, `--size` runs a zoo model at that size, and a graph whose input size
/// is fixed refuses another with a one-line error.
#[test]
fn preprocess_and_size_flags_change_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let img = images().join("rgb.png");
    let embed = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let o = run_embed(&out, extra, &[&img]);
        assert!(o.status.success(), "{}", stderr(&o));
        read_npy(&std::fs::read(&out).unwrap()).unwrap().1
    };
    let torch = embed("torch.npy", &[]);
    assert_eq!(
        torch,
        embed("torch2.npy", &["--preprocess", "torch"]),
        "the spec's own scaling"
    );
    assert_ne!(torch, embed("unit.npy", &["--preprocess", "unit"]));
    assert_ne!(torch, embed("size.npy", &["--size", "48"]));
    // Explicit mean and std: ImageNet's, written out, are the spec's own scaling.
    let imagenet = ["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"];
    assert_eq!(torch, embed("mean.npy", &imagenet));
    assert_ne!(
        torch,
        embed(
            "half.npy",
            &["--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5"]
        )
    );
    let o = run_embed(
        &dir.path().join("s.npy"),
        &["--mean", "0.5,0.5,0.5", "--std", "0.5,0,0.5"],
        &[&img],
    );
    assert_fails(&o, "--std [0.5, 0.0, 0.5]: every value must be above 0");
    let onnx = fixtures().join("onnx/mobilenet_v2_op13/model.onnx");
    let o = retrain(&[
        "embed",
        "--weights",
        onnx.to_str().unwrap(),
        "--size",
        "40",
        "--out",
        dir.path().join("g.npy").to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    assert_fails(
        &o,
        "the graph's input is fixed at 32x32: --size 40 does not fit it",
    );
    let o = run_embed(&dir.path().join("z.npy"), &["--size", "0"], &[&img]);
    assert_fails(&o, "--size must be at least 1");
}
