//! ShuffleNetV2 (torchvision layout: `conv1.0`/`conv1.1` and a 3×3 max pool, `stage2`…
//! `stage4` of units — `branch1.{0,2}` and `branch2.{0,3,5}` with their BatchNorms after
//! them —, `conv5.0`/`conv5.1`, `fc`). A stride-2 unit runs both branches on its input; a
//! stride-1 unit passes the first half of its channels through and runs `branch2` on the
//! second; both concatenate and shuffle the channels in two groups.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::family::{ClassifierSpec, Family, StageInfo, StageList};
use super::layers::{Act, Block, BnSpec, ConvBnAct, ConvSpec, TensorMap, max_pool};
use super::loader::WeightLoader;
use super::network::Stage;
use super::{Interpolation, Preprocess, ZooEntry, torchvision_file};

/// torchvision builds ShuffleNetV2 with `nn.BatchNorm2d`'s defaults.
const BN: BnSpec = BnSpec::TORCH;

/// One ShuffleNetV2 unit; `branch1` is empty in a stride-1 unit.
#[derive(Module, Debug)]
pub struct ShuffleUnit {
    pub branch1: Vec<ConvBnAct>,
    pub branch2: Vec<ConvBnAct>,
}

fn run(units: &[ConvBnAct], x: Tensor<4>) -> Tensor<4> {
    units.iter().fold(x, |x, u| u.forward(x))
}

/// torchvision's `channel_shuffle(x, 2)`: channels (g, c/g) transposed to (c/g, g).
pub fn channel_shuffle(x: Tensor<4>, groups: usize) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, groups, c / groups, h * w])
        .swap_dims(1, 2)
        .reshape([n, c, h, w])
}

impl ShuffleUnit {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let out = if self.branch1.is_empty() {
            let c = x.dims()[1];
            let first = x.clone().narrow(1, 0, c / 2);
            let second = x.narrow(1, c / 2, c - c / 2);
            Tensor::cat(vec![first, run(&self.branch2, second)], 1)
        } else {
            Tensor::cat(
                vec![run(&self.branch1, x.clone()), run(&self.branch2, x)],
                1,
            )
        };
        channel_shuffle(out, 2)
    }

    pub fn export(&self, out: &mut TensorMap) {
        for u in self.branch1.iter().chain(&self.branch2) {
            u.export(out);
        }
    }

    pub fn fold_batchnorm(self) -> Self {
        let fold = |v: Vec<ConvBnAct>| v.into_iter().map(ConvBnAct::fold_batchnorm).collect();
        Self {
            branch1: fold(self.branch1),
            branch2: fold(self.branch2),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShuffleNetV2Config {
    /// Units of stage2, stage3, stage4 (torchvision: 4, 8, 4).
    pub repeats: Vec<usize>,
    /// Output channels of conv1, stage2, stage3, stage4 and conv5.
    pub channels: Vec<usize>,
}

impl ShuffleNetV2Config {
    pub fn new(channels: [usize; 5]) -> Self {
        Self {
            repeats: vec![4, 8, 4],
            channels: channels.to_vec(),
        }
    }
}

impl Family for ShuffleNetV2Config {
    /// `conv1` (with the max pool: stride 4), `stage2`…`stage4`, `conv5`, as torchvision
    /// names them.
    fn stages(&self) -> Vec<StageInfo> {
        let c = &self.channels;
        (0..self.repeats.len())
            .fold(StageList::new().then("conv1", c[0], 4), |list, i| {
                list.then(format!("stage{}", i + 2), c[i + 1], 2)
            })
            .then("conv5", self.feature_dim(), 1)
            .done()
    }

    fn feature_dim(&self) -> usize {
        self.channels.last().copied().unwrap_or(0)
    }

    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec::linear("fc")
    }

    fn batchnorm(&self) -> Option<BnSpec> {
        Some(BN)
    }

    fn naming_key(&self) -> &'static str {
        "stage2.0.branch1.0.weight"
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        let cba = |conv: String, bn: String, spec: ConvSpec, act: Act| {
            ConvBnAct::load(l, &conv, &bn, spec, BN, act)
        };
        let seq = |p: &str, i: usize, spec: ConvSpec, act: Act| {
            cba(format!("{p}.{i}"), format!("{p}.{}", i + 1), spec, act)
        };
        let c = &self.channels;
        let mut stages = vec![Stage {
            blocks: vec![
                Block::Conv(seq("conv1", 0, ConvSpec::new(3, c[0], 3, 2), Act::Relu)),
                max_pool(3, 2, 1),
            ],
        }];
        let mut cin = c[0];
        for (s, &repeats) in self.repeats.iter().enumerate() {
            let cout = c[s + 1];
            let half = cout / 2;
            let mut blocks = Vec::with_capacity(repeats);
            for u in 0..repeats {
                let p = format!("stage{}.{u}", s + 2);
                let stride = if u == 0 { 2 } else { 1 };
                let b1 = format!("{p}.branch1");
                let b2 = format!("{p}.branch2");
                let branch1 = if stride > 1 {
                    vec![
                        seq(&b1, 0, ConvSpec::depthwise(cin, 3, stride), Act::Identity),
                        seq(&b1, 2, ConvSpec::new(cin, half, 1, 1), Act::Relu),
                    ]
                } else {
                    Vec::new()
                };
                let b2_in = if stride > 1 { cin } else { half };
                let branch2 = vec![
                    seq(&b2, 0, ConvSpec::new(b2_in, half, 1, 1), Act::Relu),
                    seq(&b2, 3, ConvSpec::depthwise(half, 3, stride), Act::Identity),
                    seq(&b2, 5, ConvSpec::new(half, half, 1, 1), Act::Relu),
                ];
                blocks.push(Block::Shuffle(ShuffleUnit { branch1, branch2 }));
                cin = cout;
            }
            stages.push(Stage { blocks });
        }
        stages.push(Stage {
            blocks: vec![Block::Conv(seq(
                "conv5",
                0,
                ConvSpec::new(cin, self.feature_dim(), 1, 1),
                Act::Relu,
            ))],
        });
        stages
    }

    /// torchvision's builders with their IMAGENET1K_V1 transforms (x1.5 and x2.0, trained
    /// later, resize to 232) and files.
    fn entries() -> Vec<ZooEntry> {
        [
            (
                "shufflenet_v2_x0_5",
                [24, 48, 96, 192, 1024],
                256,
                "shufflenetv2_x0.5-f707e7126e.pth",
            ),
            (
                "shufflenet_v2_x1_0",
                [24, 116, 232, 464, 1024],
                256,
                "shufflenetv2_x1-5666bf0f80.pth",
            ),
            (
                "shufflenet_v2_x1_5",
                [24, 176, 352, 704, 1024],
                232,
                "shufflenetv2_x1_5-3c479a10.pth",
            ),
            (
                "shufflenet_v2_x2_0",
                [24, 244, 488, 976, 2048],
                232,
                "shufflenetv2_x2_0-8be3c8ee.pth",
            ),
        ]
        .into_iter()
        .map(|(name, channels, resize, file)| {
            ZooEntry::new(
                name,
                "torchvision",
                Self::new(channels),
                Preprocess::imagenet(resize, 224, Interpolation::Bilinear),
            )
            .published(torchvision_file(file))
        })
        .collect()
    }
}
