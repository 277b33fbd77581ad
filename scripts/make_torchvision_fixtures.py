"""Generate the parity fixtures of torchvision's ResNeXt, Wide ResNet, VGG and DenseNet
under tests/fixtures/ (committed; small), as scripts/make_fixtures.py does for the other
families: reduced widths and depths built with torchvision's own classes, random weights
(biases too) and randomised BatchNorm statistics, saved as torch zip or safetensors, with
an input batch and PyTorch's logits and features (the input of the last Linear).

Usage:  .venv/bin/pip install -r scripts/requirements-fixtures.txt
        .venv/bin/python scripts/make_torchvision_fixtures.py
"""
import os
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import densenet as tv_densenet
from torchvision.models import resnet as tv_resnet
from torchvision.models import vgg as tv_vgg

from make_fixtures import FEATURES, ROOT, _pool, save_fixture

FEATURES["vgg"] = lambda m, x: m.classifier[:6](torch.flatten(m.avgpool(m.features(x)), 1))
FEATURES["densenet"] = lambda m, x: _pool(F.relu(m.features(x)))


def randomise_biases(model, name):
    """Convolution and Linear biases away from torchvision's zero init, so loading them counts."""
    gen = torch.Generator().manual_seed(zlib.crc32(("bias " + name).encode()))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
    return model


def grouped_resnet(layers, width, groups, width_per_group, classes):
    """torchvision's ResNet with Bottleneck blocks, grouped / widened as its `groups` and
    `width_per_group` say, the stem and stage widths scaled down."""
    block = tv_resnet.Bottleneck
    m = tv_resnet.ResNet(block, layers, num_classes=classes, groups=groups,
                         width_per_group=width_per_group)
    m.inplanes = width
    m.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    m.bn1 = nn.BatchNorm2d(width)
    m.layer1 = m._make_layer(block, width, layers[0])
    m.layer2 = m._make_layer(block, width * 2, layers[1], stride=2)
    m.layer3 = m._make_layer(block, width * 4, layers[2], stride=2)
    m.layer4 = m._make_layer(block, width * 8, layers[3], stride=2)
    m.fc = nn.Linear(width * 8 * block.expansion, classes)
    return m


def reduced_vgg(blocks, batch_norm, fc, classes):
    """torchvision's VGG on `make_layers` of a narrow cfg; the classifier is torchvision's
    Sequential (Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear) with `fc` for 4096."""
    cfg = []
    for n, c in blocks:
        cfg += [c] * n + ["M"]
    m = tv_vgg.VGG(tv_vgg.make_layers(cfg, batch_norm=batch_norm), num_classes=classes)
    last = blocks[-1][1]
    m.classifier = nn.Sequential(
        nn.Linear(last * 7 * 7, fc), nn.ReLU(True), nn.Dropout(),
        nn.Linear(fc, fc), nn.ReLU(True), nn.Dropout(),
        nn.Linear(fc, classes),
    )
    for layer in m.classifier:
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, 0, 0.05)
    return randomise_biases(m, "vgg")


def old_densenet_names(path):
    """A torchvision DenseNet state dict as checkpoints from before torchvision 0.3 name it:
    `denselayerN.norm.1` for `denselayerN.norm1` (what torchvision's `_load_state_dict`
    renames back with a regex)."""
    import re

    sd = torch.load(path, weights_only=True)
    pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))([12])\.(weight|bias|running_mean|running_var|num_batches_tracked)$")
    renamed = {}
    for k, v in sd.items():
        m = pattern.match(k)
        renamed[f"{m.group(1)}.{m.group(2)}.{m.group(3)}" if m else k] = v
    assert any(".norm.1." in k for k in renamed)
    torch.save(renamed, path)


def main():
    torch.manual_seed(0)
    # ResNeXt: 4 groups, width_per_group 8 (inner width half the planes), safetensors.
    save_fixture(
        "resnext",
        randomise_biases(grouped_resnet([1, 2, 1, 1], 8, 4, 8, 6), "resnext"),
        {"family": "resnet", "bottleneck": True, "layers": [1, 2, 1, 1], "width": 8,
         "groups": 4, "width_per_group": 8},
        64,
        "safetensors",
    )
    # Wide ResNet: width_per_group 128 (inner width twice the planes), torch zip.
    save_fixture(
        "wide_resnet",
        randomise_biases(grouped_resnet([1, 1, 1, 1], 4, 1, 128, 5), "wide_resnet"),
        {"family": "resnet", "bottleneck": True, "layers": [1, 1, 1, 1], "width": 4,
         "width_per_group": 128},
        64,
        "zip",
    )
    # VGG without BatchNorm at 64x64: the last block's 2x2 map is pooled to 7x7 with
    # overlapping windows; torch zip.
    blocks = [[1, 8], [2, 16], [1, 16], [1, 16], [1, 16]]
    save_fixture(
        "vgg",
        reduced_vgg(blocks, False, 24, 5),
        {"family": "vgg", "blocks": blocks, "batch_norm": False, "fc": 24},
        64,
        "zip",
    )
    # VGG with BatchNorm (features.N+1) at 32x32: a 1x1 map spread to 7x7; safetensors.
    blocks = [[2, 8], [1, 8], [2, 16], [1, 16], [1, 12]]
    save_fixture(
        "vgg_bn",
        reduced_vgg(blocks, True, 20, 3),
        {"family": "vgg", "blocks": blocks, "batch_norm": True, "fc": 20},
        32,
        "safetensors",
    )
    # DenseNet, three blocks, safetensors.
    save_fixture(
        "densenet",
        randomise_biases(tv_densenet.DenseNet(growth_rate=4, block_config=(2, 3, 2),
                                              num_init_features=8, bn_size=2, num_classes=5),
                         "densenet"),
        {"family": "densenet", "growth_rate": 4, "block_config": [2, 3, 2],
         "num_init_features": 8, "bn_size": 2},
        64,
        "safetensors",
    )
    # DenseNet with odd channel counts halved by the transitions, saved under the names of
    # torchvision before 0.3 (`norm.1`), torch zip.
    save_fixture(
        "densenet_old_names",
        randomise_biases(tv_densenet.DenseNet(growth_rate=5, block_config=(1, 2, 2, 1),
                                              num_init_features=10, bn_size=3, num_classes=4),
                         "densenet_old_names"),
        {"family": "densenet", "growth_rate": 5, "block_config": [1, 2, 2, 1],
         "num_init_features": 10, "bn_size": 3},
        64,
        "zip",
    )
    old_densenet_names(os.path.join(ROOT, "densenet_old_names", "weights.pt"))


if __name__ == "__main__":
    main()
