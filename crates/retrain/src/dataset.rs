//! Labelled data sets: an ImageFolder layout (one sub-folder per class) or a CSV of
//! `path,label`, and a stratified, seeded train/validation split.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data;
use crate::rng::SplitMix64;

/// Images with class indices into `classes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Labelled {
    pub classes: Vec<String>,
    pub paths: Vec<PathBuf>,
    pub labels: Vec<usize>,
}

impl Labelled {
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Images per class, in class order.
    pub fn counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.classes.len()];
        for &l in &self.labels {
            c[l] += 1;
        }
        c
    }

    /// Reads `dir`: a CSV file of `path,label` rows, or a folder with one sub-folder of
    /// images per class. `classes` fixes the class list (for validation data, which must use
    /// the training classes); otherwise it is the sorted folder names or labels.
    pub fn load(source: &Path, classes: Option<&[String]>) -> Result<Self> {
        Ok(Self::scan(source, classes)?.0)
    }

    /// Like [`Labelled::load`], with what was left out of the class folders (see
    /// [`data::scan_images`]) for the caller to report. Hidden folders and `__MACOSX` are
    /// not classes.
    pub fn scan(
        source: &Path,
        classes: Option<&[String]>,
    ) -> Result<(Self, Vec<(PathBuf, String)>)> {
        if source.is_file() {
            return Ok((Self::from_csv(source, classes)?, Vec::new()));
        }
        if !source.is_dir() {
            bail!("data folder {} does not exist", source.display());
        }
        let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(source)
            .with_context(|| format!("cannot list {}", source.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().is_some_and(|n| !data::is_ignored_name(n)))
            .filter(|p| p.is_dir())
            .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
            .collect();
        found.sort();
        if found.is_empty() {
            bail!(
                "{} has no class folders: expected one sub-folder of images per class (e.g. {0}/cats, {0}/dogs)",
                source.display()
            );
        }
        let classes: Vec<String> = match classes {
            Some(c) => c.to_vec(),
            None => found.iter().map(|(n, _)| n.clone()).collect(),
        };
        let mut out = Self {
            classes,
            paths: Vec::new(),
            labels: Vec::new(),
        };
        let mut notes = Vec::new();
        let mut walk = data::SubFolders::new(source, false)?;
        for (name, dir) in found {
            let Some(label) = out.classes.iter().position(|c| *c == name) else {
                bail!(
                    "{} has a class folder `{name}` the model was not trained on (classes: {})",
                    source.display(),
                    out.classes.join(", ")
                );
            };
            let scan = walk.scan(&dir).with_context(|| format!("class `{name}`"))?;
            notes.extend(scan.notes);
            out.labels
                .extend(std::iter::repeat_n(label, scan.paths.len()));
            out.paths.extend(scan.paths);
        }
        Ok((out, notes))
    }

    fn from_csv(csv: &Path, classes: Option<&[String]>) -> Result<Self> {
        let text = std::fs::read_to_string(csv)
            .with_context(|| format!("cannot read {}", csv.display()))?;
        let base = csv.parent().unwrap_or(Path::new("."));
        let mut rows = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || (i == 0 && line.eq_ignore_ascii_case("path,label")) {
                continue;
            }
            let Some((path, label)) = line.rsplit_once(',') else {
                bail!("{} line {}: expected `path,label`", csv.display(), i + 1);
            };
            let path = base.join(path.trim().trim_matches('"'));
            if !path.is_file() {
                bail!(
                    "{} line {}: image {} does not exist",
                    csv.display(),
                    i + 1,
                    path.display()
                );
            }
            rows.push((path, label.trim().trim_matches('"').to_owned()));
        }
        let classes: Vec<String> = match classes {
            Some(c) => c.to_vec(),
            None => {
                let mut c: Vec<String> = rows.iter().map(|(_, l)| l.clone()).collect();
                c.sort();
                c.dedup();
                c
            }
        };
        let mut out = Self {
            classes,
            paths: Vec::new(),
            labels: Vec::new(),
        };
        for (path, label) in rows {
            let Some(l) = out.classes.iter().position(|c| *c == label) else {
                bail!("{}: unknown class `{label}`", csv.display());
            };
            out.paths.push(path);
            out.labels.push(l);
        }
        if out.is_empty() {
            bail!("{} lists no images", csv.display());
        }
        Ok(out)
    }

    /// Checks the set can train a classifier: two classes or more, two images per class.
    pub fn check_trainable(&self) -> Result<()> {
        if self.classes.len() < 2 {
            bail!(
                "need at least two classes to train a classifier, found {}",
                self.classes.len()
            );
        }
        for (c, n) in self.classes.iter().zip(self.counts()) {
            if n < 2 {
                bail!(
                    "class `{c}` has {n} image{}: each class needs at least 2 (add images or remove the class)",
                    if n == 1 { "" } else { "s" }
                );
            }
        }
        Ok(())
    }

    /// Stratified split: `fraction` of each class (at least one image) goes to validation,
    /// chosen by a seeded shuffle so the same seed gives the same split.
    pub fn split(&self, fraction: f64, seed: u64) -> Result<(Self, Self)> {
        if !(0.0..1.0).contains(&fraction) || fraction == 0.0 {
            bail!("--val-split must be between 0 and 1, got {fraction}");
        }
        let mut by_class: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, &l) in self.labels.iter().enumerate() {
            by_class.entry(l).or_default().push(i);
        }
        let mut rng = SplitMix64(seed ^ 0x5851_F42D_4C95_7F2D);
        let (mut tr, mut va) = (Vec::new(), Vec::new());
        for (_, mut idx) in by_class {
            // A fixed generator: a split that repeats for a seed.
            rng.shuffle(&mut idx);
            let n_val = ((idx.len() as f64 * fraction).round() as usize).clamp(1, idx.len() - 1);
            va.extend_from_slice(&idx[..n_val]);
            tr.extend_from_slice(&idx[n_val..]);
        }
        tr.sort_unstable();
        va.sort_unstable();
        Ok((self.subset(&tr), self.subset(&va)))
    }

    pub fn subset(&self, idx: &[usize]) -> Self {
        Self {
            classes: self.classes.clone(),
            paths: idx.iter().map(|&i| self.paths[i].clone()).collect(),
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
        }
    }

    /// A digest of the file list, labels, sizes and modification times: two runs on the same
    /// data have the same fingerprint.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for (p, l) in self.paths.iter().zip(&self.labels) {
            h.update(p.to_string_lossy().as_bytes());
            h.update([0]);
            h.update(self.classes[*l].as_bytes());
            if let Ok(m) = std::fs::metadata(p) {
                h.update(m.len().to_le_bytes());
                if let Ok(t) = m.modified().and_then(|t| {
                    t.duration_since(std::time::UNIX_EPOCH)
                        .map_err(std::io::Error::other)
                }) {
                    h.update(t.as_nanos().to_le_bytes());
                }
            }
        }
        let d = h.finalize();
        d.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }
}

/// Summary of a data set for a bundle's manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DataSummary {
    pub source: String,
    pub images: usize,
    pub per_class: BTreeMap<String, usize>,
    pub fingerprint: String,
}

impl DataSummary {
    pub fn of(set: &Labelled, source: &str) -> Self {
        Self {
            source: source.to_owned(),
            images: set.len(),
            per_class: set.classes.iter().cloned().zip(set.counts()).collect(),
            fingerprint: set.fingerprint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n_per: &[usize]) -> Labelled {
        let mut s = Labelled {
            classes: (0..n_per.len()).map(|i| format!("c{i}")).collect(),
            paths: Vec::new(),
            labels: Vec::new(),
        };
        for (c, &n) in n_per.iter().enumerate() {
            for i in 0..n {
                s.paths.push(PathBuf::from(format!("{c}/{i}.jpg")));
                s.labels.push(c);
            }
        }
        s
    }

    #[test]
    fn split_is_stratified_disjoint_and_repeatable() {
        let s = toy(&[50, 10]);
        let (tr, va) = s.split(0.2, 7).unwrap();
        assert_eq!(va.counts(), vec![10, 2]);
        assert_eq!(tr.counts(), vec![40, 8]);
        assert!(tr.paths.iter().all(|p| !va.paths.contains(p)));
        assert_eq!(s.split(0.2, 7).unwrap().1, va);
        assert_ne!(s.split(0.2, 8).unwrap().1, va);
    }

    #[test]
    fn a_class_with_one_image_cannot_train() {
        let err = toy(&[5, 1]).check_trainable().unwrap_err().to_string();
        assert!(err.contains("class `c1` has 1 image"), "{err}");
        assert!(toy(&[3]).check_trainable().is_err());
    }
}
