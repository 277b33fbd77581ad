//! ResNet (torchvision layout: conv1/bn1, layer1..4, fc; v1.5 bottleneck, stride on the 3x3).

use serde::{Deserialize, Serialize};

use super::family::{ClassifierSpec, Family, StageInfo, StageList};
use super::layers::{Act, Block, BnSpec, ConvBnAct, ConvSpec, ResidualBlock, max_pool};
use super::loader::WeightLoader;
use super::network::Stage;
use super::{Interpolation, Preprocess, TORCHVISION, ZooEntry};
use crate::hub::Published;

/// torchvision builds ResNet with `nn.BatchNorm2d`'s defaults.
const BN: BnSpec = BnSpec::TORCH;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResNetConfig {
    pub bottleneck: bool,
    pub layers: [usize; 4],
    /// Channels of the stem and layer1 (64 in torchvision).
    #[serde(default = "default_width")]
    pub width: usize,
}

fn default_width() -> usize {
    64
}

impl ResNetConfig {
    pub fn new(bottleneck: bool, layers: [usize; 4]) -> Self {
        Self {
            bottleneck,
            layers,
            width: 64,
        }
    }

    fn expansion(&self) -> usize {
        if self.bottleneck { 4 } else { 1 }
    }
}

impl Family for ResNetConfig {
    fn stages(&self) -> Vec<StageInfo> {
        let out = |i: usize| (self.width << i) * self.expansion();
        // The stem's stride-2 convolution and max pool.
        StageList::new()
            .then("stem", self.width, 4)
            .then("layer1", out(0), 1)
            .then("layer2", out(1), 2)
            .then("layer3", out(2), 2)
            .then("layer4", out(3), 2)
            .done()
    }

    fn feature_dim(&self) -> usize {
        self.width * 8 * self.expansion()
    }

    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec::linear("fc")
    }

    fn batchnorm(&self) -> Option<BnSpec> {
        Some(BN)
    }

    fn naming_key(&self) -> &'static str {
        "layer1.0.conv1.weight"
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        let w = self.width;
        let stem = Stage {
            blocks: vec![
                Block::Conv(ConvBnAct::load(
                    l,
                    "conv1",
                    "bn1",
                    ConvSpec::new(3, w, 7, 2),
                    BN,
                    Act::Relu,
                )),
                max_pool(3, 2, 1),
            ],
        };
        let mut stages = vec![stem];
        let mut inplanes = w;
        for (i, &n) in self.layers.iter().enumerate() {
            let planes = w << i;
            let stride = if i == 0 { 1 } else { 2 };
            let mut blocks = Vec::with_capacity(n);
            for b in 0..n {
                let p = format!("layer{}.{b}", i + 1);
                let s = if b == 0 { stride } else { 1 };
                let out = planes * self.expansion();
                let cba = |name: usize, spec: ConvSpec, act: Act| {
                    ConvBnAct::load(
                        l,
                        &format!("{p}.conv{name}"),
                        &format!("{p}.bn{name}"),
                        spec,
                        BN,
                        act,
                    )
                };
                let convs = if self.bottleneck {
                    vec![
                        cba(1, ConvSpec::new(inplanes, planes, 1, 1), Act::Relu),
                        cba(2, ConvSpec::new(planes, planes, 3, s), Act::Relu),
                        cba(3, ConvSpec::new(planes, out, 1, 1), Act::Identity),
                    ]
                } else {
                    vec![
                        cba(1, ConvSpec::new(inplanes, planes, 3, s), Act::Relu),
                        cba(2, ConvSpec::new(planes, planes, 3, 1), Act::Identity),
                    ]
                };
                let downsample = (s != 1 || inplanes != out).then(|| {
                    ConvBnAct::load(
                        l,
                        &format!("{p}.downsample.0"),
                        &format!("{p}.downsample.1"),
                        ConvSpec::new(inplanes, out, 1, s),
                        BN,
                        Act::Identity,
                    )
                });
                blocks.push(Block::Residual(ResidualBlock { convs, downsample }));
                inplanes = out;
            }
            stages.push(Stage { blocks });
        }
        stages
    }

    fn entries() -> Vec<ZooEntry> {
        // torchvision's IMAGENET1K_V1 weights (`ResNet*_Weights`): resize 256, crop 224,
        // bilinear, as the entries are (V2 resizes to 232); file and SHA-256 prefix.
        let resnets: [(&str, bool, [usize; 4], &str, &str); 5] = [
            (
                "resnet18",
                false,
                [2, 2, 2, 2],
                "resnet18-f37072fd.pth",
                "f37072fd",
            ),
            (
                "resnet34",
                false,
                [3, 4, 6, 3],
                "resnet34-b627a593.pth",
                "b627a593",
            ),
            (
                "resnet50",
                true,
                [3, 4, 6, 3],
                "resnet50-0676ba61.pth",
                "0676ba61",
            ),
            (
                "resnet101",
                true,
                [3, 4, 23, 3],
                "resnet101-63fe2227.pth",
                "63fe2227",
            ),
            (
                "resnet152",
                true,
                [3, 8, 36, 3],
                "resnet152-394f9c45.pth",
                "394f9c45",
            ),
        ];
        resnets
            .into_iter()
            .map(|(name, bottleneck, layers, file, prefix)| {
                ZooEntry::new(
                    name,
                    "torchvision",
                    Self::new(bottleneck, layers),
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
