//! timm's Vision Transformers (`timm.models.vision_transformer.VisionTransformer`) under
//! timm's own names and parameter layout: `patch_embed.proj`, `cls_token`, `reg_token`
//! (registers), `pos_embed`, `blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2,
//! mlp.fc1, mlp.fc2, ls2.gamma}`, `norm` (class-token pooling) or `fc_norm` (average
//! pooling), `head`. The augreg ViTs, DeiT and DINOv2 (with and without registers).
//!
//! The features are timm's `forward_head(pre_logits=True)`: the class token after `norm`,
//! or the mean of the patch tokens through `fc_norm`.
//!
//! `img_size` is the size the network runs at. A file's position embedding for another
//! square patch grid is resampled to this one once, at load time, as timm's
//! `resample_abs_pos_embed` does (bicubic, antialiased); a model loaded at another input
//! size (`--size`, or a crop other than the entry's) has its `img_size` set to the crop
//! (`zoo::materialise`), so a bundle records the size its position embedding is for.

use serde::{Deserialize, Serialize};

use super::family::{ClassifierSpec, Family, StageInfo};
use super::layers::{Block, BnSpec};
use super::loader::WeightLoader;
use super::network::Stage;
use super::tokens::{
    ClassTokenHead, EncoderBlock, EncoderSpec, PatchEmbed, PatchEmbedSpec, TokenNaming, TokenPool,
    load_layer_norm,
};
use super::{Interpolation, PixelScaling, Preprocess, ZooEntry};

/// timm's ViT LayerNorms (`partial(nn.LayerNorm, eps=1e-6)`).
const LN_EPS: f64 = 1e-6;

/// timm's `global_pool`: what the features are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GlobalPool {
    /// The class token after the final `norm`.
    #[default]
    Token,
    /// The mean of the patch tokens, then `fc_norm` (no `norm`).
    Avg,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimmVitConfig {
    /// The input size the network runs at (its position embedding's grid is
    /// `img_size / patch_size` per side).
    pub img_size: usize,
    pub patch_size: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    /// The MLP's hidden width over `embed_dim` (timm's `Mlp`: `int(dim * mlp_ratio)`).
    pub mlp_ratio: f64,
    #[serde(default = "yes")]
    pub qkv_bias: bool,
    /// Layer scale (`ls1`, `ls2`): timm's `init_values` set.
    #[serde(default)]
    pub layer_scale: bool,
    /// Register tokens after the class token (`reg_token`).
    #[serde(default)]
    pub reg_tokens: usize,
    /// The position embedding covers the patches only (`no_embed_class`).
    #[serde(default)]
    pub no_embed_class: bool,
    #[serde(default)]
    pub global_pool: GlobalPool,
}

fn yes() -> bool {
    true
}

impl TimmVitConfig {
    /// timm's plain ViT (`vit_*`, `deit_*`): qkv bias, class token pooling, no layer scale.
    fn vit(
        img_size: usize,
        patch_size: usize,
        embed_dim: usize,
        depth: usize,
        heads: usize,
    ) -> Self {
        Self {
            img_size,
            patch_size,
            embed_dim,
            depth,
            num_heads: heads,
            mlp_ratio: 4.0,
            qkv_bias: true,
            layer_scale: false,
            reg_tokens: 0,
            no_embed_class: false,
            global_pool: GlobalPool::Token,
        }
    }

    /// timm's DINOv2 ViT at 518 with patch 14 and layer scale; with `registers`, that many
    /// register tokens and a position embedding over the patches only.
    fn dinov2(embed_dim: usize, depth: usize, heads: usize, registers: usize) -> Self {
        Self {
            layer_scale: true,
            reg_tokens: registers,
            no_embed_class: registers > 0,
            ..Self::vit(518, 14, embed_dim, depth, heads)
        }
    }

    /// This configuration run at `size`×`size` (its position embedding resampled).
    pub fn at_size(self, size: usize) -> Self {
        Self {
            img_size: size,
            ..self
        }
    }

    fn mlp_dim(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio) as usize
    }

    fn prefix_tokens(&self) -> usize {
        1 + self.reg_tokens
    }

    /// The final stage's name: the LayerNorm it holds.
    fn head_norm(&self) -> &'static str {
        match self.global_pool {
            GlobalPool::Token => "norm",
            GlobalPool::Avg => "fc_norm",
        }
    }
}

impl Family for TimmVitConfig {
    /// `patch_embed`, each block as timm names it (`blocks.N`), and the final norm with the
    /// pooling (`norm` or `fc_norm`). Token stages have no spatial stride (0).
    fn stages(&self) -> Vec<StageInfo> {
        let d = self.embed_dim;
        let stage = |name: String| StageInfo {
            name,
            channels: d,
            stride: 0,
        };
        std::iter::once(stage("patch_embed".into()))
            .chain((0..self.depth).map(|i| stage(format!("blocks.{i}"))))
            .chain(std::iter::once(stage(self.head_norm().into())))
            .collect()
    }

    fn feature_dim(&self) -> usize {
        self.embed_dim
    }

    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec::linear("head")
    }

    /// No BatchNorm.
    fn batchnorm(&self) -> Option<BnSpec> {
        None
    }

    fn naming_key(&self) -> &'static str {
        "blocks.0.attn.qkv.weight"
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        let d = self.embed_dim;
        let embed = PatchEmbed::load(
            l,
            &PatchEmbedSpec {
                names: ["patch_embed.proj", "cls_token", "pos_embed"],
                registers: (self.reg_tokens > 0).then_some(("reg_token", self.reg_tokens)),
                width: d,
                patch: self.patch_size,
                grid: self.img_size / self.patch_size,
                no_embed_class: self.no_embed_class,
                resample: true,
            },
        );
        let mut stages = vec![Stage {
            blocks: vec![Block::PatchEmbed(embed)],
        }];
        let spec = EncoderSpec {
            naming: TokenNaming::Timm,
            width: d,
            heads: self.num_heads,
            mlp: self.mlp_dim(),
            eps: LN_EPS,
            qkv_bias: self.qkv_bias,
            layer_scale: self.layer_scale,
        };
        for i in 0..self.depth {
            let block = EncoderBlock::load(l, &format!("blocks.{i}"), &spec);
            stages.push(Stage {
                blocks: vec![Block::Encoder(block)],
            });
        }
        let name = self.head_norm();
        stages.push(Stage {
            blocks: vec![Block::ClassToken(ClassTokenHead {
                ln: load_layer_norm(l, name, d, LN_EPS),
                name: name.into(),
                eps: LN_EPS,
                pool: match self.global_pool {
                    GlobalPool::Token => TokenPool::ClassToken,
                    GlobalPool::Avg => TokenPool::MeanPatches {
                        prefix: self.prefix_tokens(),
                    },
                },
            })],
        });
        stages
    }

    /// timm's models by `<model>.<pretrained tag>` (each model's default tag first, which
    /// `zoo::find` takes for the bare `timm/<model>`), with each tag's `pretrained_cfg`
    /// preprocessing: `input_size`, resize to `floor(size / crop_pct)`, bicubic, its mean
    /// and std. Their weights are published on the Hugging Face hub (`timm/<name>`), whose
    /// hashes are not recorded here: none are listed.
    fn entries() -> Vec<ZooEntry> {
        // crop_pct 0.9 at 224: floor(224 / 0.9) = 248; DINOv2's 1.0 at 518.
        let bicubic = |resize, crop| Preprocess::imagenet(resize, crop, Interpolation::Bicubic);
        // augreg's mean and std 0.5: -1..1.
        let augreg = bicubic(248, 224).scaled(PixelScaling::Tf);
        let imagenet = bicubic(248, 224);
        let dinov2 = bicubic(518, 518);
        let vit = TimmVitConfig::vit;
        let dino = TimmVitConfig::dinov2;
        let in1k = |name, config, preprocess| (name, config, preprocess, 1000);
        let in21k = |name, config, preprocess| (name, config, preprocess, 21843);
        // DINOv2 is published without a head (num_classes 0).
        let headless = |name, config, preprocess| (name, config, preprocess, 0);
        vec![
            in1k(
                "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k",
                vit(224, 16, 192, 12, 3),
                augreg,
            ),
            in1k(
                "timm/vit_small_patch16_224.augreg_in21k_ft_in1k",
                vit(224, 16, 384, 12, 6),
                augreg,
            ),
            in1k(
                "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k",
                vit(224, 16, 768, 12, 12),
                augreg,
            ),
            in21k(
                "timm/vit_base_patch16_224.augreg_in21k",
                vit(224, 16, 768, 12, 12),
                augreg,
            ),
            in1k(
                "timm/vit_large_patch16_224.augreg_in21k_ft_in1k",
                vit(224, 16, 1024, 24, 16),
                augreg,
            ),
            in1k(
                "timm/deit_tiny_patch16_224.fb_in1k",
                vit(224, 16, 192, 12, 3),
                imagenet,
            ),
            in1k(
                "timm/deit_small_patch16_224.fb_in1k",
                vit(224, 16, 384, 12, 6),
                imagenet,
            ),
            in1k(
                "timm/deit_base_patch16_224.fb_in1k",
                vit(224, 16, 768, 12, 12),
                imagenet,
            ),
            headless(
                "timm/vit_small_patch14_dinov2.lvd142m",
                dino(384, 12, 6, 0),
                dinov2,
            ),
            headless(
                "timm/vit_base_patch14_dinov2.lvd142m",
                dino(768, 12, 12, 0),
                dinov2,
            ),
            headless(
                "timm/vit_large_patch14_dinov2.lvd142m",
                dino(1024, 24, 16, 0),
                dinov2,
            ),
            headless(
                "timm/vit_small_patch14_reg4_dinov2.lvd142m",
                dino(384, 12, 6, 4),
                dinov2,
            ),
            headless(
                "timm/vit_base_patch14_reg4_dinov2.lvd142m",
                dino(768, 12, 12, 4),
                dinov2,
            ),
            headless(
                "timm/vit_large_patch14_reg4_dinov2.lvd142m",
                dino(1024, 24, 16, 4),
                dinov2,
            ),
        ]
        .into_iter()
        .map(|(name, config, preprocess, classes)| {
            ZooEntry::new(name, "timm", config, preprocess).classes(classes)
        })
        .collect()
    }
}
