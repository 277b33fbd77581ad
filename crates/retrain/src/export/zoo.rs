//! A zoo network written as ONNX nodes, block by block, its parameters under the origin's
//! names (`layer1.0.conv1.weight`). BatchNorm stays a node (runtimes fold it themselves),
//! so the file holds the same tensors as the bundle.

use anyhow::{Result, bail};
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AvgPool2d, MaxPool2d};
use burn::nn::{BatchNorm, PaddingConfig2d};

use super::{Builder, attr_f, attr_i, attr_ints};
use crate::zoo::convnext::ConvNextBlock;
use crate::zoo::layers::{
    Block, BnAct, ConvBnAct, DenseBlock, InvertedResidual, LinearAct, Normalize, ResidualBlock,
    SqueezeExcite,
};
use crate::zoo::network::Network;
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
        Block::ConvNorm(c) => {
            let c = &c.conv;
            windowed(hw, c.kernel_size, c.stride, c.dilation, &c.padding, false)?
        }
        // Tokens keep the patch grid they were cut from until the class token is taken.
        Block::PatchEmbed(p) => {
            let c = &p.proj;
            windowed(hw, c.kernel_size, c.stride, c.dilation, &c.padding, false)?
        }
        Block::Normalize(_)
        | Block::BnAct(_)
        | Block::Dense(_)
        | Block::Encoder(_)
        | Block::ConvNext(_) => hw,
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
        Block::PoolNorm(p) => {
            let y = g.node("GlobalAveragePool", &[x], vec![], "pool");
            layer_norm_2d(g, &p.norm, p.eps, &p.name, &y)
        }
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
