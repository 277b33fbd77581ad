//! RegNetX and RegNetY (torchvision layout: `stem.0`/`stem.1` a 3×3 stride-2 convolution,
//! `trunk_output.blockS.blockS-I` the residual bottlenecks — `proj` the projected shortcut,
//! `f.a` 1×1, `f.b` grouped 3×3, `f.se` squeeze-excitation (RegNetY), `f.c` 1×1 —, `fc`).
//! The stage widths are computed as torchvision's `BlockParams.from_init_params` computes
//! them: quantised linear widths, grouped to fit the group width.

use burn::prelude::*;
use burn::tensor::activation;
use serde::{Deserialize, Serialize};

use super::family::{ClassifierSpec, Family, StageInfo, StageList};
use super::layers::{Act, Block, BnSpec, ConvBnAct, ConvSpec, SqueezeExcite, TensorMap};
use super::loader::WeightLoader;
use super::mobilenet::make_divisible;
use super::network::Stage;
use super::{Interpolation, Preprocess, ZooEntry, torchvision_file};

/// torchvision's `_regnet` builds with `partial(nn.BatchNorm2d, eps=1e-05, momentum=0.1)`.
const BN: BnSpec = BnSpec::TORCH;

/// torchvision's `ResBottleneckBlock`: `act(proj(x) + f(x))`, `f` = a, b, SE, c.
#[derive(Module, Debug)]
pub struct RegNetBlock {
    pub proj: Option<ConvBnAct>,
    pub a: ConvBnAct,
    pub b: ConvBnAct,
    pub se: Option<SqueezeExcite>,
    pub c: ConvBnAct,
}

impl RegNetBlock {
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let mut x = self.b.forward(self.a.forward(input.clone()));
        if let Some(se) = &self.se {
            x = se.forward(x);
        }
        let x = self.c.forward(x);
        let shortcut = match &self.proj {
            Some(p) => p.forward(input),
            None => input,
        };
        activation::relu(shortcut + x)
    }

    pub fn export(&self, out: &mut TensorMap) {
        if let Some(p) = &self.proj {
            p.export(out);
        }
        self.a.export(out);
        self.b.export(out);
        if let Some(se) = &self.se {
            se.export(out);
        }
        self.c.export(out);
    }

    pub fn fold_batchnorm(self) -> Self {
        Self {
            proj: self.proj.map(ConvBnAct::fold_batchnorm),
            a: self.a.fold_batchnorm(),
            b: self.b.fold_batchnorm(),
            se: self.se,
            c: self.c.fold_batchnorm(),
        }
    }

    /// The units with a BatchNorm, in order.
    pub fn units(&self) -> impl Iterator<Item = &ConvBnAct> {
        self.proj.iter().chain([&self.a, &self.b, &self.c])
    }
}

/// One stage of a RegNet: its blocks' output width, depth, group width and bottleneck
/// multiplier (every stage's first block has stride 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegNetStage {
    pub width: usize,
    pub depth: usize,
    pub group_width: usize,
    #[serde(default = "one")]
    pub bottleneck_multiplier: f64,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegNetConfig {
    /// Channels of the stem (32 in torchvision).
    pub stem_width: usize,
    pub stages: Vec<RegNetStage>,
    /// Squeeze-excitation width over the block's input width (0.25 in RegNetY; none in X).
    #[serde(default)]
    pub se_ratio: Option<f64>,
}

/// Python's `round` on floats: halves to even.
fn round_half_even(v: f64) -> f64 {
    v.round_ties_even()
}

impl RegNetConfig {
    /// torchvision's `BlockParams.from_init_params` (in float32, as torch computes it) and
    /// `_adjust_widths_groups_compatibilty`, with the stem of 32.
    pub fn from_init_params(
        depth: usize,
        w_0: usize,
        w_a: f64,
        w_m: f64,
        group_width: usize,
        se_ratio: Option<f64>,
    ) -> Self {
        const QUANT: f32 = 8.0;
        let (w0, wa, wm) = (w_0 as f32, w_a as f32, w_m as f32);
        let log_wm = (w_m.ln()) as f32;
        let block_widths: Vec<usize> = (0..depth)
            .map(|i| {
                let cont = i as f32 * wa + w0;
                let capacity = ((cont / w0).ln() / log_wm).round_ties_even();
                ((w0 * wm.powf(capacity) / QUANT).round_ties_even() * QUANT) as usize
            })
            .collect();
        // Consecutive equal widths make one stage.
        let mut stages: Vec<RegNetStage> = Vec::new();
        for w in block_widths {
            match stages.last_mut() {
                Some(s) if s.width == w => s.depth += 1,
                _ => stages.push(RegNetStage {
                    width: w,
                    depth: 1,
                    group_width,
                    bottleneck_multiplier: 1.0,
                }),
            }
        }
        for s in &mut stages {
            let b = s.bottleneck_multiplier;
            let w_bot = (s.width as f64 * b) as usize;
            s.group_width = s.group_width.min(w_bot);
            s.width = (make_divisible(w_bot as f64, s.group_width) as f64 / b) as usize;
        }
        Self {
            stem_width: 32,
            stages,
            se_ratio,
        }
    }

    /// Width of a stage's bottleneck (`int(round(width_out * bottleneck_multiplier))`).
    fn bottleneck(s: &RegNetStage) -> usize {
        round_half_even(s.width as f64 * s.bottleneck_multiplier) as usize
    }
}

impl Family for RegNetConfig {
    /// `stem` (stride 2), then `block1`…`blockN` as torchvision names the trunk's stages.
    fn stages(&self) -> Vec<StageInfo> {
        self.stages
            .iter()
            .enumerate()
            .fold(
                StageList::new().then("stem", self.stem_width, 2),
                |list, (i, s)| list.then(format!("block{}", i + 1), s.width, 2),
            )
            .done()
    }

    fn feature_dim(&self) -> usize {
        self.stages.last().map_or(self.stem_width, |s| s.width)
    }

    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec::linear("fc")
    }

    fn batchnorm(&self) -> Option<BnSpec> {
        Some(BN)
    }

    fn naming_key(&self) -> &'static str {
        "trunk_output.block1.block1-0.f.a.0.weight"
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        let cba = |p: &str, spec: ConvSpec, act: Act| {
            ConvBnAct::load(l, &format!("{p}.0"), &format!("{p}.1"), spec, BN, act)
        };
        let mut stages = vec![Stage {
            blocks: vec![Block::Conv(cba(
                "stem",
                ConvSpec::new(3, self.stem_width, 3, 2),
                Act::Relu,
            ))],
        }];
        let mut width_in = self.stem_width;
        for (i, s) in self.stages.iter().enumerate() {
            let mut blocks = Vec::with_capacity(s.depth);
            for j in 0..s.depth {
                let p = format!("trunk_output.block{}.block{}-{j}", i + 1, i + 1);
                let stride = if j == 0 { 2 } else { 1 };
                let w_b = Self::bottleneck(s);
                let groups = (w_b / s.group_width).max(1);
                let proj = (width_in != s.width || stride != 1).then(|| {
                    cba(
                        &format!("{p}.proj"),
                        ConvSpec::new(width_in, s.width, 1, stride),
                        Act::Identity,
                    )
                });
                let a = cba(
                    &format!("{p}.f.a"),
                    ConvSpec::new(width_in, w_b, 1, 1),
                    Act::Relu,
                );
                let b = cba(
                    &format!("{p}.f.b"),
                    ConvSpec {
                        groups,
                        ..ConvSpec::new(w_b, w_b, 3, stride)
                    },
                    Act::Relu,
                );
                // The SE's width is relative to the block's input.
                let se = self.se_ratio.filter(|r| *r > 0.0).map(|r| {
                    SqueezeExcite::load(
                        l,
                        &format!("{p}.f.se.fc1"),
                        &format!("{p}.f.se.fc2"),
                        w_b,
                        round_half_even(r * width_in as f64) as usize,
                        Act::Relu,
                        false,
                    )
                });
                let c = cba(
                    &format!("{p}.f.c"),
                    ConvSpec::new(w_b, s.width, 1, 1),
                    Act::Identity,
                );
                blocks.push(Block::RegNet(RegNetBlock { proj, a, b, se, c }));
                width_in = s.width;
            }
            stages.push(Stage { blocks });
        }
        stages
    }

    /// torchvision's builders with their IMAGENET1K_V1 preprocessing (resize 256, crop 224,
    /// bilinear) and files; `regnet_y_128gf`, which has no V1 weights, with its
    /// IMAGENET1K_SWAG_E2E_V1 file and transforms (384, bicubic).
    fn entries() -> Vec<ZooEntry> {
        const SE: Option<f64> = Some(0.25);
        type Row = (
            &'static str,
            usize,
            usize,
            f64,
            f64,
            usize,
            Option<f64>,
            &'static str,
        );
        let rows: [Row; 15] = [
            (
                "regnet_y_400mf",
                16,
                48,
                27.89,
                2.09,
                8,
                SE,
                "regnet_y_400mf-c65dace8.pth",
            ),
            (
                "regnet_y_800mf",
                14,
                56,
                38.84,
                2.4,
                16,
                SE,
                "regnet_y_800mf-1b27b58c.pth",
            ),
            (
                "regnet_y_1_6gf",
                27,
                48,
                20.71,
                2.65,
                24,
                SE,
                "regnet_y_1_6gf-b11a554e.pth",
            ),
            (
                "regnet_y_3_2gf",
                21,
                80,
                42.63,
                2.66,
                24,
                SE,
                "regnet_y_3_2gf-b5a9779c.pth",
            ),
            (
                "regnet_y_8gf",
                17,
                192,
                76.82,
                2.19,
                56,
                SE,
                "regnet_y_8gf-d0d0e4a8.pth",
            ),
            (
                "regnet_y_16gf",
                18,
                200,
                106.23,
                2.48,
                112,
                SE,
                "regnet_y_16gf-9e6ed7dd.pth",
            ),
            (
                "regnet_y_32gf",
                20,
                232,
                115.89,
                2.53,
                232,
                SE,
                "regnet_y_32gf-4dee3f7a.pth",
            ),
            (
                "regnet_y_128gf",
                27,
                456,
                160.83,
                2.52,
                264,
                SE,
                "regnet_y_128gf_swag-c8ce3e52.pth",
            ),
            (
                "regnet_x_400mf",
                22,
                24,
                24.48,
                2.54,
                16,
                None,
                "regnet_x_400mf-adf1edd5.pth",
            ),
            (
                "regnet_x_800mf",
                16,
                56,
                35.73,
                2.28,
                16,
                None,
                "regnet_x_800mf-ad17e45c.pth",
            ),
            (
                "regnet_x_1_6gf",
                18,
                80,
                34.01,
                2.25,
                24,
                None,
                "regnet_x_1_6gf-e3633e7f.pth",
            ),
            (
                "regnet_x_3_2gf",
                25,
                88,
                26.31,
                2.25,
                48,
                None,
                "regnet_x_3_2gf-f342aeae.pth",
            ),
            (
                "regnet_x_8gf",
                23,
                80,
                49.56,
                2.88,
                120,
                None,
                "regnet_x_8gf-03ceed89.pth",
            ),
            (
                "regnet_x_16gf",
                22,
                216,
                55.59,
                2.1,
                128,
                None,
                "regnet_x_16gf-2007eb11.pth",
            ),
            (
                "regnet_x_32gf",
                23,
                320,
                69.86,
                2.0,
                168,
                None,
                "regnet_x_32gf-9d47f8d0.pth",
            ),
        ];
        rows.into_iter()
            .map(|(name, depth, w_0, w_a, w_m, group_width, se, file)| {
                let preprocess = if name == "regnet_y_128gf" {
                    Preprocess::imagenet(384, 384, Interpolation::Bicubic)
                } else {
                    Preprocess::imagenet(256, 224, Interpolation::Bilinear)
                };
                ZooEntry::new(
                    name,
                    "torchvision",
                    Self::from_init_params(depth, w_0, w_a, w_m, group_width, se),
                    preprocess,
                )
                .published(torchvision_file(file))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stage widths, depths and groups of every torchvision RegNet, as torchvision 0.29
    /// builds them.
    #[test]
    fn widths_depths_and_groups_are_torchvisions() {
        // (name, widths, depths, groups) per stage.
        type Row = (&'static str, [usize; 4], [usize; 4], [usize; 4]);
        let want: [Row; 15] = [
            (
                "regnet_y_400mf",
                [48, 104, 208, 440],
                [1, 3, 6, 6],
                [6, 13, 26, 55],
            ),
            (
                "regnet_y_800mf",
                [64, 144, 320, 784],
                [1, 3, 8, 2],
                [4, 9, 20, 49],
            ),
            (
                "regnet_y_1_6gf",
                [48, 120, 336, 888],
                [2, 6, 17, 2],
                [2, 5, 14, 37],
            ),
            (
                "regnet_y_3_2gf",
                [72, 216, 576, 1512],
                [2, 5, 13, 1],
                [3, 9, 24, 63],
            ),
            (
                "regnet_y_8gf",
                [224, 448, 896, 2016],
                [2, 4, 10, 1],
                [4, 8, 16, 36],
            ),
            (
                "regnet_y_16gf",
                [224, 448, 1232, 3024],
                [2, 4, 11, 1],
                [2, 4, 11, 27],
            ),
            (
                "regnet_y_32gf",
                [232, 696, 1392, 3712],
                [2, 5, 12, 1],
                [1, 3, 6, 16],
            ),
            (
                "regnet_y_128gf",
                [528, 1056, 2904, 7392],
                [2, 7, 17, 1],
                [2, 4, 11, 28],
            ),
            (
                "regnet_x_400mf",
                [32, 64, 160, 400],
                [1, 2, 7, 12],
                [2, 4, 10, 25],
            ),
            (
                "regnet_x_800mf",
                [64, 128, 288, 672],
                [1, 3, 7, 5],
                [4, 8, 18, 42],
            ),
            (
                "regnet_x_1_6gf",
                [72, 168, 408, 912],
                [2, 4, 10, 2],
                [3, 7, 17, 38],
            ),
            (
                "regnet_x_3_2gf",
                [96, 192, 432, 1008],
                [2, 6, 15, 2],
                [2, 4, 9, 21],
            ),
            (
                "regnet_x_8gf",
                [80, 240, 720, 1920],
                [2, 5, 15, 1],
                [1, 2, 6, 16],
            ),
            (
                "regnet_x_16gf",
                [256, 512, 896, 2048],
                [2, 6, 13, 1],
                [2, 4, 7, 16],
            ),
            (
                "regnet_x_32gf",
                [336, 672, 1344, 2520],
                [2, 7, 13, 1],
                [2, 4, 8, 15],
            ),
        ];
        for (name, widths, depths, groups) in want {
            let e = super::super::find(name).unwrap();
            let super::super::ArchConfig::Regnet(c) = &e.config else {
                panic!("{name} is a RegNet");
            };
            let got = |f: fn(&RegNetStage) -> usize| c.stages.iter().map(f).collect::<Vec<_>>();
            assert_eq!(got(|s| s.width), widths, "{name}");
            assert_eq!(got(|s| s.depth), depths, "{name}");
            let g: Vec<usize> = c
                .stages
                .iter()
                .map(|s| RegNetConfig::bottleneck(s) / s.group_width)
                .collect();
            assert_eq!(g, groups, "{name}");
        }
    }
}
