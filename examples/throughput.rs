//! Model-only inference throughput (no decoding): `cargo run --release --example throughput -- <arch> <weights> [batch] [iters]`.

use burn::prelude::*;
use std::time::Instant;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if std::env::var_os("NO_TUNE").is_none() {
        retrain::tune_allocator();
    }
    let device = retrain::default_device();
    let spec = retrain::zoo::resolve(&a[1]).unwrap();
    let w = retrain::weights::Weights::load(std::path::Path::new(&a[2])).unwrap();
    let model = retrain::zoo::Model::from_spec(&spec, &w, &device)
        .unwrap()
        .for_inference();
    let batch: usize = a.get(3).map_or(32, |s| s.parse().unwrap());
    let iters: usize = a.get(4).map_or(3, |s| s.parse().unwrap());
    let s = spec.preprocess.crop;
    let x = Tensor::<4>::random(
        [batch, 3, s, s],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    let _ = model.network.penultimate(x.clone()).unwrap().into_data();
    let t = Instant::now();
    for _ in 0..iters {
        let _ = model.network.penultimate(x.clone()).unwrap().into_data();
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "{}: {:.1} images/s (batch {batch}, {iters} iters)",
        spec.name,
        (batch * iters) as f64 / dt
    );
}
