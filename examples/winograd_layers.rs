//! Benchmark (not a test): ResNet-50's stride-1 3×3 layers for a batch on this thread,
//! the direct kernel (patches and `gemm`, `kernels/dense.rs`) against Winograd's F(2×4, 3×3)
//! (`kernels/winograd.rs`, weights transformed beforehand as folding does), with the
//! largest difference between them as a share of the largest output.
//!
//! `RAYON_NUM_THREADS=1 cargo run --release --example winograd_layers [reps [batch [size]]]`
//! prints, per layer (or the one whose plane is `size` on a side), the fastest of 4 rounds
//! of `reps` calls (default 200) of each on `batch` images (default 1; `run_stages` groups
//! the images of the 28×28 planes and smaller by 8). With `WINOGRAD_ONLY=1` it times
//! Winograd's kernel alone (to profile it: `perf record` then sees no direct kernel).

mod timing;

use retrain::kernels::fused::{Epilogue, Finish};
use retrain::kernels::{dense, winograd};
use timing::{fastest, square_window, values};

fn main() {
    let reps: usize = std::env::args().nth(1).map_or(200, |s| s.parse().unwrap());
    let batch: usize = std::env::args().nth(2).map_or(1, |s| s.parse().unwrap());
    let only: Option<usize> = std::env::args().nth(3).map(|s| s.parse().unwrap());
    for (c, s) in [(64usize, 56usize), (128, 28), (256, 14), (512, 7)] {
        if only.is_some_and(|o| o != s) {
            continue;
        }
        let window = square_window(batch, c, s, 3, 1);
        let g = dense::Dense {
            window,
            channels_out: c,
        };
        let x = values(batch * c * s * s, 0, 1.0);
        let w = values(c * c * 9, 1, 0.1);
        let u = winograd::transform_weights(&w, c, c, 1);
        let b = vec![0.1f32; c];
        let finish = || Finish {
            bias: Some(&b),
            residual: None,
            epilogue: Epilogue::Relu,
        };
        if std::env::var_os("WINOGRAD_ONLY").is_some() {
            let fast = fastest(reps, || winograd::forward(&g, &x, &u, finish()));
            println!("{s}x{s}x{c}: winograd {fast:.3} ms");
            continue;
        }
        let direct = fastest(reps, || dense::forward(&g, &x, &w, finish()));
        let fast = fastest(reps, || winograd::forward(&g, &x, &u, finish()));
        let (a, o) = (
            dense::forward(&g, &x, &w, finish()),
            winograd::forward(&g, &x, &u, finish()),
        );
        let largest = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = a
            .iter()
            .zip(&o)
            .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        println!(
            "{s}x{s}x{c}: direct {direct:.3} ms  winograd {fast:.3} ms  ({:.2}x)  difference {:.1e} of the largest",
            direct / fast,
            err / largest
        );
    }
}
