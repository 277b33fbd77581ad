//! Keras Applications architectures, by their Keras layer names (the weights reader has
//! already turned Keras layouts into PyTorch's: `<layer>.weight`, OIHW kernels).
//!
//! What differs from the PyTorch versions of the same networks, and is kept exact here:
//! TF "SAME" padding (stride-2 layers pad more at the bottom/right), BatchNorm epsilon 1e-3
//! and Keras' running-statistics momentum 0.999 (0.001 in PyTorch's convention), Keras'
//! channel rounding (`int(filters · alpha)` before rounding to a multiple of 8), and a Dense
//! classifier named `predictions` straight after global average pooling.

use serde::{Deserialize, Serialize};

use super::family::{ClassifierSpec, Family, StageInfo, StageList, stem_stages_head};
use super::layers::{
    Act, Block, BnSpec, ConvBnAct, ConvSpec, InvertedPart, InvertedResidual, InvertedSpec, Pad,
};
use super::loader::WeightLoader;
use super::mobilenet::make_divisible;
use super::network::Stage;
use super::{Interpolation, Preprocess, ZooEntry};
use crate::hub::Published;

/// Where Keras Applications' weights files are (`keras/src/applications/*.py`).
pub(crate) const KERAS_WEIGHTS: &str =
    "https://storage.googleapis.com/tensorflow/keras-applications/";

/// Keras `BatchNormalization(momentum=0.999)` in PyTorch's convention.
const KERAS_BN_MOMENTUM: f64 = 0.001;
/// Keras' default `BatchNormalization(momentum=0.99)` in PyTorch's convention.
const KERAS_DEFAULT_MOMENTUM: f64 = 0.01;

/// MobileNetV2 sets `epsilon=1e-3, momentum=0.999` on every BatchNorm.
const MOBILENET_V2_BN: BnSpec = BnSpec::new(1e-3, KERAS_BN_MOMENTUM);
/// MobileNet v1 and EfficientNet: epsilon 1e-3, Keras' default momentum.
const MOBILENET_BN: BnSpec = BnSpec::new(1e-3, KERAS_DEFAULT_MOMENTUM);
const EFFICIENTNET_BN: BnSpec = BnSpec::new(1e-3, KERAS_DEFAULT_MOMENTUM);
/// ResNet50: `epsilon=1.001e-5`, Keras' default momentum.
const RESNET_BN: BnSpec = BnSpec::new(1.001e-5, KERAS_DEFAULT_MOMENTUM);

/// Keras' "tf" mode: x / 127.5 - 1.
fn tf_mode(size: usize) -> Preprocess {
    Preprocess {
        mean: [0.5; 3],
        std: [0.5; 3],
        ..Preprocess::imagenet(size, size, Interpolation::Bilinear)
    }
}

/// `keras.applications.MobileNetV2(alpha, input_shape=(s, s, 3))`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KerasMobileNetV2Config {
    pub alpha: f64,
    /// Input height and width: TF "SAME" padding depends on it.
    pub input_size: usize,
}

/// (expansion t, filters c, repeats n, stride s) of Keras' MobileNetV2 blocks.
const SETTING: [[usize; 4]; 7] = [
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
];

impl KerasMobileNetV2Config {
    /// Keras truncates before rounding: int(filters * alpha).
    fn filters(&self, c: usize) -> usize {
        make_divisible((c as f64 * self.alpha).trunc(), 8)
    }
}

impl Family for KerasMobileNetV2Config {
    fn stages(&self) -> Vec<StageInfo> {
        let rows = SETTING.iter().map(|&[_, c, _, s]| (self.filters(c), s));
        let stem = make_divisible(32.0 * self.alpha, 8);
        stem_stages_head(stem, rows, self.feature_dim())
    }

    fn feature_dim(&self) -> usize {
        if self.alpha > 1.0 {
            make_divisible(1280.0 * self.alpha, 8)
        } else {
            1280
        }
    }

    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec::linear("predictions")
    }

    fn batchnorm(&self) -> Option<BnSpec> {
        Some(MOBILENET_V2_BN)
    }

    fn naming_key(&self) -> &'static str {
        "expanded_conv_depthwise.weight"
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        let cba = |name: &str, bn: &str, spec: ConvSpec, act: Act| {
            ConvBnAct::load(l, name, bn, spec, MOBILENET_V2_BN, act)
        };
        let mut size = self.input_size;
        let mut inp = make_divisible(32.0 * self.alpha, 8);
        let stem = cba(
            "Conv1",
            "bn_Conv1",
            ConvSpec::new(3, inp, 3, 2).pad(Pad::TfSame(size)),
            Act::Relu6,
        );
        size = size.div_ceil(2);
        let mut stages = vec![Stage {
            blocks: vec![Block::Conv(stem)],
        }];
        let mut id = 0;
        for [t, c, n, s] in SETTING {
            let out = self.filters(c);
            let mut blocks = Vec::new();
            for j in 0..n {
                let stride = if j == 0 { s } else { 1 };
                let p = if id == 0 {
                    "expanded_conv".to_owned()
                } else {
                    format!("block_{id}")
                };
                blocks.push(Block::Inverted(InvertedResidual::load(
                    InvertedSpec {
                        cin: inp,
                        hidden: inp * t,
                        cout: out,
                        kernel: 3,
                        stride,
                        pad: Pad::TfSame(size),
                        act: Act::Relu6,
                    },
                    |part, conv, act| {
                        let unit = match part {
                            InvertedPart::Expand => "expand",
                            InvertedPart::Depthwise => "depthwise",
                            InvertedPart::Project => "project",
                        };
                        cba(&format!("{p}_{unit}"), &format!("{p}_{unit}_BN"), conv, act)
                    },
                    None,
                )));
                size = size.div_ceil(stride);
                inp = out;
                id += 1;
            }
            stages.push(Stage { blocks });
        }
        stages.push(Stage {
            blocks: vec![Block::Conv(cba(
                "Conv_1",
                "Conv_1_bn",
                ConvSpec::new(inp, self.feature_dim(), 1, 1),
                Act::Relu6,
            ))],
        });
        stages
    }

    /// No published weights: Keras downloads MobileNetV2's files (`mobilenet_v2.py`) without
    /// a `file_hash`, so there is no published hash to check them against.
    fn entries() -> Vec<ZooEntry> {
        // Keras Applications' MobileNetV2 widths (the `alpha` of its weight files).
        let widths: [(&str, f64); 6] = [
            ("keras_mobilenet_v2_035", 0.35),
            ("keras_mobilenet_v2_050", 0.5),
            ("keras_mobilenet_v2_075", 0.75),
            ("keras_mobilenet_v2", 1.0),
            ("keras_mobilenet_v2_130", 1.3),
            ("keras_mobilenet_v2_140", 1.4),
        ];
        widths
            .into_iter()
            .map(|(name, alpha)| {
                let config = Self {
                    alpha,
                    input_size: 224,
                };
                ZooEntry::new(
                    name,
                    "Keras Applications (MobileNetV2)",
                    config,
                    tf_mode(224),
                )
            })
            .collect()
    }
}

/// `keras.applications.MobileNet(alpha)` (v1, depth multiplier 1): a strided 3x3 stem, then
/// 13 depthwise-separable blocks (`conv_dw_N`, `conv_pw_N`), ReLU6, BatchNorm with Keras'
/// defaults (epsilon 1e-3, momentum 0.99). Stride-2 layers are "valid" convolutions after
/// `ZeroPadding2D(((0, 1), (0, 1)))`, whatever the input size; the classifier is a 1x1
/// convolution `conv_preds` (with bias) after global average pooling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KerasMobileNetConfig {
    pub alpha: f64,
}

/// (pointwise filters, stride) of blocks 1..=13, grouped into stages by resolution.
const V1_STAGES: [&[(usize, usize)]; 5] = [
    &[(64, 1)],
    &[(128, 2), (128, 1)],
    &[(256, 2), (256, 1)],
    &[(512, 2), (512, 1), (512, 1), (512, 1), (512, 1), (512, 1)],
    &[(1024, 2), (1024, 1)],
];

impl KerasMobileNetConfig {
    fn filters(&self, f: usize) -> usize {
        (f as f64 * self.alpha).trunc() as usize
    }
}

impl Family for KerasMobileNetConfig {
    fn stages(&self) -> Vec<StageInfo> {
        let stages = V1_STAGES.iter().map(|blocks| {
            let stride = blocks.iter().map(|&(_, s)| s).product::<usize>();
            (self.filters(blocks.last().map_or(32, |&(f, _)| f)), stride)
        });
        StageList::new()
            .then("stem", self.filters(32), 2)
            .numbered(stages)
            .done()
    }

    fn feature_dim(&self) -> usize {
        self.filters(1024)
    }

    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec::linear("conv_preds")
    }

    fn batchnorm(&self) -> Option<BnSpec> {
        Some(MOBILENET_BN)
    }

    fn naming_key(&self) -> &'static str {
        "conv_dw_1.weight"
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        let cba = |name: &str, spec: ConvSpec| {
            ConvBnAct::load(
                l,
                name,
                &format!("{name}_bn"),
                spec,
                MOBILENET_BN,
                Act::Relu6,
            )
        };
        let mut inp = self.filters(32);
        let mut stages = vec![Stage {
            blocks: vec![Block::Conv(cba(
                "conv1",
                ConvSpec::new(3, inp, 3, 2).pad(Pad::After(1)),
            ))],
        }];
        let mut id = 1;
        for stage in V1_STAGES {
            let mut blocks = Vec::new();
            for &(f, stride) in stage {
                let out = self.filters(f);
                let pad = if stride == 2 {
                    Pad::After(1)
                } else {
                    Pad::Symmetric
                };
                blocks.push(Block::Conv(cba(
                    &format!("conv_dw_{id}"),
                    ConvSpec::depthwise(inp, 3, stride).pad(pad),
                )));
                blocks.push(Block::Conv(cba(
                    &format!("conv_pw_{id}"),
                    ConvSpec::new(inp, out, 1, 1),
                )));
                inp = out;
                id += 1;
            }
            stages.push(Stage { blocks });
        }
        stages
    }

    /// No published weights: Keras downloads MobileNet's files (`mobilenet.py`) without a
    /// `file_hash`, so there is no published hash to check them against.
    fn entries() -> Vec<ZooEntry> {
        let widths = [
            ("keras_mobilenet_025", 0.25),
            ("keras_mobilenet_050", 0.5),
            ("keras_mobilenet_075", 0.75),
            ("keras_mobilenet", 1.0),
        ];
        widths
            .into_iter()
            .map(|(name, alpha)| {
                let origin = "Keras Applications (MobileNet v1)";
                ZooEntry::new(name, origin, Self { alpha }, tf_mode(224))
            })
            .collect()
    }
}

/// `keras.applications.ResNet50` (Keras' v1 layout: the stride on the first 1x1 convolution
/// of a block, biases on every convolution, BatchNorm epsilon 1.001e-5 and momentum 0.99),
/// names `conv1_conv`, `conv2_block1_0_conv` (projection shortcut), `conv2_block1_1_conv`
/// … `conv5_block3_3_bn`, `predictions`. Inputs in Keras' "caffe" mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KerasResNetConfig {
    /// Blocks per stage: [3, 4, 6, 3] for ResNet50.
    pub blocks: [usize; 4],
    /// Filters of the first stage, doubling at each later one (64 in ResNet50; the stem
    /// has 64 whatever this is, as in Keras).
    #[serde(default = "resnet_width")]
    pub width: usize,
}

fn resnet_width() -> usize {
    64
}

impl Family for KerasResNetConfig {
    fn stages(&self) -> Vec<StageInfo> {
        let out = |i: usize| 4 * (self.width << i);
        // The stem's stride-2 convolution and max pool.
        StageList::new()
            .then("stem", 64, 4)
            .then("conv2", out(0), 1)
            .then("conv3", out(1), 2)
            .then("conv4", out(2), 2)
            .then("conv5", out(3), 2)
            .done()
    }

    fn feature_dim(&self) -> usize {
        4 * (self.width << 3)
    }

    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec::linear("predictions")
    }

    fn batchnorm(&self) -> Option<BnSpec> {
        Some(RESNET_BN)
    }

    fn naming_key(&self) -> &'static str {
        "conv2_block1_1_conv.weight"
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        use super::layers::{ResidualBlock, max_pool};
        let cba = |name: &str, spec: ConvSpec, act: Act| {
            ConvBnAct::load(
                l,
                &format!("{name}_conv"),
                &format!("{name}_bn"),
                spec.with_bias(),
                RESNET_BN,
                act,
            )
        };
        let stem = Stage {
            blocks: vec![
                Block::Conv(cba("conv1", ConvSpec::new(3, 64, 7, 2), Act::Relu)),
                // ZeroPadding2D(1) + MaxPooling2D(3, 2): after a ReLU, zeros pad like -inf.
                max_pool(3, 2, 1),
            ],
        };
        let mut stages = vec![stem];
        let mut inp = 64;
        for (i, &n) in self.blocks.iter().enumerate() {
            let filters = self.width << i;
            let stride = if i == 0 { 1 } else { 2 };
            let out = 4 * filters;
            let mut blocks = Vec::with_capacity(n);
            for b in 1..=n {
                let p = format!("conv{}_block{b}", i + 2);
                let s = if b == 1 { stride } else { 1 };
                let convs = vec![
                    cba(
                        &format!("{p}_1"),
                        ConvSpec::new(inp, filters, 1, s),
                        Act::Relu,
                    ),
                    cba(
                        &format!("{p}_2"),
                        ConvSpec::new(filters, filters, 3, 1),
                        Act::Relu,
                    ),
                    cba(
                        &format!("{p}_3"),
                        ConvSpec::new(filters, out, 1, 1),
                        Act::Identity,
                    ),
                ];
                let downsample = (b == 1).then(|| {
                    cba(
                        &format!("{p}_0"),
                        ConvSpec::new(inp, out, 1, s),
                        Act::Identity,
                    )
                });
                blocks.push(Block::Residual(ResidualBlock { convs, downsample }));
                inp = out;
            }
            stages.push(Stage { blocks });
        }
        stages
    }

    fn entries() -> Vec<ZooEntry> {
        let config = Self {
            blocks: [3, 4, 6, 3],
            width: 64,
        };
        let origin = "Keras Applications (ResNet50)";
        // resnet.py: `WEIGHTS_HASHES["resnet50"]`, with top.
        let file = "resnet50_weights_tf_dim_ordering_tf_kernels.h5";
        vec![
            ZooEntry::new("keras_resnet50", origin, config, Preprocess::caffe(224)).published(
                Published::keras(
                    file,
                    &format!("{KERAS_WEIGHTS}resnet/{file}"),
                    "2cb95161c43110f7111970584f804107",
                ),
            ),
        ]
    }
}

/// `keras.applications.VGG16` / VGG19: blocks of 3x3 convolutions (bias, ReLU, no
/// BatchNorm) `block{b}_conv{i}`, each block ending in a 2x2 max pool; with the top,
/// Flatten (of the NHWC activation, so `fc1` keeps Keras' row order) → `fc1` → `fc2`
/// (ReLU) → `predictions`, and the embedding is `fc2`'s output; without it, the pooled last
/// block. Inputs in Keras' "caffe" mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KerasVggConfig {
    /// (convolutions, filters) per block: VGG16 [[2, 64], [2, 128], [3, 256], [3, 512],
    /// [3, 512]].
    pub blocks: Vec<[usize; 2]>,
    /// fc1/fc2 and the classifier (`include_top=True`).
    pub include_top: bool,
    /// Width of fc1 and fc2 (4096).
    #[serde(default = "vgg_fc")]
    pub fc: usize,
    /// Input height and width: the top's Flatten depends on it.
    pub input_size: usize,
}

fn vgg_fc() -> usize {
    4096
}

impl KerasVggConfig {
    pub fn vgg16(include_top: bool) -> Self {
        Self {
            blocks: vec![[2, 64], [2, 128], [3, 256], [3, 512], [3, 512]],
            include_top,
            fc: 4096,
            input_size: 224,
        }
    }

    fn last_filters(&self) -> usize {
        self.blocks.last().map_or(3, |b| b[1])
    }
}

impl Family for KerasVggConfig {
    fn stages(&self) -> Vec<StageInfo> {
        let blocks = self.blocks.iter().enumerate();
        let mut list = blocks.fold(StageList::new(), |list, (b, &[_, filters])| {
            list.then(format!("block{}", b + 1), filters, 2)
        });
        if self.include_top {
            // Flatten + dense layers: the whole remaining map becomes one vector.
            let left = self.input_size >> self.blocks.len();
            list = list.then("fc", self.fc, left);
        }
        list.done()
    }

    fn feature_dim(&self) -> usize {
        if self.include_top {
            self.fc
        } else {
            self.last_filters()
        }
    }

    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec::linear("predictions")
    }

    fn batchnorm(&self) -> Option<BnSpec> {
        None
    }

    fn naming_key(&self) -> &'static str {
        "block1_conv1.weight"
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        use super::layers::{FlattenHwc, max_pool};
        let mut stages = Vec::new();
        let mut inp = 3;
        let mut size = self.input_size;
        for (b, &[n, filters]) in self.blocks.iter().enumerate() {
            let mut blocks = Vec::new();
            for i in 1..=n {
                blocks.push(Block::Conv(ConvBnAct::load_plain(
                    l,
                    &format!("block{}_conv{i}", b + 1),
                    ConvSpec::new(inp, filters, 3, 1),
                    Act::Relu,
                )));
                inp = filters;
            }
            blocks.push(max_pool(2, 2, 0));
            size /= 2;
            stages.push(Stage { blocks });
        }
        if self.include_top {
            let flat = size * size * inp;
            stages.push(Stage {
                blocks: vec![
                    Block::FlattenHwc(FlattenHwc { marker: () }),
                    Block::Conv(ConvBnAct::load_plain(
                        l,
                        "fc1",
                        ConvSpec::new(flat, self.fc, 1, 1),
                        Act::Relu,
                    )),
                    Block::Conv(ConvBnAct::load_plain(
                        l,
                        "fc2",
                        ConvSpec::new(self.fc, self.fc, 1, 1),
                        Act::Relu,
                    )),
                ],
            });
        }
        stages
    }

    fn entries() -> Vec<ZooEntry> {
        // vgg16.py's `WEIGHTS_PATH` / `WEIGHTS_PATH_NO_TOP` and their `file_hash`es.
        [
            ("keras_vgg16", true, "", "64373286793e3c8b2b4e3219cbf3544b"),
            (
                "keras_vgg16_notop",
                false,
                "_notop",
                "6d6bbae143d832006294945121d1f1fc",
            ),
        ]
        .into_iter()
        .map(|(name, top, suffix, md5)| {
            let origin = "Keras Applications (VGG16)";
            let file = format!("vgg16_weights_tf_dim_ordering_tf_kernels{suffix}.h5");
            let url = format!("{KERAS_WEIGHTS}vgg16/{file}");
            ZooEntry::new(name, origin, Self::vgg16(top), Preprocess::caffe(224))
                .published(Published::keras(&file, &url, md5))
        })
        .collect()
    }
}

/// `keras.applications.EfficientNetB0`..B7: the model normalises its own 0..255 input
/// (`rescaling`, `normalization` with stored mean/variance, and for the ImageNet weights a
/// further per-channel rescaling), then `stem_conv`, blocks `block{stage}{letter}_…`
/// (`expand_conv`, `dwconv`, `se_reduce`/`se_expand`, `project_conv`, each with `_bn`),
/// `top_conv`, `predictions`. Swish, TF SAME padding, BatchNorm epsilon 1e-3 (momentum 0.99).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KerasEfficientNetConfig {
    pub width: f64,
    pub depth: f64,
    /// Input height and width: TF SAME padding depends on it.
    pub input_size: usize,
    /// The models built with `weights="imagenet"` rescale by 1/sqrt(ImageNet stddev) after
    /// the normalisation; those built without weights do not.
    pub imagenet_rescaling: bool,
}

/// (expand, kernel, stride, filters in, filters out, repeats) of Keras' EfficientNetB0.
const B0_ROWS: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
];

impl KerasEfficientNetConfig {
    fn ch(&self, c: usize) -> usize {
        make_divisible(c as f64 * self.width, 8)
    }
}

impl Family for KerasEfficientNetConfig {
    fn stages(&self) -> Vec<StageInfo> {
        let rows = B0_ROWS.iter().map(|&(_, _, s, _, c, _)| (self.ch(c), s));
        stem_stages_head(self.ch(32), rows, self.feature_dim())
    }

    fn feature_dim(&self) -> usize {
        self.ch(1280)
    }

    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec::linear("predictions")
    }

    fn batchnorm(&self) -> Option<BnSpec> {
        Some(EFFICIENTNET_BN)
    }

    fn naming_key(&self) -> &'static str {
        "block1a_dwconv.weight"
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        use super::layers::{Normalize, SqueezeExcite};
        let cba = |name: &str, bn: &str, spec: ConvSpec, act: Act| {
            ConvBnAct::load(l, name, bn, spec, EFFICIENTNET_BN, act)
        };
        let scale = if self.imagenet_rescaling {
            [0.229f32, 0.224, 0.225].map(|s| 1.0 / s.sqrt())
        } else {
            [1.0; 3]
        };
        let mut size = self.input_size;
        let stem_out = self.ch(32);
        // Keras also keeps the Normalization's sample count, one non-trainable value.
        l.count_frozen(1);
        let stem = vec![
            Block::Normalize(Normalize::load(l, "normalization", scale)),
            Block::Conv(cba(
                "stem_conv",
                "stem_bn",
                ConvSpec::new(3, stem_out, 3, 2).pad(Pad::TfSame(size)),
                Act::Silu,
            )),
        ];
        size = size.div_ceil(2);
        let mut stages = vec![Stage { blocks: stem }];
        for (s, &(t, k, stride, cin0, cout0, n)) in B0_ROWS.iter().enumerate() {
            let repeats = (n as f64 * self.depth).ceil() as usize;
            let mut blocks = Vec::new();
            for j in 0..repeats {
                let cin = self.ch(if j == 0 { cin0 } else { cout0 });
                let cout = self.ch(cout0);
                let st = if j == 0 { stride } else { 1 };
                let p = format!("block{}{}", s + 1, (b'a' + j as u8) as char);
                let hidden = cin * t;
                let se = SqueezeExcite::load(
                    l,
                    &format!("{p}_se_reduce"),
                    &format!("{p}_se_expand"),
                    hidden,
                    ((cin as f64 * 0.25) as usize).max(1),
                    Act::Silu,
                    false,
                );
                blocks.push(Block::Inverted(InvertedResidual::load(
                    InvertedSpec {
                        cin,
                        hidden,
                        cout,
                        kernel: k,
                        stride: st,
                        pad: Pad::TfSame(size),
                        act: Act::Silu,
                    },
                    |part, conv, act| {
                        let (c, bn) = match part {
                            InvertedPart::Expand => ("expand_conv", "expand_bn"),
                            InvertedPart::Depthwise => ("dwconv", "bn"),
                            InvertedPart::Project => ("project_conv", "project_bn"),
                        };
                        cba(&format!("{p}_{c}"), &format!("{p}_{bn}"), conv, act)
                    },
                    Some(se),
                )));
                size = size.div_ceil(st);
            }
            stages.push(Stage { blocks });
        }
        stages.push(Stage {
            blocks: vec![Block::Conv(cba(
                "top_conv",
                "top_bn",
                ConvSpec::new(self.ch(320), self.feature_dim(), 1, 1),
                Act::Silu,
            ))],
        });
        stages
    }

    fn entries() -> Vec<ZooEntry> {
        let config = Self {
            width: 1.0,
            depth: 1.0,
            input_size: 224,
            imagenet_rescaling: true,
        };
        // The model normalises its own input: it takes 0..255 pixels.
        let preprocess = Preprocess {
            mean: [0.0; 3],
            std: [1.0 / 255.0; 3],
            ..Preprocess::imagenet(224, 224, Interpolation::Bilinear)
        };
        let origin = "Keras Applications (EfficientNetB0)";
        // efficientnet.py: `BASE_WEIGHTS_PATH` + "efficientnetb0.h5", `WEIGHTS_HASHES["b0"]`.
        vec![
            ZooEntry::new("keras_efficientnet_b0", origin, config, preprocess).published(
                Published::keras(
                    "efficientnetb0.h5",
                    "https://storage.googleapis.com/keras-applications/efficientnetb0.h5",
                    "902e53a9f72be733fc0bcb005b3ebbac",
                ),
            ),
        ]
    }
}
