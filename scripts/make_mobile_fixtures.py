"""Generate the parity fixtures of torchvision's RegNet (X and Y), EfficientNetV2, MNASNet
and ShuffleNetV2 under tests/fixtures/ (committed; small), as scripts/make_fixtures.py does
for the other families: reduced widths and depths built with torchvision's own classes,
random weights (biases too) and randomised BatchNorm statistics, saved as torch zip or
safetensors, with an input batch and PyTorch's logits and features (the input of the last
Linear).

Usage:  .venv/bin/pip install -r scripts/requirements-fixtures.txt
        .venv/bin/python scripts/make_mobile_fixtures.py
"""
from functools import partial

import torch
import torch.nn as nn
from torchvision.models import efficientnet as tv_eff
from torchvision.models import mnasnet as tv_mnasnet
from torchvision.models import regnet as tv_regnet
from torchvision.models import shufflenetv2 as tv_shufflenet

from make_fixtures import FEATURES, _pool, save_fixture
from make_torchvision_fixtures import randomise_biases


def _regnet_features(m, x):
    return _pool(m.trunk_output(m.stem(x)))


FEATURES["regnet"] = _regnet_features
FEATURES["efficientnet_v2"] = lambda m, x: _pool(m.features(x))
FEATURES["mnasnet"] = lambda m, x: m.layers(x).mean([2, 3])
FEATURES["shufflenet_v2"] = lambda m, x: m.conv5(
    m.stage4(m.stage3(m.stage2(m.maxpool(m.conv1(x)))))
).mean([2, 3])


def regnet(params, stem_width, classes, name):
    """torchvision's RegNet on `BlockParams` (the widths `from_init_params` computes)."""
    m = tv_regnet.RegNet(params, num_classes=classes, stem_width=stem_width,
                         norm_layer=partial(nn.BatchNorm2d, eps=1e-05, momentum=0.1))
    return randomise_biases(m, name)


def regnet_config(params, stem_width):
    return {
        "family": "regnet",
        "stem_width": stem_width,
        "se_ratio": params.se_ratio,
        "stages": [
            {"width": w, "depth": d, "group_width": g, "bottleneck_multiplier": b}
            for w, _, d, g, b in params._get_expanded_params()
        ],
    }


def main():
    torch.manual_seed(0)
    # RegNetY: widths from from_init_params (two stages of two blocks, then one of one),
    # SE at 0.25 of the block's input, groups of 4; safetensors.
    params = tv_regnet.BlockParams.from_init_params(
        depth=5, w_0=8, w_a=6.0, w_m=2.0, group_width=4, se_ratio=0.25)
    save_fixture("regnet_y", regnet(params, 8, 5, "regnet_y"), regnet_config(params, 8), 64,
                 "safetensors")
    # RegNetX: no SE, bottleneck multipliers 2, 1 and 0.5 (a single group in the last), a
    # stage as wide as its input (projected for its stride only); torch zip.
    params = tv_regnet.BlockParams(
        depths=[1, 2, 2], widths=[8, 8, 24], group_widths=[4, 8, 8],
        bottleneck_multipliers=[2.0, 1.0, 0.5], strides=[2, 2, 2], se_ratio=None)
    save_fixture("regnet_x", regnet(params, 8, 4, "regnet_x"), regnet_config(params, 8), 64,
                 "zip")
    # EfficientNetV2: fused blocks with and without expansion (residual and not), then
    # MBConv with SE; BatchNorm eps 1e-3 as torchvision builds V2; torch zip.
    rows = [
        (True, 1, 3, 1, 8, 8, 2),
        (True, 4, 3, 2, 8, 16, 2),
        (False, 4, 3, 2, 16, 24, 2),
        (False, 6, 3, 1, 24, 32, 1),
    ]
    setting = [
        (tv_eff.FusedMBConvConfig if fused else partial(tv_eff.MBConvConfig, width_mult=1.0,
                                                        depth_mult=1.0))(e, k, s, i, o, n)
        for fused, e, k, s, i, o, n in rows
    ]
    v2 = tv_eff.EfficientNet(setting, dropout=0.2, last_channel=48, num_classes=6,
                             norm_layer=partial(nn.BatchNorm2d, eps=1e-03))
    save_fixture(
        "efficientnet_v2",
        randomise_biases(v2, "efficientnet_v2"),
        {
            "family": "efficientnet_v2", "last_channel": 48,
            "rows": [dict(zip(["fused", "expand", "kernel", "stride", "cin", "cout", "repeats"], r))
                     for r in rows],
        },
        64,
        "zip",
    )
    # MNASNet at width 0.25 (the stem scaled, version 2), its stacks narrower and shorter,
    # the last 1x1 convolution 32 wide for torchvision's 1280; safetensors.
    mnas = tv_mnasnet.MNASNet(0.25, num_classes=5)
    depths = tv_mnasnet._get_depths(0.25)[:2] + [8, 16, 16, 16, 24, 16]
    mnas.layers[14] = nn.Conv2d(depths[7], 32, 1, bias=False)
    mnas.layers[15] = nn.BatchNorm2d(32, momentum=tv_mnasnet._BN_MOMENTUM)
    mnas.classifier[1] = nn.Linear(32, 5)
    repeats = [2, 1, 2, 2, 1, 1]
    stacks = [(3, 2, 3), (5, 2, 3), (5, 2, 6), (3, 1, 6), (5, 2, 6), (3, 1, 6)]
    for i, ((k, s, e), n) in enumerate(zip(stacks, repeats)):
        mnas.layers[8 + i] = tv_mnasnet._stack(depths[i + 1], depths[i + 2], k, s, e, n,
                                               tv_mnasnet._BN_MOMENTUM)
    save_fixture("mnasnet", randomise_biases(mnas, "mnasnet"),
                 {"family": "mnasnet", "depths": depths, "repeats": repeats, "head": 32}, 64, "safetensors")
    # ShuffleNetV2, narrow and shortened; torch zip.
    repeats, channels = [2, 3, 2], [8, 16, 24, 32, 48]
    save_fixture(
        "shufflenet_v2",
        randomise_biases(tv_shufflenet.ShuffleNetV2(repeats, channels, num_classes=7),
                         "shufflenet_v2"),
        {"family": "shufflenet_v2", "repeats": repeats, "channels": channels},
        64,
        "zip",
    )


if __name__ == "__main__":
    main()
