//! Building blocks of token models (Vision Transformers): patch embedding with a class
//! token and position embedding, pre-norm encoder blocks (multi-head self-attention and an
//! MLP, each residual), and the final norm that takes the class token.
//!
//! Between stages tokens travel as the rest of the network's values do, a rank-4 tensor:
//! `[n, tokens, width]` packed as `[n, width, tokens, 1]` (the graph runtime's convention,
//! `graph::value::F::into_r4`), so cutting, freezing and feature maps work on them as on a
//! CNN's, and a stage's pooled output is the mean of its tokens.

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;
use burn::tensor::activation;

use super::layers::{
    ConvSpec, Pad, TensorMap, export_conv, export_linear, load_conv, load_linear, put,
};
use super::loader::WeightLoader;

/// `[n, width, tokens, 1]` → `[n, tokens, width]`.
pub fn unpack(x: Tensor<4>) -> Tensor<3> {
    let [n, d, t, _] = x.dims();
    x.reshape([n, d, t]).swap_dims(1, 2)
}

/// `[n, tokens, width]` → `[n, width, tokens, 1]`.
pub fn pack(x: Tensor<3>) -> Tensor<4> {
    let [n, t, d] = x.dims();
    x.swap_dims(1, 2).reshape([n, d, t, 1])
}

/// A LayerNorm over the last dimension, loaded from `<prefix>.weight` and `.bias`.
pub fn load_layer_norm(l: &WeightLoader, prefix: &str, width: usize, eps: f64) -> LayerNorm {
    let mut ln = LayerNormConfig::new(width)
        .with_epsilon(eps)
        .init(l.device());
    ln.gamma = Param::from_tensor(l.tensor(&format!("{prefix}.weight"), [width]));
    ln.beta = Some(Param::from_tensor(
        l.tensor(&format!("{prefix}.bias"), [width]),
    ));
    ln
}

pub(crate) fn export_layer_norm(ln: &LayerNorm, prefix: &str, out: &mut TensorMap) {
    put(out, format!("{prefix}.weight"), ln.gamma.val());
    if let Some(b) = &ln.beta {
        put(out, format!("{prefix}.bias"), b.val());
    }
}

/// The image cut into `patch`×`patch` patches, each projected to `width` by a strided
/// convolution, a learnt class token in front, and a learnt position embedding added.
#[derive(Module, Debug)]
pub struct PatchEmbed {
    pub proj: Conv2d,
    /// `[1, 1, width]`.
    pub class_token: Param<Tensor<3>>,
    /// `[1, 1 + patches, width]`.
    pub position: Param<Tensor<3>>,
    #[module(skip)]
    pub names: [String; 3],
}

impl PatchEmbed {
    /// torchvision's names: `conv_proj`, `class_token`, `encoder.pos_embedding`.
    pub fn load(
        l: &WeightLoader,
        names: [&str; 3],
        width: usize,
        patch: usize,
        tokens: usize,
    ) -> Self {
        Self {
            proj: load_conv(
                l,
                names[0],
                ConvSpec::new(3, width, patch, patch).pad(Pad::After(0)),
                true,
            ),
            class_token: Param::from_tensor(l.tensor(names[1], [1, 1, width])),
            position: Param::from_tensor(l.tensor(names[2], [1, tokens, width])),
            names: names.map(str::to_owned),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.proj.forward(x);
        let [n, d, h, w] = x.dims();
        let patches = x.reshape([n, d, h * w]).swap_dims(1, 2);
        let class = self.class_token.val().expand([n, 1, d]);
        pack(Tensor::cat(vec![class, patches], 1) + self.position.val())
    }

    pub fn export(&self, out: &mut TensorMap) {
        export_conv(&self.proj, &self.names[0], out);
        put(out, self.names[1].clone(), self.class_token.val());
        put(out, self.names[2].clone(), self.position.val());
    }
}

/// Multi-head self-attention with PyTorch's `nn.MultiheadAttention` parameters: one
/// `in_proj` for queries, keys and values, and `out_proj`.
#[derive(Module, Debug)]
pub struct Attention {
    pub in_proj: Linear,
    pub out_proj: Linear,
    pub heads: usize,
}

impl Attention {
    pub fn load(l: &WeightLoader, prefix: &str, width: usize, heads: usize) -> Self {
        // `in_proj_weight` / `in_proj_bias`, not `in_proj.weight`.
        let w = l.tensor::<2>(&format!("{prefix}.in_proj_weight"), [3 * width, width]);
        let b = l.tensor::<1>(&format!("{prefix}.in_proj_bias"), [3 * width]);
        Self {
            in_proj: Linear {
                weight: Param::from_tensor(w.transpose()),
                bias: Some(Param::from_tensor(b)),
            },
            out_proj: load_linear(l, &format!("{prefix}.out_proj"), width, width),
            heads,
        }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [n, t, d] = x.dims();
        let h = self.heads;
        let dh = d / h;
        let qkv = self.in_proj.forward(x);
        // [n, t, 3, h, dh] → three [n, h, t, dh].
        let qkv = qkv.reshape([n, t, 3, h, dh]).permute([2, 0, 3, 1, 4]);
        let part = |i: usize| qkv.clone().narrow(0, i, 1).reshape([n, h, t, dh]);
        let (q, k, v) = (part(0), part(1), part(2));
        let scores = q.matmul(k.swap_dims(2, 3)) / (dh as f64).sqrt();
        let y = activation::softmax(scores, 3).matmul(v);
        self.out_proj.forward(y.swap_dims(1, 2).reshape([n, t, d]))
    }
}

/// A pre-norm Transformer encoder block: `x + attention(ln_1(x))`, then
/// `x + mlp(ln_2(x))` with a GELU MLP.
#[derive(Module, Debug)]
pub struct EncoderBlock {
    pub ln_1: LayerNorm,
    pub attention: Attention,
    pub ln_2: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
    #[module(skip)]
    pub prefix: String,
    /// The LayerNorms' epsilon (burn keeps its own private).
    #[module(skip)]
    pub eps: f64,
}

impl EncoderBlock {
    /// torchvision's `EncoderBlock` under `prefix`: `ln_1`, `self_attention`, `ln_2`,
    /// `mlp.0`, `mlp.3`.
    pub fn load(
        l: &WeightLoader,
        prefix: &str,
        width: usize,
        heads: usize,
        mlp: usize,
        eps: f64,
    ) -> Self {
        Self {
            ln_1: load_layer_norm(l, &format!("{prefix}.ln_1"), width, eps),
            attention: Attention::load(l, &format!("{prefix}.self_attention"), width, heads),
            ln_2: load_layer_norm(l, &format!("{prefix}.ln_2"), width, eps),
            fc1: load_linear(l, &format!("{prefix}.mlp.0"), width, mlp),
            fc2: load_linear(l, &format!("{prefix}.mlp.3"), mlp, width),
            prefix: prefix.to_owned(),
            eps,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = unpack(x);
        let x = x.clone() + self.attention.forward(self.ln_1.forward(x));
        let y = self.fc2.forward(activation::gelu(
            self.fc1.forward(self.ln_2.forward(x.clone())),
        ));
        pack(x + y)
    }

    pub fn export(&self, out: &mut TensorMap) {
        let p = &self.prefix;
        export_layer_norm(&self.ln_1, &format!("{p}.ln_1"), out);
        let a = format!("{p}.self_attention");
        put(
            out,
            format!("{a}.in_proj_weight"),
            self.attention.in_proj.weight.val().transpose(),
        );
        if let Some(b) = &self.attention.in_proj.bias {
            put(out, format!("{a}.in_proj_bias"), b.val());
        }
        export_linear(&self.attention.out_proj, &format!("{a}.out_proj"), out);
        export_layer_norm(&self.ln_2, &format!("{p}.ln_2"), out);
        export_linear(&self.fc1, &format!("{p}.mlp.0"), out);
        export_linear(&self.fc2, &format!("{p}.mlp.3"), out);
    }
}

/// The final LayerNorm, then the class token alone, as `[n, width, 1, 1]`: torchvision's
/// pre-logits features (the pooled output of this stage is that vector).
#[derive(Module, Debug)]
pub struct ClassTokenHead {
    pub ln: LayerNorm,
    #[module(skip)]
    pub name: String,
    #[module(skip)]
    pub eps: f64,
}

impl ClassTokenHead {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.ln.forward(unpack(x));
        let [n, _, d] = x.dims();
        x.narrow(1, 0, 1).reshape([n, d, 1, 1])
    }

    pub fn export(&self, out: &mut TensorMap) {
        export_layer_norm(&self.ln, &self.name, out);
    }
}
