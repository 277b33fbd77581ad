"""Generate the token-model parity fixtures under tests/fixtures/ (committed; small), as
scripts/make_fixtures.py does for the CNN families: a reduced torchvision
VisionTransformer (image 32, patch 8, 2 encoder layers, 2 heads, width 32, MLP 64,
10 classes), every parameter random (torchvision zero-initialises the class token and the
head, which would test nothing), saved as safetensors, with PyTorch's logits and features
(the pre-logits: the class token after the final LayerNorm, the input of `heads.head`).

Usage:  .venv/bin/python scripts/make_token_fixtures.py   (requirements-fixtures.txt)
"""
import os
import sys
import zlib

import torch
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
            if pname.endswith("weight") and ("ln" in pname):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))


def main():
    mf.FEATURES["vit"] = vit_features
    config = {"family": "vit", "image_size": 32, "patch_size": 8, "num_layers": 2,
              "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64}
    m = tv_vit.VisionTransformer(num_classes=10, **config_args(config))
    randomise(m, "vit")
    mf.save_fixture("vit", m, config, 32, "safetensors")


def config_args(config):
    return {k: v for k, v in config.items() if k != "family"}


if __name__ == "__main__":
    main()
