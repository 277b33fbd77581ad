"""Generate tests/fixtures/wrapped/: a torchvision network saved the way training code
saves it, not the way torchvision publishes it (committed; small).

- its state dict sits under a wrapper's prefix: `model.encoder.` beside the wrapper's own
  `model.decoder.` (torch zip), and `module.pre.` beside `module.loss.` (the legacy
  pre-1.6 torch.save format);
- its classifier is replaced by a 7-way head (the base fixture's has 5), so the head's size comes from the file;
- its storages are tagged `cuda:0`, as torch.save writes them on a GPU machine (torch's
  `location_tag` is what names a storage's device in the file; it is set here so that the
  files are made without a GPU: their bytes are what a GPU run writes).

The network is the reduced MobileNetV2 of tests/fixtures/mobilenet_v2 (its weights), run by
torchvision's own class for the expected features and logits.

Usage:  .venv/bin/pip install -r scripts/requirements-fixtures.txt
        .venv/bin/python scripts/make_wrapped_fixtures.py
"""
import json
import os
import shutil

import numpy as np
import torch
import torch.nn as nn
import torch.serialization
from safetensors.torch import load_file
from torchvision.models import mobilenetv2 as tv_mbv2

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
BASE = os.path.join(ROOT, "mobilenet_v2")
OUT = os.path.join(ROOT, "wrapped")


class Holder(nn.Module):
    """A wrapper module: the network under one name, the wrapper's own part beside it."""

    def __init__(self, name, net, other, part):
        super().__init__()
        self.add_module(name, net)
        self.add_module(other, part)


def main():
    spec = json.load(open(os.path.join(BASE, "model.json")))
    cfg = spec["config"]
    state = load_file(os.path.join(BASE, "weights.safetensors"))
    net = tv_mbv2.MobileNetV2(
        num_classes=state["classifier.1.weight"].shape[0],
        width_mult=cfg["width_mult"],
        inverted_residual_setting=cfg["setting"],
    )
    net.load_state_dict(state)
    gen = torch.Generator().manual_seed(7)
    head = nn.Linear(net.classifier[1].in_features, 7)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.1)
        head.bias.copy_(torch.randn(head.bias.shape, generator=gen) * 0.1)
    net.classifier[1] = head
    net.eval()

    os.makedirs(OUT, exist_ok=True)
    x = torch.randn(2, 3, spec["preprocess"]["crop"], spec["preprocess"]["crop"], generator=gen)
    with torch.no_grad():
        features = torch.flatten(nn.functional.adaptive_avg_pool2d(net.features(x), 1), 1)
        logits = net(x)
    np.save(os.path.join(OUT, "input.npy"), x.numpy())
    np.save(os.path.join(OUT, "features.npy"), features.numpy())
    np.save(os.path.join(OUT, "logits.npy"), logits.numpy())
    shutil.copy(os.path.join(BASE, "model.json"), os.path.join(OUT, "model.json"))

    encoder = Holder("model", Holder("encoder", net, "decoder", nn.Linear(4, 3)), "aux", nn.Identity())
    pre = Holder("module", Holder("pre", net, "loss", nn.Linear(2, 2)), "aux", nn.Identity())
    tag = torch.serialization.location_tag
    torch.serialization.location_tag = lambda storage: "cuda:0"
    try:
        torch.save(encoder.state_dict(), os.path.join(OUT, "encoder_cuda.pt"))
        torch.save(
            pre.state_dict(),
            os.path.join(OUT, "pre_cuda_legacy.pt"),
            _use_new_zipfile_serialization=False,
        )
    finally:
        torch.serialization.location_tag = tag
    # What the files say, checked: every storage is tagged cuda:0, and torch reads them back
    # (mapped to the CPU) as the network's tensors under the wrapper's names.
    for name, model in [("encoder_cuda.pt", encoder), ("pre_cuda_legacy.pt", pre)]:
        path = os.path.join(OUT, name)
        with open(path, "rb") as f:
            assert b"cuda:0" in f.read(), name
        back = torch.load(path, map_location="cpu", weights_only=True)
        assert back.keys() == model.state_dict().keys(), name


if __name__ == "__main__":
    main()
