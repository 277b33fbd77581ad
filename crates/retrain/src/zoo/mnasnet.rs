//! MNASNet-B1 (torchvision layout, version 2: the stem scaled with the width too):
//! `layers.0`–`layers.7` the stem (3×3 stride-2 convolution, depthwise 3×3, 1×1),
//! `layers.8`–`layers.13` stacks of inverted residuals (`layers.S.I.layers.{0,3,6}` and
//! their BatchNorms `.{1,4,7}`), `layers.14`/`layers.15` the 1×1 to 1280, `classifier.1`.

use serde::{Deserialize, Serialize};

use super::family::{ClassifierSpec, Family, StageInfo, stem_stages_head};
use super::layers::{
    Act, Block, BnSpec, ConvBnAct, ConvSpec, InvertedPart, InvertedResidual, InvertedSpec, Pad,
};
use super::loader::WeightLoader;
use super::network::Stage;
use super::{Interpolation, Preprocess, ZooEntry, torchvision_file};

/// torchvision's `_BN_MOMENTUM = 1 - 0.9997` (the TF recipe's decay), epsilon PyTorch's.
const BN: BnSpec = BnSpec::new(1e-5, 1.0 - 0.9997);

/// The stacks' (kernel, stride, expansion, repeats), as torchvision's `MNASNet` lists them.
const STACKS: [(usize, usize, usize, usize); 6] = [
    (3, 2, 3, 3),
    (5, 2, 3, 3),
    (5, 2, 6, 3),
    (3, 1, 6, 2),
    (5, 2, 6, 4),
    (3, 1, 6, 1),
];

/// Width of torchvision's last 1×1 convolution (fixed, whatever the width multiplier).
const HEAD: usize = 1280;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MnasNetConfig {
    /// The eight widths (stem, stem's projection, the six stacks): torchvision's
    /// `_get_depths(alpha)`.
    pub depths: Vec<usize>,
    /// Repeats of each stack (torchvision: 3, 3, 3, 2, 4, 1).
    #[serde(default = "default_repeats")]
    pub repeats: Vec<usize>,
    /// Width of the last 1×1 convolution, the features (1280 in torchvision).
    #[serde(default = "default_head")]
    pub head: usize,
}

fn default_head() -> usize {
    HEAD
}

fn default_repeats() -> Vec<usize> {
    STACKS.iter().map(|s| s.3).collect()
}

/// torchvision's `_round_to_multiple_of(val, 8)`: the nearest multiple of 8, rounded up
/// when rounding down would lose more than 10%.
fn round_to_multiple_of(val: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let new = ((((val + d / 2.0) as usize) / divisor) * divisor).max(divisor);
    if new as f64 >= 0.9 * val {
        new
    } else {
        new + divisor
    }
}

impl MnasNetConfig {
    pub fn alpha(alpha: f64) -> Self {
        Self {
            depths: [32, 16, 24, 40, 80, 96, 192, 320]
                .iter()
                .map(|&d| round_to_multiple_of(d as f64 * alpha, 8))
                .collect(),
            repeats: default_repeats(),
            head: HEAD,
        }
    }
}

impl Family for MnasNetConfig {
    /// `stem` (`layers.0`–`7`, stride 2), `stage1`…`stage6` (`layers.8`–`13`), `head`.
    fn stages(&self) -> Vec<StageInfo> {
        let rows = STACKS
            .iter()
            .zip(&self.depths[2..])
            .map(|(&(_, stride, _, _), &c)| (c, stride));
        stem_stages_head(self.depths[1], rows, self.head)
    }

    fn feature_dim(&self) -> usize {
        self.head
    }

    /// `classifier.0` is the dropout.
    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec::linear("classifier.1")
    }

    fn batchnorm(&self) -> Option<BnSpec> {
        Some(BN)
    }

    fn naming_key(&self) -> &'static str {
        "layers.8.0.layers.0.weight"
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        let unit = |conv: usize, prefix: &str, spec: ConvSpec, act: Act| {
            ConvBnAct::load(
                l,
                &format!("{prefix}{conv}"),
                &format!("{prefix}{}", conv + 1),
                spec,
                BN,
                act,
            )
        };
        let d = &self.depths;
        let mut stages = vec![Stage {
            blocks: vec![
                Block::Conv(unit(0, "layers.", ConvSpec::new(3, d[0], 3, 2), Act::Relu)),
                Block::Conv(unit(
                    3,
                    "layers.",
                    ConvSpec::depthwise(d[0], 3, 1),
                    Act::Relu,
                )),
                Block::Conv(unit(
                    6,
                    "layers.",
                    ConvSpec::new(d[0], d[1], 1, 1),
                    Act::Identity,
                )),
            ],
        }];
        let mut cin = d[1];
        for (s, (&(kernel, stride, expand, _), &repeats)) in
            STACKS.iter().zip(&self.repeats).enumerate()
        {
            let cout = d[s + 2];
            let mut blocks = Vec::with_capacity(repeats);
            for b in 0..repeats {
                let p = format!("layers.{}.{b}.layers.", s + 8);
                let spec = InvertedSpec {
                    cin,
                    hidden: cin * expand,
                    cout,
                    kernel,
                    stride: if b == 0 { stride } else { 1 },
                    pad: Pad::Symmetric,
                    act: Act::Relu,
                };
                blocks.push(Block::Inverted(InvertedResidual::load(
                    spec,
                    |part, conv, act| {
                        let n = match part {
                            InvertedPart::Expand => 0,
                            InvertedPart::Depthwise => 3,
                            InvertedPart::Project => 6,
                        };
                        unit(n, &p, conv, act)
                    },
                    None,
                )));
                cin = cout;
            }
            stages.push(Stage { blocks });
        }
        stages.push(Stage {
            blocks: vec![Block::Conv(unit(
                14,
                "layers.",
                ConvSpec::new(cin, self.head, 1, 1),
                Act::Relu,
            ))],
        });
        stages
    }

    /// torchvision's builders with their IMAGENET1K_V1 transforms (0.75 and 1.3, trained
    /// later, resize to 232) and files.
    fn entries() -> Vec<ZooEntry> {
        [
            (
                "mnasnet0_5",
                0.5,
                256,
                "mnasnet0.5_top1_67.823-3ffadce67e.pth",
            ),
            ("mnasnet0_75", 0.75, 232, "mnasnet0_75-7090bc5f.pth"),
            (
                "mnasnet1_0",
                1.0,
                256,
                "mnasnet1.0_top1_73.512-f206786ef8.pth",
            ),
            ("mnasnet1_3", 1.3, 232, "mnasnet1_3-a4c69d6f.pth"),
        ]
        .into_iter()
        .map(|(name, alpha, resize, file)| {
            ZooEntry::new(
                name,
                "torchvision",
                Self::alpha(alpha),
                Preprocess::imagenet(resize, 224, Interpolation::Bilinear),
            )
            .published(torchvision_file(file))
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depths_are_torchvisions() {
        assert_eq!(
            MnasNetConfig::alpha(0.5).depths,
            [16, 8, 16, 24, 40, 48, 96, 160]
        );
        assert_eq!(
            MnasNetConfig::alpha(1.0).depths,
            [32, 16, 24, 40, 80, 96, 192, 320]
        );
    }
}
