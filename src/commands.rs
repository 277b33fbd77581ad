//! The commands: each loads what it needs through the library, runs it, and prints text
//! or (`--json`) one typed JSON document on stdout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use retrain::bundle::Bundle;
use retrain::dataset::Labelled;
use retrain::hub::{self, Published};
use retrain::inference::{self, Output, RunOptions};
use retrain::metrics::{self, Report};
use retrain::observe::{Event, Interrupter, Observer};
use retrain::outputs;
use retrain::strategy::{self, FitOptions};
use retrain::weights::{Weights, WeightsFormat};
use retrain::zoo::{self, ArchConfig, Model, Preprocess, imagenet};
use serde::Serialize;

use crate::cli::{InputArgs, ModelArgs};
use crate::terminal::Terminal;

fn print_json(value: &impl Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// An image that could not be read, for `--json` output.
#[derive(Serialize)]
struct Skipped {
    path: String,
    error: String,
}

fn skipped(list: &[(PathBuf, String)]) -> Vec<Skipped> {
    list.iter()
        .map(|(p, why)| Skipped {
            path: p.display().to_string(),
            error: why.clone(),
        })
        .collect()
}

/// One row of `retrain models --json`.
#[derive(Serialize)]
struct ModelRow {
    name: &'static str,
    /// The architecture family (`config`'s `family`), which `retrain models` groups by.
    family: String,
    origin: &'static str,
    parameters: usize,
    /// State that is not trained (BatchNorm's running statistics), as Keras counts it.
    non_trainable_parameters: usize,
    input_size: usize,
    feature_dim: usize,
    stages: Vec<String>,
    preprocess: Preprocess,
    config: ArchConfig,
    /// The ImageNet weights the origin publishes (file, hash, origin), used when --weights
    /// is not given; empty when none.
    published: Vec<Published>,
}

pub fn models(json: bool) -> Result<()> {
    let rows: Vec<ModelRow> = zoo::catalogue()
        .into_iter()
        .map(|e| {
            let (parameters, non_trainable_parameters) = e.config.parameter_counts(e.classes);
            ModelRow {
                name: e.name,
                family: e.config.family_name(),
                origin: e.origin,
                parameters,
                non_trainable_parameters,
                input_size: e.preprocess.crop,
                feature_dim: e.config.feature_dim(),
                stages: e.config.stage_names(),
                preprocess: e.preprocess,
                config: e.config,
                published: e.published,
            }
        })
        .collect();
    if json {
        return print_json(&rows);
    }
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(5);
    println!(
        "{:<width$} {:>11} {:>6} {:>8}  {:<9}  stages",
        "model", "parameters", "input", "features", "published"
    );
    let mut group = None;
    for r in &rows {
        // One heading per family and origin (the catalogue lists a family's entries
        // together).
        if group != Some((&r.family, r.origin)) {
            group = Some((&r.family, r.origin));
            println!("\n{} — {}", r.family, r.origin);
        }
        // A Keras Application runs as the graph of its Keras layers, cut at any of them:
        // which they are is known once its weights file is read.
        let stages = if r.stages.is_empty() {
            "its Keras layers (`retrain inspect` on a weights file lists them)".to_owned()
        } else {
            r.stages.join(" ")
        };
        let published = r.published.first().map_or("-", |p| p.kind());
        println!(
            "{:<width$} {:>11} {:>6} {:>8}  {published:<9}  {stages}",
            r.name, r.parameters, r.input_size, r.feature_dim,
        );
    }
    Ok(())
}

/// The published weights of `model` (a zoo name, or a spec file listing `published`), from
/// a cache or downloaded (progress on the terminal), hash-checked; `--offline` or
/// RETRAIN_OFFLINE=1: from a cache only.
pub fn published_weights(model: &str, offline: bool, json: bool) -> Result<hub::Fetched> {
    let files = zoo::published_for(model)?;
    let mut cfg = hub::HubConfig::from_env();
    cfg.offline |= offline;
    hub::fetch(model, &files, &cfg, &Terminal::new(json))
}

#[derive(Serialize)]
struct DownloadedWeights<'a> {
    model: &'a str,
    path: String,
    file: &'a str,
    hash: &'a hub::Hash,
    url: String,
}

/// `retrain download`: the path of `model`'s published weights, verified.
pub fn download(model: &str, offline: bool, json: bool) -> Result<()> {
    let f = published_weights(model, offline, json)?;
    if json {
        return print_json(&DownloadedWeights {
            model,
            path: f.path.display().to_string(),
            file: &f.published.file,
            hash: &f.published.hash,
            url: f.published.origin_url(),
        });
    }
    println!("{}", f.path.display());
    Ok(())
}

/// A weights file, SavedModel folder, or TensorFlow checkpoint prefix (`<prefix>.index`).
pub fn check_weights_path(path: &Path) -> Result<()> {
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

#[derive(Serialize)]
struct InspectMatch {
    model: String,
    exact: bool,
    matched_fraction: f64,
}

#[derive(Serialize)]
struct InspectClosest {
    model: String,
    matched_fraction: f64,
    missing: Vec<String>,
    unexpected: Vec<String>,
    shape_mismatches: Vec<(String, Vec<usize>, Vec<usize>)>,
}

#[derive(Serialize)]
struct InspectReport {
    path: String,
    format: WeightsFormat,
    tensors: usize,
    dtypes: BTreeMap<String, usize>,
    parameters: usize,
    strided_tensors: usize,
    matches: Vec<InspectMatch>,
    closest: Option<InspectClosest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    graph: Option<InspectGraph>,
}

/// A file's own graph, as `inspect` shows it.
#[derive(Serialize)]
struct InspectGraph {
    producer: String,
    opset: i64,
    input: String,
    /// Input dimensions, `null` where symbolic.
    input_dims: Vec<Option<usize>>,
    output: String,
    nodes: usize,
    ops: BTreeMap<String, usize>,
    /// What running it found: the cut points (`--layer`, `--freeze-until`), or why it cannot run.
    stages: Vec<InspectStage>,
    feature_dim: Option<usize>,
    classifier: Option<String>,
    fixed_batch: Option<usize>,
    error: Option<String>,
}

#[derive(Serialize)]
struct InspectStage {
    name: String,
    shape: Vec<usize>,
}

/// The graph a file runs as: its own, or, for the weights of one Keras Application (the
/// only architecture they fit), the graph of the application's Keras config.
fn inspect_graph(w: &Weights, matches: &[(String, f64)], device: &Device) -> Option<InspectGraph> {
    let (g, analysed) = match w.graph.as_deref() {
        Some(g) => (
            g.clone(),
            retrain::graph::analyse(g, w, None, device).map_err(|e| e.to_string()),
        ),
        None => {
            let exact: Vec<&String> = matches
                .iter()
                .filter(|(_, fit)| *fit >= 1.0)
                .map(|(name, _)| name)
                .collect();
            let [name] = exact.as_slice() else {
                return None;
            };
            match zoo::spec_for(Some(name), w, device).ok()?.config {
                ArchConfig::Graph(c) => ((*c.graph).clone(), Ok(c)),
                _ => return None,
            }
        }
    };
    let mut ops = BTreeMap::new();
    for n in &g.nodes {
        *ops.entry(n.op.clone()).or_default() += 1;
    }
    let (stages, feature_dim, classifier, fixed_batch, error) = match analysed {
        Ok(c) => (
            c.stages
                .iter()
                .map(|s| InspectStage {
                    name: s.name.clone(),
                    shape: s.shape.clone(),
                })
                .collect(),
            c.stages.last().and_then(|s| s.shape.get(1).copied()),
            c.classifier.clone(),
            c.fixed_batch,
            None,
        ),
        Err(e) => (vec![], None, None, None, Some(e)),
    };
    Some(InspectGraph {
        producer: g.producer.clone(),
        opset: g.opset,
        input: g.input.name.clone(),
        input_dims: g.input.dims.clone(),
        output: g.output.name.clone(),
        nodes: g.nodes.len(),
        ops,
        stages,
        feature_dim,
        classifier,
        fixed_batch,
        error,
    })
}

fn print_graph(g: &InspectGraph) {
    let dims: Vec<String> = g
        .input_dims
        .iter()
        .map(|d| d.map_or("?".to_owned(), |d| d.to_string()))
        .collect();
    println!(
        "graph:       {} nodes, opset {}, by {}",
        g.nodes, g.opset, g.producer
    );
    println!("input:       {} [{}] (NCHW)", g.input, dims.join(", "));
    println!("output:      {}", g.output);
    let ops: Vec<String> = g.ops.iter().map(|(k, v)| format!("{k} x{v}")).collect();
    println!("ops:         {}", ops.join(", "));
    if let Some(e) = &g.error {
        println!("cannot run:  {e}");
        return;
    }
    match (&g.classifier, g.feature_dim) {
        (Some(c), Some(d)) => println!("classifier:  {c} on {d} features (replaced by fit)"),
        (None, Some(d)) => println!("classifier:  none; the output has {d} features"),
        _ => {}
    }
    if let Some(b) = g.fixed_batch {
        println!("batch:       fixed to {b} by the export (run in chunks of {b})");
    }
    println!("stages (--layer, --freeze-until):");
    for s in &g.stages {
        println!("  {:<50} {:?}", s.name, s.shape);
    }
}

pub fn inspect(path: &Path, json: bool, device: &Device) -> Result<()> {
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
    let graph = inspect_graph(&w, &matches, device);
    if json {
        return print_json(&InspectReport {
            path: path.display().to_string(),
            format: w.format,
            tensors: w.tensors.len(),
            dtypes,
            parameters: w.parameter_count(),
            strided_tensors: strided,
            matches: matches
                .iter()
                .map(|(n, f)| InspectMatch {
                    model: n.clone(),
                    exact: *f >= 1.0,
                    matched_fraction: *f,
                })
                .collect(),
            closest: closest.map(|(model, f, r)| InspectClosest {
                model,
                matched_fraction: f,
                missing: r.missing,
                unexpected: r.unexpected,
                shape_mismatches: r.shape_mismatches,
            }),
            graph,
        });
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
    if let Some(g) = &graph {
        print_graph(g);
        return Ok(());
    }
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
    let (model, classes) = load_model_as_trained(args, device)?;
    Ok((model.for_inference(), classes))
}

/// The model as loaded (BatchNorm not folded), and its class names when it comes from a
/// bundle.
fn load_model_as_trained(
    args: &ModelArgs,
    device: &Device,
) -> Result<(Model, Option<Vec<String>>)> {
    if let Some(dir) = &args.bundle {
        let b = Bundle::load(dir, device)?;
        return Ok((b.model, Some(b.manifest.classes)));
    }
    let Some(weights) = &args.weights else {
        bail!(
            "give --model NAME (its published weights), --weights FILE (and --model for a file of weights only), or --bundle"
        );
    };
    let w = load_weights(weights)?;
    let input = args.input_spec.input_override()?;
    let spec = zoo::spec_with_input(args.model.as_deref(), &w, &input, device)
        .with_context(|| format!("cannot load {}", weights.display()))?;
    let model = Model::from_spec(&spec, &w, device)
        .with_context(|| format!("cannot load {}", weights.display()))?;
    Ok((model, None))
}

#[derive(Serialize)]
struct ClassScore<'a> {
    class: usize,
    label: Option<&'a str>,
    probability: f32,
}

#[derive(Serialize)]
struct Prediction<'a> {
    path: String,
    top: Vec<ClassScore<'a>>,
}

#[derive(Serialize)]
struct Predictions<'a> {
    model: &'a str,
    predictions: Vec<Prediction<'a>>,
    skipped: Vec<Skipped>,
}

/// The images the command line names: files and folders (searched, with a warning for each
/// folder left out), then those of the --inputs list (taken as they are: a million paths
/// are not stat-ed up front).
fn scan(input: &InputArgs, terminal: &Terminal) -> Result<Vec<PathBuf>> {
    let scan = retrain::data::scan_images(&input.inputs, input.strict)?;
    report_folders(&scan.notes, terminal);
    let mut paths = scan.paths;
    if let Some(list) = &input.input_list {
        paths.extend(retrain::embed_job::read_input_list(list)?);
    }
    Ok(paths)
}

fn report_folders(notes: &[(PathBuf, String)], terminal: &Terminal) {
    for (path, why) in notes {
        terminal.event(Event::FolderSkipped { path, why });
    }
}

pub fn predict(
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
    let limits = input.limits()?;
    let terminal = Terminal::new(json);
    let paths = scan(input, &terminal)?;
    let opts = RunOptions {
        output: Output::PooledAndLogits,
        batch_size: input.batch_size,
        strict: input.strict,
        limits,
        ..Default::default()
    };
    let out = inference::run(&model, &paths, &opts, &terminal, device)?;
    let logits = out.logits.clone().unwrap_or_default();
    let k = out.classes;
    let rows: Vec<Prediction> = out
        .paths
        .iter()
        .enumerate()
        .map(|(i, path)| Prediction {
            path: path.display().to_string(),
            top: metrics::top_k(&logits[i * k..(i + 1) * k], top)
                .into_iter()
                .map(|(c, p)| ClassScore {
                    class: c,
                    label: match &class_names {
                        Some(names) => names.get(c).map(String::as_str),
                        None => imagenet::label(c, k),
                    },
                    probability: p,
                })
                .collect(),
        })
        .collect();
    if json {
        print_json(&Predictions {
            model: &model.name,
            predictions: rows,
            skipped: skipped(&out.skipped),
        })?;
    } else {
        for r in &rows {
            let classes: Vec<String> = r
                .top
                .iter()
                .map(|t| {
                    let name = t
                        .label
                        .map(str::to_owned)
                        .unwrap_or_else(|| format!("class {}", t.class));
                    format!("{name} {:.1}%", t.probability as f64 * 100.0)
                })
                .collect();
            println!("{}\t{}", r.path, classes.join(", "));
        }
    }
    if out.paths.is_empty() {
        bail!("none of the {} images could be read", paths.len());
    }
    Ok(())
}

#[derive(Serialize)]
struct Embedded<'a> {
    model: &'a str,
    layer: &'a str,
    images: usize,
    dim: usize,
    seconds: f64,
    skipped: Vec<Skipped>,
    files: Vec<String>,
}

/// A file as a job records it: its path, size and modification time.
fn file_identity(path: &Path) -> String {
    let meta = std::fs::metadata(path).ok();
    let size = meta.as_ref().map_or(0, |m| m.len());
    let mtime = meta
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    format!("{} ({size} bytes, modified {mtime})", path.display())
}

/// How `embed` writes into a folder of parts (`--part-size`, `--shard`, `--resume`).
pub struct EmbedParts {
    pub part_size: usize,
    pub shard: Option<retrain::embed_job::Shard>,
    pub resume: bool,
}

#[derive(Serialize)]
struct EmbeddedParts<'a> {
    model: &'a str,
    layer: &'a str,
    shard: retrain::embed_job::Shard,
    parts_written: usize,
    parts_resumed: usize,
    images: usize,
    dim: Option<usize>,
    seconds: f64,
    skipped: usize,
    manifest: String,
}

pub fn embed(
    args: &ModelArgs,
    out_path: &Path,
    parts: &EmbedParts,
    layer: Option<&str>,
    json: bool,
    input: &InputArgs,
    device: &Device,
) -> Result<()> {
    // A path without an extension is a folder of parts.
    let folder = out_path.extension().is_none();
    if !folder && (parts.shard.is_some() || parts.resume) {
        bail!(
            "--shard and --resume write a folder of parts: give --out a folder (a path without an extension)"
        );
    }
    // Fail on a bad output path before spending minutes on the images.
    if folder {
        if parts.part_size == 0 {
            bail!("--part-size must be at least 1");
        }
        // Its own folder must take it; once made (a resumed job), it must take parts.
        outputs::check_writable(&if out_path.is_dir() {
            out_path.join("part")
        } else {
            out_path.to_owned()
        })?;
    } else {
        outputs::EmbeddingFormat::from_path(out_path)?;
        outputs::check_writable(out_path)?;
    }
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
    let limits = input.limits()?;
    let terminal = Terminal::new(json);
    let paths = scan(input, &terminal)?;
    let opts = RunOptions {
        output: stage.map_or(Output::Pooled, Output::PooledAt),
        batch_size: input.batch_size,
        strict: input.strict,
        limits,
        ..Default::default()
    };
    let t = Instant::now();
    let layer_name = &model.stage_names[stage.unwrap_or(model.stage_names.len() - 1)];
    if folder {
        let job = retrain::embed_job::JobOptions {
            dir: out_path.to_owned(),
            part_size: parts.part_size,
            shard: parts.shard.unwrap_or_default(),
            resume: parts.resume,
            layer: layer_name.clone(),
            model_files: [args.bundle.as_deref(), args.weights.as_deref()]
                .into_iter()
                .flatten()
                .map(file_identity)
                .collect::<Vec<_>>()
                .join(", "),
        };
        let s = retrain::embed_job::run(&model, paths, &opts, &job, &terminal, device)?;
        let secs = t.elapsed().as_secs_f64();
        if json {
            return print_json(&EmbeddedParts {
                model: &model.name,
                layer: layer_name,
                shard: job.shard,
                parts_written: s.parts_written,
                parts_resumed: s.parts_resumed,
                images: s.embedded,
                dim: s.dim,
                seconds: secs,
                skipped: s.skipped,
                manifest: s.manifest.display().to_string(),
            });
        }
        eprintln!(
            "shard {}/{}: {} images embedded ({} dims) in {} parts ({} written now, {} resumed) in {:.1}s{}; manifest {}",
            job.shard.index,
            job.shard.count,
            s.embedded,
            s.dim.map_or("no".into(), |d| d.to_string()),
            s.parts_written + s.parts_resumed,
            s.parts_written,
            s.parts_resumed,
            secs,
            if s.skipped == 0 {
                String::new()
            } else {
                format!(", skipped {} (listed in the manifest)", s.skipped)
            },
            s.manifest.display()
        );
        return Ok(());
    }
    let out = inference::run(&model, &paths, &opts, &terminal, device)?;
    if out.paths.is_empty() {
        bail!(
            "none of the {} images could be read; nothing written",
            paths.len()
        );
    }
    let files = outputs::write_embeddings(out_path, &out.paths, &out.features, out.dim)?;
    let secs = t.elapsed().as_secs_f64();
    let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    if json {
        return print_json(&Embedded {
            model: &model.name,
            layer: layer_name,
            images: out.paths.len(),
            dim: out.dim,
            seconds: secs,
            skipped: skipped(&out.skipped),
            files,
        });
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
        files.join(", ")
    );
    Ok(())
}

/// Runs a fit; `weights`: the pretrained file, where the command line read it already.
pub fn fit(
    opts: &FitOptions,
    weights: Option<&Weights>,
    json: bool,
    interrupter: &Interrupter,
    device: &Device,
) -> Result<()> {
    let observer = Terminal::new(json);
    let summary = match weights {
        Some(w) => strategy::fit_with_weights(opts, w, &observer, interrupter, device)?,
        None => strategy::fit(opts, &observer, interrupter, device)?,
    };
    if json {
        return print_json(&summary);
    }
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
    Ok(())
}

/// An image the model got most wrong.
#[derive(Serialize)]
struct Worst<'a> {
    path: String,
    #[serde(rename = "true")]
    truth: &'a str,
    predicted: &'a str,
    p_true: f32,
    p_predicted: f32,
}

#[derive(Serialize)]
struct Evaluation<'a> {
    bundle: String,
    report: &'a Report,
    worst: &'a [Worst<'a>],
    skipped: Vec<Skipped>,
}

pub fn eval(
    dir: &Path,
    data: &Path,
    worst: usize,
    json: bool,
    batch_size: usize,
    limits: retrain::data::Limits,
    device: &Device,
) -> Result<()> {
    let b = Bundle::load(dir, device)?;
    let classes = b.manifest.classes.clone();
    let terminal = Terminal::new(json);
    let (set, notes) = Labelled::scan(data, Some(&classes))?;
    report_folders(&notes, &terminal);
    if set.is_empty() {
        bail!("{} has no images", data.display());
    }
    let model = b.model.for_inference();
    let opts = RunOptions {
        output: Output::PooledAndLogits,
        batch_size,
        limits,
        ..Default::default()
    };
    let (out, labels) = inference::run_labelled(&model, &set, &opts, &terminal, device)?;
    let k = classes.len();
    let probs = metrics::softmax_rows(&out.logits.clone().unwrap_or_default(), k);
    let report = metrics::report(&classes, &probs, &labels);
    // Worst predicted: lowest probability given to the true class.
    let mut order: Vec<usize> = (0..labels.len()).collect();
    let p_true = |i: usize| probs[i * k + labels[i]];
    order.sort_by(|&a, &b| p_true(a).total_cmp(&p_true(b)));
    let worst_rows: Vec<Worst> = order
        .iter()
        .take(worst)
        .map(|&i| {
            let row = &probs[i * k..(i + 1) * k];
            let pred = metrics::argmax(row);
            Worst {
                path: out.paths[i].display().to_string(),
                truth: &classes[labels[i]],
                predicted: &classes[pred],
                p_true: row[labels[i]],
                p_predicted: row[pred],
            }
        })
        .collect();
    if json {
        return print_json(&Evaluation {
            bundle: dir.display().to_string(),
            report: &report,
            worst: &worst_rows,
            skipped: skipped(&out.skipped),
        });
    }
    print_report(&report, &classes, &worst_rows);
    Ok(())
}

fn print_report(report: &Report, classes: &[String], worst: &[Worst]) {
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
    for c in classes {
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
    if !worst.is_empty() {
        println!("\nworst predicted");
        for r in worst {
            println!(
                "{}\ttrue {} ({:.1}%), predicted {} ({:.1}%)",
                r.path,
                r.truth,
                r.p_true as f64 * 100.0,
                r.predicted,
                r.p_predicted as f64 * 100.0
            );
        }
    }
}

#[derive(Serialize)]
struct ExportSummary<'a> {
    model: &'a str,
    out: String,
    #[serde(flatten)]
    exported: &'a retrain::export::Exported,
    classes: usize,
}

/// `retrain export`: the model as an ONNX file, its preprocessing and classes in the
/// metadata.
pub fn export(
    args: &ModelArgs,
    out: &Path,
    _format: crate::cli::ExportFormat,
    json: bool,
    device: &Device,
) -> Result<()> {
    if let Some(w) = &args.weights
        && same_file(w, out)
    {
        bail!(
            "--out {} is the weights file itself; write the export to another path",
            out.display()
        );
    }
    outputs::check_writable(out)?;
    let (model, classes) = load_model_as_trained(args, device)?;
    let classes = classes.unwrap_or_else(|| {
        let n = model
            .network
            .classifier
            .as_ref()
            .map_or(0, |c| c.num_classes());
        (0..n)
            .map(|i| imagenet::label(i, n).map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default()
    });
    let exported = retrain::export::write_onnx(out, &model, &classes)
        .with_context(|| format!("cannot export {} as ONNX", model.name))?;
    if json {
        let summary = ExportSummary {
            model: &model.name,
            out: out.display().to_string(),
            exported: &exported,
            classes: classes.len(),
        };
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        let [c, h, w] = exported.input;
        let batch = match exported.fixed_batch {
            Some(b) => format!("{b} (the graph's own export fixed it)"),
            None => "batch".into(),
        };
        println!(
            "wrote {} ({} bytes): {}, opset {}, {} nodes, {} parameters",
            out.display(),
            exported.bytes,
            model.name,
            exported.opset,
            exported.nodes,
            exported.parameters
        );
        println!(
            "input `input` [{batch}, {c}, {h}, {w}] (preprocessing in metadata retrain.preprocess); outputs {}",
            exported
                .outputs
                .iter()
                .map(|o| format!("`{o}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// Whether two paths name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
