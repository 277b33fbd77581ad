//! Building blocks shared by the zoo's architectures, each loaded by origin-framework name.

use burn::module::{Param, RunningState};
use burn::nn::conv::Conv2d;

use crate::kernels::{self, Epilogue, Pointwise};
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig, MaxPool2d};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation;
use serde::{Deserialize, Serialize};

use super::loader::WeightLoader;
use crate::graph::GraphError;

/// Non-linearities used by the zoo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Act {
    #[default]
    Identity,
    Relu,
    Relu6,
    Silu,
    Hardswish,
    /// GELU with the error function (PyTorch's `nn.GELU()`).
    Gelu,
    Tanh,
}

impl Act {
    /// The activation as a fused convolution's epilogue, where the kernels have it.
    pub fn epilogue(self) -> Option<Epilogue> {
        Some(match self {
            Act::Identity => Epilogue::Identity,
            Act::Relu => Epilogue::Relu,
            Act::Relu6 => Epilogue::Act(Pointwise::Relu6),
            Act::Silu => Epilogue::Act(Pointwise::Silu),
            Act::Hardswish => Epilogue::Act(Pointwise::Hardswish),
            Act::Gelu => Epilogue::Act(Pointwise::Gelu),
            Act::Tanh => return None,
        })
    }

    /// The activation of `bn`'s output: in training on the CPU in the BatchNorm's own
    /// kernel (`kernels::batch_norm_then`).
    pub fn after_batch_norm<const D: usize>(self, bn: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
        match self.epilogue() {
            Some(e) => kernels::batch_norm_then(bn, x, e),
            None => self.apply(kernels::batch_norm(bn, x)),
        }
    }

    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Act::Identity => x,
            Act::Relu => activation::relu(x),
            Act::Relu6 => kernels::activation(x, Pointwise::Relu6),
            Act::Silu => kernels::activation(x, Pointwise::Silu),
            Act::Hardswish => kernels::activation(x, Pointwise::Hardswish),
            Act::Gelu => kernels::activation(x, Pointwise::Gelu),
            Act::Tanh => x.tanh(),
        }
    }
}

/// Padding of a convolution: PyTorch's symmetric `k // 2` or TensorFlow's SAME, which pads
/// more at the bottom/right on stride-2 layers. SAME is computed once for the model's native
/// input size (as the origin's static-padding layers do) and kept fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pad {
    Symmetric,
    /// TF SAME computed for this input height/width.
    TfSame(usize),
    /// Zeros after (bottom/right) only, whatever the size: Keras' `ZeroPadding2D(((0, n),
    /// (0, n)))` in front of a "valid" convolution.
    After(usize),
    /// `n` zeros on every side, whatever the kernel (torchvision's AlexNet stem: 11×11,
    /// padding 2; SqueezeNet's and Inception v3's unpadded 3×3 and 7×7).
    Fixed(usize),
}

fn padding(pad: Pad, kernel: usize, stride: usize) -> PaddingConfig2d {
    match pad {
        Pad::Symmetric => {
            let p = (kernel - 1) / 2;
            PaddingConfig2d::Explicit(p, p, p, p)
        }
        Pad::TfSame(size) => {
            let out = size.div_ceil(stride);
            let total = ((out - 1) * stride + kernel).saturating_sub(size);
            let (a, b) = (total / 2, total - total / 2);
            PaddingConfig2d::Explicit(a, a, b, b)
        }
        Pad::After(n) => PaddingConfig2d::Explicit(0, 0, n, n),
        Pad::Fixed(n) => PaddingConfig2d::Explicit(n, n, n, n),
    }
}

/// Shape of a convolution.
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    pub cin: usize,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    pub groups: usize,
    pub pad: Pad,
    /// The convolution has a bias (Keras' default) before its BatchNorm.
    pub bias: bool,
}

impl ConvSpec {
    pub fn new(cin: usize, cout: usize, kernel: usize, stride: usize) -> Self {
        Self {
            cin,
            cout,
            kernel,
            stride,
            groups: 1,
            pad: Pad::Symmetric,
            bias: false,
        }
    }
    pub fn depthwise(c: usize, kernel: usize, stride: usize) -> Self {
        Self {
            groups: c,
            ..Self::new(c, c, kernel, stride)
        }
    }
    pub fn pad(mut self, pad: Pad) -> Self {
        self.pad = pad;
        self
    }
    pub fn with_bias(mut self) -> Self {
        self.bias = true;
        self
    }
}

pub fn load_conv(l: &WeightLoader, prefix: &str, spec: ConvSpec, bias: bool) -> Conv2d {
    let k = spec.kernel;
    let weight = l.tensor(
        &format!("{prefix}.weight"),
        [spec.cout, spec.cin / spec.groups, k, k],
    );
    let bias = bias.then(|| Param::from_tensor(l.tensor(&format!("{prefix}.bias"), [spec.cout])));
    Conv2d {
        weight: Param::from_tensor(weight),
        bias,
        stride: [spec.stride; 2],
        kernel_size: [k; 2],
        dilation: [1, 1],
        groups: spec.groups,
        padding: padding(spec.pad, k, spec.stride),
    }
}

/// A BatchNorm's epsilon and running-statistics momentum (PyTorch's convention: the weight
/// of the new batch, `1 - momentum` in Keras'). Each family states both as its origin does:
/// fine-tuning must update the statistics at the origin's rate, or on small batches they
/// drift ten times faster (or slower) than there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BnSpec {
    pub eps: f64,
    pub momentum: f64,
}

impl BnSpec {
    /// PyTorch's `nn.BatchNorm2d` defaults.
    pub const TORCH: BnSpec = BnSpec::new(1e-5, 0.1);

    pub const fn new(eps: f64, momentum: f64) -> Self {
        Self { eps, momentum }
    }

    fn init(self, channels: usize, device: &Device) -> BatchNorm {
        BatchNormConfig::new(channels)
            .with_epsilon(self.eps)
            .with_momentum(self.momentum)
            .init(device)
    }
}

pub fn load_batchnorm(l: &WeightLoader, prefix: &str, channels: usize, spec: BnSpec) -> BatchNorm {
    let mut bn = spec.init(channels, l.device());
    bn.gamma = Param::from_tensor(l.tensor(&format!("{prefix}.weight"), [channels]));
    bn.beta = Param::from_tensor(l.tensor(&format!("{prefix}.bias"), [channels]));
    bn.running_mean = RunningState::new(l.buffer(&format!("{prefix}.running_mean"), [channels]));
    bn.running_var = RunningState::new(l.buffer(&format!("{prefix}.running_var"), [channels]));
    l.skip(&format!("{prefix}.num_batches_tracked"));
    bn
}

/// The BatchNorm of a file that folded it into the convolution before it (TFLite): the
/// convolution's bias is the folded shift. The BatchNorm becomes the identity (γ = 1,
/// μ = 0, σ² = 1 − ε) carrying that shift as β, so the unit computes what the file does and
/// fine-tuning still has a BatchNorm to adapt. A convolution with a bias of its own (Keras
/// ResNet) keeps the file's bias there and β = 0.
fn folded_batchnorm(l: &WeightLoader, conv: &str, spec: ConvSpec, bn: BnSpec) -> BatchNorm {
    let c = spec.cout;
    let device = l.device();
    let eps = bn.eps;
    let mut bn = bn.init(c, device);
    bn.beta = Param::from_tensor(if spec.bias {
        Tensor::zeros([c], device)
    } else {
        l.tensor(&format!("{conv}.bias"), [c])
    });
    bn.running_var = RunningState::new(Tensor::full([c], 1.0 - eps, device));
    bn
}

/// A Linear without a bias, `<prefix>.weight` as PyTorch's `[out, in]`.
pub fn load_linear_no_bias(l: &WeightLoader, prefix: &str, din: usize, dout: usize) -> Linear {
    let w = l.tensor::<2>(&format!("{prefix}.weight"), [dout, din]);
    Linear {
        weight: Param::from_tensor(w.transpose()),
        bias: None,
    }
}

/// PyTorch stores Linear weights as (out, in); burn multiplies by (in, out).
pub fn load_linear(l: &WeightLoader, prefix: &str, din: usize, dout: usize) -> Linear {
    let w = l.tensor(&format!("{prefix}.weight"), [dout, din]);
    Linear {
        weight: Param::from_tensor(w.transpose()),
        bias: Some(Param::from_tensor(
            l.tensor(&format!("{prefix}.bias"), [dout]),
        )),
    }
}

/// Named tensors in the origin framework's naming, as a weights file holds them.
pub type TensorMap = std::collections::BTreeMap<String, crate::weights::WeightTensor>;

/// A tensor's shape and values as f32.
pub(crate) fn shape_and_values<const D: usize>(t: Tensor<D>) -> (Vec<usize>, Vec<f32>) {
    let shape = t.dims().to_vec();
    let data = t
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default();
    (shape, data)
}

pub(crate) fn put<const D: usize>(out: &mut TensorMap, name: String, t: Tensor<D>) {
    let (shape, data) = shape_and_values(t);
    out.insert(
        name,
        crate::weights::WeightTensor {
            dtype: crate::weights::DType::F32,
            shape,
            data,
            strided: false,
        },
    );
}

/// A Linear's tensors under PyTorch's names and layout (`[out, in]`, as `load_linear`
/// reads them).
pub(crate) fn export_linear(l: &Linear, prefix: &str, out: &mut TensorMap) {
    put(out, format!("{prefix}.weight"), l.weight.val().transpose());
    if let Some(b) = &l.bias {
        put(out, format!("{prefix}.bias"), b.val());
    }
}

pub(crate) fn export_conv(conv: &Conv2d, name: &str, out: &mut TensorMap) {
    put(out, format!("{name}.weight"), conv.weight.val());
    if let Some(b) = &conv.bias {
        put(out, format!("{name}.bias"), b.val());
    }
}

/// Convolution, BatchNorm and activation: the unit every zoo architecture is made of.
#[derive(Module, Debug)]
pub struct ConvBnAct {
    pub conv: Conv2d,
    /// `None` once folded into the convolution for inference.
    pub bn: Option<BatchNorm>,
    #[module(skip)]
    pub act: Act,
    /// Origin-framework name of the convolution, for export.
    #[module(skip)]
    pub conv_name: String,
    /// Origin-framework name of the BatchNorm (none for a plain convolution), for export.
    #[module(skip)]
    pub bn_name: Option<String>,
    /// The weight transformed for Winograd's 3×3 kernel, made when folded for inference.
    #[module(skip)]
    pub winograd: Option<kernels::WinogradWeight>,
}

impl ConvBnAct {
    pub fn load(
        l: &WeightLoader,
        conv: &str,
        bn: &str,
        spec: ConvSpec,
        norm: BnSpec,
        act: Act,
    ) -> Self {
        let batchnorm = if l.batchnorm_folded() {
            folded_batchnorm(l, conv, spec, norm)
        } else {
            load_batchnorm(l, bn, spec.cout, norm)
        };
        Self {
            conv: load_conv(l, conv, spec, spec.bias),
            bn: Some(batchnorm),
            act,
            conv_name: conv.to_owned(),
            bn_name: Some(bn.to_owned()),
            winograd: None,
        }
    }

    /// A convolution with a bias and no BatchNorm (VGG).
    pub fn load_plain(l: &WeightLoader, conv: &str, spec: ConvSpec, act: Act) -> Self {
        Self {
            conv: load_conv(l, conv, spec, true),
            bn: None,
            act,
            conv_name: conv.to_owned(),
            bn_name: None,
            winograd: None,
        }
    }

    /// A convolution alone (no BatchNorm after it), with a bias as `spec` says: DenseNet's
    /// `conv2`, whose input a BatchNorm before it (`norm1`) already normalised.
    pub fn load_conv(l: &WeightLoader, conv: &str, spec: ConvSpec, act: Act) -> Self {
        Self {
            conv: load_conv(l, conv, spec, spec.bias),
            bn: None,
            act,
            conv_name: conv.to_owned(),
            bn_name: None,
            winograd: None,
        }
    }

    /// Adds this unit's tensors, under their origin names, to `out`.
    pub fn export(&self, out: &mut TensorMap) {
        export_conv(&self.conv, &self.conv_name, out);
        if let (Some(bn), Some(n)) = (&self.bn, &self.bn_name) {
            put(out, format!("{n}.weight"), bn.gamma.val());
            put(out, format!("{n}.bias"), bn.beta.val());
            put(out, format!("{n}.running_mean"), bn.running_mean.value());
            put(out, format!("{n}.running_var"), bn.running_var.value());
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        // Folded for inference: the bias and activation in the convolution's own pass.
        if self.bn.is_none()
            && let Some(epilogue) = self.act.epilogue()
        {
            return kernels::conv_fused_winograd(
                &self.conv,
                self.winograd.as_ref(),
                x,
                None,
                epilogue,
            );
        }
        let x = crate::kernels::conv(&self.conv, x);
        match &self.bn {
            Some(bn) => self.act.after_batch_norm(bn, x),
            None => self.act.apply(x),
        }
    }

    /// `act(self.forward(x) + shortcut)`: folded for inference (an identity activation of
    /// its own), the shortcut and `act` in the convolution's own pass.
    pub fn forward_plus(&self, x: Tensor<4>, shortcut: Tensor<4>, act: Act) -> Tensor<4> {
        if self.bn.is_none()
            && self.act == Act::Identity
            && let Some(epilogue) = act.epilogue()
        {
            let winograd = self.winograd.as_ref();
            return kernels::conv_fused_winograd(&self.conv, winograd, x, Some(shortcut), epilogue);
        }
        act.apply(self.forward(x) + shortcut)
    }

    /// Folds inference-mode BatchNorm into the convolution: w' = w·γ/σ, b' = β − μ·γ/σ.
    /// Exact up to float rounding, and it removes a full pass over every activation. Then
    /// transforms a 3×3 weight for Winograd's kernel, once for every forward pass.
    pub fn fold_batchnorm(mut self) -> Self {
        if let Some(bn) = self.bn.take() {
            self.conv = folded(self.conv, bn);
        }
        self.winograd = kernels::WinogradWeight::of(&self.conv);
        self
    }
}

/// `conv` with inference-mode `bn` folded into its weight and bias.
fn folded(mut conv: Conv2d, bn: BatchNorm) -> Conv2d {
    let scale = bn.gamma.val() / (bn.running_var.value() + bn.epsilon).sqrt();
    let cout = scale.dims()[0];
    let w = conv.weight.val() * scale.clone().reshape([cout, 1, 1, 1]);
    let b0 = match &conv.bias {
        Some(b) => b.val(),
        None => Tensor::zeros([cout], &scale.device()),
    };
    let b = (b0 - bn.running_mean.value()) * scale + bn.beta.val();
    conv.weight = Param::from_tensor(w);
    conv.bias = Some(Param::from_tensor(b));
    conv
}

/// Squeeze-and-excitation: channel gates from the pooled activation (1x1 convs with bias).
#[derive(Module, Debug)]
pub struct SqueezeExcite {
    pub reduce: Conv2d,
    pub expand: Conv2d,
    #[module(skip)]
    pub act: Act,
    /// Hard sigmoid (MobileNetV3) instead of the logistic sigmoid.
    pub hard_gate: bool,
    #[module(skip)]
    pub names: [String; 2],
}

impl SqueezeExcite {
    pub fn load(
        l: &WeightLoader,
        reduce: &str,
        expand: &str,
        channels: usize,
        squeezed: usize,
        act: Act,
        hard_gate: bool,
    ) -> Self {
        Self {
            reduce: load_conv(l, reduce, ConvSpec::new(channels, squeezed, 1, 1), true),
            expand: load_conv(l, expand, ConvSpec::new(squeezed, channels, 1, 1), true),
            act,
            hard_gate,
            names: [reduce.to_owned(), expand.to_owned()],
        }
    }

    pub fn export(&self, out: &mut TensorMap) {
        export_conv(&self.reduce, &self.names[0], out);
        export_conv(&self.expand, &self.names[1], out);
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let s = crate::kernels::channel_means(x.clone());
        let s = self.expand.forward(self.act.apply(self.reduce.forward(s)));
        let gate = if self.hard_gate {
            activation::hard_sigmoid(s, 1.0 / 6.0, 0.5)
        } else {
            activation::sigmoid(s)
        };
        x * gate
    }
}

/// MobileNetV2/V3 and EfficientNet's block: expand 1x1, depthwise kxk, optional SE,
/// project 1x1, with a residual when shapes allow.
#[derive(Module, Debug)]
pub struct InvertedResidual {
    pub expand: Option<ConvBnAct>,
    pub depthwise: ConvBnAct,
    pub se: Option<SqueezeExcite>,
    pub project: ConvBnAct,
    pub residual: bool,
}

/// One unit of an inverted-residual block, for naming it in its origin's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvertedPart {
    Expand,
    Depthwise,
    Project,
}

/// The shape of one inverted-residual block.
#[derive(Debug, Clone, Copy)]
pub struct InvertedSpec {
    pub cin: usize,
    pub hidden: usize,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    /// Padding of the depthwise convolution.
    pub pad: Pad,
    /// Activation after the expansion and the depthwise convolution.
    pub act: Act,
}

impl InvertedSpec {
    /// The block expands (has its 1x1 expansion) only when `hidden` differs from `cin`.
    pub fn expands(&self) -> bool {
        self.hidden != self.cin
    }
}

impl InvertedResidual {
    /// The block every family builds the same way: a 1x1 expansion when it expands, the
    /// depthwise kxk, the squeeze-excitation `se` gives, a linear 1x1 projection, and a
    /// residual when stride 1 keeps the shape. `unit` loads one convolution + BatchNorm +
    /// activation under the origin's names for that part.
    pub fn load(
        s: InvertedSpec,
        unit: impl Fn(InvertedPart, ConvSpec, Act) -> ConvBnAct,
        se: Option<SqueezeExcite>,
    ) -> Self {
        Self {
            expand: s.expands().then(|| {
                unit(
                    InvertedPart::Expand,
                    ConvSpec::new(s.cin, s.hidden, 1, 1),
                    s.act,
                )
            }),
            depthwise: unit(
                InvertedPart::Depthwise,
                ConvSpec::depthwise(s.hidden, s.kernel, s.stride).pad(s.pad),
                s.act,
            ),
            se,
            project: unit(
                InvertedPart::Project,
                ConvSpec::new(s.hidden, s.cout, 1, 1),
                Act::Identity,
            ),
            residual: s.stride == 1 && s.cin == s.cout,
        }
    }

    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        if let Some(y) = self.fused(input.clone()) {
            return y;
        }
        let mut x = input.clone();
        if let Some(e) = &self.expand {
            x = e.forward(x);
        }
        x = self.depthwise.forward(x);
        if let Some(se) = &self.se {
            x = se.forward(x);
        }
        if self.residual {
            self.project.forward_plus(x, input, Act::Identity)
        } else {
            self.project.forward(x)
        }
    }

    /// The folded block (inference) in one pass where the fused kernel takes it: with an
    /// expansion and activations the kernels have.
    fn fused(&self, input: Tensor<4>) -> Option<Tensor<4>> {
        let (e, d, p) = (self.expand.as_ref()?, &self.depthwise, &self.project);
        let folded = [e, d, p].iter().all(|u| u.bn.is_none());
        if !folded || p.act != Act::Identity {
            return None;
        }
        let acts = [e.act.epilogue()?, d.act.epilogue()?];
        let se = match &self.se {
            Some(se) => {
                let gate = match se.hard_gate {
                    true => kernels::Gate::HardSigmoid,
                    false => kernels::Gate::Sigmoid,
                };
                let act = se.act.epilogue()?;
                Some(([&se.reduce, &se.expand], kernels::SqueezeActs { act, gate }))
            }
            None => None,
        };
        let convs = [&e.conv, &d.conv, &p.conv];
        kernels::inverted_block(convs, acts, se, input, self.residual)
    }

    fn export(&self, out: &mut TensorMap) {
        if let Some(e) = &self.expand {
            e.export(out);
        }
        self.depthwise.export(out);
        if let Some(se) = &self.se {
            se.export(out);
        }
        self.project.export(out);
    }

    fn fold_batchnorm(self) -> Self {
        Self {
            expand: self.expand.map(ConvBnAct::fold_batchnorm),
            depthwise: self.depthwise.fold_batchnorm(),
            se: self.se,
            project: self.project.fold_batchnorm(),
            residual: self.residual,
        }
    }
}

/// ResNet's residual blocks: two 3x3 convs (basic) or 1x1-3x3-1x1 (bottleneck), with an
/// optional 1x1 downsample on the shortcut.
#[derive(Module, Debug)]
pub struct ResidualBlock {
    pub convs: Vec<ConvBnAct>,
    pub downsample: Option<ConvBnAct>,
}

impl ResidualBlock {
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let Some((last, first)) = self.convs.split_last() else {
            return activation::relu(input.clone() + self.shortcut(input));
        };
        let mut x = input.clone();
        for c in first {
            x = c.forward(x);
        }
        last.forward_plus(x, self.shortcut(input), Act::Relu)
    }

    fn shortcut(&self, input: Tensor<4>) -> Tensor<4> {
        match &self.downsample {
            Some(d) => d.forward(input),
            None => input,
        }
    }

    fn export(&self, out: &mut TensorMap) {
        for c in &self.convs {
            c.export(out);
        }
        if let Some(d) = &self.downsample {
            d.export(out);
        }
    }

    fn fold_batchnorm(self) -> Self {
        Self {
            convs: self
                .convs
                .into_iter()
                .map(ConvBnAct::fold_batchnorm)
                .collect(),
            downsample: self.downsample.map(ConvBnAct::fold_batchnorm),
        }
    }
}

/// A BatchNorm and activation with no convolution right before them to fold into:
/// DenseNet's pre-activation (`norm1` + ReLU on a dense layer's concatenated input, a
/// transition's `norm`, `features.norm5` + the ReLU before pooling). Kept as BatchNorm when
/// the network is folded.
#[derive(Module, Debug)]
pub struct BnAct {
    pub bn: BatchNorm,
    #[module(skip)]
    pub act: Act,
    /// Origin-framework name of the BatchNorm, for export.
    #[module(skip)]
    pub name: String,
}

impl BnAct {
    pub fn load(l: &WeightLoader, name: &str, channels: usize, spec: BnSpec, act: Act) -> Self {
        Self {
            bn: load_batchnorm(l, name, channels, spec),
            act,
            name: name.to_owned(),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.act.after_batch_norm(&self.bn, x)
    }

    pub fn export(&self, out: &mut TensorMap) {
        let n = &self.name;
        put(out, format!("{n}.weight"), self.bn.gamma.val());
        put(out, format!("{n}.bias"), self.bn.beta.val());
        put(
            out,
            format!("{n}.running_mean"),
            self.bn.running_mean.value(),
        );
        put(out, format!("{n}.running_var"), self.bn.running_var.value());
    }
}

/// One layer of a DenseNet block: `norm1` + ReLU on everything before it, the 1x1
/// bottleneck `conv1` with `norm2` + ReLU after it (one unit, folded like any), the 3x3
/// `conv2` giving `growth_rate` new channels, appended to the input.
#[derive(Module, Debug)]
pub struct DenseLayer {
    pub norm1: BnAct,
    pub conv1: ConvBnAct,
    pub conv2: ConvBnAct,
}

/// DenseNet's dense block: each layer's output concatenated to its input, channel-wise.
#[derive(Module, Debug)]
pub struct DenseBlock {
    pub layers: Vec<DenseLayer>,
}

impl DenseBlock {
    pub fn forward(&self, mut x: Tensor<4>) -> Tensor<4> {
        for layer in &self.layers {
            let y = layer
                .conv2
                .forward(layer.conv1.forward(layer.norm1.forward(x.clone())));
            x = Tensor::cat(vec![x, y], 1);
        }
        x
    }

    fn export(&self, out: &mut TensorMap) {
        for layer in &self.layers {
            layer.norm1.export(out);
            layer.conv1.export(out);
            layer.conv2.export(out);
        }
    }

    fn fold_batchnorm(self) -> Self {
        Self {
            layers: self
                .layers
                .into_iter()
                .map(|layer| DenseLayer {
                    norm1: layer.norm1,
                    conv1: layer.conv1.fold_batchnorm(),
                    conv2: layer.conv2,
                })
                .collect(),
        }
    }
}

/// torchvision VGG's `avgpool` + `torch.flatten(x, 1)`: an adaptive average pool to
/// `size` (7×7; the identity on a 224×224 input), flattened in NCHW order as
/// [N, C·h·w, 1, 1] for the [`LinearAct`] layers after it.
#[derive(Module, Debug)]
pub struct PoolFlatten {
    #[module(skip)]
    pub size: [usize; 2],
}

impl PoolFlatten {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = burn::tensor::module::adaptive_avg_pool2d(x, self.size);
        let [n, c, h, w] = x.dims();
        x.reshape([n, c * h * w, 1, 1])
    }
}

/// A fully connected layer and its activation inside the feature extractor, on [N, D, 1, 1]
/// (VGG's `classifier.0` and `classifier.3`), stored as the origin's Linear (out, in).
#[derive(Module, Debug)]
pub struct LinearAct {
    pub linear: Linear,
    #[module(skip)]
    pub act: Act,
    /// Origin-framework name of the layer, for export.
    #[module(skip)]
    pub name: String,
}

impl LinearAct {
    pub fn load(l: &WeightLoader, name: &str, din: usize, dout: usize, act: Act) -> Self {
        Self {
            linear: load_linear(l, name, din, dout),
            act,
            name: name.to_owned(),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [n, d, h, w] = x.dims();
        let y = self.linear.forward(x.reshape([n, d * h * w]));
        let dout = y.dims()[1];
        self.act.apply(y).reshape([n, dout, 1, 1])
    }

    fn export(&self, out: &mut TensorMap) {
        export_linear(&self.linear, &self.name, out);
    }
}

/// A `k`×`k` average pool with stride `stride`, unpadded (DenseNet's transitions: 2, 2).
pub fn avg_pool(k: usize, stride: usize) -> Block {
    Block::AvgPool(
        AvgPool2dConfig::new([k, k])
            .with_strides([stride, stride])
            .init(),
    )
}

/// One step of a network's feature extractor.
// Blocks are built once per model and never moved in hot code; boxing the large variant
// would only add an indirection to every forward call.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Block {
    Conv(ConvBnAct),
    MaxPool(MaxPool2d),
    Inverted(InvertedResidual),
    Residual(ResidualBlock),
    /// Keras' `Flatten` of an NHWC activation, as [N, H·W·C, 1, 1] (VGG's dense layers then
    /// run as 1x1 convolutions on it, with their Keras weights as stored).
    FlattenHwc(FlattenHwc),
    /// Input normalisation inside the model (Keras EfficientNet).
    Normalize(Normalize),
    AvgPool(AvgPool2d),
    /// A BatchNorm and activation on their own (DenseNet).
    BnAct(BnAct),
    Dense(DenseBlock),
    /// Adaptive average pool and NCHW flatten (torchvision VGG).
    PoolFlatten(PoolFlatten),
    /// A fully connected layer inside the feature extractor (torchvision VGG).
    Linear(LinearAct),
    /// A run of a model file's own graph (ONNX, TFLite) between two cut points.
    Graph(crate::graph::block::GraphBlock),
    /// A token model's patch embedding, encoder block and class-token head
    /// (`zoo::tokens`).
    PatchEmbed(super::tokens::PatchEmbed),
    Encoder(super::tokens::EncoderBlock),
    ClassToken(super::tokens::ClassTokenHead),
    /// ConvNeXt's convolution + LayerNorm2d (stem, downsampling), block, and pooled norm
    /// (`zoo::convnext`).
    ConvNorm(super::convnext::ConvNorm),
    ConvNext(super::convnext::ConvNextBlock),
    PoolNorm(super::convnext::PoolNorm),
    /// RegNet's residual bottleneck with its optional squeeze-excitation (`zoo::regnet`).
    RegNet(super::regnet::RegNetBlock),
    /// EfficientNetV2's FusedMBConv (`zoo::efficientnet`).
    Fused(super::efficientnet::FusedMbConv),
    /// ShuffleNetV2's two-branch unit and channel shuffle (`zoo::shufflenet`).
    Shuffle(super::shufflenet::ShuffleUnit),
    /// Swin's (shifted) window attention block, patch merging and final map norm
    /// (`zoo::swin`), NCHW in and out.
    Swin(super::swin::SwinBlock),
    PatchMerging(super::swin::PatchMerging),
    MapNorm(super::swin::MapNorm),
    /// MaxViT's MBConv and block/grid attention (`zoo::maxvit`).
    MbConv(super::maxvit::MbConv),
    PartitionAttention(super::maxvit::PartitionAttention),
    /// Branches run on the same input, their outputs concatenated channel-wise (SqueezeNet's
    /// Fire expand, GoogLeNet's and Inception v3's modules).
    Concat(Concat),
    /// A fixed per-channel `x·scale + shift` (torchvision GoogLeNet's and Inception v3's
    /// `transform_input`).
    ChannelAffine(ChannelAffine),
}

/// One branch of a [`Concat`]: blocks run in order.
#[derive(Module, Debug)]
pub struct Branch {
    pub blocks: Vec<Block>,
}

/// See [`Block::Concat`].
#[derive(Module, Debug)]
pub struct Concat {
    pub branches: Vec<Branch>,
}

impl Concat {
    pub fn new(branches: Vec<Vec<Block>>) -> Self {
        Self {
            branches: branches
                .into_iter()
                .map(|blocks| Branch { blocks })
                .collect(),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Result<Tensor<4>, GraphError> {
        let mut outs = Vec::with_capacity(self.branches.len());
        for b in &self.branches {
            let mut y = x.clone();
            for block in &b.blocks {
                y = block.forward(y)?;
            }
            outs.push(y);
        }
        Ok(Tensor::cat(outs, 1))
    }

    fn export(&self, out: &mut TensorMap) {
        for block in self.branches.iter().flat_map(|b| &b.blocks) {
            block.export(out);
        }
    }

    fn fold_batchnorm(self) -> Self {
        Self {
            branches: self
                .branches
                .into_iter()
                .map(|b| Branch {
                    blocks: b.blocks.into_iter().map(Block::fold_batchnorm).collect(),
                })
                .collect(),
        }
    }
}

/// See [`Block::ChannelAffine`]. Not a parameter: fixed by the architecture.
#[derive(Module, Debug)]
pub struct ChannelAffine {
    #[module(skip)]
    pub scale: [f32; 3],
    #[module(skip)]
    pub shift: [f32; 3],
}

impl ChannelAffine {
    /// torchvision's `_transform_input`: an input normalised with ImageNet's mean and std
    /// renormalised as `(x·std + mean − 0.5) / 0.5`, channel by channel, with the constants
    /// torchvision writes (`0.229 / 0.5`, `(0.485 − 0.5) / 0.5`, …).
    pub fn torchvision_transform_input() -> Self {
        let (mean, std) = ([0.485f64, 0.456, 0.406], [0.229f64, 0.224, 0.225]);
        Self {
            scale: std.map(|s| (s / 0.5) as f32),
            shift: mean.map(|m| ((m - 0.5) / 0.5) as f32),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let device = x.device();
        let c = |v: [f32; 3]| {
            Tensor::<1>::from_data(TensorData::new(v.to_vec(), [3]), &device).reshape([1, 3, 1, 1])
        };
        x * c(self.scale) + c(self.shift)
    }
}

/// torchvision's `BasicConv2d` (GoogLeNet, Inception v3): a convolution without bias of a
/// `kernel` (height, width) kernel, `pad` (height, width) zeros each side, then its
/// BatchNorm and a ReLU; `{prefix}.conv` and `{prefix}.bn`.
pub fn basic_conv(
    l: &WeightLoader,
    prefix: &str,
    [cin, cout]: [usize; 2],
    kernel: [usize; 2],
    stride: usize,
    pad: [usize; 2],
    norm: BnSpec,
) -> Block {
    let conv = format!("{prefix}.conv");
    let bn = format!("{prefix}.bn");
    let spec = ConvSpec::new(cin, cout, 1, stride);
    let batchnorm = if l.batchnorm_folded() {
        folded_batchnorm(l, &conv, spec, norm)
    } else {
        load_batchnorm(l, &bn, cout, norm)
    };
    let weight = l.tensor(&format!("{conv}.weight"), [cout, cin, kernel[0], kernel[1]]);
    Block::Conv(ConvBnAct {
        conv: Conv2d {
            weight: Param::from_tensor(weight),
            bias: None,
            stride: [stride; 2],
            kernel_size: kernel,
            dilation: [1, 1],
            groups: 1,
            padding: PaddingConfig2d::Explicit(pad[0], pad[1], pad[0], pad[1]),
        },
        bn: Some(batchnorm),
        act: Act::Relu,
        conv_name: conv,
        bn_name: Some(bn),
        winograd: None,
    })
}

/// A max pool as [`max_pool`], with PyTorch's `ceil_mode=True` (SqueezeNet, GoogLeNet): the
/// last window may hang over the bottom/right edge.
pub fn max_pool_ceil(k: usize, stride: usize, pad: usize) -> Block {
    match max_pool(k, stride, pad) {
        Block::MaxPool(p) => Block::MaxPool(MaxPool2d {
            ceil_mode: true,
            ..p
        }),
        other => other,
    }
}

/// PyTorch's `F.avg_pool2d(x, k, stride, padding)`: the zeros of the padding counted in
/// the average (`count_include_pad=True`; Inception v3's pool branches: 3, 1, 1).
pub fn avg_pool_padded(k: usize, stride: usize, pad: usize) -> Block {
    Block::AvgPool(
        AvgPool2dConfig::new([k, k])
            .with_strides([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .with_count_include_pad(true)
            .init(),
    )
}

/// Keras EfficientNet's input layers: `Rescaling(1/255)`, then `Normalization` with the mean
/// and variance stored in the weights, `(x - mean) / max(sqrt(var), 1e-7)`, then for the
/// ImageNet weights a per-channel `Rescaling` (`scale`; Keras' fix for the original
/// implementation dividing by the variance). Fixed, never trained.
#[derive(Module, Debug)]
pub struct Normalize {
    pub mean: Tensor<1>,
    pub variance: Tensor<1>,
    #[module(skip)]
    pub scale: [f32; 3],
    #[module(skip)]
    pub name: String,
}

impl Normalize {
    pub fn load(l: &WeightLoader, name: &str, scale: [f32; 3]) -> Self {
        let mean = l.buffer(&format!("{name}.mean"), [3]);
        let variance = l.buffer(&format!("{name}.variance"), [3]);
        l.skip(&format!("{name}.count"));
        Self {
            mean,
            variance,
            scale,
            name: name.to_owned(),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let device = x.device();
        let std = self.variance.clone().sqrt().clamp_min(1e-7);
        let scale = Tensor::<1>::from_data(TensorData::new(self.scale.to_vec(), [3]), &device);
        let x = x / 255.0;
        ((x - self.mean.clone().reshape([1, 3, 1, 1])) / std.reshape([1, 3, 1, 1]))
            * scale.reshape([1, 3, 1, 1])
    }

    fn export(&self, out: &mut TensorMap) {
        put(out, format!("{}.mean", self.name), self.mean.clone());
        put(
            out,
            format!("{}.variance", self.name),
            self.variance.clone(),
        );
    }
}

/// A `k`×`k` max pool with stride `stride`, padded `pad` on every side (ResNet's stem:
/// 3, 2, 1; VGG's blocks: 2, 2, 0).
pub fn max_pool(k: usize, stride: usize, pad: usize) -> Block {
    Block::MaxPool(MaxPool2d {
        stride: [stride; 2],
        kernel_size: [k; 2],
        padding: PaddingConfig2d::Explicit(pad, pad, pad, pad),
        dilation: [1, 1],
        ceil_mode: false,
    })
}

/// `MaxPool2d::forward`, through the CPU's pooling kernel (`kernels::max_pool2d`) where its
/// padding is explicit.
fn max_pool_forward(p: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    let padding = match p.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        PaddingConfig2d::Valid => [(0, 0); 2],
        PaddingConfig2d::Same => return p.forward(x),
    };
    let options = burn::tensor::ops::MaxPoolOptions {
        kernel_size: p.kernel_size,
        stride: p.stride,
        padding,
        dilation: p.dilation,
        ceil_mode: p.ceil_mode,
    };
    kernels::max_pool2d(x, options)
}

/// See [`Block::FlattenHwc`].
#[derive(Module, Debug)]
pub struct FlattenHwc {
    /// (No state: a marker the module derive can carry.)
    #[module(skip)]
    pub marker: (),
}

impl FlattenHwc {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [n, c, h, w] = x.dims();
        x.permute([0, 2, 3, 1]).reshape([n, h * w * c, 1, 1])
    }
}

impl Block {
    /// Runs the block. Only a graph's ops can fail here: their shapes were checked at load,
    /// but a batch size the check could not see may still break one (the error names it).
    pub fn forward(&self, x: Tensor<4>) -> Result<Tensor<4>, GraphError> {
        Ok(match self {
            Block::Conv(c) => c.forward(x),
            Block::MaxPool(p) => max_pool_forward(p, x),
            Block::Inverted(b) => b.forward(x),
            Block::Residual(b) => b.forward(x),
            Block::FlattenHwc(f) => f.forward(x),
            Block::Normalize(n) => n.forward(x),
            Block::AvgPool(p) => p.forward(x),
            Block::BnAct(b) => b.forward(x),
            Block::Dense(b) => b.forward(x),
            Block::PoolFlatten(p) => p.forward(x),
            Block::Linear(f) => f.forward(x),
            Block::Graph(g) => return g.forward(x),
            Block::PatchEmbed(p) => p.forward(x),
            Block::Encoder(e) => e.forward(x),
            Block::ClassToken(c) => c.forward(x),
            Block::ConvNorm(c) => c.forward(x),
            Block::ConvNext(b) => b.forward(x),
            Block::PoolNorm(p) => p.forward(x),
            Block::RegNet(b) => b.forward(x),
            Block::Fused(b) => b.forward(x),
            Block::Shuffle(b) => b.forward(x),
            Block::Swin(b) => b.forward(x),
            Block::PatchMerging(m) => m.forward(x),
            Block::MapNorm(n) => n.forward(x),
            Block::MbConv(b) => b.forward(x),
            Block::PartitionAttention(a) => return a.forward(x),
            Block::Concat(c) => return c.forward(x),
            Block::ChannelAffine(a) => a.forward(x),
        })
    }

    /// Adds the block's tensors under their origin names (a network being trained, whose
    /// BatchNorm is not folded).
    pub fn export(&self, out: &mut TensorMap) {
        match self {
            Block::Conv(c) => c.export(out),
            Block::MaxPool(_) => {}
            Block::Inverted(b) => b.export(out),
            Block::Residual(b) => b.export(out),
            Block::FlattenHwc(_) => {}
            Block::Normalize(n) => n.export(out),
            Block::AvgPool(_) | Block::PoolFlatten(_) => {}
            Block::BnAct(b) => b.export(out),
            Block::Dense(b) => b.export(out),
            Block::Linear(f) => f.export(out),
            Block::Graph(g) => g.export(out),
            Block::PatchEmbed(p) => p.export(out),
            Block::Encoder(e) => e.export(out),
            Block::ClassToken(c) => c.export(out),
            Block::ConvNorm(c) => c.export(out),
            Block::ConvNext(b) => b.export(out),
            Block::PoolNorm(p) => p.export(out),
            Block::RegNet(b) => b.export(out),
            Block::Fused(b) => b.export(out),
            Block::Shuffle(b) => b.export(out),
            Block::Swin(b) => b.export(out),
            Block::PatchMerging(m) => m.export(out),
            Block::MapNorm(n) => n.export(out),
            Block::MbConv(b) => b.export(out),
            Block::PartitionAttention(a) => a.export(out),
            Block::Concat(c) => c.export(out),
            Block::ChannelAffine(_) => {}
        }
    }

    pub fn fold_batchnorm(self) -> Self {
        match self {
            Block::Conv(c) => Block::Conv(c.fold_batchnorm()),
            Block::MaxPool(p) => Block::MaxPool(p),
            Block::Inverted(b) => Block::Inverted(b.fold_batchnorm()),
            Block::Residual(b) => Block::Residual(b.fold_batchnorm()),
            Block::FlattenHwc(f) => Block::FlattenHwc(f),
            Block::Normalize(n) => Block::Normalize(n),
            Block::Dense(b) => Block::Dense(b.fold_batchnorm()),
            b
            @ (Block::AvgPool(_) | Block::BnAct(_) | Block::PoolFlatten(_) | Block::Linear(_)) => b,
            Block::Graph(g) => Block::Graph(g.fold_batchnorm()),
            Block::MbConv(b) => Block::MbConv(b.fold_batchnorm()),
            // LayerNorms do not fold into a convolution.
            b @ (Block::PatchEmbed(_)
            | Block::Encoder(_)
            | Block::ClassToken(_)
            | Block::ConvNorm(_)
            | Block::ConvNext(_)
            | Block::PoolNorm(_)
            | Block::Swin(_)
            | Block::PatchMerging(_)
            | Block::MapNorm(_)
            | Block::PartitionAttention(_)) => b,
            Block::RegNet(b) => Block::RegNet(b.fold_batchnorm()),
            Block::Fused(b) => Block::Fused(b.fold_batchnorm()),
            Block::Shuffle(b) => Block::Shuffle(b.fold_batchnorm()),
            Block::Concat(c) => Block::Concat(c.fold_batchnorm()),
            Block::ChannelAffine(a) => Block::ChannelAffine(a),
        }
    }
}
