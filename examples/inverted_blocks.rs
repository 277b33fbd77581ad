//! Benchmark (not a test): MobileNetV2's and EfficientNet-B0's inverted residual blocks on
//! one image at a time, the fused kernel (`kernels/inverted.rs`) as inference runs it
//! (BatchNorm folded; EfficientNet's with its squeeze-excitation), so that a change to the
//! kernel can be timed block by block.
//!
//! `RAYON_NUM_THREADS=1 cargo run --release --example inverted_blocks [reps [family]]`
//! prints, per distinct block, the fastest of 4 rounds of `reps` calls (default 100) in
//! milliseconds, and the sum over the network's blocks (each shape as often as it occurs);
//! `family` is `mobilenet_v2` (default) or `efficientnet_b0`.

mod timing;

use retrain::kernels::Pointwise;
use retrain::kernels::fused::Epilogue;
use retrain::kernels::inverted::{self, Gate, Inverted, Part, Squeeze};
use timing::{fastest, square_window, values};

/// A block: input side, channels in, expanded, out, kernel, stride, times in the network.
type Block = (usize, usize, usize, usize, usize, usize, usize);

fn main() {
    let reps: usize = std::env::args().nth(1).map_or(100, |s| s.parse().unwrap());
    let family = std::env::args().nth(2).unwrap_or("mobilenet_v2".into());
    let (blocks, act, se): (&[Block], _, _) = match family.as_str() {
        "mobilenet_v2" => (
            &[
                (112, 16, 96, 24, 3, 2, 1),
                (56, 24, 144, 24, 3, 1, 1),
                (56, 24, 144, 32, 3, 2, 1),
                (28, 32, 192, 32, 3, 1, 2),
                (28, 32, 192, 64, 3, 2, 1),
                (14, 64, 384, 64, 3, 1, 3),
                (14, 64, 384, 96, 3, 1, 1),
                (14, 96, 576, 96, 3, 1, 2),
                (14, 96, 576, 160, 3, 2, 1),
                (7, 160, 960, 160, 3, 1, 2),
                (7, 160, 960, 320, 3, 1, 1),
            ],
            Pointwise::Relu6,
            false,
        ),
        "efficientnet_b0" => (
            &[
                (112, 16, 96, 24, 3, 2, 1),
                (56, 24, 144, 24, 3, 1, 1),
                (56, 24, 144, 40, 5, 2, 1),
                (28, 40, 240, 40, 5, 1, 1),
                (28, 40, 240, 80, 3, 2, 1),
                (14, 80, 480, 80, 3, 1, 2),
                (14, 80, 480, 112, 5, 1, 1),
                (14, 112, 672, 112, 5, 1, 2),
                (14, 112, 672, 192, 5, 2, 1),
                (7, 192, 1152, 192, 5, 1, 3),
                (7, 192, 1152, 320, 3, 1, 1),
            ],
            Pointwise::Silu,
            true,
        ),
        other => panic!("unknown family {other}: mobilenet_v2 or efficientnet_b0"),
    };
    let mut total = 0.0;
    for (seed, &(side, cin, hidden, cout, k, stride, times)) in blocks.iter().enumerate() {
        let b = Inverted {
            window: square_window(1, hidden, side, k, stride),
            channels_in: cin,
            channels_out: cout,
            residual: stride == 1 && cin == cout,
        };
        let x = values(cin * side * side, seed, 1.0);
        let w = [
            values(hidden * cin, seed + 1, 0.3),
            values(hidden * k * k, seed + 2, 0.3),
            values(cout * hidden, seed + 3, 0.1),
        ];
        let bias = [
            values(hidden, seed + 4, 0.1),
            values(hidden, seed + 5, 0.1),
            values(cout, seed + 6, 0.1),
        ];
        let squeezed = (cin / 4).max(1);
        let sw = [
            values(squeezed * hidden, seed + 7, 0.1),
            values(hidden * squeezed, seed + 8, 0.1),
        ];
        let sb = [
            values(squeezed, seed + 9, 0.1),
            values(hidden, seed + 10, 0.1),
        ];
        let part = |i: usize, epilogue| Part {
            weight: &w[i],
            bias: &bias[i],
            epilogue,
        };
        let parts = [
            part(0, Epilogue::Act(act)),
            part(1, Epilogue::Act(act)),
            part(2, Epilogue::Identity),
        ];
        let squeeze = se.then(|| Squeeze {
            reduce: Part {
                weight: &sw[0],
                bias: &sb[0],
                epilogue: Epilogue::Act(act),
            },
            expand: Part {
                weight: &sw[1],
                bias: &sb[1],
                epilogue: Epilogue::Identity,
            },
            gate: Gate::Sigmoid,
        });
        let ms = fastest(reps, || inverted::forward(&b, &x, parts, squeeze));
        total += ms * times as f64;
        println!(
            "{side:>3}² {cin:>3}→{hidden:>4}→{cout:>3} {k}×{k} stride {stride} (×{times}): {ms:.3} ms"
        );
    }
    println!("{family}: all blocks {total:.3} ms an image");
}
