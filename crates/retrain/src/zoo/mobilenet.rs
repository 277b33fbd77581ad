//! MobileNetV2 and MobileNetV3 (torchvision layouts: `features.N…`, `classifier.N`).

use serde::{Deserialize, Serialize};

use super::family::{ClassifierSpec, Family, HiddenLayer, StageInfo, stem_stages_head};
use super::layers::{
    Act, Block, BnSpec, ConvBnAct, ConvSpec, InvertedPart, InvertedResidual, InvertedSpec, Pad,
    SqueezeExcite,
};
use super::loader::WeightLoader;
use super::network::Stage;
use super::{Interpolation, Preprocess, TORCHVISION, ZooEntry};
use crate::hub::Published;

/// torchvision's MobileNetV2 uses `nn.BatchNorm2d`'s defaults.
const V2_BN: BnSpec = BnSpec::TORCH;
/// torchvision's MobileNetV3: `partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)`.
const V3_BN: BnSpec = BnSpec::new(1e-3, 0.01);

/// torchvision's `_make_divisible`: round to a multiple of `divisor`, never down by >10%.
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut n = (((v + d / 2.0) as usize) / divisor * divisor).max(divisor);
    if (n as f64) < 0.9 * v {
        n += divisor;
    }
    n
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MobileNetV2Config {
    pub width_mult: f64,
    /// Rows of (expand ratio t, channels c, repeats n, stride s).
    pub setting: Vec<[usize; 4]>,
}

impl MobileNetV2Config {
    pub fn standard(width_mult: f64) -> Self {
        Self {
            width_mult,
            setting: vec![
                [1, 16, 1, 1],
                [6, 24, 2, 2],
                [6, 32, 3, 2],
                [6, 64, 4, 2],
                [6, 96, 3, 1],
                [6, 160, 3, 2],
                [6, 320, 1, 1],
            ],
        }
    }

    fn ch(&self, c: usize) -> usize {
        make_divisible(c as f64 * self.width_mult, 8)
    }
}

impl Family for MobileNetV2Config {
    fn stages(&self) -> Vec<StageInfo> {
        let rows = self.setting.iter().map(|&[_, c, _, s]| (self.ch(c), s));
        stem_stages_head(self.ch(32), rows, self.feature_dim())
    }

    fn feature_dim(&self) -> usize {
        make_divisible(1280.0 * self.width_mult.max(1.0), 8)
    }

    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec::linear("classifier.1")
    }

    fn batchnorm(&self) -> Option<BnSpec> {
        Some(V2_BN)
    }

    fn naming_key(&self) -> &'static str {
        "features.1.conv.0.0.weight"
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        let cba = |conv: String, bn: String, spec: ConvSpec, act: Act| {
            ConvBnAct::load(l, &conv, &bn, spec, V2_BN, act)
        };
        let mut inp = self.ch(32);
        let mut stages = vec![Stage {
            blocks: vec![Block::Conv(cba(
                "features.0.0".into(),
                "features.0.1".into(),
                ConvSpec::new(3, inp, 3, 2),
                Act::Relu6,
            ))],
        }];
        let mut idx = 1;
        for &[t, c, n, s] in &self.setting {
            let out = self.ch(c);
            let mut blocks = Vec::new();
            for j in 0..n {
                let stride = if j == 0 { s } else { 1 };
                let spec = InvertedSpec {
                    cin: inp,
                    hidden: (inp as f64 * t as f64).round() as usize,
                    cout: out,
                    kernel: 3,
                    stride,
                    pad: Pad::Symmetric,
                    act: Act::Relu6,
                };
                // torchvision numbers the units: conv.0 (expand), then the depthwise conv
                // and BN, then the projection conv and its BN.
                let p = format!("features.{idx}.conv");
                let k = spec.expands() as usize;
                blocks.push(Block::Inverted(InvertedResidual::load(
                    spec,
                    |part, conv, act| match part {
                        InvertedPart::Expand => {
                            cba(format!("{p}.0.0"), format!("{p}.0.1"), conv, act)
                        }
                        InvertedPart::Depthwise => {
                            cba(format!("{p}.{k}.0"), format!("{p}.{k}.1"), conv, act)
                        }
                        InvertedPart::Project => cba(
                            format!("{p}.{}", k + 1),
                            format!("{p}.{}", k + 2),
                            conv,
                            act,
                        ),
                    },
                    None,
                )));
                inp = out;
                idx += 1;
            }
            stages.push(Stage { blocks });
        }
        stages.push(Stage {
            blocks: vec![Block::Conv(cba(
                format!("features.{idx}.0"),
                format!("features.{idx}.1"),
                ConvSpec::new(inp, self.feature_dim(), 1, 1),
                Act::Relu6,
            ))],
        });
        stages
    }

    fn entries() -> Vec<ZooEntry> {
        // torchvision's MobileNet_V2_Weights.IMAGENET1K_V1 (resize 256; V2 resizes to 232).
        let file = "mobilenet_v2-b0353104.pth";
        vec![
            ZooEntry::new(
                "mobilenet_v2",
                "torchvision",
                Self::standard(1.0),
                Preprocess::imagenet(256, 224, Interpolation::Bilinear),
            )
            .published(Published::torch_hub(
                &format!("{TORCHVISION}{file}"),
                "b0353104",
            )),
        ]
    }
}

/// One MobileNetV3 block: input, kernel, expanded and output channels, SE, hard-swish, stride.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct V3Block {
    pub cin: usize,
    pub kernel: usize,
    pub expanded: usize,
    pub cout: usize,
    pub se: bool,
    pub hardswish: bool,
    pub stride: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MobileNetV3Config {
    pub blocks: Vec<V3Block>,
    /// Width of the classifier's hidden layer (1280 large, 1024 small).
    pub last_channel: usize,
}

impl MobileNetV3Config {
    fn from_rows(rows: &[(usize, usize, usize, usize, bool, bool, usize)], last: usize) -> Self {
        Self {
            blocks: rows
                .iter()
                .map(
                    |&(cin, kernel, expanded, cout, se, hardswish, stride)| V3Block {
                        cin,
                        kernel,
                        expanded,
                        cout,
                        se,
                        hardswish,
                        stride,
                    },
                )
                .collect(),
            last_channel: last,
        }
    }

    pub fn large() -> Self {
        let (f, t) = (false, true);
        Self::from_rows(
            &[
                (16, 3, 16, 16, f, f, 1),
                (16, 3, 64, 24, f, f, 2),
                (24, 3, 72, 24, f, f, 1),
                (24, 5, 72, 40, t, f, 2),
                (40, 5, 120, 40, t, f, 1),
                (40, 5, 120, 40, t, f, 1),
                (40, 3, 240, 80, f, t, 2),
                (80, 3, 200, 80, f, t, 1),
                (80, 3, 184, 80, f, t, 1),
                (80, 3, 184, 80, f, t, 1),
                (80, 3, 480, 112, t, t, 1),
                (112, 3, 672, 112, t, t, 1),
                (112, 5, 672, 160, t, t, 2),
                (160, 5, 960, 160, t, t, 1),
                (160, 5, 960, 160, t, t, 1),
            ],
            1280,
        )
    }

    pub fn small() -> Self {
        let (f, t) = (false, true);
        Self::from_rows(
            &[
                (16, 3, 16, 16, t, f, 2),
                (16, 3, 72, 24, f, f, 2),
                (24, 3, 88, 24, f, f, 1),
                (24, 5, 96, 40, t, t, 2),
                (40, 5, 240, 40, t, t, 1),
                (40, 5, 240, 40, t, t, 1),
                (40, 5, 120, 48, t, t, 1),
                (48, 5, 144, 48, t, t, 1),
                (48, 5, 288, 96, t, t, 2),
                (96, 5, 576, 96, t, t, 1),
                (96, 5, 576, 96, t, t, 1),
            ],
            1024,
        )
    }

    /// Blocks grouped into stages: a new stage starts at every stride-2 block.
    fn stage_bounds(&self) -> Vec<std::ops::Range<usize>> {
        let mut bounds = Vec::new();
        let mut start = 0;
        for (i, b) in self.blocks.iter().enumerate() {
            if b.stride > 1 && i > start {
                bounds.push(start..i);
                start = i;
            }
        }
        bounds.push(start..self.blocks.len());
        bounds
    }
}

impl Family for MobileNetV3Config {
    fn stages(&self) -> Vec<StageInfo> {
        let first = self.blocks.first().map_or(16, |b| b.cin);
        let stages = self.stage_bounds().into_iter().map(|r| {
            let blocks = &self.blocks[r];
            let stride = blocks.iter().map(|b| b.stride).product::<usize>();
            (blocks.last().map_or(first, |b| b.cout), stride)
        });
        stem_stages_head(first, stages, self.feature_dim())
    }

    fn feature_dim(&self) -> usize {
        6 * self.blocks.last().map_or(16, |b| b.cout)
    }

    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec {
            hidden: Some(HiddenLayer {
                prefix: "classifier.0",
                width: self.last_channel,
                act: Act::Hardswish,
            }),
            out: "classifier.3".into(),
            bias: true,
            on_map: false,
        }
    }

    fn batchnorm(&self) -> Option<BnSpec> {
        Some(V3_BN)
    }

    fn naming_key(&self) -> &'static str {
        "features.1.block.0.0.weight"
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        let cba = |p: String, spec: ConvSpec, act: Act| {
            ConvBnAct::load(l, &format!("{p}.0"), &format!("{p}.1"), spec, V3_BN, act)
        };
        let first = self.blocks.first().map_or(16, |b| b.cin);
        let mut stages = vec![Stage {
            blocks: vec![Block::Conv(cba(
                "features.0".into(),
                ConvSpec::new(3, first, 3, 2),
                Act::Hardswish,
            ))],
        }];
        for range in self.stage_bounds() {
            let mut blocks = Vec::new();
            for i in range {
                let b = &self.blocks[i];
                let act = if b.hardswish {
                    Act::Hardswish
                } else {
                    Act::Relu
                };
                let spec = InvertedSpec {
                    cin: b.cin,
                    hidden: b.expanded,
                    cout: b.cout,
                    kernel: b.kernel,
                    stride: b.stride,
                    pad: Pad::Symmetric,
                    act,
                };
                // torchvision numbers the units in order: block.0 (expand, if any), the
                // depthwise, the SE (if any), the projection.
                let p = format!("features.{}.block", i + 1);
                let dw = spec.expands() as usize;
                let se = b.se.then(|| {
                    SqueezeExcite::load(
                        l,
                        &format!("{p}.{}.fc1", dw + 1),
                        &format!("{p}.{}.fc2", dw + 1),
                        b.expanded,
                        make_divisible((b.expanded / 4) as f64, 8),
                        Act::Relu,
                        true,
                    )
                });
                let project = dw + 1 + b.se as usize;
                blocks.push(Block::Inverted(InvertedResidual::load(
                    spec,
                    |part, conv, act| match part {
                        InvertedPart::Expand => cba(format!("{p}.0"), conv, act),
                        InvertedPart::Depthwise => cba(format!("{p}.{dw}"), conv, act),
                        InvertedPart::Project => cba(format!("{p}.{project}"), conv, act),
                    },
                    se,
                )));
            }
            stages.push(Stage { blocks });
        }
        let last = self.blocks.last().map_or(16, |b| b.cout);
        stages.push(Stage {
            blocks: vec![Block::Conv(cba(
                format!("features.{}", self.blocks.len() + 1),
                ConvSpec::new(last, self.feature_dim(), 1, 1),
                Act::Hardswish,
            ))],
        });
        stages
    }

    fn entries() -> Vec<ZooEntry> {
        // torchvision's IMAGENET1K_V1 weights (resize 256; large's V2 resizes to 232).
        [
            (
                "mobilenet_v3_small",
                Self::small(),
                "mobilenet_v3_small-047dcff4.pth",
                "047dcff4",
            ),
            (
                "mobilenet_v3_large",
                Self::large(),
                "mobilenet_v3_large-8738ca79.pth",
                "8738ca79",
            ),
        ]
        .into_iter()
        .map(|(name, config, file, prefix)| {
            ZooEntry::new(
                name,
                "torchvision",
                config,
                Preprocess::imagenet(256, 224, Interpolation::Bilinear),
            )
            .published(Published::torch_hub(
                &format!("{TORCHVISION}{file}"),
                prefix,
            ))
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_divisible_matches_torchvision() {
        assert_eq!(make_divisible(32.0 * 1.0, 8), 32);
        assert_eq!(make_divisible(32.0 * 0.35, 8), 16);
        assert_eq!(make_divisible(16.0 * 0.25, 8), 8);
        assert_eq!(make_divisible(120.0 / 4.0, 8), 32);
        assert_eq!(make_divisible(1280.0, 8), 1280);
    }

    #[test]
    fn v3_stage_grouping() {
        assert_eq!(MobileNetV3Config::large().stage_names().len(), 2 + 5);
        assert_eq!(MobileNetV3Config::small().stage_names().len(), 2 + 4);
    }
}
