//! MaxViT (torchvision layout: `stem.0` a 3×3 stride-2 convolution + BatchNorm + GELU,
//! `stem.1.0` a 3×3 convolution with bias; `blocks.S.layers.L.layers.` an `MBconv` —
//! `proj.{0,1}` the shortcut (a 3×3 average pool and a 1×1 convolution where it strides),
//! `layers.pre_norm` BatchNorm, `conv_a`/`conv_b` convolution + BatchNorm + GELU,
//! `squeeze_excitation.fc1/fc2`, `conv_c` —, then `window_attention` and `grid_attention`
//! (`attn_layer.0` LayerNorm, `attn_layer.1.{to_qkv, merge, relative_position_bias_table}`,
//! `mlp_layer.{0,1,3}`); `classifier.{2,3}` LayerNorm and Linear + Tanh on the pooled
//! vector, `classifier.5` the head, without bias). The features are torchvision's
//! pre-logits: the Tanh's output, the input of `classifier.5`. BatchNorm: eps 1e-3,
//! momentum 0.01.
//!
//! Values stay NCHW between blocks; the attention layers cut the map into windows (block
//! attention) or a dilated grid (grid attention) inside.

use burn::module::Param;
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig};
use burn::nn::{LayerNorm, Linear, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation;

use crate::kernels::{self, Pointwise};
use serde::{Deserialize, Serialize};

use super::convnext::PoolNorm;
use super::family::{ClassifierSpec, Family, StageInfo, StageList};
use super::layers::{
    Act, Block, BnAct, BnSpec, ConvBnAct, ConvSpec, LinearAct, SqueezeExcite, TensorMap,
    export_linear, put,
};
use super::loader::WeightLoader;
use super::network::Stage;
use super::swin::relative_position_index;
use super::tokens::{export_layer_norm, load_layer_norm};
use super::{Interpolation, Preprocess, ZooEntry, torchvision_file};
use crate::graph::GraphError;

/// torchvision's MaxViT BatchNorm (`partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)`).
pub const BN: BnSpec = BnSpec::new(1e-3, 0.01);
/// Its LayerNorms (`nn.LayerNorm` defaults).
const LN_EPS: f64 = 1e-5;

/// MBConv: `proj(x) + conv_c(se(conv_b(conv_a(pre_norm(x)))))`.
#[derive(Module, Debug)]
pub struct MbConv {
    /// The shortcut's 3×3 average pool (stride 2, padding 1, padding counted), where the
    /// block strides.
    pub pool: Option<AvgPool2d>,
    /// The shortcut's 1×1 convolution, where the shape changes.
    pub proj: Option<ConvBnAct>,
    pub pre_norm: BnAct,
    pub conv_a: ConvBnAct,
    pub conv_b: ConvBnAct,
    pub se: SqueezeExcite,
    pub conv_c: ConvBnAct,
}

impl MbConv {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut res = x.clone();
        if let Some(p) = &self.pool {
            res = p.forward(res);
        }
        if let Some(p) = &self.proj {
            res = p.forward(res);
        }
        let y = self.conv_a.forward(self.pre_norm.forward(x));
        let y = self.se.forward(self.conv_b.forward(y));
        res + self.conv_c.forward(y)
    }

    pub fn export(&self, out: &mut TensorMap) {
        if let Some(p) = &self.proj {
            p.export(out);
        }
        self.pre_norm.export(out);
        self.conv_a.export(out);
        self.conv_b.export(out);
        self.se.export(out);
        self.conv_c.export(out);
    }

    pub fn fold_batchnorm(self) -> Self {
        Self {
            conv_a: self.conv_a.fold_batchnorm(),
            conv_b: self.conv_b.fold_batchnorm(),
            ..self
        }
    }
}

/// torchvision's `PartitionAttentionLayer`: the map cut into `partition`×`partition`
/// windows (block attention) or a `partition`×`partition` dilated grid (grid attention),
/// then pre-norm attention with a relative position bias and a GELU MLP, each residual.
#[derive(Module, Debug)]
pub struct PartitionAttention {
    pub norm: LayerNorm,
    pub to_qkv: Linear,
    pub merge: Linear,
    /// `[(2p−1)², heads]`.
    pub relative_position_bias_table: Param<Tensor<2>>,
    pub mlp_norm: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
    pub grid: bool,
    #[module(skip)]
    pub partition: usize,
    #[module(skip)]
    pub heads: usize,
    #[module(skip)]
    pub prefix: String,
    #[module(skip)]
    pub eps: f64,
}

impl PartitionAttention {
    /// The side `P` of torchvision's partition op on a map of side `side`: the window for
    /// block attention, the number of windows for grid attention.
    pub fn cut(&self, side: usize) -> usize {
        if self.grid {
            side / self.partition
        } else {
            self.partition
        }
    }

    /// `[1, heads, T, T]`.
    fn position_bias(&self, device: &Device) -> Tensor<4> {
        let p = self.partition;
        let t = p * p;
        let index = relative_position_index([p, p]);
        let index = Tensor::<1, Int>::from_data(TensorData::new(index, [t * t]), device);
        self.relative_position_bias_table
            .val()
            .select(0, index)
            .reshape([t, t, self.heads])
            .permute([2, 0, 1])
            .reshape([1, self.heads, t, t])
    }

    /// torchvision's `RelativePositionalMultiHeadAttention` on `[b·groups, T, C]` (keys
    /// scaled by `C^−½`, the whole width's, as torchvision does).
    fn attention(&self, x: Tensor<3>) -> Tensor<3> {
        let [bg, t, c] = x.dims();
        let (h, dh) = (self.heads, c / self.heads);
        let qkv = self.to_qkv.forward(x);
        let part = |i: usize| {
            qkv.clone()
                .narrow(2, i * c, c)
                .reshape([bg, t, h, dh])
                .swap_dims(1, 2)
        };
        let (q, k, v) = (part(0), part(1) * (c as f64).powf(-0.5), part(2));
        let scores = q.matmul(k.swap_dims(2, 3)) + self.position_bias(&qkv.device());
        let y = activation::softmax(scores, 3).matmul(v);
        self.merge.forward(y.swap_dims(1, 2).reshape([bg, t, c]))
    }

    /// On an NCHW map whose sides are multiples of the partition (torchvision refuses any
    /// other size).
    pub fn forward(&self, x: Tensor<4>) -> Result<Tensor<4>, GraphError> {
        let [b, c, h, w] = x.dims();
        let p = self.partition;
        if !h.is_multiple_of(p) || !w.is_multiple_of(p) || h < p || w < p {
            return Err(GraphError {
                node: self.prefix.clone(),
                op: "PartitionAttention".into(),
                opset: 0,
                why: format!(
                    "a {h}x{w} map is not cut into {p}x{p} partitions: the input size must make every stage's map a multiple of {p}"
                ),
            });
        }
        let (ph, pw) = (self.cut(h), self.cut(w));
        let (gh, gw) = (h / ph, w / pw);
        // [b, c, gh, P, gw, P] → [b, gh·gw, P·P, c] (grid: the two middle axes swapped).
        let x = x
            .reshape([b * c, gh, ph, gw * pw])
            .reshape([b * c * gh, ph, gw, pw])
            .swap_dims(1, 2)
            .reshape([b, c, gh * gw, ph * pw])
            .permute([0, 2, 3, 1]);
        let x = if self.grid { x.swap_dims(1, 2) } else { x };
        let [_, groups, t, _] = x.dims();
        let x = x.reshape([b * groups, t, c]);
        let x = x.clone() + self.attention(self.norm.forward(x));
        let y = self.fc2.forward(kernels::activation(
            self.fc1.forward(self.mlp_norm.forward(x.clone())),
            Pointwise::Gelu,
        ));
        let x = (x + y).reshape([b, groups, t, c]);
        let x = if self.grid { x.swap_dims(1, 2) } else { x };
        // Back: [b, gh·gw, P·P, c] → [b, c, gh, P, gw, P].
        Ok(x.permute([0, 3, 1, 2])
            .reshape([b * c * gh, gw, ph, pw])
            .swap_dims(1, 2)
            .reshape([b, c, h, w]))
    }

    pub fn export(&self, out: &mut TensorMap) {
        let p = &self.prefix;
        export_layer_norm(&self.norm, &format!("{p}.attn_layer.0"), out);
        let a = format!("{p}.attn_layer.1");
        export_linear(&self.to_qkv, &format!("{a}.to_qkv"), out);
        export_linear(&self.merge, &format!("{a}.merge"), out);
        put(
            out,
            format!("{a}.relative_position_bias_table"),
            self.relative_position_bias_table.val(),
        );
        export_layer_norm(&self.mlp_norm, &format!("{p}.mlp_layer.0"), out);
        export_linear(&self.fc1, &format!("{p}.mlp_layer.1"), out);
        export_linear(&self.fc2, &format!("{p}.mlp_layer.3"), out);
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaxVitConfig {
    pub stem_channels: usize,
    pub block_channels: Vec<usize>,
    pub block_layers: Vec<usize>,
    pub head_dim: usize,
    pub partition_size: usize,
}

/// torchvision's MBConv widths: `int(out · 4)` and `int(out · 0.25)`.
const EXPANSION: usize = 4;
const SQUEEZE_DIV: usize = 4;
const MLP_RATIO: usize = 4;

impl Family for MaxVitConfig {
    /// `stem` (stride 2), `stage1`…`stageN` (each halving the resolution), `head` (the
    /// pooled vector after `classifier.2`, `classifier.3` and the Tanh).
    fn stages(&self) -> Vec<StageInfo> {
        StageList::new()
            .then("stem", self.stem_channels, 2)
            .numbered(self.block_channels.iter().map(|&c| (c, 2)))
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
        self.block_channels.last().copied().unwrap_or(0)
    }

    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec::linear("classifier.5").without_bias()
    }

    fn batchnorm(&self) -> Option<BnSpec> {
        Some(BN)
    }

    fn naming_key(&self) -> &'static str {
        "blocks.0.layers.0.layers.MBconv.layers.pre_norm.weight"
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        let c0 = self.stem_channels;
        let mut stages = vec![Stage {
            blocks: vec![
                Block::Conv(ConvBnAct::load(
                    l,
                    "stem.0.0",
                    "stem.0.1",
                    ConvSpec::new(3, c0, 3, 2),
                    BN,
                    Act::Gelu,
                )),
                Block::Conv(ConvBnAct::load_plain(
                    l,
                    "stem.1.0",
                    ConvSpec::new(c0, c0, 3, 1),
                    Act::Identity,
                )),
            ],
        }];
        let mut cin = c0;
        for (s, (&cout, &layers)) in self
            .block_channels
            .iter()
            .zip(&self.block_layers)
            .enumerate()
        {
            let mut blocks = Vec::new();
            for i in 0..layers {
                let p = format!("blocks.{s}.layers.{i}.layers");
                let stride = if i == 0 { 2 } else { 1 };
                let m = format!("{p}.MBconv");
                let mid = cout * EXPANSION;
                let proj = (stride != 1 || cin != cout).then(|| {
                    let name = format!("{m}.proj.{}", if stride == 2 { 1 } else { 0 });
                    ConvBnAct::load_plain(l, &name, ConvSpec::new(cin, cout, 1, 1), Act::Identity)
                });
                let pool = (stride == 2).then(|| {
                    AvgPool2dConfig::new([3, 3])
                        .with_strides([2, 2])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .with_count_include_pad(true)
                        .init()
                });
                let ml = format!("{m}.layers");
                blocks.push(Block::MbConv(MbConv {
                    pool,
                    proj,
                    pre_norm: BnAct::load(l, &format!("{ml}.pre_norm"), cin, BN, Act::Identity),
                    conv_a: ConvBnAct::load(
                        l,
                        &format!("{ml}.conv_a.0"),
                        &format!("{ml}.conv_a.1"),
                        ConvSpec::new(cin, mid, 1, 1),
                        BN,
                        Act::Gelu,
                    ),
                    conv_b: ConvBnAct::load(
                        l,
                        &format!("{ml}.conv_b.0"),
                        &format!("{ml}.conv_b.1"),
                        ConvSpec::depthwise(mid, 3, stride),
                        BN,
                        Act::Gelu,
                    ),
                    se: SqueezeExcite::load(
                        l,
                        &format!("{ml}.squeeze_excitation.fc1"),
                        &format!("{ml}.squeeze_excitation.fc2"),
                        mid,
                        cout / SQUEEZE_DIV,
                        Act::Silu,
                        false,
                    ),
                    conv_c: ConvBnAct::load_plain(
                        l,
                        &format!("{ml}.conv_c"),
                        ConvSpec::new(mid, cout, 1, 1),
                        Act::Identity,
                    ),
                }));
                for (kind, grid) in [("window_attention", false), ("grid_attention", true)] {
                    let a = format!("{p}.{kind}");
                    let t = (2 * self.partition_size - 1).pow(2);
                    let heads = cout / self.head_dim;
                    l.skip(&format!("{a}.attn_layer.1.relative_position_index"));
                    blocks.push(Block::PartitionAttention(PartitionAttention {
                        norm: load_layer_norm(l, &format!("{a}.attn_layer.0"), cout, LN_EPS),
                        to_qkv: super::layers::load_linear(
                            l,
                            &format!("{a}.attn_layer.1.to_qkv"),
                            cout,
                            3 * cout,
                        ),
                        merge: super::layers::load_linear(
                            l,
                            &format!("{a}.attn_layer.1.merge"),
                            cout,
                            cout,
                        ),
                        relative_position_bias_table: Param::from_tensor(l.tensor(
                            &format!("{a}.attn_layer.1.relative_position_bias_table"),
                            [t, heads],
                        )),
                        mlp_norm: load_layer_norm(l, &format!("{a}.mlp_layer.0"), cout, LN_EPS),
                        fc1: super::layers::load_linear(
                            l,
                            &format!("{a}.mlp_layer.1"),
                            cout,
                            MLP_RATIO * cout,
                        ),
                        fc2: super::layers::load_linear(
                            l,
                            &format!("{a}.mlp_layer.3"),
                            MLP_RATIO * cout,
                            cout,
                        ),
                        grid,
                        partition: self.partition_size,
                        heads,
                        prefix: a,
                        eps: LN_EPS,
                    }));
                }
                cin = cout;
            }
            stages.push(Stage { blocks });
        }
        let d = self.feature_dim();
        stages.push(Stage {
            blocks: vec![
                Block::PoolNorm(PoolNorm {
                    norm: load_layer_norm(l, "classifier.2", d, LN_EPS),
                    name: "classifier.2".into(),
                    eps: LN_EPS,
                }),
                Block::Linear(LinearAct::load(l, "classifier.3", d, d, Act::Tanh)),
            ],
        });
        stages
    }

    /// torchvision's `maxvit_t` with its IMAGENET1K_V1 preprocessing (224 from 224,
    /// bicubic).
    fn entries() -> Vec<ZooEntry> {
        let config = Self {
            stem_channels: 64,
            block_channels: vec![64, 128, 256, 512],
            block_layers: vec![2, 2, 5, 2],
            head_dim: 32,
            partition_size: 7,
        };
        vec![
            ZooEntry::new(
                "maxvit_t",
                "torchvision",
                config,
                Preprocess::imagenet(224, 224, Interpolation::Bicubic),
            )
            .published(torchvision_file("maxvit_t-bc5ab103.pth")),
        ]
    }
}
