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

and timm's CNN families and Swin under timm's names, with their own classes at reduced
widths and depths, every parameter random and BatchNorm statistics randomised:

  timm_resnet        timm's ResNet (Bottleneck, layers 1-2-1-1, channels 8..64), safetensors
  timm_efficientnet  timm's EfficientNet (ds + ir blocks with SE, SiLU), width and depth
                     0.5 of a shortened B0 table, torch zip
  timm_convnext      timm's ConvNeXt (dims 8..32, depths 1-2-1-1, [C] layer scale)
  timm_regnet        timm's RegNetY (SE 0.25) whose group size 12 makes timm's width rounding
                     differ from torchvision's (16 -> 12 where torchvision gives 24)
  timm_swin          timm's Swin V1 (patch 2, window 4, three stages 16/8/4 wide maps)

the features being timm's `forward_head(forward_features(x), pre_logits=True)`.

Usage:  .venv/bin/python scripts/make_timm_fixtures.py   (requirements-fixtures.txt)
"""
import json
import math
import os
import zlib

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file
from timm.models import convnext as timm_convnext
from timm.models import efficientnet as timm_efficientnet
from timm.models import regnet as timm_regnet
from timm.models import resnet as timm_resnet
from timm.models import swin_transformer as timm_swin
from timm.models._efficientnet_builder import decode_arch_def, round_channels
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from make_fixtures import randomise_bn

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
    write_outputs(name, model, {"family": "timm_vit", **config}, run_size, crop_pct, mean_std,
                  x, logits, features)


def write_outputs(name, model, config, size, crop_pct, mean_std, x, logits, features):
    """model.json (retrain's spec with the `pretrained_cfg`-style preprocessing), the
    input batch and timm's logits and features."""
    d = os.path.join(ROOT, name)
    spec = {
        "name": name,
        "config": config,
        "preprocess": {"resize": math.floor(size / crop_pct), "crop": size,
                       "interpolation": "bicubic", "mean": mean_std[0], "std": mean_std[1]},
    }
    with open(os.path.join(d, "model.json"), "w") as f:
        json.dump(spec, f, indent=1)
    np.save(os.path.join(d, "input.npy"), x.numpy())
    np.save(os.path.join(d, "logits.npy"), logits.numpy())
    np.save(os.path.join(d, "features.npy"), features.numpy())
    n = sum(p.numel() for p in model.parameters())
    print(f"{name}: {n} parameters, logits {tuple(logits.shape)}, features {tuple(features.shape)}")


def make_cnn(name, model, config, size, crop_pct, fmt):
    """A timm CNN (or Swin) `model`: every parameter random (norm scales around 1,
    weights over the square root of their fan-in), its BatchNorm statistics randomised,
    saved in `fmt` with timm's outputs on a random batch."""
    d = os.path.join(ROOT, name)
    os.makedirs(d, exist_ok=True)
    randomise(model, name)
    # Convolution and Linear weights scaled to their fan-in, so that deep stacks keep
    # values near 1 (an absolute tolerance means what it says).
    wgen = torch.Generator().manual_seed(zlib.crc32(("weights " + name).encode()))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=wgen) / math.sqrt(fan_in))
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    randomise_bn(model, gen)
    model.eval()
    x = torch.randn(2, 3, size, size, generator=gen)
    with torch.no_grad():
        features = model.forward_head(model.forward_features(x), pre_logits=True)
        logits = model(x)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    for f in os.listdir(d):
        if f.startswith("weights."):
            os.remove(os.path.join(d, f))
    if fmt == "zip":
        torch.save(sd, os.path.join(d, "weights.pt"))
    else:
        save_file(sd, os.path.join(d, "weights.safetensors"))
    # ResNet's names are torchvision's: its config needs no naming.
    config = {**config, "naming": "timm"} if config["family"] != "resnet" else config
    write_outputs(name, model, config, size, crop_pct, IMAGENET, x, logits, features)


def cnn_fixtures():
    # ResNet: timm's own class, torchvision's names. timm's plain stem is always 64 wide:
    # it and layer1's first block's two inputs are narrowed to 8, as the stages are.
    resnet = timm_resnet.ResNet(timm_resnet.Bottleneck, [1, 2, 1, 1], num_classes=5,
                                channels=(8, 16, 32, 64))
    resnet.conv1 = nn.Conv2d(3, 8, kernel_size=7, stride=2, padding=3, bias=False)
    resnet.bn1 = nn.BatchNorm2d(8)
    resnet.layer1[0].conv1 = nn.Conv2d(8, 8, kernel_size=1, bias=False)
    resnet.layer1[0].downsample[0] = nn.Conv2d(8, 32, kernel_size=1, bias=False)
    make_cnn("timm_resnet", resnet,
             {"family": "resnet", "bottleneck": True, "layers": [1, 2, 1, 1], "width": 8},
             64, 0.95, "safetensors")

    # EfficientNet: the torchvision fixture's shortened B0 table, timm's blocks.
    rows = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 3), (6, 3, 1, 40, 48, 1)]
    arch_def = [[f"{'ds' if e == 1 else 'ir'}_r{r}_k{k}_s{s}_e{e}_c{cout}_se0.25"]
                for e, k, s, _, cout, r in rows]
    chs = lambda c: round_channels(c, 0.5)
    eff = timm_efficientnet.EfficientNet(
        decode_arch_def(arch_def, 0.5), num_classes=4, num_features=4 * chs(rows[-1][4]),
        stem_size=32, round_chs_fn=chs, act_layer=nn.SiLU)
    make_cnn("timm_efficientnet", eff,
             {"family": "efficientnet", "width_mult": 0.5, "depth_mult": 0.5, "bn_eps": 1e-5,
              "rows": [dict(zip(["expand", "kernel", "stride", "cin", "cout", "repeats"], r))
                       for r in rows]},
             64, 0.875, "zip")

    # ConvNeXt: timm's class (conv_mlp=False, layer scale on).
    dims, depths = [8, 16, 24, 32], [1, 2, 1, 1]
    convnext = timm_convnext.ConvNeXt(depths=depths, dims=dims, num_classes=6)
    make_cnn("timm_convnext", convnext,
             {"family": "convnext", "dims": dims, "depths": depths}, 64, 0.875, "safetensors")

    # RegNetY: widths 8, 16, 32, 64 from generate_regnet, fitted to group size 12 by timm.
    cfg = timm_regnet.RegNetCfg(depth=6, w0=8, wa=8.0, wm=2.0, group_size=12, se_ratio=0.25,
                                stem_width=8)
    regnet = timm_regnet.RegNet(cfg, num_classes=5)
    stages = []
    for i in range(1, 5):
        stage = regnet.get_submodule(f"s{i}")
        b1 = stage.b1
        bottleneck = b1.conv2.conv.out_channels
        stages.append({"width": b1.conv3.conv.out_channels, "depth": len(list(stage.children())),
                       "group_width": bottleneck // b1.conv2.conv.groups})
    assert stages[1]["width"] == 12, stages
    make_cnn("timm_regnet", regnet,
             {"family": "regnet", "stem_width": 8, "stages": stages, "se_ratio": 0.25},
             64, 0.965, "safetensors")

    # Swin V1: three stages, every map at least a window wide (16, 8, 4 with window 4).
    swin = timm_swin.SwinTransformer(img_size=32, patch_size=2, embed_dim=16, depths=(2, 2, 2),
                                     num_heads=(2, 2, 4), window_size=4, num_classes=5)
    make_cnn("timm_swin", swin,
             {"family": "swin", "patch_size": 2, "embed_dim": 16, "depths": [2, 2, 2],
              "num_heads": [2, 2, 4], "window_size": [4, 4]},
             32, 0.9, "safetensors")


def main():
    cnn_fixtures()
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
