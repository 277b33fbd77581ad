//! ConvNeXt (torchvision layout: `features.0` the 4×4 patchify stem and its LayerNorm2d,
//! `features.{1,3,5,7}.N` the blocks — `block.0` depthwise 7×7, `block.2` LayerNorm,
//! `block.3`/`block.5` the MLP, `layer_scale` —, `features.{2,4,6}` LayerNorm2d + 2×2
//! downsampling, `classifier.0` a LayerNorm2d on the pooled vector, `classifier.2` the
//! head). The features are torchvision's pre-logits: the pooled vector after
//! `classifier.0`.

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;
use burn::tensor::activation;
use serde::{Deserialize, Serialize};

use super::family::{ClassifierSpec, Family, StageInfo, StageList};
use super::layers::{
    Block, BnSpec, ConvSpec, Pad, TensorMap, export_conv, export_linear, load_conv, load_linear,
    put,
};
use super::loader::WeightLoader;
use super::network::Stage;
use super::tokens::{export_layer_norm, load_layer_norm};
use super::{Interpolation, Preprocess, ZooEntry, torchvision_file};

/// torchvision's ConvNeXt LayerNorms (`eps=1e-6`).
const LN_EPS: f64 = 1e-6;

/// A LayerNorm over the channels of an NCHW map (torchvision's `LayerNorm2d`).
fn layer_norm_2d(ln: &LayerNorm, x: Tensor<4>) -> Tensor<4> {
    ln.forward(x.permute([0, 2, 3, 1])).permute([0, 3, 1, 2])
}

/// A convolution and a LayerNorm2d, in either order: the stem (convolution first) and the
/// downsampling layers (norm first).
#[derive(Module, Debug)]
pub struct ConvNorm {
    pub conv: Conv2d,
    pub norm: LayerNorm,
    pub norm_first: bool,
    #[module(skip)]
    pub names: [String; 2],
    #[module(skip)]
    pub eps: f64,
}

impl ConvNorm {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if self.norm_first {
            self.conv.forward(layer_norm_2d(&self.norm, x))
        } else {
            layer_norm_2d(&self.norm, self.conv.forward(x))
        }
    }

    pub fn export(&self, out: &mut TensorMap) {
        export_conv(&self.conv, &self.names[0], out);
        export_layer_norm(&self.norm, &self.names[1], out);
    }
}

/// `x + layer_scale · mlp(norm(dwconv(x)))`, the MLP on channels-last values.
#[derive(Module, Debug)]
pub struct ConvNextBlock {
    pub dwconv: Conv2d,
    pub norm: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
    /// `[C, 1, 1]`, as the file holds it.
    pub layer_scale: Param<Tensor<3>>,
    #[module(skip)]
    pub prefix: String,
    #[module(skip)]
    pub eps: f64,
}

impl ConvNextBlock {
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let x = crate::kernels::conv(&self.dwconv, input.clone()).permute([0, 2, 3, 1]);
        let x = self.norm.forward(x);
        let x = self.fc2.forward(activation::gelu(self.fc1.forward(x)));
        let c = self.layer_scale.dims()[0];
        let x = x * self.layer_scale.val().reshape([1, 1, 1, c]);
        input + x.permute([0, 3, 1, 2])
    }

    pub fn export(&self, out: &mut TensorMap) {
        let p = &self.prefix;
        export_conv(&self.dwconv, &format!("{p}.block.0"), out);
        export_layer_norm(&self.norm, &format!("{p}.block.2"), out);
        export_linear(&self.fc1, &format!("{p}.block.3"), out);
        export_linear(&self.fc2, &format!("{p}.block.5"), out);
        put(out, format!("{p}.layer_scale"), self.layer_scale.val());
    }
}

/// Global average pooling, then a LayerNorm over the channels: `[n, c, 1, 1]`.
#[derive(Module, Debug)]
pub struct PoolNorm {
    pub norm: LayerNorm,
    #[module(skip)]
    pub name: String,
    #[module(skip)]
    pub eps: f64,
}

impl PoolNorm {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        layer_norm_2d(&self.norm, x.mean_dim(3).mean_dim(2))
    }

    pub fn export(&self, out: &mut TensorMap) {
        export_layer_norm(&self.norm, &self.name, out);
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvNextConfig {
    /// Channels of each stage.
    pub dims: Vec<usize>,
    /// Blocks of each stage.
    pub depths: Vec<usize>,
}

impl Family for ConvNextConfig {
    /// `stem` (stride 4), then `stage1`…`stageN` (each after the first halving the
    /// resolution), then `head`: the pooled, normalised vector.
    fn stages(&self) -> Vec<StageInfo> {
        let d0 = self.dims.first().copied().unwrap_or(0);
        StageList::new()
            .then("stem", d0, 4)
            .numbered(
                self.dims
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| (d, if i == 0 { 1 } else { 2 })),
            )
            .done()
            .into_iter()
            .chain(std::iter::once(StageInfo {
                name: "head".into(),
                channels: self.feature_dim(),
                stride: 0,
            }))
            .collect()
    }

    fn feature_dim(&self) -> usize {
        self.dims.last().copied().unwrap_or(0)
    }

    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec::linear("classifier.2")
    }

    /// LayerNorms only.
    fn batchnorm(&self) -> Option<BnSpec> {
        None
    }

    fn naming_key(&self) -> &'static str {
        "features.1.0.layer_scale"
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        let conv_norm = |conv: String, norm: String, spec: ConvSpec, c: usize, norm_first| {
            Block::ConvNorm(ConvNorm {
                conv: load_conv(l, &conv, spec.pad(Pad::After(0)), true),
                norm: load_layer_norm(l, &norm, c, LN_EPS),
                norm_first,
                names: [conv, norm],
                eps: LN_EPS,
            })
        };
        let d0 = self.dims[0];
        let mut stages = vec![Stage {
            blocks: vec![conv_norm(
                "features.0.0".into(),
                "features.0.1".into(),
                ConvSpec::new(3, d0, 4, 4),
                d0,
                false,
            )],
        }];
        for (i, (&d, &depth)) in self.dims.iter().zip(&self.depths).enumerate() {
            let mut blocks = Vec::new();
            if i > 0 {
                let p = format!("features.{}", 2 * i);
                let prev = self.dims[i - 1];
                blocks.push(conv_norm(
                    format!("{p}.1"),
                    format!("{p}.0"),
                    ConvSpec::new(prev, d, 2, 2),
                    prev,
                    true,
                ));
            }
            for j in 0..depth {
                let p = format!("features.{}.{j}", 2 * i + 1);
                let scale = l.tensor::<3>(&format!("{p}.layer_scale"), [d, 1, 1]);
                blocks.push(Block::ConvNext(ConvNextBlock {
                    dwconv: load_conv(
                        l,
                        &format!("{p}.block.0"),
                        ConvSpec::depthwise(d, 7, 1),
                        true,
                    ),
                    norm: load_layer_norm(l, &format!("{p}.block.2"), d, LN_EPS),
                    fc1: load_linear(l, &format!("{p}.block.3"), d, 4 * d),
                    fc2: load_linear(l, &format!("{p}.block.5"), 4 * d, d),
                    layer_scale: Param::from_tensor(scale),
                    prefix: p,
                    eps: LN_EPS,
                }));
            }
            stages.push(Stage { blocks });
        }
        let last = self.feature_dim();
        stages.push(Stage {
            blocks: vec![Block::PoolNorm(PoolNorm {
                norm: load_layer_norm(l, "classifier.0", last, LN_EPS),
                name: "classifier.0".into(),
                eps: LN_EPS,
            })],
        });
        stages
    }

    /// torchvision's builders with their IMAGENET1K_V1 preprocessing.
    fn entries() -> Vec<ZooEntry> {
        let config = |dims: [usize; 4], depths: [usize; 4]| Self {
            dims: dims.to_vec(),
            depths: depths.to_vec(),
        };
        let pre = |resize| Preprocess::imagenet(resize, 224, Interpolation::Bilinear);
        vec![
            (
                "convnext_tiny",
                config([96, 192, 384, 768], [3, 3, 9, 3]),
                pre(236),
                "convnext_tiny-983f1562.pth",
            ),
            (
                "convnext_small",
                config([96, 192, 384, 768], [3, 3, 27, 3]),
                pre(230),
                "convnext_small-0c510722.pth",
            ),
            (
                "convnext_base",
                config([128, 256, 512, 1024], [3, 3, 27, 3]),
                pre(232),
                "convnext_base-6075fbad.pth",
            ),
            (
                "convnext_large",
                config([192, 384, 768, 1536], [3, 3, 27, 3]),
                pre(232),
                "convnext_large-ea097f82.pth",
            ),
        ]
        .into_iter()
        .map(|(name, config, preprocess, file)| {
            ZooEntry::new(name, "torchvision", config, preprocess).published(torchvision_file(file))
        })
        .collect()
    }
}
