//! ResNet, ResNeXt and Wide ResNet (torchvision layout: conv1/bn1, layer1..4, fc; v1.5
//! bottleneck, stride on the 3x3, grouped and widened as torchvision's `groups` and
//! `width_per_group` say). timm's default ResNets (`timm.models.resnet.ResNet`, plain stem,
//! `downsample.0/1`) have torchvision's names and layout: its entries differ only in the
//! preprocessing of their `pretrained_cfg`.

use serde::{Deserialize, Serialize};

use super::family::{ClassifierSpec, Family, StageInfo, StageList};
use super::layers::{Act, Block, BnSpec, ConvBnAct, ConvSpec, ResidualBlock, max_pool};
use super::loader::WeightLoader;
use super::network::Stage;
use super::{Interpolation, Preprocess, ZooEntry, torchvision_file};

/// torchvision builds ResNet with `nn.BatchNorm2d`'s defaults.
const BN: BnSpec = BnSpec::TORCH;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResNetConfig {
    pub bottleneck: bool,
    pub layers: [usize; 4],
    /// Channels of the stem and layer1 (64 in torchvision).
    #[serde(default = "default_width")]
    pub width: usize,
    /// Groups of the bottleneck's 3x3 convolution (torchvision's `groups`: 32 or 64 in
    /// ResNeXt, 1 otherwise).
    #[serde(default = "one")]
    pub groups: usize,
    /// torchvision's `width_per_group` (`base_width`): the bottleneck's inner width is
    /// `planes · width_per_group / 64 · groups` (64: ResNet, 4 or 8: ResNeXt, 128: Wide
    /// ResNet). Basic blocks take only 64 and one group, as torchvision's do.
    #[serde(default = "default_width")]
    pub width_per_group: usize,
}

fn default_width() -> usize {
    64
}

fn one() -> usize {
    1
}

impl ResNetConfig {
    pub fn new(bottleneck: bool, layers: [usize; 4]) -> Self {
        Self {
            bottleneck,
            layers,
            width: 64,
            groups: 1,
            width_per_group: 64,
        }
    }

    /// A bottleneck ResNet with grouped (ResNeXt) or widened (Wide ResNet) 3x3 convolutions.
    pub fn grouped(layers: [usize; 4], groups: usize, width_per_group: usize) -> Self {
        Self {
            groups,
            width_per_group,
            ..Self::new(true, layers)
        }
    }

    /// The bottleneck's inner width for a stage of `planes` (torchvision's
    /// `int(planes * (base_width / 64.0)) * groups`).
    fn inner(&self, planes: usize) -> usize {
        planes * self.width_per_group / 64 * self.groups
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
                    let inner = self.inner(planes);
                    let grouped = ConvSpec {
                        groups: self.groups,
                        ..ConvSpec::new(inner, inner, 3, s)
                    };
                    vec![
                        cba(1, ConvSpec::new(inplanes, inner, 1, 1), Act::Relu),
                        cba(2, grouped, Act::Relu),
                        cba(3, ConvSpec::new(inner, out, 1, 1), Act::Identity),
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
        // bilinear, as the entries are (V2 resizes to 232), and their files.
        let resnets: [(&str, bool, [usize; 4], &str); 5] = [
            ("resnet18", false, [2, 2, 2, 2], "resnet18-f37072fd.pth"),
            ("resnet34", false, [3, 4, 6, 3], "resnet34-b627a593.pth"),
            ("resnet50", true, [3, 4, 6, 3], "resnet50-0676ba61.pth"),
            ("resnet101", true, [3, 4, 23, 3], "resnet101-63fe2227.pth"),
            ("resnet152", true, [3, 8, 36, 3], "resnet152-394f9c45.pth"),
        ];
        // (name, layers, groups, width_per_group, resize of the IMAGENET1K_V1 weights, their
        // file).
        type Grouped = (&'static str, [usize; 4], usize, usize, usize, &'static str);
        let grouped: [Grouped; 5] = [
            (
                "resnext50_32x4d",
                [3, 4, 6, 3],
                32,
                4,
                256,
                "resnext50_32x4d-7cdf4587.pth",
            ),
            (
                "resnext101_32x8d",
                [3, 4, 23, 3],
                32,
                8,
                256,
                "resnext101_32x8d-8ba56ff5.pth",
            ),
            (
                "resnext101_64x4d",
                [3, 4, 23, 3],
                64,
                4,
                232,
                "resnext101_64x4d-173b62eb.pth",
            ),
            (
                "wide_resnet50_2",
                [3, 4, 6, 3],
                1,
                128,
                256,
                "wide_resnet50_2-95faca4d.pth",
            ),
            (
                "wide_resnet101_2",
                [3, 4, 23, 3],
                1,
                128,
                256,
                "wide_resnet101_2-32ee1156.pth",
            ),
        ];
        let plain = resnets.into_iter().map(|(name, bottleneck, layers, file)| {
            (name, Self::new(bottleneck, layers), 256, file)
        });
        let grouped = grouped
            .into_iter()
            .map(|(name, layers, g, w, resize, file)| {
                (name, Self::grouped(layers, g, w), resize, file)
            });
        let torchvision = plain.chain(grouped).map(|(name, config, resize, file)| {
            ZooEntry::new(
                name,
                "torchvision",
                config,
                Preprocess::imagenet(resize, 224, Interpolation::Bilinear),
            )
            .published(torchvision_file(file))
        });
        // timm's default tags (the A1 / A1h recipes): crop_pct 0.95 at 224, bicubic. Their
        // weights are on the Hugging Face hub (`timm/<name>`), whose hashes are not
        // recorded here: none are listed.
        let timm: [(&str, bool, [usize; 4]); 5] = [
            ("timm/resnet18.a1_in1k", false, [2, 2, 2, 2]),
            ("timm/resnet34.a1_in1k", false, [3, 4, 6, 3]),
            ("timm/resnet50.a1_in1k", true, [3, 4, 6, 3]),
            ("timm/resnet101.a1h_in1k", true, [3, 4, 23, 3]),
            ("timm/resnet152.a1h_in1k", true, [3, 8, 36, 3]),
        ];
        let timm = timm.into_iter().map(|(name, bottleneck, layers)| {
            ZooEntry::new(
                name,
                "timm",
                Self::new(bottleneck, layers),
                Preprocess::timm(224, 0.95),
            )
        });
        torchvision.chain(timm).collect()
    }
}
