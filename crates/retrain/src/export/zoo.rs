//! A zoo network written as ONNX nodes, block by block, its parameters under the origin's
//! names (`layer1.0.conv1.weight`). BatchNorm stays a node (runtimes fold it themselves),
//! so the file holds the same tensors as the bundle.

use anyhow::{Result, bail};
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AvgPool2d, MaxPool2d};
use burn::nn::{BatchNorm, PaddingConfig2d};

use super::{Builder, attr_f, attr_i, attr_ints};
use crate::zoo::layers::{
    Block, BnAct, ConvBnAct, DenseBlock, InvertedResidual, LinearAct, Normalize, ResidualBlock,
    SqueezeExcite,
};
use crate::zoo::network::Network;

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
        Block::Normalize(_) | Block::BnAct(_) | Block::Dense(_) => hw,
        Block::FlattenHwc(_) | Block::PoolFlatten(_) | Block::Linear(_) => [1, 1],
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
