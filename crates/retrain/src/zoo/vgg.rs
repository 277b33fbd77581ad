//! VGG (torchvision layout: `features.N` numbered as `make_layers` numbers them, 3x3
//! convolutions with bias, `features.N+1` their BatchNorm in the `_bn` variants, a 2x2 max
//! pool per block; `avgpool` to 7×7, then `classifier.0` / `classifier.3` (Linear + ReLU +
//! Dropout) and the output layer `classifier.6`).
//!
//! The embedding is torchvision's input to the last Linear: `classifier.3`'s output after
//! its ReLU (4096-d). The two hidden Linear layers are the `fc` stage, after the adaptive
//! pool and the NCHW flatten, so cutting or freezing works as for any stage.

use serde::{Deserialize, Serialize};

use super::family::{ClassifierSpec, Family, StageInfo, StageList};
use super::layers::{Act, Block, BnSpec, ConvBnAct, ConvSpec, LinearAct, PoolFlatten, max_pool};
use super::loader::WeightLoader;
use super::network::Stage;
use super::{Interpolation, Preprocess, ZooEntry, torchvision_file};

/// torchvision's `make_layers` uses `nn.BatchNorm2d`'s defaults.
const BN: BnSpec = BnSpec::TORCH;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VggConfig {
    /// (convolutions, channels) per block, each block ending in a 2x2 max pool:
    /// torchvision's cfgs "A" (vgg11) … "E" (vgg19) cut at their "M"s.
    pub blocks: Vec<[usize; 2]>,
    /// A BatchNorm after every convolution (`vgg*_bn`).
    pub batch_norm: bool,
    /// Width of `classifier.0` and `classifier.3` (4096).
    #[serde(default = "default_fc")]
    pub fc: usize,
    /// Side of the adaptive average pool before the classifier (7).
    #[serde(default = "default_pool")]
    pub pool: usize,
}

fn default_fc() -> usize {
    4096
}

fn default_pool() -> usize {
    7
}

impl VggConfig {
    pub fn torchvision(blocks: &[[usize; 2]], batch_norm: bool) -> Self {
        Self {
            blocks: blocks.to_vec(),
            batch_norm,
            fc: 4096,
            pool: 7,
        }
    }

    fn last_channels(&self) -> usize {
        self.blocks.last().map_or(3, |b| b[1])
    }
}

impl Family for VggConfig {
    fn stages(&self) -> Vec<StageInfo> {
        let list = self
            .blocks
            .iter()
            .enumerate()
            .fold(StageList::new(), |list, (b, &[_, channels])| {
                list.then(format!("block{}", b + 1), channels, 2)
            });
        // The pooled map becomes one vector: at the native 224×224 input the last block's
        // 7×7 map (the adaptive pool is then the identity).
        list.then("fc", self.fc, self.pool).done()
    }

    fn feature_dim(&self) -> usize {
        self.fc
    }

    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec::linear("classifier.6")
    }

    fn batchnorm(&self) -> Option<BnSpec> {
        self.batch_norm.then_some(BN)
    }

    fn naming_key(&self) -> &'static str {
        "features.0.weight"
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        let mut stages = Vec::new();
        let mut idx = 0;
        let mut inp = 3;
        for &[n, channels] in &self.blocks {
            let mut blocks = Vec::new();
            for _ in 0..n {
                let conv = format!("features.{idx}");
                let spec = ConvSpec::new(inp, channels, 3, 1).with_bias();
                blocks.push(Block::Conv(if self.batch_norm {
                    let bn = format!("features.{}", idx + 1);
                    idx += 3;
                    ConvBnAct::load(l, &conv, &bn, spec, BN, Act::Relu)
                } else {
                    idx += 2;
                    ConvBnAct::load_plain(l, &conv, spec, Act::Relu)
                }));
                inp = channels;
            }
            blocks.push(max_pool(2, 2, 0));
            idx += 1;
            stages.push(Stage { blocks });
        }
        stages.push(fc_stage(
            l,
            inp,
            self.pool,
            self.fc,
            ["classifier.0", "classifier.3"],
        ));
        debug_assert_eq!(inp, self.last_channels());
        stages
    }

    fn entries() -> Vec<ZooEntry> {
        let cfgs: [(&str, &str, [usize; 5]); 4] = [
            ("vgg11", "vgg11_bn", [1, 1, 2, 2, 2]),
            ("vgg13", "vgg13_bn", [2, 2, 2, 2, 2]),
            ("vgg16", "vgg16_bn", [2, 2, 3, 3, 3]),
            ("vgg19", "vgg19_bn", [2, 2, 4, 4, 4]),
        ];
        let widths = [64, 128, 256, 512, 512];
        let mut entries = Vec::new();
        for batch_norm in [false, true] {
            for (plain, bn, convs) in cfgs {
                let blocks: Vec<[usize; 2]> =
                    convs.iter().zip(widths).map(|(&n, c)| [n, c]).collect();
                let name = if batch_norm { bn } else { plain };
                entries.push(
                    ZooEntry::new(
                        name,
                        "torchvision",
                        Self::torchvision(&blocks, batch_norm),
                        Preprocess::imagenet(256, 224, Interpolation::Bilinear),
                    )
                    .published(torchvision_file(v1_file(name))),
                );
            }
        }
        entries
    }
}

/// The file of torchvision's IMAGENET1K_V1 weights for `name`.
/// torchvision's hidden fully connected layers after the convolutions (VGG's, AlexNet's):
/// the map adaptive-pooled to `pool`×`pool` and flattened in NCHW order, then two Linear +
/// ReLU layers of width `fc` named `names`.
pub(crate) fn fc_stage(
    l: &WeightLoader,
    channels: usize,
    pool: usize,
    fc: usize,
    names: [&str; 2],
) -> Stage {
    Stage {
        blocks: vec![
            Block::PoolFlatten(PoolFlatten { size: [pool; 2] }),
            Block::Linear(LinearAct::load(
                l,
                names[0],
                channels * pool * pool,
                fc,
                Act::Relu,
            )),
            Block::Linear(LinearAct::load(l, names[1], fc, fc, Act::Relu)),
        ],
    }
}

fn v1_file(name: &str) -> &'static str {
    match name {
        "vgg11" => "vgg11-8a719046.pth",
        "vgg11_bn" => "vgg11_bn-6002323d.pth",
        "vgg13" => "vgg13-19584684.pth",
        "vgg13_bn" => "vgg13_bn-abd245e5.pth",
        "vgg16" => "vgg16-397923af.pth",
        "vgg16_bn" => "vgg16_bn-6c64b313.pth",
        "vgg19" => "vgg19-dcbb9e9d.pth",
        _ => "vgg19_bn-c79401a0.pth",
    }
}
