//! Benchmark (not a test): ResNet-50's convolutions one by one on this thread, each through
//! the kernel that inference gives it (`pointwise` for 1×1 stride 1, `winograd` for 3×3
//! stride 1, `dense`'s patches and `gemm` for the rest), with the time per image, the
//! layer's count in the network, and its rate in GFLOP/s of the direct convolution's
//! multiply-adds (two flops each; Winograd's figure above the direct one's is what it saves);
//! then the stem's max pool, which is not a convolution (`pool`'s kernel).
//!
//! `RAYON_NUM_THREADS=1 cargo run --release --example resnet_layers [reps] [name]` prints
//! the fastest of 4 rounds of `reps` calls (default 10) per layer (those whose name holds
//! `name`, if given): the stem's and stages 1 and
//! 2's on one image, stages 3 and 4's (input 28×28) on 8 images side by side, as
//! `zoo::network::run_stages` runs them, divided by 8. Where Winograd's kernel takes a
//! layer, the direct kernel's time is given too, and the largest difference between their
//! outputs as a share of the largest output.

mod timing;

use retrain::kernels::fused::{Epilogue, Finish};
use retrain::kernels::{dense, pointwise, pool, winograd};
use timing::{fastest, square_window, values};

/// torchvision's ResNet-50 (stride on the 3×3 convolution) at 224×224, one row per shape of
/// convolution: name, input channels, output channels, input side, kernel side, stride, and
/// how many of the network's layers have it.
#[rustfmt::skip]
const LAYERS: [(&str, usize, usize, usize, usize, usize, usize); 23] = [
    ("stem", 3, 64, 224, 7, 2, 1),
    ("1 reduce first", 64, 64, 56, 1, 1, 1),
    ("1 reduce", 256, 64, 56, 1, 1, 2),
    ("1 3x3", 64, 64, 56, 3, 1, 3),
    ("1 expand + shortcut", 64, 256, 56, 1, 1, 4),
    ("2 reduce first", 256, 128, 56, 1, 1, 1),
    ("2 3x3 stride 2", 128, 128, 56, 3, 2, 1),
    ("2 shortcut stride 2", 256, 512, 56, 1, 2, 1),
    ("2 reduce", 512, 128, 28, 1, 1, 3),
    ("2 3x3", 128, 128, 28, 3, 1, 3),
    ("2 expand", 128, 512, 28, 1, 1, 4),
    ("3 reduce first", 512, 256, 28, 1, 1, 1),
    ("3 3x3 stride 2", 256, 256, 28, 3, 2, 1),
    ("3 shortcut stride 2", 512, 1024, 28, 1, 2, 1),
    ("3 reduce", 1024, 256, 14, 1, 1, 5),
    ("3 3x3", 256, 256, 14, 3, 1, 5),
    ("3 expand", 256, 1024, 14, 1, 1, 6),
    ("4 reduce first", 1024, 512, 14, 1, 1, 1),
    ("4 3x3 stride 2", 512, 512, 14, 3, 2, 1),
    ("4 shortcut stride 2", 1024, 2048, 14, 1, 2, 1),
    ("4 reduce", 2048, 512, 7, 1, 1, 2),
    ("4 3x3", 512, 512, 7, 3, 1, 2),
    ("4 expand", 512, 2048, 7, 1, 1, 3),
];

fn main() {
    let reps: usize = std::env::args().nth(1).map_or(10, |s| s.parse().unwrap());
    let only = std::env::args().nth(2).unwrap_or_default();
    let (mut total, mut flops) = (0.0, 0.0);
    for &(name, cin, cout, side, kernel, stride, count) in &LAYERS {
        if !name.contains(only.as_str()) {
            continue;
        }
        // The stem and stages 1 and 2 on each image alone, stages 3 and 4 (input 28×28)
        // on groups of 8.
        let batch = if name.starts_with(['3', '4']) { 8 } else { 1 };
        let window = square_window(batch, cin, side, kernel, stride);
        let out = window.out_size[0];
        let g = dense::Dense {
            window,
            channels_out: cout,
        };
        let x = values(batch * cin * side * side, 0, 1.0);
        let w = values(cout * cin * kernel * kernel, 1, 0.1);
        let b = vec![0.1f32; cout];
        let finish = || Finish {
            bias: Some(&b),
            residual: None,
            epilogue: Epilogue::Relu,
        };
        let direct = || dense::forward(&g, &x, &w, finish());
        let mut note = String::new();
        let (kind, ms) = if kernel == 1 && stride == 1 {
            let s = side * side;
            let f = || pointwise::forward(batch, cin, s, &x, &w, finish());
            ("pointwise", fastest(reps, f))
        } else if winograd::applies(&g) {
            let u = winograd::transform_weights(&w, cout, cin, stride);
            let f = || winograd::forward(&g, &x, &u, finish());
            let (a, o) = (direct(), f());
            let largest = a.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = a
                .iter()
                .zip(&o)
                .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            let patches = fastest(reps, direct) / batch as f64;
            note = format!(
                "  (patches {patches:.3} ms; difference {:.1e} of the largest)",
                err / largest
            );
            ("winograd", fastest(reps, f))
        } else {
            ("patches", fastest(reps, direct))
        };
        let per_image = ms / batch as f64;
        let macs = (cin * cout * kernel * kernel * out * out) as f64;
        total += per_image * count as f64;
        flops += 2.0 * macs * count as f64;
        println!(
            "{:<22} {:>4}->{:<4} {:>3}² {}x{} s{} {:<9} x{}  {:7.3} ms/image  {:6.1} GFLOP/s{note}",
            name,
            cin,
            cout,
            side,
            kernel,
            kernel,
            stride,
            kind,
            count,
            per_image,
            2.0 * macs / per_image / 1e6
        );
    }
    // The stem's max pool (3×3, stride 2, padding 1), its input the stem's output.
    if "stem max pool".contains(only.as_str()) {
        let window = square_window(1, 64, 112, 3, 2);
        let x = values(64 * 112 * 112, 0, 1.0);
        let ms = fastest(reps, || pool::max_pool(&window, &x));
        let name = "stem max pool";
        println!(
            "{name:<22}   64->64   112² 3x3 s2 max pool  x1  {ms:7.3} ms/image  (not in the sum)"
        );
    }
    println!(
        "all convolutions: {total:.2} ms/image, {:.1} GFLOP/s of the direct convolutions' multiply-adds",
        flops / total / 1e6
    );
}
