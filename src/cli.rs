//! The `retrain` command line: flags, parsed into the library's options.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use retrain::strategy::{
    self, FitOptions, InvalidOption, Optimizer, Schedule, Strategy, Training, Validation,
};
use retrain::weights::Weights;
use retrain::zoo;

use crate::commands;
use crate::terminal;

/// Transfer learning from pretrained ImageNet models: load zoo weights, extract features,
/// predict.
///
/// Exit status: 0 success, 1 failure (a one-line message on stderr), 2 bad command line.
#[derive(Parser, Debug)]
#[command(name = "retrain", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Published weights (`--model` without `--weights`) from the caches only: never
    /// download (also RETRAIN_OFFLINE=1).
    #[arg(long, global = true)]
    pub offline: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the architectures retrain can load, with their sizes and stages.
    Models {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Find or download a zoo entry's published ImageNet weights, check their hash and print
    /// their path (for preparing an offline machine: the caches it looks in are in README).
    Download {
        /// Zoo name (`retrain models` shows which have published weights).
        #[arg(long, short)]
        model: String,
        #[arg(long)]
        json: bool,
    },
    /// Describe a weights file: format, tensors, parameters, and which architecture it fits.
    Inspect {
        /// A weights file: .pt/.pth (torch.save, any version), .safetensors, Keras
        /// .h5/.weights.h5/.keras, a TensorFlow checkpoint prefix or SavedModel folder, or .tflite.
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
        /// (.csv, .parquet) or a `<name>.paths.jsonl` file beside it, one JSON string per line (.npy, .safetensors).
        /// A path without an extension is a folder of Parquet parts written as the job goes,
        /// with a manifest per shard (for many images: see --part-size, --shard, --resume).
        #[arg(long, short)]
        out: PathBuf,
        /// Images per Parquet part (a folder --out): a crash loses at most one part, and
        /// memory holds one part's vectors.
        #[arg(long, default_value_t = 10_000)]
        part_size: usize,
        /// Embed only shard I of N (0 <= I < N): a contiguous slice of the sorted inputs, so
        /// N processes or machines (a Slurm array, a Kubernetes indexed Job) split one job
        /// into one folder (a folder --out).
        #[arg(long, value_name = "I/N")]
        shard: Option<retrain::embed_job::Shard>,
        /// Continue the job a folder --out holds, skipping its finished parts.
        #[arg(long)]
        resume: bool,
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
    Fit(FitArgs),
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
        /// Skip images with more pixels than this (checked from the file's header before
        /// decoding; PIL's limit by default).
        #[arg(long, default_value_t = retrain::data::Limits::DEFAULT_MAX_PIXELS)]
        max_pixels: u64,
        /// Decode JPEGs at a reduced DCT scale (1/2, 1/4 or 1/8) that still covers the resize,
        /// like PIL's Image.draft: large photos go faster in a fraction of
        /// the memory, with pixels slightly different from a full decode.
        #[arg(long)]
        jpeg_draft: bool,
    },
    /// Write a bundle (or a pretrained model) as an ONNX file for other runtimes: ONNX
    /// Runtime, TensorRT, OpenVINO, onnxruntime-web. Opset 17 (a graph of a later opset
    /// keeps its own), batch size free. Input `input`: the preprocessed NCHW float batch;
    /// outputs `logits` (before softmax) and `features` (the classifier's input). The
    /// preprocessing (resize, crop, interpolation, mean, std, bgr) is in the file's
    /// metadata as `retrain.preprocess`, the class names as `retrain.classes` (JSON).
    /// TFLite is not written: there is no TFLite writer here whose output was checked
    /// against the TFLite interpreter.
    Export {
        #[command(flatten)]
        model: ModelArgs,
        /// The file to write (replaced only once complete).
        #[arg(long, short)]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = ExportFormat::Onnx)]
        format: ExportFormat,
        /// Print a machine-readable summary.
        #[arg(long)]
        json: bool,
    },
}

/// What `retrain export` writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Onnx,
}

/// `retrain fit`'s flags.
#[derive(clap::Args, Debug)]
pub struct FitArgs {
    #[command(flatten)]
    pub pretrained: PretrainedArgs,
    /// Training images: a folder with one sub-folder per class, or a CSV of path,label.
    #[arg(long)]
    pub data: PathBuf,
    /// Validation images, laid out like --data. Default: --val-split 0.2.
    #[arg(long, conflicts_with = "val_split")]
    pub val: Option<PathBuf>,
    /// Hold out this fraction of each class of --data for validation (stratified, seeded).
    #[arg(long)]
    pub val_split: Option<f64>,
    /// How to train.
    #[arg(long, value_enum, default_value_t = StrategyArg::Probe)]
    pub strategy: StrategyArg,
    /// Probe: inverse L2 regularisation strength (scikit-learn's C); chosen by
    /// cross-validation on the training set when not given.
    #[arg(long)]
    pub c: Option<f64>,
    /// Probe: folds of the cross-validation that picks C.
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Freeze and finetune: passes over the training images (finetune: with every layer
    /// trainable, after --head-epochs) [default: 5 for freeze, 3 for finetune].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Freeze: peak learning rate (cosine decay to zero after the warm-up).
    #[arg(long, default_value_t = 0.003)]
    pub lr: f64,
    /// Freeze: the update rule.
    #[arg(long, value_enum, default_value_t = OptimizerArg::Sgd)]
    pub optimizer: OptimizerArg,
    /// Freeze: SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Freeze: AdamW's decoupled weight decay.
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Freeze: linear warm-up of the learning rate, in epochs (cosine schedule).
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Freeze: learning-rate schedule of each phase.
    #[arg(long, value_enum, default_value_t = ScheduleArg::Cosine)]
    pub schedule: ScheduleArg,
    /// Finetune: learning-rate factor of the first stage; later stages rise geometrically
    /// to the full rate of the last stage and the head [default: 0.1 for finetune, 1 for
    /// freeze].
    #[arg(long)]
    pub stage_lr_ratio: Option<f64>,
    /// Freeze: colour jitter of the augmentation (brightness, contrast and saturation
    /// factors in [1-j, 1+j]; 0 = none).
    #[arg(long, default_value_t = 0.0)]
    pub color_jitter: f64,
    /// Freeze: label smoothing of the cross-entropy (0 = none).
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f64,
    /// Freeze: train on center crops only (the frozen part's output is then computed once).
    #[arg(long)]
    pub no_augment: bool,
    /// Freeze: last frozen stage (`retrain models` lists them); the stages after it are
    /// trained with the new head. Default: the whole backbone is frozen.
    #[arg(long)]
    pub freeze_until: Option<String>,
    /// Finetune: epochs training only the new head before everything is unfrozen.
    #[arg(long, default_value_t = 1)]
    pub head_epochs: usize,
    /// Finetune: learning-rate factor once every layer trains.
    #[arg(long, default_value_t = 1.0)]
    pub unfrozen_lr_scale: f64,
    /// Finetune: progressive resizing: the first unfrozen epoch trains on NxN crops, rising
    /// to the model's input size by the last (validation always at the model's size); 0,
    /// the model's size or --no-augment trains at the model's size throughout.
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub start_size: usize,
    /// Freeze: weight the loss by inverse class frequency (imbalanced data).
    #[arg(long)]
    pub balanced: bool,
    /// Freeze: stop after this many epochs without a lower validation loss, keeping the
    /// best epoch (0: run every epoch and keep the last).
    #[arg(long, default_value_t = 0)]
    pub patience: usize,
    /// Freeze: images per gradient step.
    #[arg(long, default_value_t = 16)]
    pub train_batch: usize,
    /// Seed of every random choice (split, folds): the same seed repeats a run exactly.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Bundle folder to create (must not exist). While training, the run is saved after
    /// every epoch to OUT.checkpoint (and on Ctrl-C).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Continue the interrupted run saved in OUT.checkpoint (same command otherwise).
    #[arg(long)]
    pub resume: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Skip images with more pixels than this (checked from the file's header before
    /// decoding; PIL's limit by default).
    #[arg(long, default_value_t = retrain::data::Limits::DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// Architecture name, e.g. efficientnet_lite0, mobilenet_v2, resnet50 (`retrain models`),
    /// or a model spec .json file for a custom variant. Not needed for a file that holds
    /// its own graph (.onnx, .tflite, a Keras full model, a CNTK model): it runs as that graph; nor for
    /// a state dict whose every tensor fits one architecture (`retrain inspect`).
    #[arg(long, short)]
    pub model: Option<String>,
    /// Weights for that architecture: .pt/.pth, .safetensors, Keras .h5/.keras, a TensorFlow
    /// checkpoint prefix or SavedModel folder, or .tflite; or an .onnx or CNTK model.
    /// Default with a zoo --model: the origin's published ImageNet weights, from a cache
    /// (torch hub, Hugging Face, Keras, retrain's) or downloaded, hash-checked.
    #[arg(long, short)]
    pub weights: Option<PathBuf>,
    /// A bundle written by `retrain fit`, instead of --model and --weights.
    #[arg(long, conflicts_with_all = ["model", "weights", "preprocess", "size", "mean", "std"])]
    pub bundle: Option<PathBuf>,
    #[command(flatten)]
    pub input_spec: InputSpecArgs,
}

/// How a model's input is prepared, where its spec does not say or is to be overridden.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct InputSpecArgs {
    /// Pixel scaling: torch (0..1, then ImageNet mean/std), tf (-1..1), caffe (BGR,
    /// ImageNet means subtracted from 0..255), raw (0..255), unit (0..1), bgr (BGR 0..255).
    /// Default: the model's own; ImageNet mean/std for an .onnx graph, which stores none;
    /// for a .tflite graph its quantised input's, else tf; for a Keras model its own
    /// rescaling, or its Keras Application's, else tf; for a CNTK model bgr (CNTK's image
    /// reader), but ImageNet mean/std for one imported from ONNX.
    #[arg(long, value_enum)]
    pub preprocess: Option<PreprocessArg>,
    /// Input size N: the shorter side resized to N, then an NxN center crop. Default: the
    /// model's (a graph: its input size, 224 where that is symbolic, from 256).
    #[arg(long)]
    pub size: Option<usize>,
    /// Per-channel mean R,G,B subtracted from 0..1 pixels (torchvision's Normalize), instead
    /// of --preprocess's or the model's: e.g. 0.498,0.498,0.498 with --std 0.502,0.502,0.502
    /// for (p − 127) / 128. Needs --std.
    #[arg(long, value_parser = parse_triple, requires = "std")]
    pub mean: Option<[f64; 3]>,
    /// Per-channel standard deviation R,G,B the centred 0..1 pixels are divided by. Needs
    /// --mean.
    #[arg(long, value_parser = parse_triple, requires = "mean")]
    pub std: Option<[f64; 3]>,
}

/// `R,G,B` (three numbers).
fn parse_triple(s: &str) -> std::result::Result<[f64; 3], String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("{s:?}: {e}; three numbers R,G,B expected"))?;
    match v[..] {
        [r, g, b] if v.iter().all(|x| x.is_finite()) => Ok([r, g, b]),
        _ => Err(format!("{s:?}: three finite numbers R,G,B expected")),
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreprocessArg {
    Torch,
    Tf,
    Caffe,
    Raw,
    Unit,
    Bgr,
}

impl InputSpecArgs {
    /// The library's input override for these flags.
    pub fn input_override(&self) -> Result<zoo::InputOverride> {
        if self.size == Some(0) {
            bail!("--size must be at least 1");
        }
        if let Some(s) = self.std
            && s.iter().any(|&v| v <= 0.0)
        {
            bail!("--std {s:?}: every value must be above 0");
        }
        Ok(zoo::InputOverride {
            scaling: self.preprocess.map(|p| match p {
                PreprocessArg::Torch => zoo::PixelScaling::Torch,
                PreprocessArg::Tf => zoo::PixelScaling::Tf,
                PreprocessArg::Caffe => zoo::PixelScaling::Caffe,
                PreprocessArg::Raw => zoo::PixelScaling::Raw,
                PreprocessArg::Unit => zoo::PixelScaling::Unit,
                PreprocessArg::Bgr => zoo::PixelScaling::Bgr,
            }),
            size: self.size,
            mean_std: self.mean.zip(self.std),
        })
    }
}

/// The pretrained model a fit starts from.
#[derive(clap::Args, Debug)]
pub struct PretrainedArgs {
    /// Architecture name (`retrain models`) or a model spec .json file; not needed for an
    /// .onnx, .tflite, Keras full model or CNTK model, which runs as its own graph, nor for a state
    /// dict whose every tensor fits one architecture.
    #[arg(long, short)]
    pub model: Option<String>,
    /// Its pretrained weights: .pt/.pth, .safetensors, Keras .h5/.keras, a TensorFlow checkpoint prefix or SavedModel folder, .tflite, or an .onnx or CNTK model.
    /// Default with a zoo --model: the origin's published ImageNet weights (cached or
    /// downloaded, hash-checked).
    #[arg(long, short)]
    pub weights: Option<PathBuf>,
    #[command(flatten)]
    pub input_spec: InputSpecArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrategyArg {
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
pub enum OptimizerArg {
    Sgd,
    Adamw,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleArg {
    /// Linear warm-up (--warmup), then cosine decay to zero.
    Cosine,
    /// PyTorch's OneCycleLR: rise from lr/25 over 30% of the steps, then fall to lr/25e4.
    OneCycle,
}

#[derive(clap::Args, Debug)]
pub struct InputArgs {
    /// Image files or folders (searched recursively for jpg, jpeg, png, webp, bmp, gif).
    #[arg(required_unless_present = "input_list")]
    pub inputs: Vec<PathBuf>,
    /// A file listing images, one path per line (`#` comments), or a .csv whose `path`
    /// column (else its first) names them; relative paths are from the list's folder. For
    /// any number of images, beyond the command line's limits.
    #[arg(long = "inputs", value_name = "FILE")]
    pub input_list: Option<PathBuf>,
    /// Fail on the first unreadable image (or image over --max-pixels, or folder that
    /// cannot be listed) instead of skipping it with a warning.
    #[arg(long)]
    pub strict: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Skip images with more pixels than this (checked from the file's header before
    /// decoding; PIL's limit by default).
    #[arg(long, default_value_t = retrain::data::Limits::DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    /// Decode JPEGs at a reduced DCT scale (1/2, 1/4 or 1/8) that still covers the resize,
    /// like PIL's Image.draft: large photos go faster in a fraction of
    /// the memory, with pixels slightly different from a full decode.
    #[arg(long)]
    pub jpeg_draft: bool,
}

impl InputArgs {
    /// The library's image limits for these flags, checked.
    pub fn limits(&self) -> Result<retrain::data::Limits> {
        limits(self.max_pixels, self.jpeg_draft)
    }
}

/// The library's image limits for `--max-pixels` and `--jpeg-draft`, checked by the library.
pub fn limits(max_pixels: u64, jpeg_draft: bool) -> Result<retrain::data::Limits> {
    let l = retrain::data::Limits {
        max_pixels,
        jpeg_draft,
    };
    l.validate().map_err(flag_error)?;
    Ok(l)
}

impl FitArgs {
    /// The library's fit options for these flags (checked by the library: an option out of
    /// range is reported under its flag's name), and the pretrained file where choosing
    /// the spec read it already.
    pub fn options(&self) -> Result<(FitOptions, Option<Weights>)> {
        let val = match (&self.val, self.val_split) {
            (Some(dir), _) => Validation::Folder(dir.clone()),
            (None, Some(f)) => Validation::Split(f),
            (None, None) => Validation::default(),
        };
        if self.strategy != StrategyArg::Freeze && self.freeze_until.is_some() {
            bail!("--freeze-until applies to --strategy freeze");
        }
        let (spec, weights) = pretrained_spec(&self.pretrained)?;
        let opts = FitOptions {
            spec,
            weights: self.pretrained.weights_path()?.to_owned(),
            data: self.data.clone(),
            val,
            out: self.out.clone(),
            strategy: self.strategy(),
            seed: self.seed,
            batch_size: self.batch_size,
            resume: self.resume,
            limits: retrain::data::Limits {
                max_pixels: self.max_pixels,
                ..Default::default()
            },
        };
        opts.validate().map_err(flag_error)?;
        Ok((opts, weights))
    }

    fn training(&self) -> Training {
        let finetune = self.strategy == StrategyArg::Finetune;
        Training {
            epochs: self.epochs.unwrap_or_else(|| {
                let defaults = match finetune {
                    true => Strategy::finetune(),
                    false => Strategy::freeze(),
                };
                defaults.training().map_or(5, |t| t.epochs)
            }),
            lr: self.lr,
            optimizer: match self.optimizer {
                OptimizerArg::Sgd => Optimizer::Sgd {
                    momentum: self.momentum,
                },
                OptimizerArg::Adamw => Optimizer::AdamW {
                    weight_decay: self.weight_decay,
                },
            },
            warmup_epochs: self.warmup,
            label_smoothing: self.label_smoothing,
            batch_size: self.train_batch.max(1),
            seed: self.seed,
            balanced: self.balanced,
            patience: self.patience,
            schedule: match self.schedule {
                ScheduleArg::Cosine => Schedule::Cosine,
                ScheduleArg::OneCycle => Schedule::OneCycle,
            },
            stage_lr_ratio: self
                .stage_lr_ratio
                .unwrap_or(if finetune { 0.1 } else { 1.0 }),
            color_jitter: self.color_jitter,
        }
    }

    fn strategy(&self) -> Strategy {
        match self.strategy {
            StrategyArg::Probe => Strategy::Probe {
                c: self.c,
                folds: self.folds.max(2),
            },
            StrategyArg::Freeze => Strategy::Freeze {
                training: self.training(),
                augment: !self.no_augment,
                until: self.freeze_until.clone(),
            },
            StrategyArg::Finetune => Strategy::Finetune {
                training: self.training(),
                augment: !self.no_augment,
                head_epochs: self.head_epochs,
                unfrozen_lr_scale: self.unfrozen_lr_scale,
                start_size: (self.start_size > 0).then_some(self.start_size),
            },
        }
    }
}

/// An option the library refused, under the flag that set it.
fn flag_error(e: InvalidOption) -> anyhow::Error {
    let flag = match e.name {
        "warmup_epochs" => "warmup",
        "batch_size" => "batch-size",
        other => other,
    }
    .replace('_', "-");
    anyhow::anyhow!("--{flag} must be {}, got {}", e.rule, e.value)
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
    let device = retrain::default_device();
    let offline = cli.offline;
    match cli.command {
        Command::Models { json } => commands::models(json),
        Command::Download { model, json } => commands::download(&model, offline, json),
        Command::Inspect { weights, json } => commands::inspect(&weights, json, &device),
        Command::Predict {
            mut model,
            top,
            json,
            input,
        } => {
            model.published_weights(offline, json)?;
            commands::predict(&model, top, json, &input, &device)
        }
        Command::Embed {
            mut model,
            out,
            part_size,
            shard,
            resume,
            layer,
            json,
            input,
        } => {
            model.published_weights(offline, json)?;
            let parts = commands::EmbedParts {
                part_size,
                shard,
                resume,
            };
            commands::embed(
                &model,
                &out,
                &parts,
                layer.as_deref(),
                json,
                &input,
                &device,
            )
        }
        Command::Fit(mut args) => {
            args.pretrained.published_weights(offline, args.json)?;
            let (opts, weights) = args.options()?;
            commands::check_weights_path(&opts.weights)?;
            let interrupter = retrain::observe::Interrupter::new();
            if args.strategy != StrategyArg::Probe {
                terminal::stop_on_ctrl_c(&interrupter);
            }
            commands::fit(&opts, weights.as_ref(), args.json, &interrupter, &device)
        }
        Command::Eval {
            bundle,
            data,
            worst,
            json,
            batch_size,
            max_pixels,
            jpeg_draft,
        } => commands::eval(
            &bundle,
            &data,
            worst,
            json,
            batch_size,
            limits(max_pixels, jpeg_draft)?,
            &device,
        ),
        Command::Export {
            model,
            out,
            format,
            json,
        } => commands::export(&model, &out, format, json, &device),
    }
}

/// The spec of a fit's pretrained model: `--model`, the weights file's own graph, or the
/// one zoo architecture its tensors fit; with the file, where that needed reading it.
fn pretrained_spec(p: &PretrainedArgs) -> Result<(zoo::ModelSpec, Option<Weights>)> {
    let input = p.input_spec.input_override()?;
    if let Some(m) = &p.model
        && input == zoo::InputOverride::default()
    {
        let spec = zoo::resolve(m)?;
        // A Keras Application's graph is made with the file's shapes: read it now.
        if !matches!(spec.config, zoo::ArchConfig::KerasApplication(_)) {
            return Ok((spec, None));
        }
    }
    let path = p.weights_path()?;
    let w =
        Weights::load(path).map_err(|e| anyhow::anyhow!("cannot load {}: {e}", path.display()))?;
    let spec = zoo::spec_with_input(p.model.as_deref(), &w, &input, &retrain::default_device())?;
    Ok((spec, Some(w)))
}

impl ModelArgs {
    /// `--model NAME` without `--weights` (nor `--bundle`): its published weights, found in
    /// a cache or downloaded.
    fn published_weights(&mut self, offline: bool, json: bool) -> Result<()> {
        if let (None, None, Some(m)) = (&self.bundle, &self.weights, &self.model) {
            self.weights = Some(commands::published_weights(m, offline, json)?.path);
        }
        Ok(())
    }
}

impl PretrainedArgs {
    /// As [`ModelArgs::published_weights`].
    fn published_weights(&mut self, offline: bool, json: bool) -> Result<()> {
        if let (None, Some(m)) = (&self.weights, &self.model) {
            self.weights = Some(commands::published_weights(m, offline, json)?.path);
        }
        Ok(())
    }

    fn weights_path(&self) -> Result<&std::path::Path> {
        match &self.weights {
            Some(w) => Ok(w),
            None => bail!("give --weights FILE, or --model NAME for its published weights"),
        }
    }
}
