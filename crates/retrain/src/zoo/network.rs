//! A loaded network: named stages of blocks, then an optional classifier.

use burn::nn::Linear;
use burn::prelude::*;

use super::layers::{Act, Block};
use crate::graph::GraphError;

/// A run of blocks a user can cut or freeze at, by name.
#[derive(Module, Debug)]
pub struct Stage {
    pub blocks: Vec<Block>,
}

impl Stage {
    pub fn export(&self, out: &mut super::layers::TensorMap) {
        for b in &self.blocks {
            b.export(out);
        }
    }

    pub fn forward(&self, mut x: Tensor<4>) -> Result<Tensor<4>, GraphError> {
        for b in &self.blocks {
            x = b.forward(x)?;
        }
        Ok(x)
    }

    /// The stage in inference form: BatchNorm folded into the convolutions before it.
    pub fn fold_batchnorm(self) -> Self {
        Stage {
            blocks: self.blocks.into_iter().map(Block::fold_batchnorm).collect(),
        }
    }
}

/// The ImageNet (or user) classifier on top of the pooled features. MobileNetV3 has a
/// hidden layer; the others are one linear layer. Dropout is identity at inference.
#[derive(Module, Debug)]
pub struct Classifier {
    /// Hidden layers before the output, in order (MobileNetV3's one; a replaced head's
    /// any number), each followed by `hidden_act`.
    pub hidden: Vec<Linear>,
    #[module(skip)]
    pub hidden_act: Act,
    pub out: Linear,
    /// The output layer is the origin's 1x1 convolution and ReLU on the last feature map,
    /// pooled after them (SqueezeNet's `classifier.1`): it reads the map, not the pooled
    /// features ([`forward_map`](Self::forward_map)).
    #[module(skip)]
    pub on_map: bool,
}

impl Classifier {
    /// SqueezeNet's classifier on the final map `x`: `out` as a 1x1 convolution at every
    /// position, ReLU, then the global average pool.
    pub fn forward_map(&self, x: Tensor<4>) -> Tensor<2> {
        let [n, c, h, w] = x.dims();
        let y = self
            .out
            .forward(x.permute([0, 2, 3, 1]).reshape([n * h * w, c]));
        let k = y.dims()[1];
        Act::Relu
            .apply(y)
            .reshape([n, h * w, k])
            .mean_dim(1)
            .reshape([n, k])
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = self
            .hidden
            .iter()
            .fold(x, |x, h| self.hidden_act.apply(h.forward(x)));
        self.out.forward(x)
    }

    pub fn num_classes(&self) -> usize {
        self.out.weight.dims()[1]
    }
}

/// Feature extractor plus classifier. Stage names live in the architecture's description.
#[derive(Module, Debug)]
pub struct Network {
    pub stages: Vec<Stage>,
    pub classifier: Option<Classifier>,
}

impl Network {
    /// Runs the stages `0..=last` and returns the last one's feature map.
    pub fn features_through(&self, x: Tensor<4>, last: usize) -> Result<Tensor<4>, GraphError> {
        run_stages(&self.stages[..=last], x)
    }

    /// Global-average-pooled output of stage `last`: one vector per image.
    pub fn embed(&self, x: Tensor<4>, last: usize) -> Result<Tensor<2>, GraphError> {
        Ok(global_avg_pool(self.features_through(x, last)?))
    }

    /// The classifier's input: pooled output of the final stage.
    pub fn penultimate(&self, x: Tensor<4>) -> Result<Tensor<2>, GraphError> {
        self.embed(x, self.stages.len() - 1)
    }

    /// Class scores (pre-softmax); `None` for a network without a classifier.
    pub fn logits(&self, x: Tensor<4>) -> Result<Option<Tensor<2>>, GraphError> {
        Ok(self.features_and_logits(x)?.1)
    }

    /// Both the features and the logits from one pass.
    pub fn features_and_logits(
        &self,
        x: Tensor<4>,
    ) -> Result<(Tensor<2>, Option<Tensor<2>>), GraphError> {
        let map = self.features_through(x, self.stages.len() - 1)?;
        let f = global_avg_pool(map.clone());
        let l = self.classifier.as_ref().map(|c| {
            if c.on_map {
                c.forward_map(map)
            } else {
                c.forward(f.clone())
            }
        });
        Ok((f, l))
    }

    /// Folds every BatchNorm into its convolution, for inference.
    pub fn fold_batchnorm(self) -> Self {
        Self {
            stages: self.stages.into_iter().map(Stage::fold_batchnorm).collect(),
            classifier: self.classifier,
        }
    }
}

/// `stages` one after the other on the batch `x`; in inference on the CPU, on each image of
/// it on its own while its maps are large, then on groups of [`GROUP`] images once they
/// are small ([`SMALL_PLANE`]), the images or groups in parallel, their outputs stacked in
/// order.
///
/// Why: a layer's output for a whole batch leaves the caches before the next layer reads
/// it (16 images of MobileNetV2's widest map are 77 MB), one image's mostly stays in them
/// (4.8 MB): 15–25% faster for the mobile networks at batch 16. On small maps a group still
/// fits, and the kernels put its images side by side in one product (ResNet-50's last
/// stages: 6% faster). It gives the same values:
/// retrain's CPU kernels give an image the same bits however it is batched (burn's own
/// batched products, in the transformers, the same to float rounding), and in inference
/// nothing mixes the images (BatchNorm is on its running statistics; with autodiff it may be
/// on the batch's, so the batch stays whole there, as on a GPU, where it is the unit of work).
pub fn run_stages(stages: &[Stage], x: Tensor<4>) -> Result<Tensor<4>, GraphError> {
    use rayon::prelude::*;
    let through = |mut x, stages: &[Stage]| {
        for s in stages {
            x = s.forward(x)?;
        }
        Ok(x)
    };
    let (n, device) = (x.dims()[0], x.device());
    if n < 2 || device.is_autodiff() || !crate::kernels::on_flex(&device) {
        return through(x, stages);
    }
    // Each image alone up to the first stage whose input is small, and the stage where it
    // stopped (the same for every image: they have one shape); then the group together.
    // Group by group, so that only the groups at work hold their images' maps.
    let small = |x: &Tensor<4>| x.dims()[2] * x.dims()[3] <= SMALL_PLANE;
    let alone = |mut x: Tensor<4>| {
        for (k, s) in stages.iter().enumerate() {
            if small(&x) {
                return Ok((x, k));
            }
            x = s.forward(x)?;
        }
        Ok((x, stages.len()))
    };
    let group = |images: Vec<Tensor<4>>| {
        let parts = images
            .into_par_iter()
            .map(alone)
            .collect::<Result<Vec<_>, GraphError>>()?;
        let rest = &stages[parts[0].1..];
        let x = Tensor::cat(parts.into_iter().map(|(x, _)| x).collect(), 0);
        through(x, rest)
    };
    // The groups at work at once share the threads: a kernel on a group's small maps then
    // keeps its images in few blocks (Winograd's 7×7 layers: all 8 side by side, 64 tiles
    // a product, rather than two blocks of 4 for a second thread that is busy with
    // another group).
    let groups = n.div_ceil(GROUP);
    let threads = rayon::current_num_threads();
    let share = threads.div_ceil(groups.min(threads));
    let outputs = x
        .split(GROUP, 0)
        .into_par_iter()
        .map(|g| crate::kernels::with_threads(share, || group(g.split(1, 0))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Tensor::cat(outputs, 0))
}

/// Planes (height × width) from which [`run_stages`] runs images in groups: a small map of
/// a few images still fits the caches, and the kernels put the images of a group side by
/// side in their matrix products (a 7×7 plane alone is a product 49 columns wide, that
/// reads all of the layer's weights for one image).
const SMALL_PLANE: usize = 28 * 28;

/// Images per group once the planes are small.
const GROUP: usize = 8;

/// The features of a map `[n, c, h, w]`: each channel's mean, `[n, c]`.
pub use crate::kernels::global_avg_pool;
