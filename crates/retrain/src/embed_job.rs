//! Embedding many images as a job: the inputs (any number, from a list file), sorted, this
//! process' shard of them, and Parquet part files written as it goes with a manifest per
//! shard. A crash (even `kill -9`) loses at most the part in progress; `resume` continues
//! where the manifest stops, and the files end as an uninterrupted run's. Memory holds one
//! part's vectors, whatever the number of images.
//!
//! Layout of the output folder, for shard `i` of `n` (`0 ≤ i < n`):
//! `shard-{i:05}-of-{n:05}.json` (the manifest) and `shard-{i:05}-of-{n:05}-part-{k:06}.parquet`
//! (columns `path` and `embedding`), so the parts of every shard, sorted by name, are the
//! sorted inputs in order: one dataset for polars, pandas, DuckDB or Spark.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::inference::{self, RunOptions};
use crate::observe::Observer;
use crate::outputs::{parquet_bytes, write_atomic_as};
use crate::zoo::Model;

/// One of `count` disjoint slices of the sorted inputs (`index` from 0), contiguous so that
/// the shards' parts, in name order, are the inputs in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Self { index: 0, count: 1 }
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `I/N` with `0 ≤ I < N` (a Slurm array task id, a Kubernetes completion index).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: I/N expected, with 0 <= I < N (e.g. 3/8)");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl Shard {
    /// This shard's range of `n` sorted inputs.
    pub fn range(&self, n: usize) -> std::ops::Range<usize> {
        let at = |k: usize| (n as u128 * k as u128 / self.count as u128) as usize;
        at(self.index)..at(self.index + 1)
    }

    fn stem(&self) -> String {
        format!("shard-{:05}-of-{:05}", self.index, self.count)
    }
}

/// The image paths a list file names: one per line (blank lines and `#` comments skipped),
/// or for a `.csv` the `path` column (else the first). Relative paths are taken from the
/// list file's folder. Read line by line: millions of paths, no argument limits.
pub fn read_input_list(list: &Path) -> Result<Vec<PathBuf>> {
    let file = std::fs::File::open(list)
        .with_context(|| format!("cannot read the input list {}", list.display()))?;
    let base = list.parent().unwrap_or(Path::new("."));
    let csv = list
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let mut column = None;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| {
            format!(
                "cannot read the input list {} at line {} (not UTF-8 text?)",
                list.display(),
                i + 1
            )
        })?;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || (!csv && line.starts_with('#')) {
            continue;
        }
        let entry = if csv {
            let fields = csv_fields(line);
            let c = *column.get_or_insert_with(|| fields.iter().position(|f| f == "path"));
            match (c, i) {
                // The header names the column; without a `path` header the first column is
                // the path, the first line included.
                (Some(_), 0) => continue,
                (Some(c), _) => fields.get(c).cloned().unwrap_or_default(),
                (None, _) => fields.into_iter().next().unwrap_or_default(),
            }
        } else {
            line.to_owned()
        };
        if entry.is_empty() {
            bail!("{} line {}: no path in this row", list.display(), i + 1);
        }
        let p = PathBuf::from(entry);
        out.push(if p.is_relative() { base.join(p) } else { p });
    }
    if out.is_empty() {
        bail!("the input list {} names no images", list.display());
    }
    Ok(out)
}

/// The fields of one CSV line (RFC 4180: `"` quotes a field, `""` inside is a quote).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().expect("one field").push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

/// What an embedding job is asked, beyond the model and the run options.
#[derive(Debug, Clone)]
pub struct JobOptions {
    /// The output folder (made if missing).
    pub dir: PathBuf,
    /// Images per part file.
    pub part_size: usize,
    pub shard: Shard,
    /// Continue the job the folder's manifest describes (it must be this same job).
    pub resume: bool,
    /// The stage embedded, as the manifest records it.
    pub layer: String,
    /// The model's file(s) as the manifest records them (path, size, modification time):
    /// a resumed job must run the same weights.
    pub model_files: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedImage {
    pub path: String,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartRecord {
    pub file: String,
    /// Position of its first input in this shard's sorted inputs.
    pub first: usize,
    pub inputs: usize,
    pub embedded: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedImage>,
}

/// The state of one shard's job, rewritten after every part (no times: a resumed job ends
/// with the same manifest as an uninterrupted one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub producer: String,
    pub model: String,
    pub model_files: String,
    pub layer: String,
    pub shard: Shard,
    /// This shard's inputs: how many, and a digest of their sorted paths.
    pub inputs: usize,
    pub inputs_sha256: String,
    /// All shards' inputs together.
    pub total_inputs: usize,
    pub part_size: usize,
    pub dim: Option<usize>,
    pub parts: Vec<PartRecord>,
    pub complete: bool,
}

/// What a job did in this run.
#[derive(Debug, Clone)]
pub struct JobSummary {
    pub manifest: PathBuf,
    pub parts_written: usize,
    pub parts_resumed: usize,
    pub embedded: usize,
    pub skipped: usize,
    pub dim: Option<usize>,
}

/// Embeds this shard of `inputs` (sorted here, duplicates dropped) part by part.
pub fn run(
    model: &Model,
    mut inputs: Vec<PathBuf>,
    run_opts: &RunOptions,
    opts: &JobOptions,
    observer: &dyn Observer,
    device: &Device,
) -> Result<JobSummary> {
    if opts.part_size == 0 {
        bail!("the part size must be at least 1 image");
    }
    inputs.sort();
    inputs.dedup();
    let total_inputs = inputs.len();
    let mine = &inputs[opts.shard.range(total_inputs)];
    let mut h = Sha256::new();
    for p in mine {
        h.update(p.as_os_str().as_encoded_bytes());
        h.update([0]);
    }
    let digest: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(&opts.dir)
        .with_context(|| format!("cannot create the output folder {}", opts.dir.display()))?;
    let stem = opts.shard.stem();
    let manifest_path = opts.dir.join(format!("{stem}.json"));
    let fresh = Manifest {
        producer: format!("retrain {}", env!("CARGO_PKG_VERSION")),
        model: model.name.clone(),
        model_files: opts.model_files.clone(),
        layer: opts.layer.clone(),
        shard: opts.shard,
        inputs: mine.len(),
        inputs_sha256: digest,
        total_inputs,
        part_size: opts.part_size,
        dim: None,
        parts: Vec::new(),
        complete: false,
    };
    let mut manifest = match std::fs::read(&manifest_path) {
        Ok(bytes) if opts.resume => {
            let found: Manifest = serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is damaged; remove it (and its parts) to start over",
                    manifest_path.display()
                )
            })?;
            let same = Manifest {
                dim: found.dim,
                parts: found.parts.clone(),
                complete: found.complete,
                producer: found.producer.clone(),
                ..fresh.clone()
            };
            if found != same {
                bail!(
                    "{} describes another job (model {} from {}, layer {}, {} inputs, part size {}): \
                     resume with the same model, layer, inputs and --part-size, or use another --out",
                    manifest_path.display(),
                    found.model,
                    found.model_files,
                    found.layer,
                    found.inputs,
                    found.part_size
                );
            }
            found
        }
        Ok(_) => bail!(
            "{} already holds this shard's parts: add --resume to continue that job, or use another --out",
            opts.dir.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fresh,
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read {}", manifest_path.display()));
        }
    };
    // What a killed run of this shard left half-written goes.
    let tmp_prefix = format!(".{stem}.");
    if let Ok(entries) = std::fs::read_dir(&opts.dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&tmp_prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    // Parts the manifest lists and whose file is there are done; anything after the first
    // missing one is made again (a part file without its manifest entry, from a crash
    // between the two renames, is overwritten).
    let done = manifest
        .parts
        .iter()
        .take_while(|p| opts.dir.join(&p.file).is_file())
        .count();
    manifest.parts.truncate(done);
    let mut summary = JobSummary {
        manifest: manifest_path.clone(),
        parts_written: 0,
        parts_resumed: done,
        embedded: manifest.parts.iter().map(|p| p.embedded).sum(),
        skipped: manifest.parts.iter().map(|p| p.skipped.len()).sum(),
        dim: manifest.dim,
    };
    let chunks: Vec<&[PathBuf]> = mine.chunks(opts.part_size).collect();
    for (k, chunk) in chunks.iter().enumerate().skip(done) {
        let out = inference::run(model, chunk, run_opts, observer, device)?;
        let dim = manifest.dim.or((out.dim > 0).then_some(out.dim));
        let names: Vec<String> = out.paths.iter().map(|p| p.display().to_string()).collect();
        let file = format!("{stem}-part-{k:06}.parquet");
        let body = parquet_bytes(&names, &out.features, out.dim)?;
        write_atomic_as(&opts.dir.join(&file), &tmp_prefix, |w| {
            Ok(w.write_all(&body)?)
        })?;
        manifest.dim = dim;
        manifest.parts.push(PartRecord {
            file,
            first: k * opts.part_size,
            inputs: chunk.len(),
            embedded: out.paths.len(),
            skipped: out
                .skipped
                .iter()
                .map(|(p, why)| SkippedImage {
                    path: p.display().to_string(),
                    why: why.clone(),
                })
                .collect(),
        });
        manifest.complete = k + 1 == chunks.len();
        write_manifest(&manifest_path, &tmp_prefix, &manifest)?;
        summary.parts_written += 1;
        summary.embedded += out.paths.len();
        summary.skipped += out.skipped.len();
        summary.dim = dim;
    }
    if !manifest.complete {
        // Nothing left to do (an empty shard, or every part done before).
        manifest.complete = true;
        write_manifest(&manifest_path, &tmp_prefix, &manifest)?;
    }
    Ok(summary)
}

fn write_manifest(path: &Path, tmp_prefix: &str, m: &Manifest) -> Result<()> {
    let mut text = serde_json::to_string_pretty(m)?;
    text.push('\n');
    write_atomic_as(path, tmp_prefix, |w| Ok(w.write_all(text.as_bytes())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_inputs_in_order() {
        for n in [0usize, 1, 7, 100, 101] {
            for count in 1..=9 {
                let mut next = 0;
                for index in 0..count {
                    let r = Shard { index, count }.range(n);
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, n);
            }
        }
        assert_eq!("3/8".parse::<Shard>(), Ok(Shard { index: 3, count: 8 }));
        for bad in ["8/8", "1", "a/2", "1/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn input_lists_are_lines_or_a_csv_path_column() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("list.txt");
        std::fs::write(&list, "# photos\na.jpg\n\n/abs/b.png\r\n").unwrap();
        assert_eq!(
            read_input_list(&list).unwrap(),
            [dir.path().join("a.jpg"), PathBuf::from("/abs/b.png")]
        );
        let csv = dir.path().join("list.csv");
        std::fs::write(&csv, "id,path\n1,\"x, y.jpg\"\n2,z.jpg\n").unwrap();
        assert_eq!(
            read_input_list(&csv).unwrap(),
            [dir.path().join("x, y.jpg"), dir.path().join("z.jpg")]
        );
        std::fs::write(&csv, "a.jpg,1\nb.jpg,2\n").unwrap();
        assert_eq!(
            read_input_list(&csv).unwrap(),
            [dir.path().join("a.jpg"), dir.path().join("b.jpg")]
        );
        std::fs::write(&list, "\n# nothing\n").unwrap();
        assert!(read_input_list(&list).is_err());
    }
}
