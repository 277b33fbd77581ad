//! GoogLeNet (torchvision layout: `conv1`, `conv2`, `conv3` and every branch as
//! `BasicConv2d` — a convolution without bias `.conv`, BatchNorm `.bn` with epsilon 0.001,
//! ReLU —; `inception3a` … `inception5b` with `branch1`, `branch2.{0,1}`, `branch3.{0,1}`
//! (a 3x3, as torchvision builds it, not the paper's 5x5) and `branch4.1` after a 3x3
//! stride-1 max pool; max pools with `ceil_mode=True`; `fc`).
//!
//! The published weights run with `transform_input=True` (torchvision sets it whenever
//! weights are given): the ImageNet-normalised input is renormalised channel-wise inside
//! the network, so it is the stem's first block here. The auxiliary classifiers `aux1` and
//! `aux2` (in the published file, used only in training) are read past and dropped: they
//! take no part in inference, the embedding or fine-tuning, and are not exported.

use serde::{Deserialize, Serialize};

use super::family::{ClassifierSpec, Family, StageInfo, StageList};
use super::layers::{Block, BnSpec, ChannelAffine, Concat, basic_conv, max_pool_ceil};
use super::loader::WeightLoader;
use super::network::Stage;
use super::{Interpolation, Preprocess, ZooEntry, torchvision_file};

/// torchvision's `BasicConv2d`: `nn.BatchNorm2d(eps=0.001)`, momentum PyTorch's default.
const BN: BnSpec = BnSpec::new(1e-3, 0.1);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoogLeNetConfig {
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

/// An `Inception` module: name, (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj), and
/// the (kernel, stride) of the max pool after it, if any.
type Module = (&'static str, [usize; 6], Option<[usize; 2]>);

/// torchvision's `Inception` modules.
const MODULES: [Module; 9] = [
    ("inception3a", [64, 96, 128, 16, 32, 32], None),
    ("inception3b", [128, 128, 192, 32, 96, 64], Some([3, 2])),
    ("inception4a", [192, 96, 208, 16, 48, 64], None),
    ("inception4b", [160, 112, 224, 24, 64, 64], None),
    ("inception4c", [128, 128, 256, 24, 64, 64], None),
    ("inception4d", [112, 144, 288, 32, 64, 64], None),
    ("inception4e", [256, 160, 320, 32, 128, 128], Some([2, 2])),
    ("inception5a", [256, 160, 320, 32, 128, 128], None),
    ("inception5b", [384, 192, 384, 48, 128, 128], None),
];

/// Prefixes of the auxiliary classifiers, read past when a file has them.
const AUX: [&str; 2] = ["aux1.", "aux2."];

impl GoogLeNetConfig {
    pub fn torchvision() -> Self {
        Self {
            transform_input: true,
            width_divisor: 1,
        }
    }

    fn width(&self, w: usize) -> usize {
        (w / self.width_divisor.max(1)).max(1)
    }

    /// Output channels of a module.
    fn module_out(&self, c: [usize; 6]) -> usize {
        self.width(c[0]) + self.width(c[2]) + self.width(c[4]) + self.width(c[5])
    }
}

/// Marks every tensor of the file under `prefixes` as read (the auxiliary classifiers).
pub(super) fn skip_prefixed(l: &WeightLoader, prefixes: &[&str]) {
    let names: Vec<&String> = l
        .weights()
        .tensors
        .keys()
        .filter(|k| prefixes.iter().any(|p| k.starts_with(p)))
        .collect();
    for name in names {
        l.skip(name);
    }
}

impl Family for GoogLeNetConfig {
    fn stages(&self) -> Vec<StageInfo> {
        let mut list = StageList::new().then("stem", self.width(192), 8);
        for (name, c, pool) in MODULES {
            list = list.then(name, self.module_out(c), pool.map_or(1, |p| p[1]));
        }
        list.done()
    }

    fn feature_dim(&self) -> usize {
        self.module_out(MODULES[8].1)
    }

    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec::linear("fc")
    }

    fn batchnorm(&self) -> Option<BnSpec> {
        Some(BN)
    }

    fn naming_key(&self) -> &'static str {
        "inception3a.branch2.1.conv.weight"
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        skip_prefixed(l, &AUX);
        let w = |c| self.width(c);
        let conv = |name: &str, io: [usize; 2], k: usize, stride: usize| {
            basic_conv(l, name, io, [k; 2], stride, [k / 2; 2], BN)
        };
        let mut stem = Vec::new();
        if self.transform_input {
            stem.push(Block::ChannelAffine(
                ChannelAffine::torchvision_transform_input(),
            ));
        }
        stem.extend([
            conv("conv1", [3, w(64)], 7, 2),
            max_pool_ceil(3, 2, 0),
            conv("conv2", [w(64), w(64)], 1, 1),
            conv("conv3", [w(64), w(192)], 3, 1),
            max_pool_ceil(3, 2, 0),
        ]);
        let mut stages = vec![Stage { blocks: stem }];
        let mut inp = w(192);
        for (name, c, pool) in MODULES {
            let [c1, c3r, c3, c5r, c5, pp] = c.map(w);
            let b = |branch: &str| format!("{name}.{branch}");
            let mut blocks = vec![Block::Concat(Concat::new(vec![
                vec![conv(&b("branch1"), [inp, c1], 1, 1)],
                vec![
                    conv(&b("branch2.0"), [inp, c3r], 1, 1),
                    conv(&b("branch2.1"), [c3r, c3], 3, 1),
                ],
                vec![
                    conv(&b("branch3.0"), [inp, c5r], 1, 1),
                    conv(&b("branch3.1"), [c5r, c5], 3, 1),
                ],
                vec![
                    max_pool_ceil(3, 1, 1),
                    conv(&b("branch4.1"), [inp, pp], 1, 1),
                ],
            ]))];
            if let Some([k, s]) = pool {
                blocks.push(max_pool_ceil(k, s, 0));
            }
            stages.push(Stage { blocks });
            inp = c1 + c3 + c5 + pp;
        }
        stages
    }

    fn entries() -> Vec<ZooEntry> {
        vec![
            ZooEntry::new(
                "googlenet",
                "torchvision",
                Self::torchvision(),
                Preprocess::imagenet(256, 224, Interpolation::Bilinear),
            )
            .published(torchvision_file("googlenet-1378be20.pth")),
        ]
    }
}
