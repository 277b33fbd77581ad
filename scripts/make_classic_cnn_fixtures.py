"""Generate the parity fixtures of torchvision's AlexNet, SqueezeNet 1.0 and 1.1, GoogLeNet
and Inception v3 under tests/fixtures/ (committed; small), as scripts/make_fixtures.py does
for the other families: torchvision's own classes with reduced widths (every convolution of
the same kind, narrower), random weights (biases too) and randomised BatchNorm statistics,
saved as torch zip or safetensors, with an input batch and PyTorch's logits and features
(the input of the last Linear; SqueezeNet's: the pooled input of its 1x1-convolution
classifier).

Usage:  .venv/bin/pip install -r scripts/requirements-fixtures.txt
        .venv/bin/python scripts/make_classic_cnn_fixtures.py
"""
import importlib
import os

import numpy as np
import torch
import torch.nn as nn

from make_fixtures import FEATURES, ROOT, _pool, save_fixture
from make_torchvision_fixtures import randomise_biases

# torchvision.models' modules of these names are shadowed by their builder functions.
tv_alexnet = importlib.import_module("torchvision.models.alexnet")
tv_squeezenet = importlib.import_module("torchvision.models.squeezenet")
tv_googlenet = importlib.import_module("torchvision.models.googlenet")
tv_inception = importlib.import_module("torchvision.models.inception")

FEATURES["alexnet"] = lambda m, x: m.classifier[:6](torch.flatten(m.avgpool(m.features(x)), 1))
FEATURES["squeezenet"] = lambda m, x: _pool(m.features(x))
FEATURES["inception_v3"] = lambda m, x: torch.flatten(m.avgpool(inception_v3_maps(m, x)), 1)
FEATURES["googlenet"] = lambda m, x: torch.flatten(m.avgpool(googlenet_maps(m, x)), 1)


def googlenet_maps(m, x):
    """GoogLeNet's forward up to its average pool (torchvision's `_forward`, eval mode)."""
    x = m._transform_input(x)
    for name in ["conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a",
                 "inception3b", "maxpool3", "inception4a", "inception4b", "inception4c",
                 "inception4d", "inception4e", "maxpool4", "inception5a", "inception5b"]:
        x = getattr(m, name)(x)
    return x


def inception_v3_maps(m, x):
    """Inception v3's forward up to its average pool (torchvision's `_forward`, eval mode)."""
    x = m._transform_input(x)
    for name in ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                 "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
                 "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b",
                 "Mixed_7c"]:
        x = getattr(m, name)(x)
    return x


def narrow(conv_block, divisor):
    """`conv_block` (torchvision's BasicConv2d) with every width divided by `divisor`, the
    image's 3 channels kept: what torchvision's `conv_block` / `blocks` arguments take."""
    w = lambda c: c if c == 3 else max(1, c // divisor)

    def make(in_channels, out_channels, **kwargs):
        return conv_block(w(in_channels), w(out_channels), **kwargs)

    return make


def reduced_alexnet(channels, fc, classes):
    """torchvision's AlexNet with narrower convolutions and hidden Linear layers, every
    layer at the index torchvision's Sequentials give it."""
    m = tv_alexnet.AlexNet(num_classes=classes)
    c1, c2, c3, c4, c5 = channels
    m.features = nn.Sequential(
        nn.Conv2d(3, c1, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(c1, c2, kernel_size=5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(c2, c3, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c3, c4, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c4, c5, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )
    m.classifier = nn.Sequential(
        nn.Dropout(), nn.Linear(c5 * 6 * 6, fc), nn.ReLU(inplace=True),
        nn.Dropout(), nn.Linear(fc, fc), nn.ReLU(inplace=True),
        nn.Linear(fc, classes),
    )
    for layer in m.classifier:
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, 0, 0.05)
    return randomise_biases(m, "alexnet")


def reduced_squeezenet(version, divisor, classes):
    """torchvision's SqueezeNet of `version` with every width divided by `divisor`: the stem
    convolution, each Fire module (torchvision's class) and the 1x1-convolution classifier
    replaced at their indices."""
    m = tv_squeezenet.SqueezeNet(version=version, num_classes=classes)
    w = lambda c: max(1, c // divisor)
    inp = None
    for i, layer in enumerate(m.features):
        if isinstance(layer, nn.Conv2d):
            inp = w(layer.out_channels)
            m.features[i] = nn.Conv2d(3, inp, kernel_size=layer.kernel_size, stride=layer.stride)
        elif isinstance(layer, tv_squeezenet.Fire):
            e1, e3 = w(layer.expand1x1.out_channels), w(layer.expand3x3.out_channels)
            m.features[i] = tv_squeezenet.Fire(inp, w(layer.squeeze.out_channels), e1, e3)
            inp = e1 + e3
    m.classifier[1] = nn.Conv2d(inp, classes, kernel_size=1)
    # Weights that keep the activations away from zero after the ReLUs, and a classifier whose
    # ReLU clips some positions but not all (the logits then differ from a Linear on the
    # pooled map).
    for mod in m.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight)
    return randomise_biases(m, "squeezenet" + version)


def reduced_googlenet(divisor, classes, aux):
    """torchvision's GoogLeNet (transform_input=True, as with its published weights) built
    with narrowed BasicConv2d through its `blocks` argument; the auxiliary classifiers (in
    the file when `aux`) with narrow Linear layers too (they do not run in eval mode)."""
    conv = narrow(tv_googlenet.BasicConv2d, divisor)
    m = tv_googlenet.GoogLeNet(
        num_classes=classes, aux_logits=aux, transform_input=True, init_weights=True,
        blocks=[conv, lambda *a, **k: tv_googlenet.Inception(*a, conv_block=conv),
                tv_googlenet.InceptionAux],
    )
    out = sum(b.conv.out_channels for b in [m.inception5b.branch1, m.inception5b.branch2[1],
                                            m.inception5b.branch3[1], m.inception5b.branch4[1]])
    m.fc = nn.Linear(out, classes)
    if aux:
        for a in [m.aux1, m.aux2]:
            a.conv = conv(a.conv.conv.in_channels, 128, kernel_size=1)
            a.fc1 = nn.Linear(a.conv.conv.out_channels * 16, 12)
            a.fc2 = nn.Linear(12, classes)
    return randomise_biases(m, "googlenet")


def reduced_inception_v3(divisor, classes):
    """torchvision's Inception3 (transform_input=True, as with its published weights; no
    AuxLogits) built with narrowed BasicConv2d through its `inception_blocks` argument."""
    conv = narrow(tv_inception.BasicConv2d, divisor)
    with_conv = lambda cls: lambda *a, **k: cls(*a, conv_block=conv, **k)
    m = tv_inception.Inception3(
        num_classes=classes, aux_logits=False, transform_input=True, init_weights=True,
        inception_blocks=[conv] + [with_conv(c) for c in [
            tv_inception.InceptionA, tv_inception.InceptionB, tv_inception.InceptionC,
            tv_inception.InceptionD, tv_inception.InceptionE, tv_inception.InceptionAux]],
    )
    c = m.Mixed_7c
    out = sum(b.conv.out_channels for b in [c.branch1x1, c.branch3x3_2a, c.branch3x3_2b,
                                            c.branch3x3dbl_3a, c.branch3x3dbl_3b,
                                            c.branch_pool])
    m.fc = nn.Linear(out, classes)
    return randomise_biases(m, "inception_v3")


def keep_first_image(name):
    """The fixture's input, logits and features cut to the batch's first image."""
    for part in ["input", "logits", "features"]:
        path = os.path.join(ROOT, name, part + ".npy")
        np.save(path, np.load(path)[:1])


def main():
    torch.manual_seed(0)
    # AlexNet at 64x64: the last 1x1 map spread to 6x6 by the adaptive pool; torch zip.
    channels = [8, 12, 16, 12, 10]
    save_fixture(
        "alexnet",
        reduced_alexnet(channels, 24, 5),
        {"family": "alexnet", "channels": channels, "fc": 24, "pool": 6},
        64,
        "zip",
    )
    # SqueezeNet 1.0 at 64x64 (ceil-mode pools: 29 -> 14 -> 7 -> 3), safetensors; 1.1 at
    # 48x48, torch zip.
    save_fixture(
        "squeezenet1_0",
        reduced_squeezenet("1_0", 8, 5),
        {"family": "squeezenet", "version": "1_0", "width_divisor": 8},
        64,
        "safetensors",
    )
    save_fixture(
        "squeezenet1_1",
        reduced_squeezenet("1_1", 8, 4),
        {"family": "squeezenet", "version": "1_1", "width_divisor": 8},
        48,
        "zip",
    )
    # GoogLeNet at 56x56 (ceil-mode pools: 28 -> 14 -> 7 -> 3 -> 2), its auxiliary
    # classifiers in the file; safetensors.
    save_fixture(
        "googlenet",
        reduced_googlenet(16, 5, aux=True),
        {"family": "googlenet", "transform_input": True, "width_divisor": 16},
        56,
        "safetensors",
    )
    # Inception v3 at its smallest input, 75x75 (Mixed_7c's map 1x1), every width divided by
    # 32; safetensors; one image of the batch kept (the fixture stays small).
    save_fixture(
        "inception_v3",
        reduced_inception_v3(32, 4),
        {"family": "inception_v3", "transform_input": True, "width_divisor": 32},
        75,
        "safetensors",
    )
    keep_first_image("inception_v3")


if __name__ == "__main__":
    main()
