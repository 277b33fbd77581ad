//! `retrain embed` into a folder of parts: inputs from a list file, shards that read back as
//! one dataset, and resumption after real SIGKILLs ending with the uninterrupted run's files.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;

/// `n` images (copies of the fixture photos under distinct names, in two folders) and one
/// file that is no image, listed in `list.txt` in shuffled order.
fn image_set(root: &Path, n: usize) -> PathBuf {
    let src: Vec<PathBuf> = ["rgb.png", "gray.png", "rgb.bmp", "rotated.jpg"]
        .iter()
        .map(|f| fixtures().join("images").join(f))
        .collect();
    let mut names = Vec::new();
    for i in 0..n {
        let folder = if i % 3 == 0 { "b" } else { "a" };
        std::fs::create_dir_all(root.join(folder)).unwrap();
        let s = &src[i % src.len()];
        let name = format!(
            "{folder}/img{i:04}.{}",
            s.extension().unwrap().to_str().unwrap()
        );
        std::fs::copy(s, root.join(&name)).unwrap();
        names.push(name);
    }
    std::fs::write(root.join("a/broken.jpg"), b"not an image").unwrap();
    names.push("a/broken.jpg".into());
    // Not in sorted order: the job sorts.
    names.reverse();
    let list = root.join("list.txt");
    std::fs::write(&list, names.join("\n") + "\n").unwrap();
    list
}

fn embed_cmd(list: &Path, out: &Path, extra: &[&str]) -> Command {
    let d = fixtures().join("mobilenet_v2");
    let mut c = Command::new(env!("CARGO_BIN_EXE_retrain"));
    c.args(["embed", "--model"])
        .arg(d.join("model.json"))
        .arg("--weights")
        .arg(d.join("weights.safetensors"))
        .arg("--inputs")
        .arg(list)
        .arg("--out")
        .arg(out)
        .args(["--batch-size", "4"])
        .args(extra);
    c
}

/// Every file of a folder, by name, with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// The rows of every part in a folder, parts in name order: (path, embedding length).
fn read_parts(dir: &Path) -> Vec<(String, usize)> {
    let mut parts: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    parts.sort();
    let mut rows = Vec::new();
    for p in parts {
        let reader = SerializedFileReader::new(std::fs::File::open(&p).unwrap()).unwrap();
        for row in reader.get_row_iter(None).unwrap() {
            let row = row.unwrap();
            let mut path = None;
            let mut dim = 0;
            for (name, field) in row.get_column_iter() {
                match (name.as_str(), field) {
                    ("path", Field::Str(s)) => path = Some(s.clone()),
                    ("embedding", Field::ListInternal(l)) => dim = l.elements().len(),
                    _ => {}
                }
            }
            rows.push((path.expect("a path column"), dim));
        }
    }
    rows
}

/// Three shards written into one folder read back, parts in name order, as the sorted
/// inputs (the unreadable one skipped and listed in its shard's manifest), every vector
/// 1280 long; each shard's manifest is complete.
#[test]
fn shards_read_back_as_one_dataset_in_input_order() {
    let dir = tempfile::tempdir().unwrap();
    let list = image_set(dir.path(), 23);
    let out = dir.path().join("emb");
    for i in 0..3 {
        let shard = format!("{i}/3");
        let o = embed_cmd(&list, &out, &["--part-size", "3", "--shard", &shard])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let rows = read_parts(&out);
    let mut want: Vec<String> = std::fs::read_to_string(&list)
        .unwrap()
        .lines()
        .map(|l| dir.path().join(l).display().to_string())
        .collect();
    want.sort();
    want.retain(|p| !p.ends_with("broken.jpg"));
    let got: Vec<String> = rows.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(got, want);
    assert!(rows.iter().all(|(_, d)| *d == 1280));
    let mut skipped = 0;
    for i in 0..3 {
        let m: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.join(format!("shard-{i:05}-of-00003.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(m["complete"], true);
        assert_eq!(m["total_inputs"], 24);
        for p in m["parts"].as_array().unwrap() {
            skipped += p["skipped"].as_array().map_or(0, Vec::len);
        }
    }
    assert_eq!(skipped, 1, "the broken file, in its shard's manifest");
}

/// A job killed with SIGKILL at arbitrary moments, then resumed each time, ends with the
/// same files, byte for byte, as one uninterrupted run; a finished job resumed does
/// nothing, and resuming with another part size is refused.
#[test]
fn a_job_killed_at_any_moment_resumes_to_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let list = image_set(dir.path(), 47);
    let reference = dir.path().join("reference");
    let started = std::time::Instant::now();
    let o = embed_cmd(&list, &reference, &["--part-size", "2"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Kill times spread over one run's length (a deterministic sequence).
    let mut span = started.elapsed().as_millis() as u64;
    let want = files(&reference);
    assert_eq!(
        want.len(),
        25,
        "24 parts and the manifest: {:?}",
        want.keys()
    );

    // A job that finishes before its fifth kill ran faster than the reference (which
    // another load on the machine slowed): its files are checked all the same, then the
    // job starts again in a fresh folder with kill times a quarter as far apart.
    let mut attempt = 0;
    let (out, kills) = loop {
        let out = dir.path().join(format!("killed-{attempt}"));
        let mut kills = 0;
        let mut finished = false;
        for round in 0..60u64 {
            let mut child = embed_cmd(&list, &out, &["--part-size", "2", "--resume"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis((round * 7919 % 97 + 1) * span / 400));
            if child.try_wait().unwrap().is_some() {
                finished = child.wait().unwrap().success();
                if finished {
                    break;
                }
                continue;
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            kills += 1;
        }
        if !finished {
            let o = embed_cmd(&list, &out, &["--part-size", "2", "--resume"])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", stderr(&o));
        }
        assert_eq!(files(&out), want, "the resumed job's files ({kills} kills)");
        if kills >= 5 || attempt == 3 {
            break (out, kills);
        }
        eprintln!("killed {kills} times before the job finished; again, kills 4x as often");
        span = (span / 4).max(1);
        attempt += 1;
    };
    eprintln!("killed {kills} times before the job finished");
    assert!(kills >= 5, "the job was seldom interrupted ({kills} kills)");

    let o = embed_cmd(&list, &out, &["--part-size", "2", "--resume", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["parts_written"].as_u64(), v["parts_resumed"].as_u64()),
        (Some(0), Some(24))
    );
    let o = embed_cmd(&list, &out, &["--part-size", "5", "--resume"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("describes another job"),
        "{}",
        stderr(&o)
    );
    let o = embed_cmd(&list, &out, &["--part-size", "2"])
        .output()
        .unwrap();
    assert!(stderr(&o).contains("add --resume"), "{}", stderr(&o));
    assert_eq!(files(&out), want, "refused runs change nothing");
}
