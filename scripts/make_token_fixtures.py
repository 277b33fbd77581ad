"""Generate the parity fixtures of the LayerNorm families under tests/fixtures/
(committed; small), as scripts/make_fixtures.py does for the BatchNorm CNNs, with
torchvision's own classes and every parameter random (torchvision zero-initialises a
ViT's class token and head, and sets ConvNeXt's layer scale to 1e-6, which would test
nothing):
  vit       VisionTransformer (image 32, patch 8, 2 encoder layers, 2 heads, width 32,
            MLP 64, 10 classes), safetensors; features: the class token after the final
            LayerNorm (the input of `heads.head`)
  convnext  ConvNeXt (stages of 16/32/48 channels, 2/1/1 blocks, 5 classes, input 48),
            torch zip; features: the pooled vector after `classifier.0`
with an input batch and PyTorch's logits.

Usage:  .venv/bin/python scripts/make_token_fixtures.py   (requirements-fixtures.txt)
"""
import os
import sys
import zlib

import torch
from torchvision.models import convnext as tv_convnext
from torchvision.models import vision_transformer as tv_vit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402


def vit_features(m, x):
    """torchvision's VisionTransformer.forward without `heads`."""
    x = m._process_input(x)
    x = torch.cat([m.class_token.expand(x.shape[0], -1, -1), x], dim=1)
    return m.encoder(x)[:, 0]


def randomise(model, name):
    gen = torch.Generator().manual_seed(zlib.crc32(("params " + name).encode()))
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.dim() == 1 and pname.endswith("weight") and is_norm(model, pname):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))


def is_norm(model, pname):
    module = model.get_submodule(pname.rsplit(".", 1)[0])
    return isinstance(module, torch.nn.LayerNorm)


def convnext_features(m, x):
    """torchvision's ConvNeXt.forward without the last Linear."""
    return m.classifier[1](m.classifier[0](m.avgpool(m.features(x))))


def main():
    mf.FEATURES["vit"] = vit_features
    config = {"family": "vit", "image_size": 32, "patch_size": 8, "num_layers": 2,
              "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64}
    m = tv_vit.VisionTransformer(num_classes=10, **config_args(config))
    randomise(m, "vit")
    mf.save_fixture("vit", m, config, 32, "safetensors")

    mf.FEATURES["convnext"] = convnext_features
    dims, depths = [16, 32, 48], [2, 1, 1]
    settings = [tv_convnext.CNBlockConfig(d, dims[i + 1] if i + 1 < len(dims) else None, n)
                for i, (d, n) in enumerate(zip(dims, depths))]
    m = tv_convnext.ConvNeXt(settings, num_classes=5)
    randomise(m, "convnext")
    mf.save_fixture("convnext", m, {"family": "convnext", "dims": dims, "depths": depths}, 48, "zip")


def config_args(config):
    return {k: v for k, v in config.items() if k != "family"}


if __name__ == "__main__":
    main()
