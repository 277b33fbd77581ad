//! Vision Transformer (torchvision layout: `conv_proj`, `class_token`,
//! `encoder.pos_embedding`, `encoder.layers.encoder_layer_N.{ln_1, self_attention, ln_2,
//! mlp.0, mlp.3}`, `encoder.ln`, `heads.head`). The features are torchvision's pre-logits:
//! the class token after the final LayerNorm.

use serde::{Deserialize, Serialize};

use super::family::{ClassifierSpec, Family, StageInfo};
use super::layers::{Block, BnSpec};
use super::loader::WeightLoader;
use super::network::Stage;
use super::tokens::{
    ClassTokenHead, EncoderBlock, EncoderSpec, PatchEmbed, PatchEmbedSpec, TokenPool,
    load_layer_norm,
};
use super::{Interpolation, Preprocess, ZooEntry, torchvision_file};

/// torchvision's ViT LayerNorms (`partial(nn.LayerNorm, eps=1e-6)`).
const LN_EPS: f64 = 1e-6;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    /// The input size the position embedding is for.
    pub image_size: usize,
    pub patch_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub hidden_dim: usize,
    pub mlp_dim: usize,
}

impl VitConfig {
    const fn new(
        image_size: usize,
        patch_size: usize,
        num_layers: usize,
        num_heads: usize,
        hidden_dim: usize,
        mlp_dim: usize,
    ) -> Self {
        Self {
            image_size,
            patch_size,
            num_layers,
            num_heads,
            hidden_dim,
            mlp_dim,
        }
    }
}

impl Family for VitConfig {
    /// The patch embedding, each encoder block, and the final norm with the class token.
    /// Token stages have no spatial stride (0, as a graph's token values).
    fn stages(&self) -> Vec<StageInfo> {
        let d = self.hidden_dim;
        let stage = |name: String| StageInfo {
            name,
            channels: d,
            stride: 0,
        };
        std::iter::once(stage("patch_embed".into()))
            .chain((0..self.num_layers).map(|i| stage(format!("encoder_layer_{i}"))))
            .chain(std::iter::once(stage("head".into())))
            .collect()
    }

    fn feature_dim(&self) -> usize {
        self.hidden_dim
    }

    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec::linear("heads.head")
    }

    /// No BatchNorm.
    fn batchnorm(&self) -> Option<BnSpec> {
        None
    }

    fn naming_key(&self) -> &'static str {
        "encoder.layers.encoder_layer_0.self_attention.in_proj_weight"
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        let d = self.hidden_dim;
        let embed = PatchEmbed::load(
            l,
            &PatchEmbedSpec {
                names: ["conv_proj", "class_token", "encoder.pos_embedding"],
                registers: None,
                width: d,
                patch: self.patch_size,
                grid: self.image_size / self.patch_size,
                no_embed_class: false,
                resample: false,
            },
        );
        let mut stages = vec![Stage {
            blocks: vec![Block::PatchEmbed(embed)],
        }];
        let spec = EncoderSpec::torchvision(d, self.num_heads, self.mlp_dim, LN_EPS);
        for i in 0..self.num_layers {
            let block = EncoderBlock::load(l, &format!("encoder.layers.encoder_layer_{i}"), &spec);
            stages.push(Stage {
                blocks: vec![Block::Encoder(block)],
            });
        }
        stages.push(Stage {
            blocks: vec![Block::ClassToken(ClassTokenHead {
                ln: load_layer_norm(l, "encoder.ln", d, LN_EPS),
                name: "encoder.ln".into(),
                eps: LN_EPS,
                pool: TokenPool::ClassToken,
            })],
        });
        stages
    }

    /// torchvision's builders with the preprocessing of their default weights (IMAGENET1K_V1;
    /// for ViT-H/14, whose only ImageNet weights are SWAG's, IMAGENET1K_SWAG_E2E_V1 at 518).
    fn entries() -> Vec<ZooEntry> {
        let bilinear = |resize| Preprocess::imagenet(resize, 224, Interpolation::Bilinear);
        vec![
            (
                "vit_b_16",
                Self::new(224, 16, 12, 12, 768, 3072),
                bilinear(256),
                "vit_b_16-c867db91.pth",
            ),
            (
                "vit_b_32",
                Self::new(224, 32, 12, 12, 768, 3072),
                bilinear(256),
                "vit_b_32-d86f8d99.pth",
            ),
            (
                "vit_l_16",
                Self::new(224, 16, 24, 16, 1024, 4096),
                bilinear(242),
                "vit_l_16-852ce7e3.pth",
            ),
            (
                "vit_l_32",
                Self::new(224, 32, 24, 16, 1024, 4096),
                bilinear(256),
                "vit_l_32-c7638314.pth",
            ),
            (
                "vit_h_14",
                Self::new(518, 14, 32, 16, 1280, 5120),
                Preprocess::imagenet(518, 518, Interpolation::Bicubic),
                "vit_h_14_swag-80465313.pth",
            ),
        ]
        .into_iter()
        .map(|(name, config, preprocess, file)| {
            ZooEntry::new(name, "torchvision", config, preprocess).published(torchvision_file(file))
        })
        .collect()
    }
}
