//! The `retrain` command line.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::bundle::Bundle;
use crate::dataset::Labelled;
use crate::inference::{self, RunOptions};
use crate::metrics;
use crate::outputs;
use crate::strategy::{self, FitRequest, Strategy, Validation, freeze};
use crate::weights::Weights;
use crate::zoo::{self, Model, imagenet};

/// Transfer learning from pretrained ImageNet models: load zoo weights, extract features,
/// predict.
///
/// Exit status: 0 success, 1 failure (a one-line message on stderr), 2 bad command line.
#[derive(Parser, Debug)]
#[command(name = "retrain", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the architectures retrain can load, with their sizes and stages.
    Models {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Describe a weights file: format, tensors, parameters, and which architecture it fits.
    Inspect {
        /// A .pt/.pth (torch.save, any version) or .safetensors file.
        weights: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// ImageNet top-K classes for images (with a 1000-class head; class indices otherwise).
    Predict {
        #[command(flatten)]
        model: ModelArgs,
        /// How many classes to show per image.
        #[arg(long, default_value_t = 5)]
        top: usize,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        input: InputArgs,
    },
    /// One feature vector per image, written as .npy, .safetensors, .parquet or .csv.
    Embed {
        #[command(flatten)]
        model: ModelArgs,
        /// Output file; the extension picks the format. Image paths go in a `path` column
        /// (.csv, .parquet) or a `<name>.paths.txt` file beside it (.npy, .safetensors).
        #[arg(long, short)]
        out: PathBuf,
        /// Stage whose pooled output to take (see `retrain models`); default: the
        /// classifier's input.
        #[arg(long)]
        layer: Option<String>,
        /// Print a machine-readable summary (images, dimensions, skipped files, files written).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        input: InputArgs,
    },
    /// Replace the classifier with one for your classes and train it; writes a bundle.
    Fit {
        #[command(flatten)]
        pretrained: PretrainedArgs,
        /// Training images: a folder with one sub-folder per class, or a CSV of path,label.
        #[arg(long)]
        data: PathBuf,
        /// Validation images, laid out like --data. Default: --val-split 0.2.
        #[arg(long, conflicts_with = "val_split")]
        val: Option<PathBuf>,
        /// Hold out this fraction of each class of --data for validation (stratified, seeded).
        #[arg(long)]
        val_split: Option<f64>,
        /// How to train.
        #[arg(long, value_enum, default_value_t = StrategyArg::Probe)]
        strategy: StrategyArg,
        /// Probe: inverse L2 regularisation strength (scikit-learn's C); chosen by
        /// cross-validation on the training set when not given.
        #[arg(long)]
        c: Option<f64>,
        /// Probe: folds of the cross-validation that picks C.
        #[arg(long, default_value_t = 5)]
        folds: usize,
        /// Freeze: passes over the training images.
        #[arg(long, default_value_t = 5)]
        epochs: usize,
        /// Freeze: peak learning rate (cosine decay to zero after the warm-up).
        #[arg(long, default_value_t = 0.003)]
        lr: f64,
        /// Freeze: the update rule.
        #[arg(long, value_enum, default_value_t = OptimizerArg::Sgd)]
        optimizer: OptimizerArg,
        /// Freeze: SGD momentum.
        #[arg(long, default_value_t = 0.9)]
        momentum: f64,
        /// Freeze: AdamW's decoupled weight decay.
        #[arg(long, default_value_t = 0.01)]
        weight_decay: f64,
        /// Freeze: linear warm-up of the learning rate, in epochs (cosine schedule).
        #[arg(long, default_value_t = 0.0)]
        warmup: f64,
        /// Freeze: learning-rate schedule of each phase.
        #[arg(long, value_enum, default_value_t = ScheduleArg::Cosine)]
        schedule: ScheduleArg,
        /// Finetune: learning-rate factor of the first stage; later stages rise geometrically
        /// to the full rate of the last stage and the head [default: 0.1 for finetune, 1 for
        /// freeze].
        #[arg(long)]
        stage_lr_ratio: Option<f64>,
        /// Freeze: colour jitter of the augmentation (brightness, contrast and saturation
        /// factors in [1-j, 1+j]; 0 = none).
        #[arg(long, default_value_t = 0.0)]
        color_jitter: f64,
        /// Freeze: label smoothing of the cross-entropy (0 = none).
        #[arg(long, default_value_t = 0.0)]
        label_smoothing: f64,
        /// Freeze: train on center crops only (the frozen part's output is then computed once).
        #[arg(long)]
        no_augment: bool,
        /// Freeze: last frozen stage (`retrain models` lists them); the stages after it are
        /// trained with the new head. Default: the whole backbone is frozen.
        #[arg(long)]
        freeze_until: Option<String>,
        /// Finetune: epochs training only the new head before everything is unfrozen.
        #[arg(long, default_value_t = 1)]
        head_epochs: usize,
        /// Finetune: learning-rate factor once every layer trains.
        #[arg(long, default_value_t = 0.5)]
        unfrozen_lr_scale: f64,
        /// Freeze: weight the loss by inverse class frequency (imbalanced data).
        #[arg(long)]
        balanced: bool,
        /// Freeze: stop after this many epochs without a lower validation loss, keeping the
        /// best epoch (0: run every epoch and keep the last).
        #[arg(long, default_value_t = 0)]
        patience: usize,
        /// Freeze: images per gradient step.
        #[arg(long, default_value_t = 16)]
        train_batch: usize,
        /// Seed of every random choice (split, folds): the same seed repeats a run exactly.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Bundle folder to create (must not exist). While training, the run is saved after
        /// every epoch to <out>.checkpoint (and on Ctrl-C).
        #[arg(long, short)]
        out: PathBuf,
        /// Continue the interrupted run saved in <out>.checkpoint (same command otherwise).
        #[arg(long)]
        resume: bool,
        /// Images per forward pass.
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        #[arg(long)]
        json: bool,
    },
    /// Score a bundle on labelled images: accuracy, per-class precision/recall/F1,
    /// confusion matrix, worst-predicted images.
    Eval {
        /// Bundle written by `retrain fit`.
        #[arg(long)]
        bundle: PathBuf,
        /// Labelled images: class sub-folders, or a CSV of path,label.
        #[arg(long)]
        data: PathBuf,
        /// How many of the worst-predicted images to list.
        #[arg(long, default_value_t = 10)]
        worst: usize,
        #[arg(long)]
        json: bool,
        /// Images per forward pass.
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
    },
}

#[derive(clap::Args, Debug)]
struct ModelArgs {
    /// Architecture name, e.g. efficientnet_lite0, mobilenet_v2, resnet50 (`retrain models`),
    /// or a model spec .json file for a custom variant.
    #[arg(long, short, required_unless_present = "bundle")]
    model: Option<String>,
    /// Weights file (.pt/.pth or .safetensors) for that architecture.
    #[arg(long, short, required_unless_present = "bundle")]
    weights: Option<PathBuf>,
    /// A bundle written by `retrain fit`, instead of --model and --weights.
    #[arg(long, conflicts_with_all = ["model", "weights"])]
    bundle: Option<PathBuf>,
}

/// The pretrained model a fit starts from.
#[derive(clap::Args, Debug)]
struct PretrainedArgs {
    /// Architecture name (`retrain models`) or a model spec .json file.
    #[arg(long, short)]
    model: String,
    /// Its pretrained weights: .pt/.pth, .safetensors, Keras .h5/.keras, a TensorFlow checkpoint prefix or SavedModel folder, or .tflite.
    #[arg(long, short)]
    weights: PathBuf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum StrategyArg {
    /// Embed every image once, then fit a multinomial logistic regression on the features.
    Probe,
    /// Freeze the backbone (inference mode) through --freeze-until (default: all of it) and
    /// train the rest and a new softmax head, on augmented crops unless --no-augment.
    Freeze,
    /// Train everything: --head-epochs with the backbone frozen, then --epochs with every
    /// layer trainable at --unfrozen-lr-scale × --lr.
    Finetune,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum OptimizerArg {
    Sgd,
    Adamw,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ScheduleArg {
    /// Linear warm-up (--warmup), then cosine decay to zero.
    Cosine,
    /// PyTorch's OneCycleLR: rise from lr/25 over 30% of the steps, then fall to lr/25e4.
    OneCycle,
}

#[derive(clap::Args, Debug)]
struct InputArgs {
    /// Image files or folders (searched recursively for jpg, jpeg, png, webp, bmp, gif).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Fail on the first unreadable image instead of skipping it with a warning.
    #[arg(long)]
    strict: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
}

/// Runs the program; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match run(cli) {
        Ok(()) => 0,
        Err(e) if e.is::<strategy::train::Interrupted>() => {
            eprintln!("{e}");
            130
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let device = crate::default_device();
    match cli.command {
        Command::Models { json } => models(json),
        Command::Inspect { weights, json } => inspect(&weights, json, &device),
        Command::Predict {
            model,
            top,
            json,
            input,
        } => predict(&model, top, json, &input, &device),
        Command::Embed {
            model,
            out,
            layer,
            json,
            input,
        } => embed(&model, &out, layer.as_deref(), json, &input, &device),
        Command::Fit {
            pretrained,
            data,
            val,
            val_split,
            strategy,
            c,
            folds,
            epochs,
            lr,
            optimizer,
            momentum,
            weight_decay,
            warmup,
            schedule,
            stage_lr_ratio,
            color_jitter,
            label_smoothing,
            no_augment,
            freeze_until,
            head_epochs,
            unfrozen_lr_scale,
            balanced,
            patience,
            train_batch,
            seed,
            out,
            resume,
            batch_size,
            json,
        } => {
            let validation = match (val, val_split) {
                (Some(dir), _) => Validation::Folder(dir),
                (None, Some(f)) => Validation::Split(f),
                (None, None) => Validation::Split(0.2),
            };
            let spec = zoo::resolve(&pretrained.model)?;
            check_weights_path(&pretrained.weights)?;
            if !(0.0..1.0).contains(&label_smoothing) {
                bail!("--label-smoothing must be in [0, 1), got {label_smoothing}");
            }
            if strategy != StrategyArg::Freeze && freeze_until.is_some() {
                bail!("--freeze-until applies to --strategy freeze");
            }
            if strategy != StrategyArg::Probe && epochs == 0 {
                bail!("--epochs must be at least 1");
            }
            let stage_lr_ratio = stage_lr_ratio.unwrap_or(if strategy == StrategyArg::Finetune {
                0.1
            } else {
                1.0
            });
            if !(stage_lr_ratio > 0.0 && stage_lr_ratio <= 1.0) {
                bail!("--stage-lr-ratio must be in (0, 1], got {stage_lr_ratio}");
            }
            if !(0.0..=1.0).contains(&color_jitter) {
                bail!("--color-jitter must be in [0, 1], got {color_jitter}");
            }
            if strategy != StrategyArg::Probe {
                // First Ctrl-C: finish the batch, save a checkpoint, exit; a second one exits
                // at once (the last checkpoint, written atomically, stays whole).
                let _ = ctrlc::set_handler(|| {
                    if strategy::train::STOP.swap(true, std::sync::atomic::Ordering::SeqCst) {
                        eprintln!("\nstopped without saving the current epoch");
                        std::process::exit(130);
                    }
                    eprintln!(
                        "\nstopping after this batch to save a checkpoint (Ctrl-C again to quit at once)"
                    );
                });
            }
            let training = freeze::HeadTraining {
                epochs,
                lr,
                optimizer: match optimizer {
                    OptimizerArg::Sgd => freeze::Optimizer::Sgd { momentum },
                    OptimizerArg::Adamw => freeze::Optimizer::AdamW { weight_decay },
                },
                warmup_epochs: warmup,
                label_smoothing,
                batch_size: train_batch.max(1),
                seed,
                balanced,
                patience,
                schedule: match schedule {
                    ScheduleArg::Cosine => freeze::Schedule::Cosine,
                    ScheduleArg::OneCycle => freeze::Schedule::OneCycle,
                },
                stage_lr_ratio,
                color_jitter,
            };
            let strategy = match strategy {
                StrategyArg::Probe => Strategy::Probe {
                    c,
                    folds: folds.max(2),
                },
                StrategyArg::Freeze => Strategy::Freeze {
                    training,
                    augment: !no_augment,
                    until: freeze_until,
                },
                StrategyArg::Finetune => Strategy::Finetune {
                    training,
                    augment: !no_augment,
                    head_epochs,
                    unfrozen_lr_scale,
                },
            };
            let summary = strategy::fit(
                &FitRequest {
                    spec,
                    weights: pretrained.weights,
                    data,
                    val: validation,
                    out,
                    strategy,
                    seed,
                    batch_size,
                    progress: !json && std::io::stderr().is_terminal(),
                    log_epochs: !json,
                    resume,
                },
                &device,
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                eprintln!(
                    "{} on {} classes: train accuracy {:.1}% ({} images), val accuracy {:.1}% ({} images); {:.1}s; bundle {}",
                    summary.strategy,
                    summary.classes.len(),
                    summary.train_accuracy * 100.0,
                    summary.train_images,
                    summary.val_accuracy * 100.0,
                    summary.val_images,
                    summary.seconds,
                    summary.bundle
                );
            }
            Ok(())
        }
        Command::Eval {
            bundle,
            data,
            worst,
            json,
            batch_size,
        } => eval(&bundle, &data, worst, json, batch_size, &device),
    }
}

fn models(json: bool) -> Result<()> {
    let rows: Vec<_> = zoo::catalogue()
        .into_iter()
        .map(|e| {
            json!({
                "name": e.name,
                "origin": e.origin,
                "parameters": e.config.parameter_count(1000),
                "input_size": e.preprocess.crop,
                "feature_dim": e.config.feature_dim(),
                "stages": e.config.stage_names(),
                "preprocess": e.preprocess,
                "config": e.config,
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<20} {:>11} {:>6} {:>8}  stages",
        "model", "parameters", "input", "features"
    );
    for r in &rows {
        let stages: Vec<&str> = r["stages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str())
            .collect();
        println!(
            "{:<20} {:>11} {:>6} {:>8}  {}",
            r["name"].as_str().unwrap_or(""),
            r["parameters"].as_u64().unwrap_or(0),
            r["input_size"].as_u64().unwrap_or(0),
            r["feature_dim"].as_u64().unwrap_or(0),
            stages.join(" ")
        );
    }
    Ok(())
}

/// A weights file, SavedModel folder, or TensorFlow checkpoint prefix (`<prefix>.index`).
fn check_weights_path(path: &Path) -> Result<()> {
    let checkpoint_index = PathBuf::from(format!("{}.index", path.display()));
    if !path.exists() && !checkpoint_index.exists() {
        bail!("weights file {} does not exist", path.display());
    }
    Ok(())
}

fn load_weights(path: &Path) -> Result<Weights> {
    check_weights_path(path)?;
    Weights::load(path).with_context(|| format!("cannot load {}", path.display()))
}

fn inspect(path: &Path, json: bool, device: &Device) -> Result<()> {
    let w = load_weights(path)?;
    let mut dtypes: BTreeMap<String, usize> = BTreeMap::new();
    for t in w.tensors.values() {
        *dtypes.entry(t.dtype.to_string()).or_default() += 1;
    }
    let strided = w.tensors.values().filter(|t| t.strided).count();
    let matches = zoo::identify(&w, device);
    // For a file no architecture takes as is: the closest one and what did not map.
    let closest = match matches.first() {
        Some((_, f)) if *f >= 1.0 => None,
        _ => zoo::closest(&w, device),
    };
    if json {
        let m: Vec<_> = matches
            .iter()
            .map(|(n, f)| json!({"model": n, "exact": *f >= 1.0, "matched_fraction": f}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "path": path.display().to_string(),
                "format": w.format,
                "tensors": w.tensors.len(),
                "dtypes": dtypes,
                "parameters": w.parameter_count(),
                "strided_tensors": strided,
                "matches": m,
                "closest": closest.as_ref().map(|(name, f, r)| json!({
                    "model": name,
                    "matched_fraction": f,
                    "missing": r.missing,
                    "unexpected": r.unexpected,
                    "shape_mismatches": r.shape_mismatches,
                })),
            }))?
        );
        return Ok(());
    }
    println!("file:        {}", path.display());
    println!("format:      {}", w.format);
    println!(
        "tensors:     {} ({} stored strided)",
        w.tensors.len(),
        strided
    );
    let dt: Vec<String> = dtypes.iter().map(|(k, v)| format!("{k} x{v}")).collect();
    println!("dtypes:      {}", dt.join(", "));
    println!("parameters:  {}", w.parameter_count());
    match (matches.first(), &closest) {
        (Some((name, f)), _) if *f >= 1.0 => {
            println!("architecture: {name} (every tensor matches)")
        }
        (_, Some((name, f, report))) => {
            println!(
                "architecture: closest is {name} ({:.0}% of its parameters match); not loadable as is",
                f * 100.0
            );
            println!("not mapped: {}", report.to_string().trim());
            println!(
                "(a custom width or depth loads with a model spec: `retrain models --json` shows the fields)"
            );
        }
        _ => println!("architecture: no zoo architecture matches (see `retrain models`)"),
    }
    Ok(())
}

/// The model to run, and its class names when it comes from a bundle.
fn load_model(args: &ModelArgs, device: &Device) -> Result<(Model, Option<Vec<String>>)> {
    if let Some(dir) = &args.bundle {
        let b = Bundle::load(dir, device)?;
        return Ok((b.model.for_inference(), Some(b.manifest.classes)));
    }
    let (Some(model), Some(weights)) = (&args.model, &args.weights) else {
        bail!("give --model and --weights, or --bundle");
    };
    let spec = zoo::resolve(model)?;
    let w = load_weights(weights)?;
    let model = Model::from_spec(&spec, &w, device)
        .with_context(|| format!("cannot load {}", weights.display()))?;
    Ok((model.for_inference(), None))
}

/// The `k` best classes of one logit row: (index, probability), best first.
pub fn top_k(logits: &[f32], k: usize) -> Vec<(usize, f32)> {
    let p = metrics::softmax_rows(logits, logits.len());
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    idx.into_iter().take(k).map(|i| (i, p[i])).collect()
}

fn predict(
    args: &ModelArgs,
    top: usize,
    json: bool,
    input: &InputArgs,
    device: &Device,
) -> Result<()> {
    let (model, class_names) = load_model(args, device)?;
    if model.network.classifier.is_none() {
        bail!(
            "the weights have no classifier layer (a headless/notop file); use `retrain embed` for features"
        );
    }
    let paths = crate::data::collect_images(&input.inputs)?;
    let opts = RunOptions {
        want_logits: true,
        batch_size: input.batch_size,
        strict: input.strict,
        progress: !json && std::io::stderr().is_terminal(),
        ..Default::default()
    };
    let out = inference::run(&model, &paths, &opts, device)?;
    let logits = out.logits.unwrap_or_default();
    let mut rows = Vec::new();
    for (i, path) in out.paths.iter().enumerate() {
        let best = top_k(&logits[i * out.classes..(i + 1) * out.classes], top);
        rows.push(json!({
            "path": path.display().to_string(),
            "top": best.iter().map(|&(c, p)| json!({
                "class": c,
                "label": match &class_names {
                    Some(names) => names.get(c).map(String::as_str),
                    None => imagenet::label(c, out.classes),
                },
                "probability": p,
            })).collect::<Vec<_>>(),
        }));
    }
    if json {
        let skipped = skipped_json(&out.skipped);
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"model": model.name, "predictions": rows, "skipped": skipped})
            )?
        );
    } else {
        for r in &rows {
            let classes: Vec<String> = r["top"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    let name = t["label"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| format!("class {}", t["class"]));
                    format!(
                        "{name} {:.1}%",
                        t["probability"].as_f64().unwrap_or(0.0) * 100.0
                    )
                })
                .collect();
            println!(
                "{}\t{}",
                r["path"].as_str().unwrap_or(""),
                classes.join(", ")
            );
        }
    }
    if out.paths.is_empty() {
        bail!("none of the {} images could be read", paths.len());
    }
    Ok(())
}

fn embed(
    args: &ModelArgs,
    out_path: &Path,
    layer: Option<&str>,
    json: bool,
    input: &InputArgs,
    device: &Device,
) -> Result<()> {
    // Fail on a bad output path before spending minutes on the images.
    outputs::EmbeddingFormat::from_path(out_path)?;
    outputs::check_writable(out_path)?;
    let (model, _) = load_model(args, device)?;
    let stage = layer
        .map(|l| {
            model.stage_index(l).with_context(|| {
                format!(
                    "{} has no stage `{l}`; choose one of: {}",
                    model.name,
                    model.stage_names.join(", ")
                )
            })
        })
        .transpose()?;
    let paths = crate::data::collect_images(&input.inputs)?;
    let opts = RunOptions {
        stage,
        batch_size: input.batch_size,
        strict: input.strict,
        progress: !json && std::io::stderr().is_terminal(),
        ..Default::default()
    };
    let t = Instant::now();
    let out = inference::run(&model, &paths, &opts, device)?;
    if out.paths.is_empty() {
        bail!(
            "none of the {} images could be read; nothing written",
            paths.len()
        );
    }
    let files = outputs::write_embeddings(out_path, &out.paths, &out.features, out.dim)?;
    let secs = t.elapsed().as_secs_f64();
    if json {
        let skipped = skipped_json(&out.skipped);
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "model": model.name,
                "layer": model.stage_names[stage.unwrap_or(model.stage_names.len() - 1)],
                "images": out.paths.len(),
                "dim": out.dim,
                "seconds": secs,
                "skipped": skipped,
                "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            }))?
        );
        return Ok(());
    }
    eprintln!(
        "embedded {} images ({} dims) in {:.1}s ({:.1} images/s){}; wrote {}",
        out.paths.len(),
        out.dim,
        secs,
        out.paths.len() as f64 / secs,
        if out.skipped.is_empty() {
            String::new()
        } else {
            format!(", skipped {}", out.skipped.len())
        },
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn eval(
    dir: &Path,
    data: &Path,
    worst: usize,
    json: bool,
    batch_size: usize,
    device: &Device,
) -> Result<()> {
    let b = Bundle::load(dir, device)?;
    let classes = b.manifest.classes.clone();
    let set = Labelled::load(data, Some(&classes))?;
    if set.is_empty() {
        bail!("{} has no images", data.display());
    }
    let model = b.model.for_inference();
    let opts = RunOptions {
        want_logits: true,
        batch_size,
        progress: !json && std::io::stderr().is_terminal(),
        ..Default::default()
    };
    let (out, labels) = inference::run_labelled(&model, &set, &opts, device)?;
    let probs = metrics::softmax_rows(&out.logits.unwrap_or_default(), classes.len());
    let report = metrics::report(&classes, &probs, &labels);
    // Worst predicted: lowest probability given to the true class.
    let mut order: Vec<usize> = (0..labels.len()).collect();
    let p_true = |i: usize| probs[i * classes.len() + labels[i]];
    order.sort_by(|&a, &b| p_true(a).total_cmp(&p_true(b)));
    let worst_rows: Vec<_> = order
        .iter()
        .take(worst)
        .map(|&i| {
            let row = &probs[i * classes.len()..(i + 1) * classes.len()];
            let pred = metrics::argmax(row);
            json!({
                "path": out.paths[i].display().to_string(),
                "true": classes[labels[i]],
                "predicted": classes[pred],
                "p_true": row[labels[i]],
                "p_predicted": row[pred],
            })
        })
        .collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "bundle": dir.display().to_string(),
                "report": report,
                "worst": worst_rows,
                "skipped": skipped_json(&out.skipped),
            }))?
        );
        return Ok(());
    }
    println!(
        "accuracy {:.2}% on {} images (mean cross-entropy {:.4})",
        report.accuracy * 100.0,
        report.images,
        report.loss
    );
    println!(
        "\n{:<20} {:>9} {:>9} {:>9} {:>8}",
        "class", "precision", "recall", "f1", "images"
    );
    for c in &report.per_class {
        println!(
            "{:<20} {:>9.3} {:>9.3} {:>9.3} {:>8}",
            c.class, c.precision, c.recall, c.f1, c.support
        );
    }
    println!("\nconfusion (rows: true, columns: predicted)");
    print!("{:<20}", "");
    for c in &classes {
        print!(" {:>10.10}", c);
    }
    println!();
    for (c, row) in classes.iter().zip(&report.confusion) {
        print!("{:<20.20}", c);
        for v in row {
            print!(" {:>10}", v);
        }
        println!();
    }
    if !worst_rows.is_empty() {
        println!("\nworst predicted");
        for r in &worst_rows {
            println!(
                "{}\ttrue {} ({:.1}%), predicted {} ({:.1}%)",
                r["path"].as_str().unwrap_or(""),
                r["true"].as_str().unwrap_or(""),
                r["p_true"].as_f64().unwrap_or(0.0) * 100.0,
                r["predicted"].as_str().unwrap_or(""),
                r["p_predicted"].as_f64().unwrap_or(0.0) * 100.0
            );
        }
    }
    Ok(())
}

/// Unreadable images, for --json output.
fn skipped_json(skipped: &[(PathBuf, String)]) -> Vec<serde_json::Value> {
    skipped
        .iter()
        .map(|(p, why)| json!({"path": p.display().to_string(), "error": why}))
        .collect()
}
