"""Generate the parity fixtures of timm's Vision Transformers under tests/fixtures/
(committed; small), with timm's own VisionTransformer class at reduced widths and depths,
every parameter random, saved as safetensors (what timm publishes), with an input batch and
timm's logits and features (`forward_head(pre_logits=True)`):

  timm_vit_augreg   augreg-style ViT (image 32, patch 8, width 32, 2 blocks, 2 heads, qkv
                    bias, class token), mean/std 0.5, crop_pct 0.9
  timm_vit_avg      the same with global_pool='avg' (mean of the patch tokens, fc_norm)
  timm_deit         DeiT-style ViT (image 32, patch 16, width 24, 3 blocks, 3 heads),
                    ImageNet mean/std
  timm_dinov2       DINOv2-style (patch 14, width 24, 2 blocks, layer scale), its position
                    embedding for 70x70 (5x5 patches), run at 56x56 (4x4): downsampled
  timm_dinov2_reg4  DINOv2 with 4 registers (no_embed_class), its position embedding for
                    42x42 (3x3 patches), run at 56x56 (4x4): upsampled

A fixture run at another size than its file's position embedding is computed by timm
itself: a second VisionTransformer at the run size loads the file through timm's
checkpoint_filter_fn (resample_abs_pos_embed: bicubic, antialiased); its resampled
position embedding is saved as pos_embed.npy. model.json states the file's size in the
config and the run size as the crop.

Usage:  .venv/bin/python scripts/make_timm_fixtures.py   (requirements-fixtures.txt)
"""
import json
import math
import os
import zlib

import numpy as np
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
HALF = ([0.5] * 3, [0.5] * 3)


def randomise(model, name):
    """Every parameter random: LayerNorm scales around 1, the rest (layer scale, class
    and register tokens, position embedding, head included) around 0."""
    gen = torch.Generator().manual_seed(zlib.crc32(("params " + name).encode()))
    with torch.no_grad():
        for pname, p in model.named_parameters():
            module = model.get_submodule(pname.rsplit(".", 1)[0]) if "." in pname else model
            if isinstance(module, torch.nn.LayerNorm) and pname.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))


def make(name, config, classes, run_size, crop_pct, mean_std):
    """`config`: retrain's TimmVitConfig (img_size: the file's position embedding)."""
    d = os.path.join(ROOT, name)
    os.makedirs(d, exist_ok=True)
    kwargs = dict(
        patch_size=config["patch_size"],
        embed_dim=config["embed_dim"],
        depth=config["depth"],
        num_heads=config["num_heads"],
        mlp_ratio=config["mlp_ratio"],
        qkv_bias=config.get("qkv_bias", True),
        init_values=1e-5 if config.get("layer_scale") else None,
        reg_tokens=config.get("reg_tokens", 0),
        no_embed_class=config.get("no_embed_class", False),
        global_pool=config.get("global_pool", "token"),
        num_classes=classes,
    )
    model = VisionTransformer(img_size=config["img_size"], **kwargs)
    randomise(model, name)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    run = model
    if run_size != config["img_size"]:
        run = VisionTransformer(img_size=run_size, **kwargs)
        run.load_state_dict(checkpoint_filter_fn(dict(sd), run))
        np.save(os.path.join(d, "pos_embed.npy"), run.pos_embed.detach().numpy())
    run.eval()
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    x = torch.randn(2, 3, run_size, run_size, generator=gen)
    with torch.no_grad():
        features = run.forward_head(run.forward_features(x), pre_logits=True)
        logits = run(x)
    save_file(sd, os.path.join(d, "weights.safetensors"))
    spec = {
        "name": name,
        "config": {"family": "timm_vit", **config},
        "preprocess": {"resize": math.floor(run_size / crop_pct), "crop": run_size,
                       "interpolation": "bicubic", "mean": mean_std[0], "std": mean_std[1]},
    }
    with open(os.path.join(d, "model.json"), "w") as f:
        json.dump(spec, f, indent=1)
    np.save(os.path.join(d, "input.npy"), x.numpy())
    np.save(os.path.join(d, "logits.npy"), logits.numpy())
    np.save(os.path.join(d, "features.npy"), features.numpy())
    n = sum(p.numel() for p in model.parameters())
    print(f"{name}: {n} parameters, logits {tuple(logits.shape)}, features {tuple(features.shape)}")


def main():
    vit = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2,
           "mlp_ratio": 2.0, "qkv_bias": True}
    make("timm_vit_augreg", vit, 10, 32, 0.9, HALF)
    make("timm_vit_avg", {**vit, "global_pool": "avg"}, 6, 32, 0.9, HALF)
    deit = {"img_size": 32, "patch_size": 16, "embed_dim": 24, "depth": 3, "num_heads": 3,
            "mlp_ratio": 2.0}
    make("timm_deit", deit, 7, 32, 0.9, IMAGENET)
    dinov2 = {"img_size": 70, "patch_size": 14, "embed_dim": 24, "depth": 2, "num_heads": 2,
              "mlp_ratio": 2.0, "layer_scale": True}
    make("timm_dinov2", dinov2, 5, 56, 1.0, IMAGENET)
    reg4 = {**dinov2, "img_size": 42, "reg_tokens": 4, "no_embed_class": True}
    make("timm_dinov2_reg4", reg4, 5, 56, 1.0, IMAGENET)


if __name__ == "__main__":
    main()
