//! Inception v3 (torchvision layout: `Conv2d_1a_3x3` … `Conv2d_4a_3x3`, `Mixed_5b` …
//! `Mixed_7c` with their `branch*` units, every unit a `BasicConv2d` — a convolution
//! without bias `.conv` (1x7, 7x1, 1x3 and 3x1 kernels among them), BatchNorm `.bn` with
//! epsilon 0.001, ReLU —; pool branches `F.avg_pool2d(3, 1, 1)` counting the padding; `fc`).
//!
//! The published weights run with `transform_input=True` (torchvision sets it whenever
//! weights are given): the ImageNet-normalised input is renormalised channel-wise inside
//! the network, the stem's first block here. The auxiliary classifier `AuxLogits` (in the
//! published file, used only in training) is read past when present and dropped: it takes
//! no part in inference, the embedding or fine-tuning, and is not exported.

use serde::{Deserialize, Serialize};

use super::family::{ClassifierSpec, Family, StageInfo, StageList};
use super::googlenet::skip_prefixed;
use super::layers::{Block, BnSpec, ChannelAffine, Concat, avg_pool_padded, basic_conv, max_pool};
use super::loader::WeightLoader;
use super::network::Stage;
use super::{Interpolation, Preprocess, ZooEntry, torchvision_file};

/// torchvision's `BasicConv2d`: `nn.BatchNorm2d(eps=0.001)`, momentum PyTorch's default.
const BN: BnSpec = BnSpec::new(1e-3, 0.1);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InceptionV3Config {
    /// torchvision's `transform_input` (true for the published weights).
    pub transform_input: bool,
    /// Every width of torchvision's network divided by this (at least 1 channel each): 1
    /// for torchvision's; reduced variants (fixtures) use more.
    #[serde(default = "one")]
    pub width_divisor: usize,
}

fn one() -> usize {
    1
}

/// The modules after the stem: name, kind, and the width torchvision gives it
/// (`pool_features` of InceptionA, `channels_7x7` of InceptionC).
#[derive(Clone, Copy)]
enum Kind {
    A(usize),
    B,
    C(usize),
    D,
    E,
}

const MODULES: [(&str, Kind); 11] = [
    ("Mixed_5b", Kind::A(32)),
    ("Mixed_5c", Kind::A(64)),
    ("Mixed_5d", Kind::A(64)),
    ("Mixed_6a", Kind::B),
    ("Mixed_6b", Kind::C(128)),
    ("Mixed_6c", Kind::C(160)),
    ("Mixed_6d", Kind::C(160)),
    ("Mixed_6e", Kind::C(192)),
    ("Mixed_7a", Kind::D),
    ("Mixed_7b", Kind::E),
    ("Mixed_7c", Kind::E),
];

impl InceptionV3Config {
    pub fn torchvision() -> Self {
        Self {
            transform_input: true,
            width_divisor: 1,
        }
    }

    fn width(&self, w: usize) -> usize {
        (w / self.width_divisor.max(1)).max(1)
    }

    /// Output channels of a module of `kind` on `inp` channels.
    fn module_out(&self, kind: Kind, inp: usize) -> usize {
        let w = |c| self.width(c);
        match kind {
            Kind::A(pool) => w(64) + w(64) + w(96) + w(pool),
            Kind::B => w(384) + w(96) + inp,
            Kind::C(_) => 4 * w(192),
            Kind::D => w(320) + w(192) + inp,
            Kind::E => w(320) + 4 * w(384) + w(192),
        }
    }

    /// (name, output channels, stride) of every module.
    fn plan(&self) -> Vec<(&'static str, usize, usize)> {
        let mut inp = self.width(192);
        MODULES
            .iter()
            .map(|&(name, kind)| {
                inp = self.module_out(kind, inp);
                let stride = if matches!(kind, Kind::B | Kind::D) {
                    2
                } else {
                    1
                };
                (name, inp, stride)
            })
            .collect()
    }

    fn module(&self, l: &WeightLoader, name: &str, kind: Kind, inp: usize) -> Block {
        let w = |c| self.width(c);
        // A BasicConv2d `name.unit` of a (height, width) kernel, padded to keep the size
        // unless it strides.
        let unit = |unit: &str, io: [usize; 2], k: [usize; 2], stride: usize| {
            let pad = if stride == 1 {
                [k[0] / 2, k[1] / 2]
            } else {
                [0, 0]
            };
            basic_conv(l, &format!("{name}.{unit}"), io, k, stride, pad, BN)
        };
        let pool_branch = |out: usize| {
            vec![
                avg_pool_padded(3, 1, 1),
                unit("branch_pool", [inp, out], [1, 1], 1),
            ]
        };
        let branches = match kind {
            Kind::A(pool) => vec![
                vec![unit("branch1x1", [inp, w(64)], [1, 1], 1)],
                vec![
                    unit("branch5x5_1", [inp, w(48)], [1, 1], 1),
                    unit("branch5x5_2", [w(48), w(64)], [5, 5], 1),
                ],
                vec![
                    unit("branch3x3dbl_1", [inp, w(64)], [1, 1], 1),
                    unit("branch3x3dbl_2", [w(64), w(96)], [3, 3], 1),
                    unit("branch3x3dbl_3", [w(96), w(96)], [3, 3], 1),
                ],
                pool_branch(w(pool)),
            ],
            Kind::B => vec![
                vec![unit("branch3x3", [inp, w(384)], [3, 3], 2)],
                vec![
                    unit("branch3x3dbl_1", [inp, w(64)], [1, 1], 1),
                    unit("branch3x3dbl_2", [w(64), w(96)], [3, 3], 1),
                    unit("branch3x3dbl_3", [w(96), w(96)], [3, 3], 2),
                ],
                vec![max_pool(3, 2, 0)],
            ],
            Kind::C(c7) => {
                let c7 = w(c7);
                vec![
                    vec![unit("branch1x1", [inp, w(192)], [1, 1], 1)],
                    vec![
                        unit("branch7x7_1", [inp, c7], [1, 1], 1),
                        unit("branch7x7_2", [c7, c7], [1, 7], 1),
                        unit("branch7x7_3", [c7, w(192)], [7, 1], 1),
                    ],
                    vec![
                        unit("branch7x7dbl_1", [inp, c7], [1, 1], 1),
                        unit("branch7x7dbl_2", [c7, c7], [7, 1], 1),
                        unit("branch7x7dbl_3", [c7, c7], [1, 7], 1),
                        unit("branch7x7dbl_4", [c7, c7], [7, 1], 1),
                        unit("branch7x7dbl_5", [c7, w(192)], [1, 7], 1),
                    ],
                    pool_branch(w(192)),
                ]
            }
            Kind::D => vec![
                vec![
                    unit("branch3x3_1", [inp, w(192)], [1, 1], 1),
                    unit("branch3x3_2", [w(192), w(320)], [3, 3], 2),
                ],
                vec![
                    unit("branch7x7x3_1", [inp, w(192)], [1, 1], 1),
                    unit("branch7x7x3_2", [w(192), w(192)], [1, 7], 1),
                    unit("branch7x7x3_3", [w(192), w(192)], [7, 1], 1),
                    unit("branch7x7x3_4", [w(192), w(192)], [3, 3], 2),
                ],
                vec![max_pool(3, 2, 0)],
            ],
            Kind::E => {
                // A 1x3 and a 3x1 on the same input, concatenated.
                let split = |a: &str, b: &str, c: usize| {
                    Block::Concat(Concat::new(vec![
                        vec![unit(a, [c, w(384)], [1, 3], 1)],
                        vec![unit(b, [c, w(384)], [3, 1], 1)],
                    ]))
                };
                vec![
                    vec![unit("branch1x1", [inp, w(320)], [1, 1], 1)],
                    vec![
                        unit("branch3x3_1", [inp, w(384)], [1, 1], 1),
                        split("branch3x3_2a", "branch3x3_2b", w(384)),
                    ],
                    vec![
                        unit("branch3x3dbl_1", [inp, w(448)], [1, 1], 1),
                        unit("branch3x3dbl_2", [w(448), w(384)], [3, 3], 1),
                        split("branch3x3dbl_3a", "branch3x3dbl_3b", w(384)),
                    ],
                    pool_branch(w(192)),
                ]
            }
        };
        Block::Concat(Concat::new(branches))
    }
}

impl Family for InceptionV3Config {
    fn stages(&self) -> Vec<StageInfo> {
        self.plan()
            .into_iter()
            .fold(
                StageList::new().then("stem", self.width(192), 8),
                |list, (name, c, s)| list.then(name, c, s),
            )
            .done()
    }

    fn feature_dim(&self) -> usize {
        self.plan().last().map_or(0, |m| m.1)
    }

    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec::linear("fc")
    }

    fn batchnorm(&self) -> Option<BnSpec> {
        Some(BN)
    }

    fn naming_key(&self) -> &'static str {
        "Mixed_5b.branch1x1.conv.weight"
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        skip_prefixed(l, &["AuxLogits."]);
        let w = |c| self.width(c);
        let conv = |name: &str, io: [usize; 2], k: usize, stride: usize, pad: usize| {
            basic_conv(l, name, io, [k; 2], stride, [pad; 2], BN)
        };
        let mut stem = Vec::new();
        if self.transform_input {
            stem.push(Block::ChannelAffine(
                ChannelAffine::torchvision_transform_input(),
            ));
        }
        stem.extend([
            conv("Conv2d_1a_3x3", [3, w(32)], 3, 2, 0),
            conv("Conv2d_2a_3x3", [w(32), w(32)], 3, 1, 0),
            conv("Conv2d_2b_3x3", [w(32), w(64)], 3, 1, 1),
            max_pool(3, 2, 0),
            conv("Conv2d_3b_1x1", [w(64), w(80)], 1, 1, 0),
            conv("Conv2d_4a_3x3", [w(80), w(192)], 3, 1, 0),
            max_pool(3, 2, 0),
        ]);
        let mut stages = vec![Stage { blocks: stem }];
        let mut inp = w(192);
        for (name, kind) in MODULES {
            stages.push(Stage {
                blocks: vec![self.module(l, name, kind, inp)],
            });
            inp = self.module_out(kind, inp);
        }
        stages
    }

    fn entries() -> Vec<ZooEntry> {
        vec![
            ZooEntry::new(
                "inception_v3",
                "torchvision",
                Self::torchvision(),
                Preprocess::imagenet(342, 299, Interpolation::Bilinear),
            )
            .published(torchvision_file("inception_v3_google-0cc3c7bd.pth")),
        ]
    }
}
