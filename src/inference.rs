//! Running a model over image files: decoding in parallel on a producer thread while the
//! network runs on the previous batch, with unreadable images skipped (or fatal, if strict).

use std::path::PathBuf;
use std::sync::mpsc::sync_channel;

use anyhow::{Result, bail};
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;

use crate::data;
use crate::zoo::Model;

/// What to compute for each image.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stage whose pooled output is the embedding; `None` for the classifier's input.
    pub stage: Option<usize>,
    pub want_logits: bool,
    pub batch_size: usize,
    /// Stop at the first unreadable image instead of skipping it.
    pub strict: bool,
    pub progress: bool,
    /// Training augmentation; each image's draws derive from its seed and the image's place.
    pub augment: Option<data::Augment>,
    /// Keep the stage's whole feature map (flattened C·H·W per image) instead of pooling it:
    /// the input of the trainable part when the backbone is frozen up to that stage.
    pub keep_maps: bool,
    /// Return the preprocessed (and maybe augmented) pixels themselves, without running the
    /// network: the input when nothing is frozen.
    pub pixels_only: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            stage: None,
            want_logits: false,
            batch_size: 32,
            strict: false,
            progress: false,
            augment: None,
            keep_maps: false,
            pixels_only: false,
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
    /// Shape of one image's feature map when `keep_maps` was asked for.
    pub map_shape: [usize; 3],
    /// Images that could not be read, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

struct Batch {
    paths: Vec<PathBuf>,
    pixels: Vec<f32>,
    failed: Vec<(PathBuf, String)>,
}

/// Runs `model` over `paths`.
pub fn run(
    model: &Model,
    paths: &[PathBuf],
    opts: &RunOptions,
    device: &Device,
) -> Result<RunOutput> {
    let pre = model.preprocess;
    let px = 3 * pre.crop * pre.crop;
    let last = model.network.stages.len() - 1;
    let stage = opts.stage.unwrap_or(last);
    let bar = progress_bar(paths.len() as u64, opts.progress);
    let mut out = RunOutput::default();
    let batch_size = opts.batch_size.max(1);

    std::thread::scope(|scope| -> Result<()> {
        // One batch decoded ahead: decoding overlaps the network's work on the previous one.
        let (tx, rx) = sync_channel::<Batch>(1);
        let augment = opts.augment;
        scope.spawn(move || {
            for (b, chunk) in paths.chunks(batch_size).enumerate() {
                let decoded: Vec<_> = chunk
                    .par_iter()
                    .enumerate()
                    .map(|(i, p)| {
                        // Each image's draw depends only on the seed and its position.
                        let draw = augment.map(|a| data::Augment {
                            seed: crate::dataset::SplitMix64(
                                a.seed ^ ((b * batch_size + i) as u64),
                            )
                            .next_u64(),
                            ..a
                        });
                        (p, data::load_tensor_with(p, &pre, draw))
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
        for b in rx {
            let done = (b.paths.len() + b.failed.len()) as u64;
            if let Some((p, why)) = b.failed.first() {
                if opts.strict {
                    bail!(
                        "{why} (image {}); remove it or run without --strict to skip it",
                        p.display()
                    );
                }
                for (p, why) in &b.failed {
                    bar.suspend(|| eprintln!("warning: skipping {}: {why}", p.display()));
                }
                out.skipped.extend(b.failed);
            }
            let n = b.paths.len();
            if n > 0 && opts.pixels_only {
                out.map_shape = [3, pre.crop, pre.crop];
                out.dim = px;
                out.features.extend_from_slice(&b.pixels);
                out.paths.extend(b.paths);
            } else if n > 0 {
                let x = Tensor::<4>::from_data(
                    TensorData::new(b.pixels, [n, 3, pre.crop, pre.crop]),
                    device,
                );
                let (feats, logits) = if opts.keep_maps {
                    let m = model.network.features_through(x, stage);
                    let [n, c, h, w] = m.dims();
                    out.map_shape = [c, h, w];
                    (m.reshape([n, c * h * w]), None)
                } else if stage == last {
                    let (f, l) = if opts.want_logits {
                        model.network.features_and_logits(x)
                    } else {
                        (model.network.penultimate(x), None)
                    };
                    (f, l)
                } else {
                    (model.network.embed(x, stage), None)
                };
                out.dim = feats.dims()[1];
                out.features.extend(to_vec(feats)?);
                if let Some(l) = logits {
                    out.classes = l.dims()[1];
                    out.logits.get_or_insert_with(Vec::new).extend(to_vec(l)?);
                }
                out.paths.extend(b.paths);
            }
            bar.inc(done);
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(out)
}

/// Runs `model` over a labelled set; the output and the labels of the images that could be
/// read, in the same order (unreadable ones are skipped, as in [`run`]).
pub fn run_labelled(
    model: &Model,
    set: &crate::dataset::Labelled,
    opts: &RunOptions,
    device: &Device,
) -> Result<(RunOutput, Vec<usize>)> {
    let out = run(model, &set.paths, opts, device)?;
    let label_of: std::collections::HashMap<&PathBuf, usize> =
        set.paths.iter().zip(set.labels.iter().copied()).collect();
    let labels = out.paths.iter().map(|p| label_of[p]).collect();
    Ok((out, labels))
}

fn to_vec(t: Tensor<2>) -> Result<Vec<f32>> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("cannot read results back from the device: {e:?}"))
}

fn progress_bar(len: u64, enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} images  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
