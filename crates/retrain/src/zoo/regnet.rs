//! RegNetX and RegNetY (torchvision layout: `stem.0`/`stem.1` a 3×3 stride-2 convolution,
//! `trunk_output.blockS.blockS-I` the residual bottlenecks — `proj` the projected shortcut,
//! `f.a` 1×1, `f.b` grouped 3×3, `f.se` squeeze-excitation (RegNetY), `f.c` 1×1 —, `fc`).
//! The stage widths are computed as torchvision's `BlockParams.from_init_params` computes
//! them: quantised linear widths, grouped to fit the group width.
//!
//! timm's RegNets (`timm.models.regnet`) are the same network under other names (`stem.conv`/
//! `stem.bn`, `sS.bN.{conv1, conv2, se.fc1, se.fc2, conv3}` each `.conv`/`.bn`,
//! `downsample.conv`/`.bn`, `head.fc`), their widths fitted to the groups by timm's
//! `adjust_widths_groups_comp` (nearest multiple, where torchvision never rounds down by
//! more than 10%).

use burn::prelude::*;
use burn::tensor::activation;
use serde::{Deserialize, Serialize};

use super::family::{ClassifierSpec, Family, Naming, StageInfo, StageList};
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
    #[serde(default, skip_serializing_if = "Naming::is_torchvision")]
    pub naming: Naming,
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
        let params = (depth, w_0, w_a, w_m, group_width);
        Self::generated(params, se_ratio, Naming::Torchvision)
    }

    /// timm's `RegNetCfg` (`generate_regnet`, then `adjust_widths_groups_comp` without a
    /// `group_min_ratio`: each bottleneck width rounded to the nearest multiple of its
    /// group width, halves to even), with the stem of 32, under timm's names.
    pub fn timm(
        depth: usize,
        w_0: usize,
        w_a: f64,
        w_m: f64,
        group_size: usize,
        se_ratio: Option<f64>,
    ) -> Self {
        let params = (depth, w_0, w_a, w_m, group_size);
        Self::generated(params, se_ratio, Naming::Timm)
    }

    /// The stages of (depth, w_0, w_a, w_m, group width) as the origin `naming` names
    /// builds them: the same linear widths, each stage's bottleneck then fitted to its
    /// group width by that origin's rounding (torchvision's `make_divisible`, which never
    /// rounds down by more than 10%; timm's nearest multiple).
    fn generated(
        (depth, w_0, w_a, w_m, group_width): (usize, usize, f64, f64, usize),
        se_ratio: Option<f64>,
        naming: Naming,
    ) -> Self {
        let mut stages = Self::linear_stages(depth, w_0, w_a, w_m, group_width);
        for s in &mut stages {
            let b = s.bottleneck_multiplier;
            let w_bot = (s.width as f64 * b) as usize;
            s.group_width = s.group_width.min(w_bot);
            let g = s.group_width;
            let fitted = match naming {
                Naming::Torchvision => make_divisible(w_bot as f64, g) as f64,
                Naming::Timm => round_half_even(w_bot as f64 / g as f64) * g as f64,
            };
            s.width = (fitted / b) as usize;
        }
        Self {
            stem_width: 32,
            stages,
            se_ratio,
            naming,
        }
    }

    /// The quantised linear block widths both builders start from (torchvision's
    /// `BlockParams.from_init_params`, timm's `generate_regnet`: the same float32
    /// arithmetic), consecutive equal widths made one stage.
    fn linear_stages(
        depth: usize,
        w_0: usize,
        w_a: f64,
        w_m: f64,
        group_width: usize,
    ) -> Vec<RegNetStage> {
        const QUANT: f32 = 8.0;
        let (w0, wa, wm) = (w_0 as f32, w_a as f32, w_m as f32);
        let log_wm = (w_m.ln()) as f32;
        let mut stages: Vec<RegNetStage> = Vec::new();
        for i in 0..depth {
            let cont = i as f32 * wa + w0;
            let capacity = ((cont / w0).ln() / log_wm).round_ties_even();
            let w = ((w0 * wm.powf(capacity) / QUANT).round_ties_even() * QUANT) as usize;
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
        stages
    }

    /// The stem's (convolution, BatchNorm) names.
    fn stem_names(&self) -> (String, String) {
        match self.naming {
            Naming::Torchvision => ("stem.0".into(), "stem.1".into()),
            Naming::Timm => ("stem.conv".into(), "stem.bn".into()),
        }
    }

    /// Block `j` of stage `i`: the names of its units — `proj`, `a`, `b`, `c` as
    /// (convolution, BatchNorm) — and the squeeze-excitation's two convolutions.
    fn block_names(&self, i: usize, j: usize) -> ([(String, String); 4], [String; 2]) {
        let unit = |p: &str, u: &str, conv: &str, bn: &str| {
            (format!("{p}.{u}.{conv}"), format!("{p}.{u}.{bn}"))
        };
        match self.naming {
            Naming::Torchvision => {
                let p = format!("trunk_output.block{}.block{}-{j}", i + 1, i + 1);
                let units = ["proj", "f.a", "f.b", "f.c"].map(|u| unit(&p, u, "0", "1"));
                let se = [format!("{p}.f.se.fc1"), format!("{p}.f.se.fc2")];
                (units, se)
            }
            Naming::Timm => {
                let p = format!("s{}.b{}", i + 1, j + 1);
                let units =
                    ["downsample", "conv1", "conv2", "conv3"].map(|u| unit(&p, u, "conv", "bn"));
                let se = [format!("{p}.se.fc1"), format!("{p}.se.fc2")];
                (units, se)
            }
        }
    }

    /// Width of a stage's bottleneck (`int(round(width_out * bottleneck_multiplier))`).
    fn bottleneck(s: &RegNetStage) -> usize {
        round_half_even(s.width as f64 * s.bottleneck_multiplier) as usize
    }
}

impl Family for RegNetConfig {
    /// `stem` (stride 2), then `block1`…`blockN` as torchvision names the trunk's stages
    /// (timm: `s1`…`sN`).
    fn stages(&self) -> Vec<StageInfo> {
        let stage = self.naming.pick("block", "s");
        self.stages
            .iter()
            .enumerate()
            .fold(
                StageList::new().then("stem", self.stem_width, 2),
                |list, (i, s)| list.then(format!("{stage}{}", i + 1), s.width, 2),
            )
            .done()
    }

    fn feature_dim(&self) -> usize {
        self.stages.last().map_or(self.stem_width, |s| s.width)
    }

    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec::linear(self.naming.pick("fc", "head.fc"))
    }

    fn batchnorm(&self) -> Option<BnSpec> {
        Some(BN)
    }

    fn naming_key(&self) -> &'static str {
        self.naming.pick(
            "trunk_output.block1.block1-0.f.a.0.weight",
            "s1.b1.conv1.conv.weight",
        )
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        let cba = |(conv, bn): &(String, String), spec: ConvSpec, act: Act| {
            ConvBnAct::load(l, conv, bn, spec, BN, act)
        };
        let mut stages = vec![Stage {
            blocks: vec![Block::Conv(cba(
                &self.stem_names(),
                ConvSpec::new(3, self.stem_width, 3, 2),
                Act::Relu,
            ))],
        }];
        let mut width_in = self.stem_width;
        for (i, s) in self.stages.iter().enumerate() {
            let mut blocks = Vec::with_capacity(s.depth);
            for j in 0..s.depth {
                let ([proj_names, a_names, b_names, c_names], se_names) = self.block_names(i, j);
                let stride = if j == 0 { 2 } else { 1 };
                let w_b = Self::bottleneck(s);
                let groups = (w_b / s.group_width).max(1);
                let proj = (width_in != s.width || stride != 1).then(|| {
                    cba(
                        &proj_names,
                        ConvSpec::new(width_in, s.width, 1, stride),
                        Act::Identity,
                    )
                });
                let a = cba(&a_names, ConvSpec::new(width_in, w_b, 1, 1), Act::Relu);
                let b = cba(
                    &b_names,
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
                        &se_names[0],
                        &se_names[1],
                        w_b,
                        round_half_even(r * width_in as f64) as usize,
                        Act::Relu,
                        false,
                    )
                });
                let c = cba(&c_names, ConvSpec::new(w_b, s.width, 1, 1), Act::Identity);
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
        let torchvision =
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
                });
        // timm's default tags (`regnet{x,y}_*`), with their `pretrained_cfg` (bicubic at
        // 224; crop_pct 0.965 for the tv2 recipe, 0.95 for ra/ra3, 0.875 for pycls). Their
        // weights are on the Hugging Face hub (`timm/<name>`), whose hashes are not
        // recorded here: none are listed.
        type TimmRow = (
            &'static str,
            usize,
            usize,
            f64,
            f64,
            usize,
            Option<f64>,
            f64,
        );
        let timm: [TimmRow; 8] = [
            (
                "timm/regnetx_008.tv2_in1k",
                16,
                56,
                35.73,
                2.28,
                16,
                None,
                0.965,
            ),
            (
                "timm/regnetx_016.tv2_in1k",
                18,
                80,
                34.01,
                2.25,
                24,
                None,
                0.965,
            ),
            (
                "timm/regnetx_032.tv2_in1k",
                25,
                88,
                26.31,
                2.25,
                48,
                None,
                0.965,
            ),
            (
                "timm/regnety_004.tv2_in1k",
                16,
                48,
                27.89,
                2.09,
                8,
                SE,
                0.965,
            ),
            (
                "timm/regnety_008.pycls_in1k",
                14,
                56,
                38.84,
                2.4,
                16,
                SE,
                0.875,
            ),
            (
                "timm/regnety_016.tv2_in1k",
                27,
                48,
                20.71,
                2.65,
                24,
                SE,
                0.965,
            ),
            (
                "timm/regnety_032.ra_in1k",
                21,
                80,
                42.63,
                2.66,
                24,
                SE,
                0.95,
            ),
            (
                "timm/regnety_040.ra3_in1k",
                22,
                96,
                31.41,
                2.24,
                64,
                SE,
                0.95,
            ),
        ];
        let timm =
            timm.into_iter()
                .map(|(name, depth, w_0, w_a, w_m, group_size, se, crop_pct)| {
                    ZooEntry::new(
                        name,
                        "timm",
                        Self::timm(depth, w_0, w_a, w_m, group_size, se),
                        Preprocess::timm(224, crop_pct),
                    )
                });
        torchvision.chain(timm).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, widths, depths, groups) per stage.
    type Row<'a> = (&'a str, [usize; 4], [usize; 4], [usize; 4]);

    /// Stage widths, depths and groups of every torchvision RegNet, as torchvision 0.29
    /// builds them.
    #[test]
    fn widths_depths_and_groups_are_torchvisions() {
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
        for row in want {
            assert_stages_are(row);
        }
    }

    /// The zoo entry `name`'s stage widths, depths and groups are these.
    fn assert_stages_are((name, widths, depths, groups): Row) {
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

    /// timm's RegNets' stage widths, depths and groups, as timm 1.0.31 builds them
    /// (`timm.create_model(name)`): regnety_008's last stage is 768 wide in timm, 784 in
    /// torchvision.
    #[test]
    fn timm_widths_depths_and_groups_are_timms() {
        let want: [Row; 8] = [
            (
                "regnetx_008.tv2_in1k",
                [64, 128, 288, 672],
                [1, 3, 7, 5],
                [4, 8, 18, 42],
            ),
            (
                "regnetx_016.tv2_in1k",
                [72, 168, 408, 912],
                [2, 4, 10, 2],
                [3, 7, 17, 38],
            ),
            (
                "regnetx_032.tv2_in1k",
                [96, 192, 432, 1008],
                [2, 6, 15, 2],
                [2, 4, 9, 21],
            ),
            (
                "regnety_004.tv2_in1k",
                [48, 104, 208, 440],
                [1, 3, 6, 6],
                [6, 13, 26, 55],
            ),
            (
                "regnety_008.pycls_in1k",
                [64, 128, 320, 768],
                [1, 3, 8, 2],
                [4, 8, 20, 48],
            ),
            (
                "regnety_016.tv2_in1k",
                [48, 120, 336, 888],
                [2, 6, 17, 2],
                [2, 5, 14, 37],
            ),
            (
                "regnety_032.ra_in1k",
                [72, 216, 576, 1512],
                [2, 5, 13, 1],
                [3, 9, 24, 63],
            ),
            (
                "regnety_040.ra3_in1k",
                [128, 192, 512, 1088],
                [2, 6, 12, 2],
                [2, 3, 8, 17],
            ),
        ];
        for (name, widths, depths, groups) in want {
            assert_stages_are((&format!("timm/{name}"), widths, depths, groups));
        }
    }
}
