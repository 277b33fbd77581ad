//! Checkpoints: Ctrl-C saves and `--resume` reaches the same bundle as an uninterrupted
//! run; a full disk while writing a checkpoint keeps the previous one; plots in bundles.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A fine-tune of the MobileNetV2 fixture, augmented with colour jitter, one-cycle
/// schedule, writing `out`; `extra` arguments appended.
fn finetune_args(data: &Path, out: &Path, epochs: &str, extra: &[&str]) -> Vec<String> {
    let d = fixtures().join("mobilenet_v2");
    [
        "fit",
        "--model",
        &s(&d.join("model.json")),
        "--weights",
        &s(&d.join("weights.safetensors")),
        "--data",
        &s(data),
        "--val",
        &s(data),
        "--strategy",
        "finetune",
        "--epochs",
        epochs,
        "--head-epochs",
        "2",
        "--lr",
        "0.02",
        "--train-batch",
        "2",
        "--color-jitter",
        "0.3",
        "--schedule",
        "one-cycle",
        "--seed",
        "9",
        "--out",
        &s(out),
    ]
    .iter()
    .chain(extra)
    .map(|a| a.to_string())
    .collect()
}

fn run(args: &[String]) -> std::process::Output {
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    retrain(&a)
}

/// The per-epoch figures of a bundle without the wall times.
fn epochs_of(bundle: &Path) -> serde_json::Value {
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("metrics.json")).unwrap()).unwrap();
    for e in m["epochs"].as_array_mut().unwrap() {
        e.as_object_mut().unwrap().remove("seconds");
    }
    m["epochs"].take()
}

fn assert_same_bundle(a: &Path, b: &Path) {
    assert_eq!(
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(b.join("model.safetensors")).unwrap(),
        "the resumed run ends with the same weights"
    );
    assert_eq!(epochs_of(a), epochs_of(b), "and the same per-epoch figures");
}

/// Ctrl-C (a real SIGINT) at whatever point the run has reached after its first
/// checkpoint, twice, then --resume: the bundle equals the uninterrupted run's.
#[test]
fn ctrl_c_saves_and_resume_reaches_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy_folder_with(dir.path(), 2);
    let whole = dir.path().join("whole");
    let o = run(&finetune_args(&data, &whole, "8", &[]));
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [
        "model.safetensors",
        "manifest.json",
        "metrics.json",
        "curves.png",
        "confusion.png",
    ] {
        assert!(whole.join(f).is_file(), "bundle has {f}");
    }
    assert!(
        !dir.path().join("whole.checkpoint").exists(),
        "a finished run removes its checkpoint"
    );

    let out = dir.path().join("stopped");
    let ckpt = dir.path().join("stopped.checkpoint");
    let mut interruptions = 0;
    let mut args = finetune_args(&data, &out, "8", &[]);
    for round in 0..3 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_retrain"))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for a checkpoint newer than the one this round started from, then Ctrl-C.
        let before = std::fs::metadata(&ckpt).and_then(|m| m.modified()).ok();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(120) {
            let now = std::fs::metadata(&ckpt).and_then(|m| m.modified()).ok();
            if now.is_some() && now != before {
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let o = child.wait_with_output().unwrap();
        let err = stderr(&o);
        if round == 0 {
            args.push("--resume".into());
        }
        if o.status.success() {
            break; // it finished before the signal landed
        }
        assert_eq!(o.status.code(), Some(130), "{err}");
        assert!(
            err.contains("interrupted") && err.contains("--resume"),
            "{err}"
        );
        assert!(ckpt.is_file(), "the checkpoint is saved");
        assert!(!out.exists(), "no bundle from an interrupted run");
        interruptions += 1;
    }
    assert!(interruptions >= 1, "at least one Ctrl-C landed mid-run");
    if !out.exists() {
        let o = run(&args);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert!(!ckpt.exists(), "the resumed run removes its checkpoint");
    assert_same_bundle(&whole, &out);
}

#[test]
fn checkpoint_and_resume_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy_folder_with(dir.path(), 1);
    let out = dir.path().join("b");
    let mut args = finetune_args(&data, &out, "1", &[]);
    args.push("--resume".into());
    let o = run(&args);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no checkpoint"), "{}", stderr(&o));

    // A checkpoint of another run, or a damaged one, is refused with what to do.
    std::fs::write(dir.path().join("b.checkpoint"), b"not a checkpoint").unwrap();
    let o = run(&args);
    assert!(stderr(&o).contains("damaged"), "{}", stderr(&o));
    // A whole checkpoint, but of another run: refused, naming what differs.
    use retrain::strategy::RunIdentity;
    use retrain::strategy::checkpoint::{Checkpoint, State};
    let run_id = RunIdentity {
        model: retrain::zoo::resolve("resnet18").unwrap(),
        pretrained_sha256: "0".into(),
        train: "0".into(),
        val: "0".into(),
        strategy: retrain::strategy::Strategy::finetune(),
        seed: 12345,
        batch_size: 32,
    };
    let other = Checkpoint {
        state: State {
            epochs_done: 1,
            step: 3,
            retrain_version: "0".into(),
            ..State::new(run_id)
        },
        model: vec![],
        optimizer: vec![],
        best: None,
    };
    other.write(&dir.path().join("b.checkpoint")).unwrap();
    let o = run(&args);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("different run") && stderr(&o).contains("seed"),
        "{}",
        stderr(&o)
    );
    std::fs::write(dir.path().join("b.checkpoint"), b"not a checkpoint").unwrap();
    args.pop();
    let o = run(&args);
    assert!(
        stderr(&o).contains("interrupted run") && stderr(&o).contains("--resume"),
        "without --resume an existing checkpoint is never overwritten: {}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read(dir.path().join("b.checkpoint")).unwrap(),
        b"not a checkpoint"
    );
}

/// A disk that fills up while a checkpoint is written: the run stops with a message, the
/// previous checkpoint is whole, and resuming it (with space) gives the uninterrupted result.
/// Uses a 256 KiB tmpfs in a user+mount namespace (`unshare`).
#[test]
fn full_disk_keeps_the_previous_checkpoint() {
    let probe = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "true"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        skipped("full-disk test needs `unshare --user --mount` (util-linux, user namespaces)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = toy_folder_with(dir.path(), 1);
    let whole = dir.path().join("whole");
    let o = run(&finetune_args(&data, &whole, "2", &["--patience", "9"]));
    assert!(o.status.success(), "{}", stderr(&o));

    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let kept = dir.path().join("kept");
    std::fs::create_dir(&kept).unwrap();
    let args = finetune_args(&data, &small.join("b"), "2", &["--patience", "9"]);
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    // Head-only checkpoints (a few KiB) fit; those of the whole network (~0.5 MiB) do not.
    let script = format!(
        "mount -t tmpfs -o size=256k tmpfs '{small}' || exit 99; '{bin}' {args}; rc=$?; cp '{small}'/b.checkpoint '{kept}/' ; echo \"left: $(ls -A '{small}' | tr '\\n' ' ')\" >&2; exit $rc",
        small = s(&small),
        bin = env!("CARGO_BIN_EXE_retrain"),
        args = quoted.join(" "),
        kept = s(&kept),
    );
    let o = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .output()
        .unwrap();
    let err = stderr(&o);
    if o.status.code() == Some(99) {
        skipped(&format!(
            "cannot mount a tmpfs in a user namespace here: {err}"
        ));
        return;
    }
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot save the checkpoint")
            && err.contains("No space left on device")
            && err.contains("--resume"),
        "{err}"
    );
    // Which epoch's checkpoint last fitted depends on sizes; the message names it.
    let kept_epoch: usize = err
        .split("the one of epoch ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("names the kept checkpoint's epoch: {err}"));
    assert!((1..4).contains(&kept_epoch), "{err}");
    let c = retrain::strategy::checkpoint::Checkpoint::read(&kept.join("b.checkpoint")).unwrap();
    assert_eq!(
        c.state.epochs_done, kept_epoch,
        "the kept checkpoint is whole"
    );
    assert!(
        err.contains("left: b.checkpoint \n"),
        "no temporary file left behind: {err}"
    );
    // Resume the kept checkpoint where there is space.
    let mut resume = finetune_args(&data, &kept.join("b"), "2", &["--patience", "9"]);
    resume.push("--resume".into());
    let o = run(&resume);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_bundle(&whole, &kept.join("b"));
}
