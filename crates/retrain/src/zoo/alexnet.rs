//! AlexNet (torchvision layout: `features.{0,3,6,8,10}` convolutions with bias, each with
//! its ReLU, 3x3 stride-2 max pools after the first, second and fifth; `avgpool` to 6×6,
//! then `classifier.1` / `classifier.4` (Dropout + Linear + ReLU) and the output layer
//! `classifier.6`).
//!
//! The embedding is torchvision's input to the last Linear: `classifier.4`'s output after
//! its ReLU (4096-d). As in VGG, the two hidden Linear layers are the `fc` stage, after the
//! adaptive pool and the NCHW flatten.

use serde::{Deserialize, Serialize};

use super::family::{ClassifierSpec, Family, StageInfo, StageList};
use super::layers::{Act, Block, BnSpec, ConvBnAct, ConvSpec, Pad, max_pool};
use super::loader::WeightLoader;
use super::network::Stage;
use super::{Interpolation, Preprocess, ZooEntry, torchvision_file};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlexNetConfig {
    /// Output channels of the five convolutions (64, 192, 384, 256, 256).
    pub channels: [usize; 5],
    /// Width of `classifier.1` and `classifier.4` (4096).
    pub fc: usize,
    /// Side of the adaptive average pool before the classifier (6).
    pub pool: usize,
}

impl AlexNetConfig {
    pub fn torchvision() -> Self {
        Self {
            channels: [64, 192, 384, 256, 256],
            fc: 4096,
            pool: 6,
        }
    }
}

/// (kernel, stride, padding, followed by a max pool) of each convolution.
const CONVS: [(usize, usize, usize, bool); 5] = [
    (11, 4, 2, true),
    (5, 1, 2, true),
    (3, 1, 1, false),
    (3, 1, 1, false),
    (3, 1, 1, true),
];

/// `features.N` of each convolution, as torchvision's Sequential numbers them.
const INDICES: [usize; 5] = [0, 3, 6, 8, 10];

impl Family for AlexNetConfig {
    fn stages(&self) -> Vec<StageInfo> {
        let mut list = StageList::new();
        for (i, (&c, (_, stride, _, pool))) in self.channels.iter().zip(CONVS).enumerate() {
            list = list.then(
                format!("conv{}", i + 1),
                c,
                stride * if pool { 2 } else { 1 },
            );
        }
        // At 224×224 the last map is 6×6 (the adaptive pool is then the identity).
        list.then("fc", self.fc, self.pool).done()
    }

    fn feature_dim(&self) -> usize {
        self.fc
    }

    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec::linear("classifier.6")
    }

    fn batchnorm(&self) -> Option<BnSpec> {
        None
    }

    fn naming_key(&self) -> &'static str {
        "features.10.weight"
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        let mut stages = Vec::new();
        let mut inp = 3;
        for ((&c, (k, stride, pad, pool)), idx) in self.channels.iter().zip(CONVS).zip(INDICES) {
            let spec = ConvSpec::new(inp, c, k, stride)
                .pad(Pad::Fixed(pad))
                .with_bias();
            let mut blocks = vec![Block::Conv(ConvBnAct::load_plain(
                l,
                &format!("features.{idx}"),
                spec,
                Act::Relu,
            ))];
            if pool {
                blocks.push(max_pool(3, 2, 0));
            }
            stages.push(Stage { blocks });
            inp = c;
        }
        stages.push(super::vgg::fc_stage(
            l,
            inp,
            self.pool,
            self.fc,
            ["classifier.1", "classifier.4"],
        ));
        stages
    }

    fn entries() -> Vec<ZooEntry> {
        vec![
            ZooEntry::new(
                "alexnet",
                "torchvision",
                Self::torchvision(),
                Preprocess::imagenet(256, 224, Interpolation::Bilinear),
            )
            .published(torchvision_file("alexnet-owt-7be5be79.pth")),
        ]
    }
}
