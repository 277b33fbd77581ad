//! Building blocks of token models (Vision Transformers): patch embedding with a class
//! token, optional register tokens and a position embedding, pre-norm encoder blocks
//! (multi-head self-attention and an MLP, each residual, optionally layer-scaled), and the
//! final norm with the pooling that gives the features (class token or mean of the patch
//! tokens). The blocks carry their origin's parameter names ([`TokenNaming`]: torchvision's
//! or timm's).
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

use crate::kernels::{self, Pointwise};

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

/// Whose parameter names an encoder block carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenNaming {
    /// torchvision's `EncoderBlock`: `ln_1`, `self_attention.{in_proj_weight, in_proj_bias,
    /// out_proj}`, `ln_2`, `mlp.0`, `mlp.3`.
    #[default]
    Torchvision,
    /// timm's `Block`: `norm1`, `attn.{qkv, proj}`, `ls1.gamma`, `norm2`, `mlp.fc1`,
    /// `mlp.fc2`, `ls2.gamma`.
    Timm,
}

/// An encoder block's parts, named by [`TokenNaming::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Norm1,
    /// The packed query/key/value projection, as a Linear's prefix (torchvision's
    /// `nn.MultiheadAttention` stores it as `in_proj_weight`/`in_proj_bias` instead: see
    /// [`TokenNaming::qkv_tensors`]).
    Qkv,
    Proj,
    LayerScale1,
    Norm2,
    Fc1,
    Fc2,
    LayerScale2,
}

impl TokenNaming {
    /// The name of `part` of the block under `prefix`.
    pub fn name(self, prefix: &str, part: Part) -> String {
        let tv = self == TokenNaming::Torchvision;
        let local = match part {
            Part::Norm1 if tv => "ln_1",
            Part::Norm1 => "norm1",
            Part::Qkv if tv => "self_attention.in_proj",
            Part::Qkv => "attn.qkv",
            Part::Proj if tv => "self_attention.out_proj",
            Part::Proj => "attn.proj",
            Part::LayerScale1 => "ls1.gamma",
            Part::Norm2 if tv => "ln_2",
            Part::Norm2 => "norm2",
            Part::Fc1 if tv => "mlp.0",
            Part::Fc1 => "mlp.fc1",
            Part::Fc2 if tv => "mlp.3",
            Part::Fc2 => "mlp.fc2",
            Part::LayerScale2 => "ls2.gamma",
        };
        format!("{prefix}.{local}")
    }

    /// The file's names of the packed projection's weight and bias.
    pub fn qkv_tensors(self, prefix: &str) -> [String; 2] {
        match self {
            TokenNaming::Torchvision => {
                let a = format!("{prefix}.self_attention");
                [format!("{a}.in_proj_weight"), format!("{a}.in_proj_bias")]
            }
            TokenNaming::Timm => {
                let q = self.name(prefix, Part::Qkv);
                [format!("{q}.weight"), format!("{q}.bias")]
            }
        }
    }
}

/// How a patch embedding is laid out and named.
#[derive(Debug, Clone)]
pub struct PatchEmbedSpec<'a> {
    /// The projection, the class token and the position embedding (torchvision:
    /// `conv_proj`, `class_token`, `encoder.pos_embedding`; timm: `patch_embed.proj`,
    /// `cls_token`, `pos_embed`).
    pub names: [&'a str; 3],
    /// Register tokens after the class token: their name and count (timm's `reg_token`).
    pub registers: Option<(&'a str, usize)>,
    pub width: usize,
    pub patch: usize,
    /// Patches per side at the input size the network runs at.
    pub grid: usize,
    /// The position embedding covers the patches only, the class and register tokens are
    /// put in front after it is added (timm's `no_embed_class`); else it covers them all.
    pub no_embed_class: bool,
    /// A file's position embedding for another (square) patch grid is resampled to `grid`
    /// at load time, as timm's `resample_abs_pos_embed` does; else it must be `grid`'s.
    pub resample: bool,
}

impl PatchEmbedSpec<'_> {
    /// Tokens before the patches (the class token and the registers).
    pub fn prefix_tokens(&self) -> usize {
        1 + self.registers.map_or(0, |(_, r)| r)
    }

    /// Tokens the position embedding covers at `grid` patches per side.
    fn position_tokens(&self, grid: usize) -> usize {
        let covered = if self.no_embed_class {
            0
        } else {
            self.prefix_tokens()
        };
        covered + grid * grid
    }
}

/// The image cut into `patch`×`patch` patches, each projected to `width` by a strided
/// convolution, a learnt class token (and register tokens) in front, and a learnt position
/// embedding added.
#[derive(Module, Debug)]
pub struct PatchEmbed {
    pub proj: Conv2d,
    /// `[1, 1, width]`.
    pub class_token: Param<Tensor<3>>,
    /// `[1, registers, width]`.
    pub registers: Option<Param<Tensor<3>>>,
    /// `[1, tokens covered, width]`.
    pub position: Param<Tensor<3>>,
    /// The projection's, class token's, position embedding's and registers' names.
    #[module(skip)]
    pub names: [String; 4],
    /// See [`PatchEmbedSpec::no_embed_class`].
    #[module(skip)]
    pub no_embed_class: bool,
}

impl PatchEmbed {
    pub fn load(l: &WeightLoader, spec: &PatchEmbedSpec) -> Self {
        let [proj, class, position] = spec.names;
        let width = spec.width;
        let registers = spec
            .registers
            .map(|(name, r)| Param::from_tensor(l.tensor(name, [1, r, width])));
        Self {
            proj: load_conv(
                l,
                proj,
                ConvSpec::new(3, width, spec.patch, spec.patch).pad(Pad::After(0)),
                true,
            ),
            class_token: Param::from_tensor(l.tensor(class, [1, 1, width])),
            registers,
            position: Param::from_tensor(load_position(l, spec)),
            names: [
                proj,
                class,
                position,
                spec.registers.map_or("", |(name, _)| name),
            ]
            .map(str::to_owned),
            no_embed_class: spec.no_embed_class,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.proj.forward(x);
        let [n, d, h, w] = x.dims();
        let patches = x.reshape([n, d, h * w]).swap_dims(1, 2);
        let mut prefix = vec![self.class_token.val().expand([n, 1, d])];
        if let Some(r) = &self.registers {
            let [_, k, _] = r.dims();
            prefix.push(r.val().expand([n, k, d]));
        }
        let tokens = if self.no_embed_class {
            prefix.push(patches + self.position.val());
            Tensor::cat(prefix, 1)
        } else {
            prefix.push(patches);
            Tensor::cat(prefix, 1) + self.position.val()
        };
        pack(tokens)
    }

    pub fn export(&self, out: &mut TensorMap) {
        export_conv(&self.proj, &self.names[0], out);
        put(out, self.names[1].clone(), self.class_token.val());
        put(out, self.names[2].clone(), self.position.val());
        if let Some(r) = &self.registers {
            put(out, self.names[3].clone(), r.val());
        }
    }
}

/// The position embedding for `spec.grid`, resampled from the file's grid when `spec`
/// allows it and the file's is another square grid of the same width.
fn load_position(l: &WeightLoader, spec: &PatchEmbedSpec) -> Tensor<3> {
    let name = spec.names[2];
    let want = [1, spec.position_tokens(spec.grid), spec.width];
    let prefix = spec.position_tokens(0);
    let file_grid = l.shape_of(name).and_then(|s| match s.as_slice() {
        [1, t, d] if *d == spec.width && *t > prefix => {
            let g = (t - prefix).isqrt();
            (g * g == t - prefix).then_some(g)
        }
        _ => None,
    });
    match file_grid {
        Some(g) if spec.resample && g != spec.grid => {
            let t = l.tensor(name, [1, spec.position_tokens(g), spec.width]);
            if l.is_dry_run() {
                return t;
            }
            let values = t
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap_or_default();
            let resampled = resample_position(&values, prefix, g, spec.grid, spec.width);
            Tensor::from_data(TensorData::new(resampled, want), l.device())
        }
        _ => l.tensor(name, want),
    }
}

/// timm's `resample_abs_pos_embed`: the `prefix` tokens kept, the patch part (`[old, old]`
/// tokens of `width`, row-major) resized to `[new, new]` as PyTorch's
/// `F.interpolate(mode="bicubic", antialias=True, align_corners=False)` does (separable
/// Keys cubic with a = -0.5, the kernel widened by the scale when shrinking, weights
/// normalised per output), in f64.
pub fn resample_position(
    values: &[f32],
    prefix: usize,
    old: usize,
    new: usize,
    width: usize,
) -> Vec<f32> {
    let w = resample_weights(old, new);
    let patches = &values[prefix * width..];
    let at = |y: usize, x: usize, c: usize| f64::from(patches[(y * old + x) * width + c]);
    // Rows first along x, then along y.
    let mut rows = vec![0f64; old * new * width];
    for y in 0..old {
        for (x, taps) in w.iter().enumerate() {
            for &(j, k) in taps {
                for c in 0..width {
                    rows[(y * new + x) * width + c] += k * at(y, j, c);
                }
            }
        }
    }
    let mut out = values[..prefix * width].to_vec();
    out.reserve(new * new * width);
    for taps in &w {
        for x in 0..new {
            for c in 0..width {
                let v: f64 = taps
                    .iter()
                    .map(|&(j, k)| k * rows[(j * new + x) * width + c])
                    .sum();
                out.push(v as f32);
            }
        }
    }
    out
}

/// Per output index, its (input index, weight) taps: PyTorch's antialiased bicubic
/// (`_compute_weights_aa` with `interp_size` 4).
fn resample_weights(input: usize, output: usize) -> Vec<Vec<(usize, f64)>> {
    let cubic = |x: f64| {
        let a = -0.5;
        let x = x.abs();
        if x < 1.0 {
            ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
        } else {
            0.0
        }
    };
    let scale = input as f64 / output as f64;
    let (support, invscale) = if scale >= 1.0 {
        (2.0 * scale, 1.0 / scale)
    } else {
        (2.0, 1.0)
    };
    (0..output)
        .map(|i| {
            let center = scale * (i as f64 + 0.5);
            // Truncation toward zero, as the C++ casts do.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).clamp(0, input as i64) as usize;
            let taps: Vec<(usize, f64)> = (lo..hi)
                .map(|j| (j, cubic((j as f64 - center + 0.5) * invscale)))
                .collect();
            let total: f64 = taps.iter().map(|t| t.1).sum();
            if total == 0.0 {
                return taps;
            }
            taps.into_iter().map(|(j, k)| (j, k / total)).collect()
        })
        .collect()
}

/// Multi-head self-attention: one packed projection for queries, keys and values (PyTorch
/// MHA's `in_proj`, timm's `qkv`: q, k, v one after the other, each head's slice
/// contiguous), then the output projection.
#[derive(Module, Debug)]
pub struct Attention {
    pub in_proj: Linear,
    pub out_proj: Linear,
    pub heads: usize,
}

impl Attention {
    /// The block under `prefix`'s attention, by `naming`; `bias`: whether the packed
    /// projection has one (timm's `qkv_bias`).
    pub fn load(
        l: &WeightLoader,
        prefix: &str,
        naming: TokenNaming,
        width: usize,
        heads: usize,
        bias: bool,
    ) -> Self {
        let [w, b] = naming.qkv_tensors(prefix);
        let w = l.tensor::<2>(&w, [3 * width, width]);
        let b = bias.then(|| Param::from_tensor(l.tensor::<1>(&b, [3 * width])));
        Self {
            in_proj: Linear {
                weight: Param::from_tensor(w.transpose()),
                bias: b,
            },
            out_proj: load_linear(l, &naming.name(prefix, Part::Proj), width, width),
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

/// How an encoder block is laid out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderSpec {
    pub naming: TokenNaming,
    pub width: usize,
    pub heads: usize,
    pub mlp: usize,
    /// The LayerNorms' epsilon.
    pub eps: f64,
    /// The packed query/key/value projection has a bias.
    pub qkv_bias: bool,
    /// Each branch is scaled per channel before its residual (timm's `ls1`/`ls2`,
    /// `init_values` set: DINOv2, DeiT III).
    pub layer_scale: bool,
}

impl EncoderSpec {
    /// torchvision's `EncoderBlock`.
    pub fn torchvision(width: usize, heads: usize, mlp: usize, eps: f64) -> Self {
        Self {
            naming: TokenNaming::Torchvision,
            width,
            heads,
            mlp,
            eps,
            qkv_bias: true,
            layer_scale: false,
        }
    }
}

/// A pre-norm Transformer encoder block: `x + ls1 · attention(norm1(x))`, then
/// `x + ls2 · mlp(norm2(x))` with a GELU MLP (`ls`: layer scale, 1 when absent).
#[derive(Module, Debug)]
pub struct EncoderBlock {
    pub ln_1: LayerNorm,
    pub attention: Attention,
    pub ln_2: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
    /// `[width]` each.
    pub ls1: Option<Param<Tensor<1>>>,
    pub ls2: Option<Param<Tensor<1>>>,
    #[module(skip)]
    pub prefix: String,
    #[module(skip)]
    pub naming: TokenNaming,
    /// The LayerNorms' epsilon (burn keeps its own private).
    #[module(skip)]
    pub eps: f64,
}

impl EncoderBlock {
    /// The block under `prefix`, named as `spec.naming` says.
    pub fn load(l: &WeightLoader, prefix: &str, spec: &EncoderSpec) -> Self {
        let name = |part| spec.naming.name(prefix, part);
        let (d, eps) = (spec.width, spec.eps);
        let scale = |part| {
            spec.layer_scale
                .then(|| Param::from_tensor(l.tensor(&name(part), [d])))
        };
        Self {
            ln_1: load_layer_norm(l, &name(Part::Norm1), d, eps),
            attention: Attention::load(l, prefix, spec.naming, d, spec.heads, spec.qkv_bias),
            ls1: scale(Part::LayerScale1),
            ln_2: load_layer_norm(l, &name(Part::Norm2), d, eps),
            fc1: load_linear(l, &name(Part::Fc1), d, spec.mlp),
            fc2: load_linear(l, &name(Part::Fc2), spec.mlp, d),
            ls2: scale(Part::LayerScale2),
            prefix: prefix.to_owned(),
            naming: spec.naming,
            eps,
        }
    }

    /// `prefix`'s `part`, named as this block is.
    pub fn name(&self, part: Part) -> String {
        self.naming.name(&self.prefix, part)
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let scaled = |y: Tensor<3>, ls: &Option<Param<Tensor<1>>>| match ls {
            Some(g) => {
                let [d] = g.dims();
                y * g.val().reshape([1, 1, d])
            }
            None => y,
        };
        let x = unpack(x);
        let y = self.attention.forward(self.ln_1.forward(x.clone()));
        let x = x + scaled(y, &self.ls1);
        let y = self.fc2.forward(kernels::activation(
            self.fc1.forward(self.ln_2.forward(x.clone())),
            Pointwise::Gelu,
        ));
        pack(x + scaled(y, &self.ls2))
    }

    pub fn export(&self, out: &mut TensorMap) {
        export_layer_norm(&self.ln_1, &self.name(Part::Norm1), out);
        let [w, b] = self.naming.qkv_tensors(&self.prefix);
        put(out, w, self.attention.in_proj.weight.val().transpose());
        if let Some(bias) = &self.attention.in_proj.bias {
            put(out, b, bias.val());
        }
        export_linear(&self.attention.out_proj, &self.name(Part::Proj), out);
        if let Some(g) = &self.ls1 {
            put(out, self.name(Part::LayerScale1), g.val());
        }
        export_layer_norm(&self.ln_2, &self.name(Part::Norm2), out);
        export_linear(&self.fc1, &self.name(Part::Fc1), out);
        export_linear(&self.fc2, &self.name(Part::Fc2), out);
        if let Some(g) = &self.ls2 {
            put(out, self.name(Part::LayerScale2), g.val());
        }
    }
}

/// How the final stage makes one vector of the tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenPool {
    /// The LayerNorm on every token, then the class token (torchvision; timm's `token`).
    #[default]
    ClassToken,
    /// The mean of the tokens after the first `prefix` (the patches), then the LayerNorm
    /// (timm's `avg` with its `fc_norm`).
    MeanPatches { prefix: usize },
}

/// The final LayerNorm and pooling, as `[n, width, 1, 1]`: the pre-logits features (the
/// pooled output of this stage is that vector).
#[derive(Module, Debug)]
pub struct ClassTokenHead {
    pub ln: LayerNorm,
    #[module(skip)]
    pub name: String,
    #[module(skip)]
    pub eps: f64,
    #[module(skip)]
    pub pool: TokenPool,
}

impl ClassTokenHead {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = unpack(x);
        let [n, t, d] = x.dims();
        let v = match self.pool {
            TokenPool::ClassToken => self.ln.forward(x).narrow(1, 0, 1),
            TokenPool::MeanPatches { prefix } => {
                self.ln.forward(x.narrow(1, prefix, t - prefix).mean_dim(1))
            }
        };
        v.reshape([n, d, 1, 1])
    }

    pub fn export(&self, out: &mut TensorMap) {
        export_layer_norm(&self.ln, &self.name, out);
    }
}

#[cfg(test)]
mod tests {
    use super::resample_weights;

    /// Same size: the identity; every output's taps sum to 1; shrinking widens the kernel.
    #[test]
    fn resampling_weights_are_pytorchs_antialiased_bicubic() {
        for (j, taps) in resample_weights(5, 5).iter().enumerate() {
            for &(i, k) in taps {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((k - want).abs() < 1e-12, "{i} {j} {k}");
            }
        }
        for (a, b) in [(37, 16), (16, 37), (5, 4), (3, 5)] {
            for taps in resample_weights(a, b) {
                let total: f64 = taps.iter().map(|t| t.1).sum();
                assert!((total - 1.0).abs() < 1e-12);
            }
        }
        assert!(resample_weights(37, 16)[8].len() > resample_weights(16, 37)[8].len());
    }
}
