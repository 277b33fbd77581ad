//! Running a model over image files: decoding in parallel on a producer thread while the
//! network runs on the previous batch, with unreadable images skipped (or fatal, if strict).

use std::path::PathBuf;
use std::sync::mpsc::sync_channel;

use anyhow::{Result, bail};
use burn::prelude::*;
use rayon::prelude::*;

use crate::data;
use crate::observe::{Event, Observer};
use crate::rng::SplitMix64;
use crate::zoo::Model;

/// What a run returns for each image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// The globally average-pooled output of the last stage (the classifier's input): one
    /// vector per image.
    #[default]
    Pooled,
    /// The pooled output of the stage with this index.
    PooledAt(usize),
    /// The classifier's input and the class scores (when the model has a classifier).
    PooledAndLogits,
    /// The whole feature map of a stage, flattened C·H·W per image: what the trainable part
    /// is fed when the backbone is frozen through that stage.
    FeatureMap(usize),
    /// The preprocessed (maybe augmented) pixels, without running the network: what a
    /// model with nothing frozen is fed.
    Pixels,
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub output: Output,
    pub batch_size: usize,
    /// Stop at the first unreadable image instead of skipping it.
    pub strict: bool,
    /// Training augmentation; each image's draws derive from its seed and the image's place.
    pub augment: Option<data::Augment>,
    /// Images larger than this are refused from their header (skipped, or fatal if strict).
    pub limits: data::Limits,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            output: Output::Pooled,
            batch_size: 32,
            strict: false,
            augment: None,
            limits: data::Limits::default(),
        }
    }
}

/// Per-image results, in input order, for the images that could be read.
#[derive(Debug, Default)]
pub struct RunOutput {
    pub paths: Vec<PathBuf>,
    /// Row-major `paths.len() × dim`.
    pub features: Vec<f32>,
    pub dim: usize,
    /// Row-major `paths.len() × classes`, when asked for and the model has a classifier.
    pub logits: Option<Vec<f32>>,
    pub classes: usize,
    /// Shape of one image's output: `[dim, 1, 1]` for vectors, `[c, h, w]` for feature
    /// maps and pixels.
    pub shape: [usize; 3],
    /// Images that could not be read, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Per-sample values of a labelled set: `labels.len()` samples of `shape` each (a vector
/// as `[d, 1, 1]`, a feature map, or pixels), row-major, with their labels in `0..classes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    pub values: Vec<f32>,
    pub shape: [usize; 3],
    pub labels: Vec<usize>,
    pub classes: usize,
}

impl Features {
    /// Values per sample.
    pub fn sample_len(&self) -> usize {
        self.shape.iter().product()
    }
}

struct Batch {
    paths: Vec<PathBuf>,
    pixels: Vec<f32>,
    failed: Vec<(PathBuf, String)>,
}

/// Runs `model` over `paths`, telling `observer` how far it got.
pub fn run(
    model: &Model,
    paths: &[PathBuf],
    opts: &RunOptions,
    observer: &dyn Observer,
    device: &Device,
) -> Result<RunOutput> {
    opts.limits.validate()?;
    let pre = model.preprocess;
    let side = opts.augment.map_or(pre.crop, |a| a.side(&pre));
    let px = 3 * side * side;
    observer.event(Event::ImagesStarted { total: paths.len() });
    let mut out = RunOutput::default();
    let batch_size = opts.batch_size.max(1);

    std::thread::scope(|scope| -> Result<()> {
        // One batch decoded ahead: decoding overlaps the network's work on the previous one.
        let (tx, rx) = sync_channel::<Batch>(1);
        let augment = opts.augment;
        let limits = opts.limits;
        scope.spawn(move || {
            for (b, chunk) in paths.chunks(batch_size).enumerate() {
                let decoded: Vec<_> = chunk
                    .par_iter()
                    .enumerate()
                    .map(|(i, p)| {
                        // Each image's draw depends only on the seed and its position.
                        let draw = augment.map(|a| data::Augment {
                            seed: SplitMix64(a.seed ^ ((b * batch_size + i) as u64)).next_u64(),
                            ..a
                        });
                        (p, data::load_tensor_limited(p, &pre, draw, &limits))
                    })
                    .collect();
                let mut b = Batch {
                    paths: Vec::new(),
                    pixels: Vec::with_capacity(px * chunk.len()),
                    failed: Vec::new(),
                };
                for (p, r) in decoded {
                    match r {
                        Ok(v) => {
                            b.paths.push(p.clone());
                            b.pixels.extend_from_slice(&v);
                        }
                        Err(e) => b.failed.push((p.clone(), format!("{e:#}"))),
                    }
                }
                if tx.send(b).is_err() {
                    return; // the consumer stopped (an error); nothing more to do
                }
            }
        });
        for mut b in rx {
            let done = b.paths.len() + b.failed.len();
            if let Some((p, why)) = b.failed.first() {
                if opts.strict {
                    bail!(
                        "{why} (image {}); remove it or run without --strict to skip it",
                        p.display()
                    );
                }
                for (path, why) in &b.failed {
                    observer.event(Event::Skipped { path, why });
                }
                out.skipped.append(&mut b.failed);
            }
            if !b.paths.is_empty() {
                out.add_batch(model, b, side, opts.output, device)?;
            }
            observer.event(Event::ImagesDone { count: done });
        }
        Ok(())
    })?;
    observer.event(Event::ImagesFinished);
    Ok(out)
}

impl RunOutput {
    /// Runs the network on one decoded batch of `crop`×`crop` images and appends what
    /// `output` asks for.
    fn add_batch(
        &mut self,
        model: &Model,
        b: Batch,
        crop: usize,
        output: Output,
        device: &Device,
    ) -> Result<()> {
        let n = b.paths.len();
        self.paths.extend(b.paths);
        if output == Output::Pixels {
            self.shape = [3, crop, crop];
            self.dim = 3 * crop * crop;
            self.features.extend_from_slice(&b.pixels);
            return Ok(());
        }
        let x = Tensor::<4>::from_data(TensorData::new(b.pixels, [n, 3, crop, crop]), device);
        let net = &model.network;
        let (feats, logits) = match output {
            Output::FeatureMap(stage) => {
                let m = net.features_through(x, stage)?;
                let [n, c, h, w] = m.dims();
                self.shape = [c, h, w];
                (m.reshape([n, c * h * w]), None)
            }
            Output::PooledAndLogits => net.features_and_logits(x)?,
            Output::PooledAt(stage) => (net.embed(x, stage)?, None),
            Output::Pooled | Output::Pixels => (net.penultimate(x)?, None),
        };
        self.dim = feats.dims()[1];
        if !matches!(output, Output::FeatureMap(_)) {
            self.shape = [self.dim, 1, 1];
        }
        self.features.extend(to_vec(feats)?);
        if let Some(l) = logits {
            self.classes = l.dims()[1];
            self.logits.get_or_insert_with(Vec::new).extend(to_vec(l)?);
        }
        Ok(())
    }
}

/// Runs `model` over a labelled set; the output and the labels of the images that could be
/// read, in the same order (unreadable ones are skipped, as in [`run`]).
pub fn run_labelled(
    model: &Model,
    set: &crate::dataset::Labelled,
    opts: &RunOptions,
    observer: &dyn Observer,
    device: &Device,
) -> Result<(RunOutput, Vec<usize>)> {
    let out = run(model, &set.paths, opts, observer, device)?;
    let label_of: std::collections::HashMap<&PathBuf, usize> =
        set.paths.iter().zip(set.labels.iter().copied()).collect();
    let labels = out.paths.iter().map(|p| label_of[p]).collect();
    Ok((out, labels))
}

/// What `opts.output` asks for, for every readable image of `set`, with its label.
pub fn features(
    model: &Model,
    set: &crate::dataset::Labelled,
    opts: &RunOptions,
    observer: &dyn Observer,
    device: &Device,
) -> Result<Features> {
    let (out, labels) = run_labelled(model, set, opts, observer, device)?;
    Ok(Features {
        values: out.features,
        shape: out.shape,
        labels,
        classes: set.classes.len(),
    })
}

fn to_vec(t: Tensor<2>) -> Result<Vec<f32>> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("cannot read results back from the device: {e:?}"))
}
