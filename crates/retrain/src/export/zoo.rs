//! A zoo network written as ONNX nodes, block by block, its parameters under the origin's
//! names (`layer1.0.conv1.weight`). BatchNorm stays a node (runtimes fold it themselves),
//! so the file holds the same tensors as the bundle.

use anyhow::{Result, bail};
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AvgPool2d, MaxPool2d};
use burn::nn::{BatchNorm, PaddingConfig2d};

use super::{Builder, attr_f, attr_i, attr_ints};
use crate::zoo::convnext::ConvNextBlock;
use crate::zoo::efficientnet::FusedMbConv;
use crate::zoo::layers::{
    Block, BnAct, ConvBnAct, DenseBlock, InvertedResidual, LinearAct, Normalize, ResidualBlock,
    SqueezeExcite,
};
use crate::zoo::maxvit::{MbConv, PartitionAttention};
use crate::zoo::network::Network;
use crate::zoo::regnet::RegNetBlock;
use crate::zoo::shufflenet::ShuffleUnit;
use crate::zoo::swin::{
    PatchMerging, SwinBlock, WindowAttention, effective_shift, relative_coords_table,
    relative_position_index, shift_mask, window_padding,
};
use crate::zoo::tokens::{ClassTokenHead, EncoderBlock, Part, PatchEmbed, TokenPool};

/// Writes every stage of `net` on `input`, an image of height and width `hw`; returns the
/// last stage's output.
pub(super) fn emit(g: &mut Builder, net: &Network, input: &str, hw: [usize; 2]) -> Result<String> {
    let mut x = input.to_owned();
    let mut hw = hw;
    for stage in &net.stages {
        for block in &stage.blocks {
            x = emit_block(g, block, &x, hw)?;
            hw = out_size(block, hw)?;
        }
    }
    Ok(x)
}

/// Output height and width of a sliding window (convolution or pooling) on `size`.
fn window(size: usize, k: usize, stride: usize, dilation: usize, pads: usize, ceil: bool) -> usize {
    let span = (size + pads).saturating_sub(dilation * (k - 1) + 1);
    let steps = if ceil {
        span.div_ceil(stride)
    } else {
        span / stride
    };
    steps + 1
}

fn windowed(
    hw: [usize; 2],
    k: [usize; 2],
    s: [usize; 2],
    d: [usize; 2],
    p: &PaddingConfig2d,
    ceil: bool,
) -> Result<[usize; 2]> {
    let [top, left, bottom, right] = pads(p)?.map(|v| v as usize);
    Ok([
        window(hw[0], k[0], s[0], d[0], top + bottom, ceil),
        window(hw[1], k[1], s[1], d[1], left + right, ceil),
    ])
}

/// Height and width of `block`'s output for an input of `hw`: what an adaptive pool needs
/// to be written with fixed windows.
fn out_size(block: &Block, hw: [usize; 2]) -> Result<[usize; 2]> {
    let conv = |c: &ConvBnAct, hw| {
        let c = &c.conv;
        windowed(hw, c.kernel_size, c.stride, c.dilation, &c.padding, false)
    };
    Ok(match block {
        Block::Conv(c) => conv(c, hw)?,
        Block::MaxPool(p) => windowed(
            hw,
            p.kernel_size,
            p.stride,
            p.dilation,
            &p.padding,
            p.ceil_mode,
        )?,
        Block::AvgPool(p) => {
            windowed(hw, p.kernel_size, p.stride, [1, 1], &p.padding, p.ceil_mode)?
        }
        Block::Inverted(b) => conv(&b.depthwise, hw)?,
        Block::Residual(b) => b.convs.iter().try_fold(hw, |hw, c| conv(c, hw))?,
        Block::RegNet(b) => [&b.a, &b.b, &b.c]
            .into_iter()
            .try_fold(hw, |hw, c| conv(c, hw))?,
        Block::Fused(b) => b.convs.iter().try_fold(hw, |hw, c| conv(c, hw))?,
        Block::Shuffle(b) => b.branch2.iter().try_fold(hw, |hw, c| conv(c, hw))?,
        Block::ConvNorm(c) => {
            let c = &c.conv;
            windowed(hw, c.kernel_size, c.stride, c.dilation, &c.padding, false)?
        }
        // Tokens keep the patch grid they were cut from until the class token is taken.
        Block::PatchEmbed(p) => {
            let c = &p.proj;
            windowed(hw, c.kernel_size, c.stride, c.dilation, &c.padding, false)?
        }
        // Every branch keeps the same size (their outputs are concatenated): the first's.
        Block::Concat(c) => match c.branches.first() {
            Some(b) => b
                .blocks
                .iter()
                .try_fold(hw, |hw, block| out_size(block, hw))?,
            None => hw,
        },
        Block::Normalize(_)
        | Block::ChannelAffine(_)
        | Block::BnAct(_)
        | Block::Dense(_)
        | Block::Encoder(_)
        | Block::ConvNext(_)
        | Block::Swin(_)
        | Block::MapNorm(_) => hw,
        Block::PatchMerging(_) => hw.map(|v| v.div_ceil(2)),
        Block::MbConv(b) => conv(&b.conv_b, hw)?,
        Block::PartitionAttention(_) => hw,
        Block::FlattenHwc(_)
        | Block::PoolFlatten(_)
        | Block::Linear(_)
        | Block::ClassToken(_)
        | Block::PoolNorm(_) => [1, 1],
        Block::Graph(_) => bail!("a graph block inside a zoo network cannot be exported"),
    })
}

fn emit_block(g: &mut Builder, block: &Block, x: &str, hw: [usize; 2]) -> Result<String> {
    Ok(match block {
        Block::Conv(c) => conv_bn_act(g, c, x)?,
        Block::MaxPool(p) => max_pool(g, p, x)?,
        Block::Inverted(b) => inverted(g, b, x)?,
        Block::Residual(b) => residual(g, b, x)?,
        Block::FlattenHwc(_) => {
            // [N, C, H, W] → NHWC → [N, H·W·C, 1, 1].
            let t = g.node(
                "Transpose",
                &[x],
                vec![attr_ints("perm", &[0, 2, 3, 1])],
                "nhwc",
            );
            let shape = g.ints("flatten_shape", &[0, -1, 1, 1]);
            g.node("Reshape", &[&t, &shape], vec![], "flatten")
        }
        Block::Normalize(n) => normalize(g, n, x),
        Block::AvgPool(p) => avg_pool(g, p, x)?,
        Block::BnAct(b) => bn_act(g, b, x),
        Block::Dense(b) => dense(g, b, x)?,
        Block::PoolFlatten(p) => {
            let pooled = adaptive_avg_pool(g, x, hw, p.size);
            let shape = g.ints("flatten_shape", &[0, -1, 1, 1]);
            g.node("Reshape", &[&pooled, &shape], vec![], "flatten")
        }
        Block::Linear(f) => linear_act(g, f, x),
        Block::Graph(_) => bail!("a graph block inside a zoo network cannot be exported"),
        Block::PatchEmbed(p) => patch_embed(g, p, x)?,
        Block::Encoder(e) => encoder(g, e, x),
        Block::ClassToken(c) => class_token_head(g, c, x),
        Block::ConvNorm(c) => {
            let [conv_name, norm_name] = &c.names;
            if c.norm_first {
                let y = layer_norm_2d(g, &c.norm, c.eps, norm_name, x);
                conv(g, &c.conv, conv_name, &y)?
            } else {
                let y = conv(g, &c.conv, conv_name, x)?;
                layer_norm_2d(g, &c.norm, c.eps, norm_name, &y)
            }
        }
        Block::ConvNext(b) => convnext_block(g, b, x)?,
        Block::Concat(c) => {
            let mut outs = Vec::with_capacity(c.branches.len());
            for branch in &c.branches {
                let (mut y, mut size) = (x.to_owned(), hw);
                for block in &branch.blocks {
                    y = emit_block(g, block, &y, size)?;
                    size = out_size(block, size)?;
                }
                outs.push(y);
            }
            let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
            g.node("Concat", &refs, vec![attr_i("axis", 1)], "concat")
        }
        Block::ChannelAffine(a) => {
            let scale = g.float_const("transform_scale", &[1, 3, 1, 1], &a.scale);
            let shift = g.float_const("transform_shift", &[1, 3, 1, 1], &a.shift);
            let y = g.node("Mul", &[x, &scale], vec![], "transform_input");
            g.node("Add", &[&y, &shift], vec![], "transform_input")
        }
        Block::PoolNorm(p) => {
            let y = g.node("GlobalAveragePool", &[x], vec![], "pool");
            layer_norm_2d(g, &p.norm, p.eps, &p.name, &y)
        }
        Block::RegNet(b) => regnet(g, b, x)?,
        Block::Fused(b) => fused(g, b, x)?,
        Block::Shuffle(b) => shuffle(g, b, x)?,
        Block::Swin(b) => swin_block(g, b, x, hw),
        Block::PatchMerging(m) => patch_merging(g, m, x, hw),
        Block::MapNorm(n) => layer_norm_2d(g, &n.norm, n.eps, &n.name, x),
        Block::MbConv(b) => mbconv(g, b, x)?,
        Block::PartitionAttention(a) => partition_attention(g, a, x, hw)?,
    })
}

/// ONNX's `pads` (begin H, begin W, end H, end W) of a burn padding.
fn pads(p: &PaddingConfig2d) -> Result<[i64; 4]> {
    Ok(match p {
        PaddingConfig2d::Explicit(top, left, bottom, right) => {
            [*top as i64, *left as i64, *bottom as i64, *right as i64]
        }
        PaddingConfig2d::Valid => [0; 4],
        other => bail!("padding {other:?} is not exported"),
    })
}

fn conv(g: &mut Builder, c: &Conv2d, name: &str, x: &str) -> Result<String> {
    let w = g.param_of(&format!("{name}.weight"), c.weight.val());
    let mut inputs = vec![x.to_owned(), w];
    if let Some(b) = &c.bias {
        inputs.push(g.param_of(&format!("{name}.bias"), b.val()));
    }
    let k = c.kernel_size.map(|v| v as i64);
    let attrs = vec![
        attr_ints("kernel_shape", &k),
        attr_ints("strides", &c.stride.map(|v| v as i64)),
        attr_ints("dilations", &c.dilation.map(|v| v as i64)),
        attr_ints("pads", &pads(&c.padding)?),
        attr_i("group", c.groups as i64),
    ];
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    Ok(g.node("Conv", &refs, attrs, name))
}

fn batchnorm(g: &mut Builder, bn: &BatchNorm, name: &str, x: &str) -> String {
    let scale = g.param_of(&format!("{name}.weight"), bn.gamma.val());
    let bias = g.param_of(&format!("{name}.bias"), bn.beta.val());
    let mean = g.statistic_of(&format!("{name}.running_mean"), bn.running_mean.value());
    let var = g.statistic_of(&format!("{name}.running_var"), bn.running_var.value());
    g.node(
        "BatchNormalization",
        &[x, &scale, &bias, &mean, &var],
        vec![attr_f("epsilon", bn.epsilon as f32)],
        name,
    )
}

fn conv_bn_act(g: &mut Builder, c: &ConvBnAct, x: &str) -> Result<String> {
    let mut y = conv(g, &c.conv, &c.conv_name, x)?;
    if let Some(bn) = &c.bn {
        let name = c
            .bn_name
            .clone()
            .unwrap_or_else(|| format!("{}.bn", c.conv_name));
        y = batchnorm(g, bn, &name, &y);
    }
    Ok(g.act(c.act, &y))
}

fn max_pool(g: &mut Builder, p: &MaxPool2d, x: &str) -> Result<String> {
    let attrs = vec![
        attr_ints("kernel_shape", &p.kernel_size.map(|v| v as i64)),
        attr_ints("strides", &p.stride.map(|v| v as i64)),
        attr_ints("dilations", &p.dilation.map(|v| v as i64)),
        attr_ints("pads", &pads(&p.padding)?),
        attr_i("ceil_mode", p.ceil_mode as i64),
    ];
    Ok(g.node("MaxPool", &[x], attrs, "maxpool"))
}

fn squeeze_excite(g: &mut Builder, se: &SqueezeExcite, x: &str) -> Result<String> {
    let s = g.node("GlobalAveragePool", &[x], vec![], "se_pool");
    let s = conv(g, &se.reduce, &se.names[0], &s)?;
    let s = g.act(se.act, &s);
    let s = conv(g, &se.expand, &se.names[1], &s)?;
    let gate = if se.hard_gate {
        g.node(
            "HardSigmoid",
            &[&s],
            vec![attr_f("alpha", 1.0 / 6.0), attr_f("beta", 0.5)],
            "se_gate",
        )
    } else {
        g.node("Sigmoid", &[&s], vec![], "se_gate")
    };
    Ok(g.node("Mul", &[x, &gate], vec![], "se"))
}

fn inverted(g: &mut Builder, b: &InvertedResidual, input: &str) -> Result<String> {
    let mut x = input.to_owned();
    if let Some(e) = &b.expand {
        x = conv_bn_act(g, e, &x)?;
    }
    x = conv_bn_act(g, &b.depthwise, &x)?;
    if let Some(se) = &b.se {
        x = squeeze_excite(g, se, &x)?;
    }
    x = conv_bn_act(g, &b.project, &x)?;
    Ok(if b.residual {
        g.node("Add", &[&x, input], vec![], "residual")
    } else {
        x
    })
}

fn residual(g: &mut Builder, b: &ResidualBlock, input: &str) -> Result<String> {
    let mut x = input.to_owned();
    for c in &b.convs {
        x = conv_bn_act(g, c, &x)?;
    }
    let shortcut = match &b.downsample {
        Some(d) => conv_bn_act(g, d, input)?,
        None => input.to_owned(),
    };
    let sum = g.node("Add", &[&x, &shortcut], vec![], "residual");
    Ok(g.node("Relu", &[&sum], vec![], "relu"))
}

/// Keras EfficientNet's input normalisation: `(x / 255 − mean) / max(√var, 1e-7) · scale`,
/// its mean and variance as the parameters they are in the file.
fn normalize(g: &mut Builder, n: &Normalize, x: &str) -> String {
    let mean = g.param_of(
        &format!("{}.mean", n.name),
        n.mean.clone().reshape([1, 3, 1, 1]),
    );
    let var = g.param_of(
        &format!("{}.variance", n.name),
        n.variance.clone().reshape([1, 3, 1, 1]),
    );
    let by = g.scalar("by_255", 255.0);
    let eps = g.scalar("min_std", 1e-7);
    let scale = g.float_const("rescale", &[1, 3, 1, 1], &n.scale);
    let x = g.node("Div", &[x, &by], vec![], "unit");
    let x = g.node("Sub", &[&x, &mean], vec![], "centred");
    let std = g.node("Sqrt", &[&var], vec![], "std");
    let std = g.node("Max", &[&std, &eps], vec![], "std");
    let x = g.node("Div", &[&x, &std], vec![], "normalised");
    g.node("Mul", &[&x, &scale], vec![], "rescaled")
}

// Token models: between their blocks the file holds tokens as `[n, tokens, width]` (the
// network packs them as `[n, width, tokens, 1]` for burn; the file needs no packing).

/// Patches projected and flattened to tokens, the class token (expanded to the batch) in
/// front, the position embedding added.
fn patch_embed(g: &mut Builder, p: &PatchEmbed, x: &str) -> Result<String> {
    let y = conv(g, &p.proj, &p.names[0], x)?;
    let width = p.proj.weight.dims()[0] as i64;
    let shape = g.ints("patches_shape", &[0, width, -1]);
    let y = g.node("Reshape", &[&y, &shape], vec![], "patches");
    let patches = g.node(
        "Transpose",
        &[&y],
        vec![attr_ints("perm", &[0, 2, 1])],
        "patches",
    );
    let n = g.node(
        "Shape",
        &[x],
        vec![attr_i("start", 0), attr_i("end", 1)],
        "batch",
    );
    // Each prefix token (class, registers) expanded to the batch.
    let mut prefix = vec![];
    let mut expand = |g: &mut Builder, name: &str, t: burn::tensor::Tensor<3>, hint: &str| {
        let count = t.dims()[1] as i64;
        let token = g.param_of(name, t);
        let rest = g.ints("prefix_shape", &[count, width]);
        let target = g.node("Concat", &[&n, &rest], vec![attr_i("axis", 0)], hint);
        prefix.push(g.node("Expand", &[&token, &target], vec![], hint));
    };
    expand(g, &p.names[1], p.class_token.val(), "class_tokens");
    if let Some(r) = &p.registers {
        expand(g, &p.names[3], r.val(), "register_tokens");
    }
    let position = g.param_of(&p.names[2], p.position.val());
    if p.no_embed_class {
        // The position embedding covers the patches only; the prefix goes in front after.
        let patches = g.node("Add", &[&patches, &position], vec![], "embedded");
        prefix.push(patches);
        let refs: Vec<&str> = prefix.iter().map(String::as_str).collect();
        return Ok(g.node("Concat", &refs, vec![attr_i("axis", 1)], "tokens"));
    }
    prefix.push(patches);
    let refs: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let tokens = g.node("Concat", &refs, vec![attr_i("axis", 1)], "tokens");
    Ok(g.node("Add", &[&tokens, &position], vec![], "embedded"))
}

fn layer_norm(g: &mut Builder, ln: &burn::nn::LayerNorm, eps: f64, name: &str, x: &str) -> String {
    let scale = g.param_of(&format!("{name}.weight"), ln.gamma.val());
    let mut inputs = vec![x.to_owned(), scale];
    if let Some(b) = &ln.beta {
        inputs.push(g.param_of(&format!("{name}.bias"), b.val()));
    }
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    g.node(
        "LayerNormalization",
        &refs,
        vec![attr_i("axis", -1), attr_f("epsilon", eps as f32)],
        name,
    )
}

/// A Linear on tokens: the weight kept in PyTorch's `[out, in]` (its name and layout in
/// the bundle), transposed for the MatMul.
fn token_linear(g: &mut Builder, l: &burn::nn::Linear, prefix: &str, x: &str) -> String {
    let w = g.param_of(&format!("{prefix}.weight"), l.weight.val().transpose());
    let wt = g.node("Transpose", &[&w], vec![attr_ints("perm", &[1, 0])], prefix);
    let y = g.node("MatMul", &[x, &wt], vec![], prefix);
    match &l.bias {
        Some(b) => {
            let b = g.param_of(&format!("{prefix}.bias"), b.val());
            g.node("Add", &[&y, &b], vec![], prefix)
        }
        None => y,
    }
}

fn encoder(g: &mut Builder, e: &EncoderBlock, x: &str) -> String {
    let a = &e.attention;
    let width = a.out_proj.weight.dims()[0];
    let heads = a.heads;
    let dh = width / heads;
    let y = layer_norm(g, &e.ln_1, e.eps, &e.name(Part::Norm1), x);
    let qkv = token_linear(g, &a.in_proj, &e.name(Part::Qkv), &y);
    let shape = g.ints("qkv_shape", &[0, 0, 3, heads as i64, dh as i64]);
    let qkv = g.node("Reshape", &[&qkv, &shape], vec![], "qkv");
    let qkv = g.node(
        "Transpose",
        &[&qkv],
        vec![attr_ints("perm", &[2, 0, 3, 1, 4])],
        "qkv",
    );
    let part = |g: &mut Builder, i: i64, hint: &str| {
        let idx = g.int_const("index", &[], &[i]);
        g.node("Gather", &[&qkv, &idx], vec![attr_i("axis", 0)], hint)
    };
    let (q, k, v) = (part(g, 0, "q"), part(g, 1, "k"), part(g, 2, "v"));
    let kt = g.node(
        "Transpose",
        &[&k],
        vec![attr_ints("perm", &[0, 1, 3, 2])],
        "k_t",
    );
    let scores = g.node("MatMul", &[&q, &kt], vec![], "scores");
    let scale = g.scalar("attention_scale", 1.0 / (dh as f32).sqrt());
    let scores = g.node("Mul", &[&scores, &scale], vec![], "scores");
    let weights = g.node("Softmax", &[&scores], vec![attr_i("axis", -1)], "attention");
    let y = g.node("MatMul", &[&weights, &v], vec![], "attended");
    let y = g.node(
        "Transpose",
        &[&y],
        vec![attr_ints("perm", &[0, 2, 1, 3])],
        "attended",
    );
    let shape = g.ints("tokens_shape", &[0, 0, width as i64]);
    let y = g.node("Reshape", &[&y, &shape], vec![], "attended");
    let y = token_linear(g, &a.out_proj, &e.name(Part::Proj), &y);
    let y = layer_scale(g, e.ls1.as_ref(), &e.name(Part::LayerScale1), &y);
    let x = g.node("Add", &[x, &y], vec![], "residual");
    let y = layer_norm(g, &e.ln_2, e.eps, &e.name(Part::Norm2), &x);
    let y = token_linear(g, &e.fc1, &e.name(Part::Fc1), &y);
    let y = g.gelu(&y, false);
    let y = token_linear(g, &e.fc2, &e.name(Part::Fc2), &y);
    let y = layer_scale(g, e.ls2.as_ref(), &e.name(Part::LayerScale2), &y);
    g.node("Add", &[&x, &y], vec![], "residual")
}

/// A branch scaled per channel by its layer scale, if the block has one.
fn layer_scale(
    g: &mut Builder,
    gamma: Option<&burn::module::Param<burn::tensor::Tensor<1>>>,
    name: &str,
    y: &str,
) -> String {
    match gamma {
        Some(gamma) => {
            let gamma = g.param_of(name, gamma.val());
            g.node("Mul", &[y, &gamma], vec![], "layer_scale")
        }
        None => y.to_owned(),
    }
}

/// The final LayerNorm and the pooling to one `[n, width, 1, 1]` vector: the class token,
/// or the mean of the patch tokens (normalised after).
fn class_token_head(g: &mut Builder, c: &ClassTokenHead, x: &str) -> String {
    let v = match c.pool {
        TokenPool::ClassToken => {
            let y = layer_norm(g, &c.ln, c.eps, &c.name, x);
            let zero = g.int_const("index", &[], &[0]);
            g.node(
                "Gather",
                &[&y, &zero],
                vec![attr_i("axis", 1)],
                "class_token",
            )
        }
        TokenPool::MeanPatches { prefix } => {
            let starts = g.ints("patch_start", &[prefix as i64]);
            let ends = g.ints("patch_end", &[i64::MAX]);
            let axis = g.ints("token_axis", &[1]);
            let patches = g.node("Slice", &[x, &starts, &ends, &axis], vec![], "patches");
            let mean = g.node(
                "ReduceMean",
                &[&patches],
                vec![attr_ints("axes", &[1]), attr_i("keepdims", 0)],
                "pooled",
            );
            layer_norm(g, &c.ln, c.eps, &c.name, &mean)
        }
    };
    let axes = g.ints("axes", &[2, 3]);
    g.node("Unsqueeze", &[&v, &axes], vec![], "class_token")
}

/// A LayerNorm over the channels of an NCHW value (torchvision's `LayerNorm2d`): to
/// channels-last, normalised, back.
fn layer_norm_2d(
    g: &mut Builder,
    ln: &burn::nn::LayerNorm,
    eps: f64,
    name: &str,
    x: &str,
) -> String {
    let t = g.node(
        "Transpose",
        &[x],
        vec![attr_ints("perm", &[0, 2, 3, 1])],
        "nhwc",
    );
    let y = layer_norm(g, ln, eps, name, &t);
    g.node(
        "Transpose",
        &[&y],
        vec![attr_ints("perm", &[0, 3, 1, 2])],
        name,
    )
}

fn convnext_block(g: &mut Builder, b: &ConvNextBlock, x: &str) -> Result<String> {
    let p = &b.prefix;
    let y = conv(g, &b.dwconv, &format!("{p}.block.0"), x)?;
    let y = g.node(
        "Transpose",
        &[&y],
        vec![attr_ints("perm", &[0, 2, 3, 1])],
        "nhwc",
    );
    let y = layer_norm(g, &b.norm, b.eps, &format!("{p}.block.2"), &y);
    let y = token_linear(g, &b.fc1, &format!("{p}.block.3"), &y);
    let y = g.gelu(&y, false);
    let y = token_linear(g, &b.fc2, &format!("{p}.block.5"), &y);
    let y = g.node(
        "Transpose",
        &[&y],
        vec![attr_ints("perm", &[0, 3, 1, 2])],
        "nchw",
    );
    let scale = g.param_of(&format!("{p}.layer_scale"), b.layer_scale.val());
    let y = g.node("Mul", &[&y, &scale], vec![], "scaled");
    Ok(g.node("Add", &[x, &y], vec![], "residual"))
}

fn avg_pool(g: &mut Builder, p: &AvgPool2d, x: &str) -> Result<String> {
    let attrs = vec![
        attr_ints("kernel_shape", &p.kernel_size.map(|v| v as i64)),
        attr_ints("strides", &p.stride.map(|v| v as i64)),
        attr_ints("pads", &pads(&p.padding)?),
        attr_i("ceil_mode", p.ceil_mode as i64),
        attr_i("count_include_pad", p.count_include_pad as i64),
    ];
    Ok(g.node("AveragePool", &[x], attrs, "avgpool"))
}

fn bn_act(g: &mut Builder, b: &BnAct, x: &str) -> String {
    let y = batchnorm(g, &b.bn, &b.name, x);
    g.act(b.act, &y)
}

/// Each layer's new channels concatenated to its input.
fn dense(g: &mut Builder, b: &DenseBlock, input: &str) -> Result<String> {
    let mut x = input.to_owned();
    for layer in &b.layers {
        let y = bn_act(g, &layer.norm1, &x);
        let y = conv_bn_act(g, &layer.conv1, &y)?;
        let y = conv_bn_act(g, &layer.conv2, &y)?;
        x = g.node("Concat", &[&x, &y], vec![attr_i("axis", 1)], "concat");
    }
    Ok(x)
}

/// PyTorch's adaptive average pool from `hw` to `out`: window `i` of a side `n` averages
/// `floor(i·n/out) .. ceil((i+1)·n/out)`. Nothing where the sizes agree, an AveragePool
/// where they divide, else `P_h · X · P_wᵀ` with the averaging matrices as constants.
fn adaptive_avg_pool(g: &mut Builder, x: &str, hw: [usize; 2], out: [usize; 2]) -> String {
    if hw == out {
        return x.to_owned();
    }
    if hw[0].is_multiple_of(out[0]) && hw[1].is_multiple_of(out[1]) {
        let k = [(hw[0] / out[0]) as i64, (hw[1] / out[1]) as i64];
        let attrs = vec![attr_ints("kernel_shape", &k), attr_ints("strides", &k)];
        return g.node("AveragePool", &[x], attrs, "adaptive_pool");
    }
    // rows[i][j]: the weight of input j in output i.
    let averaging = |n: usize, m: usize| -> Vec<Vec<f32>> {
        (0..m)
            .map(|i| {
                let (a, b) = (i * n / m, ((i + 1) * n).div_ceil(m));
                (0..n)
                    .map(|j| {
                        if (a..b).contains(&j) {
                            1.0 / (b - a) as f32
                        } else {
                            0.0
                        }
                    })
                    .collect()
            })
            .collect()
    };
    let ph: Vec<f32> = averaging(hw[0], out[0]).concat();
    let pw = averaging(hw[1], out[1]);
    let pwt: Vec<f32> = (0..hw[1])
        .flat_map(|j| pw.iter().map(move |row| row[j]))
        .collect();
    let ph = g.float_const("pool_rows", &[out[0], hw[0]], &ph);
    let pwt = g.float_const("pool_cols", &[hw[1], out[1]], &pwt);
    let y = g.node("MatMul", &[x, &pwt], vec![], "pool_w");
    g.node("MatMul", &[&ph, &y], vec![], "adaptive_pool")
}

/// A fully connected layer on [N, D, 1, 1]: flattened, a Gemm, its activation, and back to
/// [N, out, 1, 1].
fn linear_act(g: &mut Builder, f: &LinearAct, x: &str) -> String {
    let flat = g.node("Flatten", &[x], vec![attr_i("axis", 1)], "flat");
    let y = g.linear(&f.linear, &f.name, &flat);
    let y = g.act(f.act, &y);
    let shape = g.ints("unflatten_shape", &[0, -1, 1, 1]);
    g.node("Reshape", &[&y, &shape], vec![], "unflatten")
}

/// RegNet's bottleneck: `Relu(proj(x) + c(se(b(a(x)))))`.
fn regnet(g: &mut Builder, b: &RegNetBlock, input: &str) -> Result<String> {
    let mut x = conv_bn_act(g, &b.a, input)?;
    x = conv_bn_act(g, &b.b, &x)?;
    if let Some(se) = &b.se {
        x = squeeze_excite(g, se, &x)?;
    }
    x = conv_bn_act(g, &b.c, &x)?;
    let shortcut = match &b.proj {
        Some(p) => conv_bn_act(g, p, input)?,
        None => input.to_owned(),
    };
    let sum = g.node("Add", &[&shortcut, &x], vec![], "residual");
    Ok(g.node("Relu", &[&sum], vec![], "relu"))
}

/// EfficientNetV2's FusedMBConv: its units, and the residual when it has one.
fn fused(g: &mut Builder, b: &FusedMbConv, input: &str) -> Result<String> {
    let mut x = input.to_owned();
    for c in &b.convs {
        x = conv_bn_act(g, c, &x)?;
    }
    Ok(if b.residual {
        g.node("Add", &[&x, input], vec![], "residual")
    } else {
        x
    })
}

/// A ShuffleNetV2 unit: both branches (stride 2) or the first half of the channels passed
/// through beside `branch2` on the second (a Slice each), concatenated, then the channel
/// shuffle as torchvision writes it: Reshape to [n, 2, c/2, h·w], Transpose, Reshape back to
/// the input's own shape (read with Shape, so the batch and the size stay free).
fn shuffle(g: &mut Builder, b: &ShuffleUnit, input: &str) -> Result<String> {
    let branch = |g: &mut Builder, units: &[ConvBnAct], x: &str| -> Result<String> {
        let mut x = x.to_owned();
        for u in units {
            x = conv_bn_act(g, u, &x)?;
        }
        Ok(x)
    };
    let (left, right) = if b.branch1.is_empty() {
        let c = b.branch2[0].conv.weight.dims()[1] as i64 * 2;
        let axes = g.ints("channel_axis", &[1]);
        let (s0, mid, end) = (
            g.ints("slice_start", &[0]),
            g.ints("slice_half", &[c / 2]),
            g.ints("slice_end", &[c]),
        );
        let first = g.node("Slice", &[input, &s0, &mid, &axes], vec![], "first_half");
        let second = g.node("Slice", &[input, &mid, &end, &axes], vec![], "second_half");
        let right = branch(g, &b.branch2, &second)?;
        (first, right)
    } else {
        (branch(g, &b.branch1, input)?, branch(g, &b.branch2, input)?)
    };
    let out = g.node(
        "Concat",
        &[&left, &right],
        vec![attr_i("axis", 1)],
        "concat",
    );
    let c = b.branch2.last().map_or(0, |u| u.conv.weight.dims()[0]) as i64 * 2;
    let grouped = g.ints("shuffle_shape", &[0, 2, c / 2, -1]);
    let y = g.node("Reshape", &[&out, &grouped], vec![], "shuffle");
    let y = g.node(
        "Transpose",
        &[&y],
        vec![attr_ints("perm", &[0, 2, 1, 3])],
        "shuffle",
    );
    let shape = g.node("Shape", &[&out], vec![], "shuffle_shape");
    Ok(g.node("Reshape", &[&y, &shape], vec![], "shuffled"))
}

// Swin: each block works channels-last between two transposes; windows are cut and put
// back by Reshape/Transpose with the batch free, the map's size fixed by the export's
// input size, so padding, the roll's slices and the shift mask are constants.

/// A relative position bias `[heads, n, n]` for the `n` tokens of a `window`: the rows of
/// `table` (`[(2h−1)(2w−1), heads]`) gathered by the window's relative position index, as
/// Swin's and MaxViT's attention read it.
fn relative_position_bias(
    g: &mut Builder,
    table: &str,
    window: [usize; 2],
    heads: usize,
) -> String {
    let n = window[0] * window[1];
    let index = g.int_const(
        "relative_position_index",
        &[n * n],
        &relative_position_index(window),
    );
    let bias = g.node(
        "Gather",
        &[table, &index],
        vec![attr_i("axis", 0)],
        "position_bias",
    );
    let bias = reshape(
        g,
        &bias,
        &[n as i64, n as i64, heads as i64],
        "position_bias",
    );
    transpose(g, &bias, &[2, 0, 1], "position_bias")
}

fn transpose(g: &mut Builder, x: &str, perm: &[i64], hint: &str) -> String {
    g.node("Transpose", &[x], vec![attr_ints("perm", perm)], hint)
}

fn reshape(g: &mut Builder, x: &str, shape: &[i64], hint: &str) -> String {
    let s = g.ints(&format!("{hint}_shape"), shape);
    g.node("Reshape", &[x, &s], vec![], hint)
}

/// Zeros after the end of axes 1 and 2 of an NHWC value.
fn pad_after(g: &mut Builder, x: &str, pad: [usize; 2]) -> String {
    if pad == [0, 0] {
        return x.to_owned();
    }
    let pads = g.ints("pads", &[0, 0, 0, 0, 0, pad[0] as i64, pad[1] as i64, 0]);
    g.node("Pad", &[x, &pads], vec![], "pad")
}

fn slice(g: &mut Builder, x: &str, axis: i64, start: i64, end: i64) -> String {
    let starts = g.ints("starts", &[start]);
    let ends = g.ints("ends", &[end]);
    let axes = g.ints("axes", &[axis]);
    g.node("Slice", &[x, &starts, &ends, &axes], vec![], "slice")
}

/// `torch.roll(x, by, axis)` on an axis of `n`: two slices swapped.
fn roll(g: &mut Builder, x: &str, by: i64, axis: i64, n: usize) -> String {
    let n = n as i64;
    let s = by.rem_euclid(n);
    if s == 0 {
        return x.to_owned();
    }
    let tail = slice(g, x, axis, n - s, n);
    let head = slice(g, x, axis, 0, n - s);
    g.node(
        "Concat",
        &[&tail, &head],
        vec![attr_i("axis", axis)],
        "roll",
    )
}

fn window_attention(
    g: &mut Builder,
    a: &WindowAttention,
    p: &str,
    x: &str,
    hw: [usize; 2],
) -> String {
    let c = a.proj.weight.dims()[0];
    let [wh, ww] = a.window;
    let pad = window_padding(a.window, hw);
    let (ph, pw) = (hw[0] + pad[0], hw[1] + pad[1]);
    let shift = effective_shift(a.window, a.shift, [ph, pw]);
    let (nh, nw) = (ph / wh, pw / ww);
    let (windows, n, heads) = (nh * nw, wh * ww, a.heads);
    let dh = c / heads;
    let y = pad_after(g, x, pad);
    let y = roll(g, &y, -(shift[0] as i64), 1, ph);
    let y = roll(g, &y, -(shift[1] as i64), 2, pw);
    let y = reshape(
        g,
        &y,
        &[-1, wh as i64, nw as i64, (ww * c) as i64],
        "windows",
    );
    let y = transpose(g, &y, &[0, 2, 1, 3], "windows");
    let y = reshape(g, &y, &[-1, n as i64, c as i64], "windows");
    let qkv = if a.logit_scale.is_some() {
        // V2: the keys' bias is not used (torchvision zeroes it in forward).
        let w = g.param_of(&format!("{p}.qkv.weight"), a.qkv.weight.val().transpose());
        let wt = transpose(g, &w, &[1, 0], "qkv");
        let y = g.node("MatMul", &[&y, &wt], vec![], "qkv");
        match &a.qkv.bias {
            Some(b) => {
                let b = g.param_of(&format!("{p}.qkv.bias"), b.val());
                let keep: Vec<f32> = (0..3 * c)
                    .map(|i| if (c..2 * c).contains(&i) { 0.0 } else { 1.0 })
                    .collect();
                let keep = g.float_const("qkv_bias_kept", &[3 * c], &keep);
                let b = g.node("Mul", &[&b, &keep], vec![], "qkv_bias");
                g.node("Add", &[&y, &b], vec![], "qkv")
            }
            None => y,
        }
    } else {
        token_linear(g, &a.qkv, &format!("{p}.qkv"), &y)
    };
    let qkv = reshape(g, &qkv, &[-1, n as i64, 3, heads as i64, dh as i64], "qkv");
    let qkv = transpose(g, &qkv, &[2, 0, 3, 1, 4], "qkv");
    let part = |g: &mut Builder, i: i64, hint: &str| {
        let idx = g.int_const("index", &[], &[i]);
        g.node("Gather", &[&qkv, &idx], vec![attr_i("axis", 0)], hint)
    };
    let (q, k, v) = (part(g, 0, "q"), part(g, 1, "k"), part(g, 2, "v"));
    let scores = if let Some(scale) = &a.logit_scale {
        let unit = |g: &mut Builder, t: &str| {
            let norm = g.node(
                "ReduceL2",
                &[t],
                vec![attr_ints("axes", &[-1]), attr_i("keepdims", 1)],
                "norm",
            );
            let eps = g.scalar("norm_eps", 1e-12);
            let norm = g.node("Max", &[&norm, &eps], vec![], "norm");
            g.node("Div", &[t, &norm], vec![], "unit")
        };
        let (q, k) = (unit(g, &q), unit(g, &k));
        let kt = transpose(g, &k, &[0, 1, 3, 2], "k_t");
        let s = g.node("MatMul", &[&q, &kt], vec![], "scores");
        let scale = g.param_of(&format!("{p}.logit_scale"), scale.val());
        let max = g.scalar("logit_scale_max", 100f32.ln());
        let scale = g.node("Min", &[&scale, &max], vec![], "logit_scale");
        let scale = g.node("Exp", &[&scale], vec![], "logit_scale");
        g.node("Mul", &[&s, &scale], vec![], "scores")
    } else {
        let scale = g.scalar("attention_scale", (dh as f32).powf(-0.5));
        let q = g.node("Mul", &[&q, &scale], vec![], "q");
        let kt = transpose(g, &k, &[0, 1, 3, 2], "k_t");
        g.node("MatMul", &[&q, &kt], vec![], "scores")
    };
    let table = match (&a.relative_position_bias_table, &a.cpb_fc1, &a.cpb_fc2) {
        (Some(t), _, _) => g.param_of(&format!("{p}.relative_position_bias_table"), t.val()),
        (None, Some(fc1), Some(fc2)) => {
            let coords = relative_coords_table(a.window);
            let coords = g.float_const("relative_coords_table", &[coords.len() / 2, 2], &coords);
            let h = token_linear(g, fc1, &format!("{p}.cpb_mlp.0"), &coords);
            let h = g.node("Relu", &[&h], vec![], "cpb_relu");
            token_linear(g, fc2, &format!("{p}.cpb_mlp.2"), &h)
        }
        _ => unreachable!("a window attention has a bias table or its cpb_mlp"),
    };
    let bias = relative_position_bias(g, &table, a.window, heads);
    let mut bias = reshape(
        g,
        &bias,
        &[1, heads as i64, n as i64, n as i64],
        "position_bias",
    );
    if a.logit_scale.is_some() {
        let s = g.node("Sigmoid", &[&bias], vec![], "position_bias");
        let k = g.scalar("sixteen", 16.0);
        bias = g.node("Mul", &[&s, &k], vec![], "position_bias");
    }
    let mut scores = g.node("Add", &[&scores, &bias], vec![], "scores");
    if shift != [0, 0] {
        let mask = shift_mask(a.window, shift, [ph, pw]);
        let mask = g.float_const("shift_mask", &[1, windows, 1, n, n], &mask);
        let s = reshape(
            g,
            &scores,
            &[-1, windows as i64, heads as i64, n as i64, n as i64],
            "scores",
        );
        let s = g.node("Add", &[&s, &mask], vec![], "masked");
        scores = reshape(g, &s, &[-1, heads as i64, n as i64, n as i64], "scores");
    }
    let weights = g.node("Softmax", &[&scores], vec![attr_i("axis", -1)], "attention");
    let y = g.node("MatMul", &[&weights, &v], vec![], "attended");
    let y = transpose(g, &y, &[0, 2, 1, 3], "attended");
    let y = reshape(g, &y, &[-1, n as i64, c as i64], "attended");
    let y = token_linear(g, &a.proj, &format!("{p}.proj"), &y);
    let y = reshape(
        g,
        &y,
        &[-1, nw as i64, wh as i64, (ww * c) as i64],
        "merged",
    );
    let y = transpose(g, &y, &[0, 2, 1, 3], "merged");
    let y = reshape(g, &y, &[-1, ph as i64, pw as i64, c as i64], "merged");
    let y = roll(g, &y, shift[0] as i64, 1, ph);
    let y = roll(g, &y, shift[1] as i64, 2, pw);
    if pad == [0, 0] {
        return y;
    }
    let starts = g.ints("starts", &[0, 0]);
    let ends = g.ints("ends", &[hw[0] as i64, hw[1] as i64]);
    let axes = g.ints("axes", &[1, 2]);
    g.node("Slice", &[&y, &starts, &ends, &axes], vec![], "unpadded")
}

fn swin_block(g: &mut Builder, b: &SwinBlock, x: &str, hw: [usize; 2]) -> String {
    let p = &b.prefix;
    let t = transpose(g, x, &[0, 2, 3, 1], "nhwc");
    let attn = format!("{p}.attn");
    let (n1, n2) = (format!("{p}.norm1"), format!("{p}.norm2"));
    let mlp = |g: &mut Builder, y: &str| {
        let y = token_linear(g, &b.fc1, &format!("{p}.mlp.0"), y);
        let y = g.gelu(&y, false);
        token_linear(g, &b.fc2, &format!("{p}.mlp.3"), &y)
    };
    let t = if b.post_norm {
        let y = window_attention(g, &b.attn, &attn, &t, hw);
        let y = layer_norm(g, &b.norm1, b.eps, &n1, &y);
        let t = g.node("Add", &[&t, &y], vec![], "residual");
        let y = mlp(g, &t);
        let y = layer_norm(g, &b.norm2, b.eps, &n2, &y);
        g.node("Add", &[&t, &y], vec![], "residual")
    } else {
        let y = layer_norm(g, &b.norm1, b.eps, &n1, &t);
        let y = window_attention(g, &b.attn, &attn, &y, hw);
        let t = g.node("Add", &[&t, &y], vec![], "residual");
        let y = layer_norm(g, &b.norm2, b.eps, &n2, &t);
        let y = mlp(g, &y);
        g.node("Add", &[&t, &y], vec![], "residual")
    };
    transpose(g, &t, &[0, 3, 1, 2], "nchw")
}

fn patch_merging(g: &mut Builder, m: &PatchMerging, x: &str, hw: [usize; 2]) -> String {
    let p = &m.prefix;
    let c = m.reduction.weight.dims()[0] / 4;
    let [h2, w2] = hw.map(|v| v.div_ceil(2) as i64);
    let t = transpose(g, x, &[0, 2, 3, 1], "nhwc");
    let t = pad_after(g, &t, [hw[0] % 2, hw[1] % 2]);
    // [n·h/2, a, w/2, b, c] → [n·h/2, w/2, b, a, c]: channel block 2b + a.
    let t = reshape(g, &t, &[-1, 2, w2, 2, c as i64], "merge");
    let t = transpose(g, &t, &[0, 2, 3, 1, 4], "merge");
    let t = reshape(g, &t, &[-1, h2, w2, 4 * c as i64], "merge");
    let (reduction, norm) = (format!("{p}.reduction"), format!("{p}.norm"));
    let t = if m.norm_after {
        let t = token_linear(g, &m.reduction, &reduction, &t);
        layer_norm(g, &m.norm, m.eps, &norm, &t)
    } else {
        let t = layer_norm(g, &m.norm, m.eps, &norm, &t);
        token_linear(g, &m.reduction, &reduction, &t)
    };
    transpose(g, &t, &[0, 3, 1, 2], "nchw")
}

// MaxViT.

fn mbconv(g: &mut Builder, b: &MbConv, input: &str) -> Result<String> {
    let mut res = input.to_owned();
    if let Some(p) = &b.pool {
        res = avg_pool(g, p, &res)?;
    }
    if let Some(p) = &b.proj {
        res = conv_bn_act(g, p, &res)?;
    }
    let y = bn_act(g, &b.pre_norm, input);
    let y = conv_bn_act(g, &b.conv_a, &y)?;
    let y = conv_bn_act(g, &b.conv_b, &y)?;
    let y = squeeze_excite(g, &b.se, &y)?;
    let y = conv_bn_act(g, &b.conv_c, &y)?;
    Ok(g.node("Add", &[&res, &y], vec![], "residual"))
}

/// The map cut into partitions by Reshape/Transpose (the batch free, the map's size the
/// export's), attention with the bias table gathered by the constant index, an MLP, and
/// the map put back.
fn partition_attention(
    g: &mut Builder,
    a: &PartitionAttention,
    x: &str,
    hw: [usize; 2],
) -> Result<String> {
    let c = a.to_qkv.weight.dims()[0];
    let p = a.partition;
    if !hw[0].is_multiple_of(p) || !hw[1].is_multiple_of(p) {
        bail!(
            "{}: a {}x{} map is not cut into {p}x{p} partitions",
            a.prefix,
            hw[0],
            hw[1]
        );
    }
    let (ph, pw) = (a.cut(hw[0]), a.cut(hw[1]));
    let (gh, gw) = (hw[0] / ph, hw[1] / pw);
    let heads = a.heads;
    let dh = c / heads;
    let (ci, ghi, gwi, phi, pwi) = (c as i64, gh as i64, gw as i64, ph as i64, pw as i64);
    let y = reshape(g, x, &[-1, ci, ghi, phi, gwi, pwi], "partition");
    let y = transpose(g, &y, &[0, 2, 4, 3, 5, 1], "partition");
    let mut y = reshape(g, &y, &[-1, ghi * gwi, phi * pwi, ci], "partition");
    if a.grid {
        y = transpose(g, &y, &[0, 2, 1, 3], "grid");
    }
    let pre = &a.prefix;
    let attn = format!("{pre}.attn_layer.1");
    let z = layer_norm(g, &a.norm, a.eps, &format!("{pre}.attn_layer.0"), &y);
    let qkv = token_linear(g, &a.to_qkv, &format!("{attn}.to_qkv"), &z);
    let part = |g: &mut Builder, i: i64, hint: &str| {
        let s = slice(g, &qkv, -1, i * ci, (i + 1) * ci);
        let s = reshape(g, &s, &[0, 0, 0, heads as i64, dh as i64], hint);
        transpose(g, &s, &[0, 1, 3, 2, 4], hint)
    };
    let (q, k, v) = (part(g, 0, "q"), part(g, 1, "k"), part(g, 2, "v"));
    let scale = g.scalar("key_scale", (c as f32).powf(-0.5));
    let k = g.node("Mul", &[&k, &scale], vec![], "k");
    let kt = transpose(g, &k, &[0, 1, 2, 4, 3], "k_t");
    let scores = g.node("MatMul", &[&q, &kt], vec![], "scores");
    let table = g.param_of(
        &format!("{attn}.relative_position_bias_table"),
        a.relative_position_bias_table.val(),
    );
    let bias = relative_position_bias(g, &table, [p, p], heads);
    let scores = g.node("Add", &[&scores, &bias], vec![], "scores");
    let weights = g.node("Softmax", &[&scores], vec![attr_i("axis", -1)], "attention");
    let o = g.node("MatMul", &[&weights, &v], vec![], "attended");
    let o = transpose(g, &o, &[0, 1, 3, 2, 4], "attended");
    let o = reshape(g, &o, &[0, 0, 0, ci], "attended");
    let o = token_linear(g, &a.merge, &format!("{attn}.merge"), &o);
    let y = g.node("Add", &[&y, &o], vec![], "residual");
    let z = layer_norm(g, &a.mlp_norm, a.eps, &format!("{pre}.mlp_layer.0"), &y);
    let z = token_linear(g, &a.fc1, &format!("{pre}.mlp_layer.1"), &z);
    let z = g.gelu(&z, false);
    let z = token_linear(g, &a.fc2, &format!("{pre}.mlp_layer.3"), &z);
    let mut y = g.node("Add", &[&y, &z], vec![], "residual");
    if a.grid {
        y = transpose(g, &y, &[0, 2, 1, 3], "grid");
    }
    let y = reshape(g, &y, &[-1, ghi, gwi, phi, pwi, ci], "departition");
    let y = transpose(g, &y, &[0, 5, 1, 3, 2, 4], "departition");
    Ok(reshape(
        g,
        &y,
        &[-1, ci, hw[0] as i64, hw[1] as i64],
        "departition",
    ))
}
