//! Timing, data and windows shared by the kernel benchmarks (`winograd_layers`,
//! `inverted_blocks`, `resnet_layers`).

use std::time::Instant;

use retrain::kernels::depthwise::Depthwise;

/// The fastest of 4 rounds of `reps` calls of `f`, in milliseconds per call: the least
/// disturbed round, on a machine whose other load comes and goes.
pub fn fastest(reps: usize, mut f: impl FnMut() -> Vec<f32>) -> f64 {
    (0..4)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                std::hint::black_box(f());
            }
            t.elapsed().as_secs_f64() * 1e3 / reps as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// Values in [-scale, scale), the same on every run (a benchmark's inputs and weights; another
/// `seed`, other values).
pub fn values(n: usize, seed: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 104729) % 1000) as f32 / 500.0 * scale - scale)
        .collect()
}

/// The window of a square `kernel` at `stride` over `side`² planes of `channels`, padded by
/// half the kernel (as ResNet's, MobileNet's and EfficientNet's layers are).
pub fn square_window(
    batch: usize,
    channels: usize,
    side: usize,
    kernel: usize,
    stride: usize,
) -> Depthwise {
    let pad = kernel / 2;
    let out = (side + 2 * pad - kernel) / stride + 1;
    Depthwise {
        batch,
        channels,
        multiplier: 1,
        in_size: [side, side],
        out_size: [out, out],
        kernel: [kernel, kernel],
        stride: [stride, stride],
        dilation: [1, 1],
        pad_begin: [pad, pad],
    }
}
