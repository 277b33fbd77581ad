//! ConvNeXt (torchvision layout: `features.0` the 4×4 patchify stem and its LayerNorm2d,
//! `features.{1,3,5,7}.N` the blocks — `block.0` depthwise 7×7, `block.2` LayerNorm,
//! `block.3`/`block.5` the MLP, `layer_scale` —, `features.{2,4,6}` LayerNorm2d + 2×2
//! downsampling, `classifier.0` a LayerNorm2d on the pooled vector, `classifier.2` the
//! head). The features are torchvision's pre-logits: the pooled vector after
//! `classifier.0`.
//!
//! timm's ConvNeXt (`timm.models.convnext`, `conv_mlp=False`) is the same network under
//! other names: `stem.0`/`stem.1`, `stages.S.downsample.{0,1}`, `stages.S.blocks.N.{conv_dw,
//! norm, mlp.fc1, mlp.fc2, gamma}` (a `[C]` layer scale), `head.norm`, `head.fc`; its
//! `forward_head(pre_logits=True)` is the same vector.

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::family::{ClassifierSpec, Family, Naming, StageInfo, StageList};
use super::layers::{
    Block, BnSpec, ConvSpec, Pad, TensorMap, export_conv, export_linear, load_conv, load_linear,
    put,
};
use super::loader::WeightLoader;
use super::network::Stage;
use super::tokens::{export_layer_norm, load_layer_norm};
use super::{Interpolation, Preprocess, ZooEntry, torchvision_file};
use crate::kernels::{self, Pointwise};

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
    /// `[C, 1, 1]` (torchvision's shape; timm's `[C]` is read and written as such).
    pub layer_scale: Param<Tensor<3>>,
    #[module(skip)]
    pub prefix: String,
    #[module(skip)]
    pub eps: f64,
    #[module(skip)]
    pub naming: Naming,
}

/// A block's parts' names under `p`: depthwise, norm, fc1, fc2, layer scale.
fn block_names(naming: Naming, p: &str) -> [String; 5] {
    let parts = match naming {
        Naming::Torchvision => ["block.0", "block.2", "block.3", "block.5", "layer_scale"],
        Naming::Timm => ["conv_dw", "norm", "mlp.fc1", "mlp.fc2", "gamma"],
    };
    parts.map(|part| format!("{p}.{part}"))
}

impl ConvNextBlock {
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let x = kernels::conv(&self.dwconv, input.clone()).permute([0, 2, 3, 1]);
        let x = self.norm.forward(x);
        let x = self
            .fc2
            .forward(kernels::activation(self.fc1.forward(x), Pointwise::Gelu));
        let c = self.layer_scale.dims()[0];
        let x = x * self.layer_scale.val().reshape([1, 1, 1, c]);
        input + x.permute([0, 3, 1, 2])
    }

    pub fn export(&self, out: &mut TensorMap) {
        let [dw, norm, fc1, fc2, scale] = block_names(self.naming, &self.prefix);
        export_conv(&self.dwconv, &dw, out);
        export_layer_norm(&self.norm, &norm, out);
        export_linear(&self.fc1, &fc1, out);
        export_linear(&self.fc2, &fc2, out);
        match self.naming {
            Naming::Torchvision => put(out, scale, self.layer_scale.val()),
            Naming::Timm => {
                let c = self.layer_scale.dims()[0];
                put(out, scale, self.layer_scale.val().reshape([c]))
            }
        }
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
        layer_norm_2d(&self.norm, crate::kernels::channel_means(x))
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
    #[serde(default, skip_serializing_if = "Naming::is_torchvision")]
    pub naming: Naming,
}

impl ConvNextConfig {
    /// The stem's, a downsampling layer's (before stage `i`) and the head norm's names:
    /// (convolution, norm).
    fn conv_norm_names(&self, i: usize) -> (String, String) {
        match self.naming {
            Naming::Torchvision if i == 0 => ("features.0.0".into(), "features.0.1".into()),
            Naming::Torchvision => {
                let p = format!("features.{}", 2 * i);
                (format!("{p}.1"), format!("{p}.0"))
            }
            Naming::Timm if i == 0 => ("stem.0".into(), "stem.1".into()),
            Naming::Timm => {
                let p = format!("stages.{i}.downsample");
                (format!("{p}.1"), format!("{p}.0"))
            }
        }
    }

    fn block_prefix(&self, stage: usize, j: usize) -> String {
        match self.naming {
            Naming::Torchvision => format!("features.{}.{j}", 2 * stage + 1),
            Naming::Timm => format!("stages.{stage}.blocks.{j}"),
        }
    }

    fn head_norm(&self) -> &'static str {
        self.naming.pick("classifier.0", "head.norm")
    }
}

impl Family for ConvNextConfig {
    /// `stem` (stride 4), then `stage1`…`stageN` (timm: `stages.0`…; each after the first
    /// halving the resolution), then `head`: the pooled, normalised vector.
    fn stages(&self) -> Vec<StageInfo> {
        let d0 = self.dims.first().copied().unwrap_or(0);
        let naming = self.naming;
        StageList::new()
            .then("stem", d0, 4)
            .named(
                |i| match naming {
                    Naming::Torchvision => format!("stage{}", i + 1),
                    Naming::Timm => format!("stages.{i}"),
                },
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
        ClassifierSpec::linear(self.naming.pick("classifier.2", "head.fc"))
    }

    /// LayerNorms only.
    fn batchnorm(&self) -> Option<BnSpec> {
        None
    }

    fn naming_key(&self) -> &'static str {
        self.naming
            .pick("features.1.0.layer_scale", "stages.0.blocks.0.gamma")
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        let conv_norm = |(conv, norm): (String, String), spec: ConvSpec, c: usize, norm_first| {
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
                self.conv_norm_names(0),
                ConvSpec::new(3, d0, 4, 4),
                d0,
                false,
            )],
        }];
        for (i, (&d, &depth)) in self.dims.iter().zip(&self.depths).enumerate() {
            let mut blocks = Vec::new();
            if i > 0 {
                let prev = self.dims[i - 1];
                blocks.push(conv_norm(
                    self.conv_norm_names(i),
                    ConvSpec::new(prev, d, 2, 2),
                    prev,
                    true,
                ));
            }
            for j in 0..depth {
                let p = self.block_prefix(i, j);
                let [dw, norm, fc1, fc2, scale] = block_names(self.naming, &p);
                // timm's `[C]` reads as `[C, 1, 1]` (the same values in the same order).
                let scale = l.tensor::<3>(&scale, [d, 1, 1]);
                blocks.push(Block::ConvNext(ConvNextBlock {
                    dwconv: load_conv(l, &dw, ConvSpec::depthwise(d, 7, 1), true),
                    norm: load_layer_norm(l, &norm, d, LN_EPS),
                    fc1: load_linear(l, &fc1, d, 4 * d),
                    fc2: load_linear(l, &fc2, 4 * d, d),
                    layer_scale: Param::from_tensor(scale),
                    prefix: p,
                    eps: LN_EPS,
                    naming: self.naming,
                }));
            }
            stages.push(Stage { blocks });
        }
        let last = self.feature_dim();
        stages.push(Stage {
            blocks: vec![Block::PoolNorm(PoolNorm {
                norm: load_layer_norm(l, self.head_norm(), last, LN_EPS),
                name: self.head_norm().into(),
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
            naming: Naming::Torchvision,
        };
        let pre = |resize| Preprocess::imagenet(resize, 224, Interpolation::Bilinear);
        let torchvision = vec![
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
        });
        // timm's tags with their `pretrained_cfg` (bicubic; crop_pct 0.875, 0.95 for the
        // in12k fine-tunes), each model's default tag first; the fb_in22k ones keep their
        // 21841-way head. Their weights are
        // on the Hugging Face hub (`timm/<name>`), whose hashes are not recorded here: none
        // are listed.
        let timm = |dims, depths| Self {
            naming: Naming::Timm,
            ..config(dims, depths)
        };
        let (tiny, small) = ([96, 192, 384, 768], [3, 3, 9, 3]);
        let (base, deep) = ([128, 256, 512, 1024], [3, 3, 27, 3]);
        let large = [192, 384, 768, 1536];
        let timm_entries = [
            ("timm/convnext_tiny.in12k_ft_in1k", tiny, small, 0.95, 1000),
            ("timm/convnext_tiny.fb_in1k", tiny, small, 0.875, 1000),
            ("timm/convnext_tiny.fb_in22k", tiny, small, 0.875, 21841),
            ("timm/convnext_small.in12k_ft_in1k", tiny, deep, 0.95, 1000),
            (
                "timm/convnext_base.fb_in22k_ft_in1k",
                base,
                deep,
                0.875,
                1000,
            ),
            ("timm/convnext_base.fb_in22k", base, deep, 0.875, 21841),
            (
                "timm/convnext_large.fb_in22k_ft_in1k",
                large,
                deep,
                0.875,
                1000,
            ),
        ]
        .map(|(name, dims, depths, crop_pct, classes)| {
            ZooEntry::new(
                name,
                "timm",
                timm(dims, depths),
                Preprocess::timm(224, crop_pct),
            )
            .classes(classes)
        });
        torchvision.chain(timm_entries).collect()
    }
}
