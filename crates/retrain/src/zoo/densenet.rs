//! DenseNet (torchvision layout: `features.conv0/norm0`, `features.denseblockN.denselayerM.
//! norm1/conv1/norm2/conv2`, `features.transitionN.norm/conv`, `features.norm5`,
//! `classifier`). Checkpoints from before torchvision 0.3 name a dense layer's parts
//! `norm.1`, `conv.1`, `norm.2`, `conv.2`; they load as well (torchvision renames them with
//! a regex in its loader; here the loader maps the names).

use serde::{Deserialize, Serialize};

use super::family::{ClassifierSpec, Family, StageInfo, StageList};
use super::layers::{
    Act, Block, BnAct, BnSpec, ConvBnAct, ConvSpec, DenseBlock, DenseLayer, avg_pool, max_pool,
};
use super::loader::WeightLoader;
use super::network::Stage;
use super::{Interpolation, Preprocess, ZooEntry, torchvision_file};
use crate::weights::Weights;

/// torchvision builds DenseNet with `nn.BatchNorm2d`'s defaults.
const BN: BnSpec = BnSpec::TORCH;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenseNetConfig {
    /// Channels each dense layer adds (32; 48 in densenet161).
    pub growth_rate: usize,
    /// Dense layers per block.
    pub block_config: Vec<usize>,
    /// Channels of the stem (64; 96 in densenet161).
    pub num_init_features: usize,
    /// The bottleneck's width in multiples of the growth rate (4).
    pub bn_size: usize,
}

impl DenseNetConfig {
    pub fn torchvision(
        growth_rate: usize,
        block_config: &[usize],
        num_init_features: usize,
    ) -> Self {
        Self {
            growth_rate,
            block_config: block_config.to_vec(),
            num_init_features,
            bn_size: 4,
        }
    }

    /// Channels after each dense block (before its transition halves them).
    fn block_channels(&self) -> Vec<usize> {
        let mut c = self.num_init_features;
        let last = self.block_config.len().saturating_sub(1);
        self.block_config
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let out = c + n * self.growth_rate;
                c = if i == last { out } else { out / 2 };
                out
            })
            .collect()
    }
}

/// Where a file names a dense layer's part as torchvision did before 0.3 (`norm.1` for
/// `norm1`), maps the architecture's names onto the file's.
fn accept_old_name(l: &WeightLoader, part: &str) {
    let Some((layer, tail)) = part.rsplit_once('.') else {
        return;
    };
    let (kind, n) = tail.split_at(tail.len() - 1);
    for suffix in ["weight", "bias", "running_mean", "running_var"] {
        let new = format!("{part}.{suffix}");
        let old = format!("{layer}.{kind}.{n}.{suffix}");
        if !l.has(&new) && l.weights().get(&old).is_some() {
            l.alias(&new, &old);
        }
    }
}

impl Family for DenseNetConfig {
    fn stages(&self) -> Vec<StageInfo> {
        let channels = self.block_channels();
        let last = channels.len() - 1;
        let mut list = StageList::new().then("stem", self.num_init_features, 4);
        for (i, &c) in channels.iter().enumerate() {
            list = list.then(format!("denseblock{}", i + 1), c, 1);
            if i < last {
                list = list.then(format!("transition{}", i + 1), c / 2, 2);
            }
        }
        list.then("norm5", channels[last], 1).done()
    }

    fn feature_dim(&self) -> usize {
        self.block_channels()
            .last()
            .copied()
            .unwrap_or(self.num_init_features)
    }

    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec::linear("classifier")
    }

    fn batchnorm(&self) -> Option<BnSpec> {
        Some(BN)
    }

    fn naming_key(&self) -> &'static str {
        "features.denseblock1.denselayer1.conv1.weight"
    }

    fn fits_naming(&self, weights: &Weights) -> bool {
        weights.get(self.naming_key()).is_some()
            || weights
                .get("features.denseblock1.denselayer1.conv.1.weight")
                .is_some()
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        let init = self.num_init_features;
        let mut stages = vec![Stage {
            blocks: vec![
                Block::Conv(ConvBnAct::load(
                    l,
                    "features.conv0",
                    "features.norm0",
                    ConvSpec::new(3, init, 7, 2),
                    BN,
                    Act::Relu,
                )),
                max_pool(3, 2, 1),
            ],
        }];
        let mut c = init;
        let last = self.block_config.len() - 1;
        let inner = self.bn_size * self.growth_rate;
        for (i, &n) in self.block_config.iter().enumerate() {
            let b = i + 1;
            let mut layers = Vec::with_capacity(n);
            for j in 1..=n {
                let p = format!("features.denseblock{b}.denselayer{j}");
                for part in ["norm1", "conv1", "norm2", "conv2"] {
                    accept_old_name(l, &format!("{p}.{part}"));
                }
                layers.push(DenseLayer {
                    norm1: BnAct::load(l, &format!("{p}.norm1"), c, BN, Act::Relu),
                    conv1: ConvBnAct::load(
                        l,
                        &format!("{p}.conv1"),
                        &format!("{p}.norm2"),
                        ConvSpec::new(c, inner, 1, 1),
                        BN,
                        Act::Relu,
                    ),
                    conv2: ConvBnAct::load_conv(
                        l,
                        &format!("{p}.conv2"),
                        ConvSpec::new(inner, self.growth_rate, 3, 1),
                        Act::Identity,
                    ),
                });
                c += self.growth_rate;
            }
            stages.push(Stage {
                blocks: vec![Block::Dense(DenseBlock { layers })],
            });
            if i < last {
                let p = format!("features.transition{b}");
                stages.push(Stage {
                    blocks: vec![
                        Block::BnAct(BnAct::load(l, &format!("{p}.norm"), c, BN, Act::Relu)),
                        Block::Conv(ConvBnAct::load_conv(
                            l,
                            &format!("{p}.conv"),
                            ConvSpec::new(c, c / 2, 1, 1),
                            Act::Identity,
                        )),
                        avg_pool(2, 2),
                    ],
                });
                c /= 2;
            }
        }
        // torchvision's forward: `F.relu(features(x))` (features ends in norm5), then pools.
        stages.push(Stage {
            blocks: vec![Block::BnAct(BnAct::load(
                l,
                "features.norm5",
                c,
                BN,
                Act::Relu,
            ))],
        });
        stages
    }

    fn entries() -> Vec<ZooEntry> {
        [
            ("densenet121", 32, [6, 12, 24, 16], 64),
            ("densenet161", 48, [6, 12, 36, 24], 96),
            ("densenet169", 32, [6, 12, 32, 32], 64),
            ("densenet201", 32, [6, 12, 48, 32], 64),
        ]
        .into_iter()
        .map(|(name, growth, blocks, init)| {
            let file = match name {
                "densenet121" => "densenet121-a639ec97.pth",
                "densenet161" => "densenet161-8d451a50.pth",
                "densenet169" => "densenet169-b2777c0a.pth",
                _ => "densenet201-c1103571.pth",
            };
            ZooEntry::new(
                name,
                "torchvision",
                Self::torchvision(growth, &blocks, init),
                Preprocess::imagenet(256, 224, Interpolation::Bilinear),
            )
            .published(torchvision_file(file))
        })
        .collect()
    }
}
