//! Swin Transformer, V1 and V2 (torchvision layout: `features.0` the 4×4 patchify
//! convolution and its LayerNorm (`features.0.0`, `features.0.2`), `features.{1,3,5,7}.N`
//! the blocks — `norm1`, `attn` (`qkv`, `proj`, and V1's `relative_position_bias_table` or
//! V2's `logit_scale` and `cpb_mlp.{0,2}`), `norm2`, `mlp.0`/`mlp.3` —, `features.{2,4,6}`
//! patch merging (`reduction`, `norm`), `norm` the final LayerNorm, `head`). The features are
//! torchvision's pre-logits: the final LayerNorm, averaged over the map.
//!
//! timm's Swin V1 (`timm.models.swin_transformer`) is the same network under other names:
//! `patch_embed.proj`/`patch_embed.norm`, `layers.S.downsample.{norm, reduction}` before
//! stage S, `layers.S.blocks.N` (`mlp.fc1`/`mlp.fc2`), `norm`, `head.fc`. timm shrinks a
//! window to a stage's map when the map is smaller and then does not shift it; torchvision
//! pads the map to the window instead. The two agree wherever every stage's map is at least
//! a window wide, as at the entries' 224 (the last stage's 7×7 is one unshifted window).
//!
//! Between blocks values travel as NCHW maps (each block works channels-last inside), so
//! the stages cut, freeze and pool as a CNN's do. `relative_position_index` (and V2's
//! `relative_coords_table`) are buffers computed from the window size: a file may hold them
//! or not.

use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;
use burn::tensor::activation;
use serde::{Deserialize, Serialize};

use super::convnext::ConvNorm;
use super::family::{ClassifierSpec, Family, Naming, StageInfo, StageList};
use super::layers::{
    Block, BnSpec, ConvSpec, Pad, TensorMap, export_linear, load_conv, load_linear,
    load_linear_no_bias, put,
};
use super::loader::WeightLoader;
use super::network::Stage;
use super::tokens::{export_layer_norm, load_layer_norm};
use super::{Interpolation, Preprocess, ZooEntry, torchvision_file};
use crate::kernels::{self, Pointwise};

/// torchvision's Swin LayerNorms (`partial(nn.LayerNorm, eps=1e-5)`).
const LN_EPS: f64 = 1e-5;

/// The hidden width of V2's continuous position bias MLP (`cpb_mlp`).
pub const CPB_HIDDEN: usize = 512;

/// NCHW → NHWC.
fn nhwc(x: Tensor<4>) -> Tensor<4> {
    x.permute([0, 2, 3, 1])
}

/// NHWC → NCHW.
fn nchw(x: Tensor<4>) -> Tensor<4> {
    x.permute([0, 3, 1, 2])
}

/// torchvision's `relative_position_index` of a `wh`×`ww` window: entry `i·N + j` indexes
/// the bias table row of query `i` and key `j` (row-major positions in the window).
pub fn relative_position_index(window: [usize; 2]) -> Vec<i64> {
    let [wh, ww] = window.map(|v| v as i64);
    let n = wh * ww;
    let mut idx = Vec::with_capacity((n * n) as usize);
    for i in 0..n {
        for j in 0..n {
            let dh = i / ww - j / ww + wh - 1;
            let dw = i % ww - j % ww + ww - 1;
            idx.push(dh * (2 * ww - 1) + dw);
        }
    }
    idx
}

/// V2's `relative_coords_table`, `[(2wh−1)·(2ww−1), 2]`: relative offsets scaled to ±8 and
/// log-spaced, `sign(v)·log2(|v| + 1) / 3`, computed in f32 as torchvision does.
pub fn relative_coords_table(window: [usize; 2]) -> Vec<f32> {
    let [wh, ww] = window.map(|v| v as i64);
    let mut t = Vec::new();
    let f = |v: i64, w: i64| {
        let v = v as f32 / (w - 1) as f32 * 8.0;
        v.signum() * (v.abs() + 1.0).log2() / 3.0
    };
    for dh in -(wh - 1)..wh {
        for dw in -(ww - 1)..ww {
            // torch.sign(0) is 0, f32::signum(0) is 1: the log of 1 is 0 either way.
            t.push(f(dh, wh));
            t.push(f(dw, ww));
        }
    }
    t
}

/// The shift a block applies on a padded `hw` map: none along a side its window covers.
pub fn effective_shift(window: [usize; 2], shift: [usize; 2], padded: [usize; 2]) -> [usize; 2] {
    [0, 1].map(|i| if window[i] >= padded[i] { 0 } else { shift[i] })
}

/// Padding (bottom, right) that makes `hw` a multiple of the window.
pub fn window_padding(window: [usize; 2], hw: [usize; 2]) -> [usize; 2] {
    [0, 1].map(|i| (window[i] - hw[i] % window[i]) % window[i])
}

/// torchvision's shifted-window attention mask, `[windows, N, N]`: −100 between positions
/// of different regions of the rolled map, 0 within one. `padded` is the padded map size.
pub fn shift_mask(window: [usize; 2], shift: [usize; 2], padded: [usize; 2]) -> Vec<f32> {
    let [ph, pw] = padded;
    let [wh, ww] = window;
    // Python's slice bounds: negative from the end, -0 is 0.
    let at = |v: i64, n: usize| -> usize {
        if v < 0 {
            (n as i64 + v).max(0) as usize
        } else {
            (v as usize).min(n)
        }
    };
    let slices = |w: usize, s: usize, n: usize| -> [(usize, usize); 3] {
        let (w, s) = (w as i64, s as i64);
        [
            (at(0, n), at(-w, n)),
            (at(-w, n), at(-s, n)),
            (at(-s, n), n),
        ]
    };
    let mut region = vec![0f32; ph * pw];
    let mut count = 0.0;
    for (h0, h1) in slices(wh, shift[0], ph) {
        for (w0, w1) in slices(ww, shift[1], pw) {
            for r in h0..h1.max(h0) {
                for c in w0..w1.max(w0) {
                    region[r * pw + c] = count;
                }
            }
            count += 1.0;
        }
    }
    let (nh, nw) = (ph / wh, pw / ww);
    let n = wh * ww;
    let mut mask = Vec::with_capacity(nh * nw * n * n);
    for a in 0..nh {
        for b in 0..nw {
            let label = |k: usize| region[(a * wh + k / ww) * pw + b * ww + k % ww];
            for i in 0..n {
                for j in 0..n {
                    mask.push(if label(j) != label(i) { -100.0 } else { 0.0 });
                }
            }
        }
    }
    mask
}

/// Rolls `x` by `by` along `dim` (PyTorch's `torch.roll`, one dimension).
fn roll(x: Tensor<4>, by: i64, dim: usize) -> Tensor<4> {
    let n = x.dims()[dim] as i64;
    let s = by.rem_euclid(n) as usize;
    if s == 0 {
        return x;
    }
    let n = n as usize;
    Tensor::cat(
        vec![x.clone().narrow(dim, n - s, s), x.narrow(dim, 0, n - s)],
        dim,
    )
}

/// Zeros after the end of dimensions 1 and 2 of an NHWC value.
fn pad_after(x: Tensor<4>, pad: [usize; 2]) -> Tensor<4> {
    let mut x = x;
    for (i, &p) in pad.iter().enumerate() {
        if p > 0 {
            let mut shape = x.dims();
            shape[i + 1] = p;
            let zeros = Tensor::zeros(shape, &x.device());
            x = Tensor::cat(vec![x, zeros], i + 1);
        }
    }
    x
}

/// Window multi-head self-attention with a relative position bias (torchvision's
/// `ShiftedWindowAttention`, or V2's `ShiftedWindowAttentionV2`: cosine attention with a
/// learnt, clamped logit scale and the bias from an MLP over log-spaced coordinates).
#[derive(Module, Debug)]
pub struct WindowAttention {
    pub qkv: Linear,
    pub proj: Linear,
    /// V1: `[(2wh−1)·(2ww−1), heads]`.
    pub relative_position_bias_table: Option<Param<Tensor<2>>>,
    /// V2: `[heads, 1, 1]`.
    pub logit_scale: Option<Param<Tensor<3>>>,
    /// V2: `cpb_mlp.0` (2 → 512, with bias) and `cpb_mlp.2` (512 → heads, no bias).
    pub cpb_fc1: Option<Linear>,
    pub cpb_fc2: Option<Linear>,
    #[module(skip)]
    pub window: [usize; 2],
    #[module(skip)]
    pub shift: [usize; 2],
    #[module(skip)]
    pub heads: usize,
}

impl WindowAttention {
    fn load(
        l: &WeightLoader,
        prefix: &str,
        dim: usize,
        heads: usize,
        window: [usize; 2],
        shift: [usize; 2],
        v2: bool,
    ) -> Self {
        let table = (2 * window[0] - 1) * (2 * window[1] - 1);
        l.skip(&format!("{prefix}.relative_position_index"));
        let (bias_table, logit_scale, cpb_fc1, cpb_fc2) = if v2 {
            l.skip(&format!("{prefix}.relative_coords_table"));
            (
                None,
                Some(Param::from_tensor(
                    l.tensor(&format!("{prefix}.logit_scale"), [heads, 1, 1]),
                )),
                Some(load_linear(
                    l,
                    &format!("{prefix}.cpb_mlp.0"),
                    2,
                    CPB_HIDDEN,
                )),
                Some(load_linear_no_bias(
                    l,
                    &format!("{prefix}.cpb_mlp.2"),
                    CPB_HIDDEN,
                    heads,
                )),
            )
        } else {
            let t = l.tensor(
                &format!("{prefix}.relative_position_bias_table"),
                [table, heads],
            );
            (Some(Param::from_tensor(t)), None, None, None)
        };
        Self {
            qkv: load_linear(l, &format!("{prefix}.qkv"), dim, 3 * dim),
            proj: load_linear(l, &format!("{prefix}.proj"), dim, dim),
            relative_position_bias_table: bias_table,
            logit_scale,
            cpb_fc1,
            cpb_fc2,
            window,
            shift,
            heads,
        }
    }

    fn v2(&self) -> bool {
        self.logit_scale.is_some()
    }

    /// The bias table, `[(2wh−1)·(2ww−1), heads]`: V1's parameter, or V2's `cpb_mlp` on the
    /// coordinates table (before V2's `16·sigmoid`).
    fn bias_table(&self, device: &Device) -> Tensor<2> {
        if let Some(t) = &self.relative_position_bias_table {
            return t.val();
        }
        let coords = relative_coords_table(self.window);
        let rows = coords.len() / 2;
        let coords = Tensor::<2>::from_data(TensorData::new(coords, [rows, 2]), device);
        let (Some(fc1), Some(fc2)) = (&self.cpb_fc1, &self.cpb_fc2) else {
            unreachable!("a V2 attention has its cpb_mlp")
        };
        fc2.forward(activation::relu(fc1.forward(coords)))
    }

    /// `[1, heads, N, N]`.
    fn position_bias(&self, device: &Device) -> Tensor<4> {
        let n = self.window[0] * self.window[1];
        let index = relative_position_index(self.window);
        let index = Tensor::<1, Int>::from_data(TensorData::new(index, [n * n]), device);
        let bias = self
            .bias_table(device)
            .select(0, index)
            .reshape([n, n, self.heads])
            .permute([2, 0, 1])
            .reshape([1, self.heads, n, n]);
        if self.v2() {
            activation::sigmoid(bias) * 16.0
        } else {
            bias
        }
    }

    /// The qkv projection; V2 ignores the keys' bias (torchvision zeroes it in `forward`).
    fn qkv(&self, x: Tensor<3>) -> Tensor<3> {
        if !self.v2() {
            return self.qkv.forward(x);
        }
        let y = x.matmul(self.qkv.weight.val().unsqueeze());
        match &self.qkv.bias {
            Some(b) => {
                let d = b.dims()[0] / 3;
                let keep: Vec<f32> = (0..3 * d)
                    .map(|i| if (d..2 * d).contains(&i) { 0.0 } else { 1.0 })
                    .collect();
                let keep = Tensor::<1>::from_data(TensorData::new(keep, [3 * d]), &y.device());
                y + (b.val() * keep).unsqueeze()
            }
            None => y,
        }
    }

    /// On an NHWC value.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let [b, h, w, c] = input.dims();
        let device = input.device();
        let [wh, ww] = self.window;
        let pad = window_padding(self.window, [h, w]);
        let (ph, pw) = (h + pad[0], w + pad[1]);
        let shift = effective_shift(self.window, self.shift, [ph, pw]);
        let mut x = pad_after(input, pad);
        x = roll(roll(x, -(shift[0] as i64), 1), -(shift[1] as i64), 2);
        let (nh, nw) = (ph / wh, pw / ww);
        let windows = nh * nw;
        let n = wh * ww;
        let x = x
            .reshape([b * nh, wh, nw, ww * c])
            .swap_dims(1, 2)
            .reshape([b * windows, n, c]);
        let heads = self.heads;
        let dh = c / heads;
        let qkv = self
            .qkv(x)
            .reshape([b * windows, n, 3, heads * dh])
            .swap_dims(1, 2);
        let part = |i: usize| {
            qkv.clone()
                .narrow(1, i, 1)
                .reshape([b * windows, n, heads, dh])
                .swap_dims(1, 2)
        };
        let (q, k, v) = (part(0), part(1), part(2));
        let attn = if let Some(scale) = &self.logit_scale {
            // F.normalize: t / max(‖t‖, 1e-12). The 1e-24 under the root changes no value
            // in f32 but keeps the root's gradient finite on a zero vector (a padded
            // position's key, whose V2 bias is zero), where torch's norm has gradient 0.
            let unit = |t: Tensor<4>| {
                let squares = (t.clone() * t.clone()).sum_dim(3);
                t / (squares + 1e-24).sqrt().clamp_min(1e-12)
            };
            let scale = scale
                .val()
                .clamp_max(100f64.ln())
                .exp()
                .reshape([1, heads, 1, 1]);
            unit(q).matmul(unit(k).swap_dims(2, 3)) * scale
        } else {
            (q * (dh as f64).powf(-0.5)).matmul(k.swap_dims(2, 3))
        };
        let mut attn = attn + self.position_bias(&device);
        if shift != [0, 0] {
            let mask = shift_mask(self.window, shift, [ph, pw]);
            let mask = Tensor::<3>::from_data(TensorData::new(mask, [windows, n, n]), &device);
            attn = (attn.reshape([b, windows, heads, n, n]) + mask.reshape([1, windows, 1, n, n]))
                .reshape([b * windows, heads, n, n]);
        }
        let y = activation::softmax(attn, 3)
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([b * windows, n, c]);
        let y = self.proj.forward(y);
        let y = y
            .reshape([b * nh, nw, wh, ww * c])
            .swap_dims(1, 2)
            .reshape([b, ph, pw, c]);
        let y = roll(roll(y, shift[0] as i64, 1), shift[1] as i64, 2);
        y.narrow(1, 0, h).narrow(2, 0, w)
    }

    fn export(&self, prefix: &str, out: &mut TensorMap) {
        export_linear(&self.qkv, &format!("{prefix}.qkv"), out);
        export_linear(&self.proj, &format!("{prefix}.proj"), out);
        if let Some(t) = &self.relative_position_bias_table {
            put(
                out,
                format!("{prefix}.relative_position_bias_table"),
                t.val(),
            );
        }
        if let Some(s) = &self.logit_scale {
            put(out, format!("{prefix}.logit_scale"), s.val());
        }
        if let Some(fc) = &self.cpb_fc1 {
            export_linear(fc, &format!("{prefix}.cpb_mlp.0"), out);
        }
        if let Some(fc) = &self.cpb_fc2 {
            export_linear(fc, &format!("{prefix}.cpb_mlp.2"), out);
        }
    }
}

/// A Swin block on an NCHW map: V1 `x + attn(norm1(x))`, `x + mlp(norm2(x))`; V2 (res-post-
/// norm) `x + norm1(attn(x))`, `x + norm2(mlp(x))`. Stochastic depth is the identity at
/// inference.
#[derive(Module, Debug)]
pub struct SwinBlock {
    pub norm1: LayerNorm,
    pub attn: WindowAttention,
    pub norm2: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
    pub post_norm: bool,
    #[module(skip)]
    pub prefix: String,
    #[module(skip)]
    pub eps: f64,
    #[module(skip)]
    pub naming: Naming,
}

/// The MLP's two Linears' names under a block's prefix.
fn mlp_names(naming: Naming, p: &str) -> [String; 2] {
    match naming {
        Naming::Torchvision => [format!("{p}.mlp.0"), format!("{p}.mlp.3")],
        Naming::Timm => [format!("{p}.mlp.fc1"), format!("{p}.mlp.fc2")],
    }
}

impl SwinBlock {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = nhwc(x);
        let mlp = |t: Tensor<4>| {
            self.fc2
                .forward(kernels::activation(self.fc1.forward(t), Pointwise::Gelu))
        };
        let x = if self.post_norm {
            let x = x.clone() + self.norm1.forward(self.attn.forward(x));
            x.clone() + self.norm2.forward(mlp(x))
        } else {
            let x = x.clone() + self.attn.forward(self.norm1.forward(x));
            x.clone() + mlp(self.norm2.forward(x))
        };
        nchw(x)
    }

    pub fn export(&self, out: &mut TensorMap) {
        let p = &self.prefix;
        export_layer_norm(&self.norm1, &format!("{p}.norm1"), out);
        self.attn.export(&format!("{p}.attn"), out);
        export_layer_norm(&self.norm2, &format!("{p}.norm2"), out);
        let [fc1, fc2] = mlp_names(self.naming, p);
        export_linear(&self.fc1, &fc1, out);
        export_linear(&self.fc2, &fc2, out);
    }
}

/// Patch merging on an NCHW map: padded to even sides, each 2×2 neighbourhood's channels
/// concatenated in torchvision's order (`x[0::2, 0::2]`, `x[1::2, 0::2]`, `x[0::2, 1::2]`,
/// `x[1::2, 1::2]`), then V1 LayerNorm(4C) and the reduction to 2C (no bias), or V2 the
/// reduction and LayerNorm(2C).
#[derive(Module, Debug)]
pub struct PatchMerging {
    pub reduction: Linear,
    pub norm: LayerNorm,
    pub norm_after: bool,
    #[module(skip)]
    pub prefix: String,
    #[module(skip)]
    pub eps: f64,
}

impl PatchMerging {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let x = pad_after(nhwc(x), [h % 2, w % 2]);
        let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
        // [b, h2, a, w2, b', c] → [b, h2, w2, b', a, c]: channel block 2·b' + a.
        let x = x.reshape([b * h2, 2, w2, 2, c]);
        let x = x.permute([0, 2, 3, 1, 4]).reshape([b, h2, w2, 4 * c]);
        let x = if self.norm_after {
            self.norm.forward(self.reduction.forward(x))
        } else {
            self.reduction.forward(self.norm.forward(x))
        };
        nchw(x)
    }

    pub fn export(&self, out: &mut TensorMap) {
        let p = &self.prefix;
        export_linear(&self.reduction, &format!("{p}.reduction"), out);
        export_layer_norm(&self.norm, &format!("{p}.norm"), out);
    }
}

/// A LayerNorm over the channels of an NCHW map, the map kept (Swin's final `norm`, before
/// the average pool).
#[derive(Module, Debug)]
pub struct MapNorm {
    pub norm: LayerNorm,
    #[module(skip)]
    pub name: String,
    #[module(skip)]
    pub eps: f64,
}

impl MapNorm {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        nchw(self.norm.forward(nhwc(x)))
    }

    pub fn export(&self, out: &mut TensorMap) {
        export_layer_norm(&self.norm, &self.name, out);
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwinConfig {
    /// Swin Transformer V2 (cosine attention, continuous position bias, res-post-norm,
    /// `PatchMergingV2`).
    #[serde(default)]
    pub v2: bool,
    pub patch_size: usize,
    pub embed_dim: usize,
    /// Blocks of each stage.
    pub depths: Vec<usize>,
    /// Attention heads of each stage.
    pub num_heads: Vec<usize>,
    /// Window height and width.
    pub window_size: [usize; 2],
    #[serde(default, skip_serializing_if = "Naming::is_torchvision")]
    pub naming: Naming,
}

impl SwinConfig {
    fn dim(&self, stage: usize) -> usize {
        self.embed_dim << stage
    }

    /// The patch embedding's (convolution, LayerNorm) names.
    fn stem_names(&self) -> [String; 2] {
        match self.naming {
            Naming::Torchvision => ["features.0.0".into(), "features.0.2".into()],
            Naming::Timm => ["patch_embed.proj".into(), "patch_embed.norm".into()],
        }
    }

    /// The patch merging before stage `i` (> 0).
    fn merging_prefix(&self, i: usize) -> String {
        match self.naming {
            Naming::Torchvision => format!("features.{}", 2 * i),
            Naming::Timm => format!("layers.{i}.downsample"),
        }
    }

    fn block_prefix(&self, i: usize, j: usize) -> String {
        match self.naming {
            Naming::Torchvision => format!("features.{}.{j}", 2 * i + 1),
            Naming::Timm => format!("layers.{i}.blocks.{j}"),
        }
    }
}

impl Family for SwinConfig {
    /// `stem` (the patch embedding, stride `patch_size`), `stage1`…`stageN` (each after the
    /// first merging patches to half the resolution), `norm` (the final LayerNorm, on the
    /// map); timm's names are `patch_embed`, `layers.0`…, `norm`.
    fn stages(&self) -> Vec<StageInfo> {
        let naming = self.naming;
        let list = StageList::new()
            .then(
                naming.pick("stem", "patch_embed"),
                self.embed_dim,
                self.patch_size,
            )
            .named(
                |i| match naming {
                    Naming::Torchvision => format!("stage{}", i + 1),
                    Naming::Timm => format!("layers.{i}"),
                },
                (0..self.depths.len()).map(|i| (self.dim(i), if i == 0 { 1 } else { 2 })),
            );
        list.then("norm", self.feature_dim(), 1).done()
    }

    fn feature_dim(&self) -> usize {
        self.dim(self.depths.len().saturating_sub(1))
    }

    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec::linear(self.naming.pick("head", "head.fc"))
    }

    /// LayerNorms only.
    fn batchnorm(&self) -> Option<BnSpec> {
        None
    }

    fn naming_key(&self) -> &'static str {
        match (self.naming, self.v2) {
            (Naming::Torchvision, true) => "features.1.0.attn.cpb_mlp.0.weight",
            (Naming::Torchvision, false) => "features.1.0.attn.relative_position_bias_table",
            (Naming::Timm, true) => "layers.0.blocks.0.attn.cpb_mlp.0.weight",
            (Naming::Timm, false) => "layers.0.blocks.0.attn.relative_position_bias_table",
        }
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        let d0 = self.embed_dim;
        let [conv, norm] = self.stem_names();
        let mut stages = vec![Stage {
            blocks: vec![Block::ConvNorm(ConvNorm {
                conv: load_conv(
                    l,
                    &conv,
                    ConvSpec::new(3, d0, self.patch_size, self.patch_size).pad(Pad::After(0)),
                    true,
                ),
                norm: load_layer_norm(l, &norm, d0, LN_EPS),
                norm_first: false,
                names: [conv, norm],
                eps: LN_EPS,
            })],
        }];
        let window = self.window_size;
        for (i, (&depth, &heads)) in self.depths.iter().zip(&self.num_heads).enumerate() {
            let d = self.dim(i);
            let mut blocks = Vec::new();
            if i > 0 {
                let p = self.merging_prefix(i);
                let prev = self.dim(i - 1);
                let norm_width = if self.v2 { d } else { 4 * prev };
                blocks.push(Block::PatchMerging(PatchMerging {
                    reduction: load_linear_no_bias(l, &format!("{p}.reduction"), 4 * prev, d),
                    norm: load_layer_norm(l, &format!("{p}.norm"), norm_width, LN_EPS),
                    norm_after: self.v2,
                    prefix: p,
                    eps: LN_EPS,
                }));
            }
            for j in 0..depth {
                let p = self.block_prefix(i, j);
                let [fc1, fc2] = mlp_names(self.naming, &p);
                let shift = if j % 2 == 0 {
                    [0, 0]
                } else {
                    window.map(|w| w / 2)
                };
                blocks.push(Block::Swin(SwinBlock {
                    norm1: load_layer_norm(l, &format!("{p}.norm1"), d, LN_EPS),
                    attn: WindowAttention::load(
                        l,
                        &format!("{p}.attn"),
                        d,
                        heads,
                        window,
                        shift,
                        self.v2,
                    ),
                    norm2: load_layer_norm(l, &format!("{p}.norm2"), d, LN_EPS),
                    fc1: load_linear(l, &fc1, d, 4 * d),
                    fc2: load_linear(l, &fc2, 4 * d, d),
                    post_norm: self.v2,
                    prefix: p,
                    eps: LN_EPS,
                    naming: self.naming,
                }));
            }
            stages.push(Stage { blocks });
        }
        stages.push(Stage {
            blocks: vec![Block::MapNorm(MapNorm {
                norm: load_layer_norm(l, "norm", self.feature_dim(), LN_EPS),
                name: "norm".into(),
                eps: LN_EPS,
            })],
        });
        stages
    }

    /// torchvision's builders with their IMAGENET1K_V1 preprocessing (bicubic; V2's at
    /// 256).
    fn entries() -> Vec<ZooEntry> {
        let config = |v2, embed_dim, depths: [usize; 4], num_heads: [usize; 4]| Self {
            v2,
            patch_size: 4,
            embed_dim,
            depths: depths.to_vec(),
            num_heads: num_heads.to_vec(),
            window_size: if v2 { [8, 8] } else { [7, 7] },
            naming: Naming::Torchvision,
        };
        let pre = |resize, crop| Preprocess::imagenet(resize, crop, Interpolation::Bicubic);
        let (tiny, small) = ([2, 2, 6, 2], [2, 2, 18, 2]);
        let (heads, heads_b) = ([3, 6, 12, 24], [4, 8, 16, 32]);
        let torchvision = vec![
            (
                "swin_t",
                config(false, 96, tiny, heads),
                pre(232, 224),
                "swin_t-704ceda3.pth",
            ),
            (
                "swin_s",
                config(false, 96, small, heads),
                pre(246, 224),
                "swin_s-5e29d889.pth",
            ),
            (
                "swin_b",
                config(false, 128, small, heads_b),
                pre(238, 224),
                "swin_b-68c6b09e.pth",
            ),
            (
                "swin_v2_t",
                config(true, 96, tiny, heads),
                pre(260, 256),
                "swin_v2_t-b137f0e2.pth",
            ),
            (
                "swin_v2_s",
                config(true, 96, small, heads),
                pre(260, 256),
                "swin_v2_s-637d8ceb.pth",
            ),
            (
                "swin_v2_b",
                config(true, 128, small, heads_b),
                pre(272, 256),
                "swin_v2_b-781e5279.pth",
            ),
        ]
        .into_iter()
        .map(|(name, config, preprocess, file)| {
            ZooEntry::new(name, "torchvision", config, preprocess).published(torchvision_file(file))
        });
        // timm's V1 tags with their `pretrained_cfg` (crop_pct 0.9, bicubic); the in22k one
        // keeps its 21841-way head. Their weights are on the Hugging Face hub
        // (`timm/<name>`), whose hashes are not recorded here: none are listed.
        let timm = |embed_dim, depths, num_heads| Self {
            naming: Naming::Timm,
            ..config(false, embed_dim, depths, num_heads)
        };
        let timm_entries = [
            (
                "timm/swin_tiny_patch4_window7_224.ms_in1k",
                96,
                tiny,
                heads,
                1000,
            ),
            (
                "timm/swin_tiny_patch4_window7_224.ms_in22k",
                96,
                tiny,
                heads,
                21841,
            ),
            (
                "timm/swin_small_patch4_window7_224.ms_in22k_ft_in1k",
                96,
                small,
                heads,
                1000,
            ),
            (
                "timm/swin_base_patch4_window7_224.ms_in22k_ft_in1k",
                128,
                small,
                heads_b,
                1000,
            ),
        ]
        .map(|(name, dim, depths, num_heads, classes)| {
            ZooEntry::new(
                name,
                "timm",
                timm(dim, depths, num_heads),
                Preprocess::timm(224, 0.9),
            )
            .classes(classes)
        });
        torchvision.chain(timm_entries).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_position_index_is_torchvisions() {
        // torchvision's buffer for a 2×2 window.
        assert_eq!(
            relative_position_index([2, 2]),
            vec![4, 3, 1, 0, 5, 4, 2, 1, 7, 6, 4, 3, 8, 7, 5, 4]
        );
    }

    #[test]
    fn the_shift_mask_separates_the_rolled_regions() {
        // A 4×4 map, 2×2 windows, shift 1: the last window mixes four regions.
        let m = shift_mask([2, 2], [1, 1], [4, 4]);
        assert_eq!(m.len(), 4 * 4 * 4);
        assert!(m[..16].iter().all(|&v| v == 0.0));
        let last = &m[48..];
        assert_eq!(last.iter().filter(|&&v| v == 0.0).count(), 4);
    }
}
