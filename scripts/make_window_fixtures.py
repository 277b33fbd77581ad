"""Generate the parity fixtures of torchvision's windowed-attention families under
tests/fixtures/ (committed; small), as scripts/make_token_fixtures.py does, with
torchvision's own classes and every parameter random:
  swin     SwinTransformer (embed 8, depths 2/2/1, heads 2/2/4, a 4x3 window, 5 classes,
           input 56), safetensors without the relative_position_index buffers (they are
           computed): the 14x14 and 7x7 maps are padded to the window, the 4x4 one has its
           vertical shift dropped (the window covers it) and keeps the horizontal one, so
           padding and the shift mask are exercised; the 7x7 map is padded for merging.
  swin_v2  SwinTransformer with SwinTransformerBlockV2 and PatchMergingV2 (embed 6, depths
           2/2/1, heads 2/2/4, a 4x4 window, 5 classes, input 44: 11x11 and 6x6 maps padded
           to the window, the 11x11 one padded for merging), torch zip with the
           buffers; logit scales drawn around log(100) − 1, some past the clamp, and the
           keys' qkv bias nonzero in the file (V2 ignores it)
  maxvit   MaxVit (stem 8, blocks of 8/16 channels with 1/2 layers, head_dim 4, partition
           3, 5 classes, input 48: block attention on 3x3 windows and grid attention on a
           4x4 and a 2x2 grid; MBConv's shortcut pooled and projected where it strides, the
           identity elsewhere), torch zip with the buffers; BatchNorm statistics randomised
with an input batch and PyTorch's logits; features: Swin's final LayerNorm averaged (the
input of `head`), MaxViT's Tanh output (the input of `classifier.5`).

Usage:  .venv/bin/python scripts/make_window_fixtures.py   (requirements-fixtures.txt)
"""
import math
import os
import sys
import zlib

import torch
from torchvision.models import maxvit as tv_maxvit
from torchvision.models import swin_transformer as tv_swin

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402


def randomise(model, name):
    gen = torch.Generator().manual_seed(zlib.crc32(("params " + name).encode()))
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.dim() == 1 and pname.endswith("weight") and is_norm(model, pname):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif pname.endswith("logit_scale"):
                p.copy_(math.log(100.0) - 1.0 + torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))


def is_norm(model, pname):
    module = model.get_submodule(pname.rsplit(".", 1)[0])
    return isinstance(module, torch.nn.LayerNorm)


def swin_features(m, x):
    """torchvision's SwinTransformer.forward without `head`."""
    return m.flatten(m.avgpool(m.permute(m.norm(m.features(x)))))


def swin(name, v2, embed_dim, window, size, fmt):
    mf.FEATURES["swin"] = swin_features
    depths, heads = [2, 2, 1], [2, 2, 4]
    extra = {"block": tv_swin.SwinTransformerBlockV2,
             "downsample_layer": tv_swin.PatchMergingV2} if v2 else {}
    m = tv_swin.SwinTransformer(patch_size=[4, 4], embed_dim=embed_dim, depths=depths,
                                num_heads=heads, window_size=window, num_classes=5, **extra)
    randomise(m, name)
    config = {"family": "swin", "v2": v2, "patch_size": 4, "embed_dim": embed_dim,
              "depths": depths, "num_heads": heads, "window_size": window}
    mf.save_fixture(name, m, config, size, fmt)


def maxvit_features(m, x):
    """torchvision's MaxVit.forward without the last Linear."""
    x = m.stem(x)
    for block in m.blocks:
        x = block(x)
    return m.classifier[:5](x)


def maxvit():
    mf.FEATURES["maxvit"] = maxvit_features
    config = {"family": "maxvit", "stem_channels": 8, "block_channels": [8, 16],
              "block_layers": [1, 2], "head_dim": 4, "partition_size": 3}
    m = tv_maxvit.MaxVit(input_size=(48, 48), stochastic_depth_prob=0.2, num_classes=5,
                         **{k: v for k, v in config.items() if k != "family"})
    randomise(m, "maxvit")
    mf.save_fixture("maxvit", m, config, 48, "zip")


def main():
    swin("swin", False, 8, [4, 3], 56, "safetensors")
    # The buffers are computed from the window: the file need not hold them.
    path = os.path.join(mf.ROOT, "swin", "weights.safetensors")
    from safetensors.torch import load_file, save_file
    sd = {k: v for k, v in load_file(path).items() if not k.endswith("relative_position_index")}
    save_file(sd, path)
    swin("swin_v2", True, 6, [4, 4], 44, "zip")
    maxvit()


if __name__ == "__main__":
    main()
