"""Generate the PyTorch parity fixtures under tests/fixtures/ (committed; small).

Each fixture is a reduced-width/-depth variant of a zoo architecture, built with the
origin framework's own classes (torchvision, efficientnet_lite_pytorch) and random init
(BatchNorm statistics randomised too, so BN folding is exercised), saved in one of the
weights formats retrain reads, with an input batch and the origin's outputs:

    tests/fixtures/<name>/weights.<pt|pth|safetensors>
    tests/fixtures/<name>/model.json      retrain's model spec (architecture + preprocessing)
    tests/fixtures/<name>/input.npy       (2, 3, S, S) float32
    tests/fixtures/<name>/logits.npy      (2, classes)
    tests/fixtures/<name>/features.npy    (2, feature_dim): the classifier's input

With real ImageNet weights available (LITE0_WEIGHTS, MOBILENET_V2_WEIGHTS, HYMENOPTERA_DIR)
it also writes tests/fixtures/real/: a few hymenoptera images preprocessed by torchvision
(Resize + CenterCrop on PIL, saved as lossless PNG) and the features/logits PyTorch computes
from them, for the real-weights parity test.

Usage:  python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements-fixtures.txt
        .venv/bin/python scripts/make_fixtures.py
"""
import json
import zlib
import os
from functools import partial

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file
from torchvision.models import efficientnet as tv_eff
from torchvision.models import mobilenetv2 as tv_mbv2
from torchvision.models import mobilenetv3 as tv_mbv3
from torchvision.models import resnet as tv_resnet

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")


def randomise_bn(model, gen):
    """Give every BatchNorm non-trivial affine parameters and running statistics."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=gen) * 1.5 + 0.25)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.2)
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)


def save_fixture(name, model, config, size, fmt, wrap=None, classes_check=None):
    d = os.path.join(ROOT, name)
    os.makedirs(d, exist_ok=True)
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    randomise_bn(model, gen)
    model.eval()
    x = torch.randn(2, 3, size, size, generator=gen)
    with torch.no_grad():
        logits = model(x)
        features = FEATURES[config["family"]](model, x)
    sd = model.state_dict()
    for f in os.listdir(d):
        if f.startswith("weights."):
            os.remove(os.path.join(d, f))
    if fmt == "zip":
        torch.save(sd, os.path.join(d, "weights.pt"))
    elif fmt == "legacy":
        obj = {k if wrap is None else "module." + k: v for k, v in sd.items()}
        if wrap:
            obj = {wrap: obj, "epoch": 3}
        torch.save(obj, os.path.join(d, "weights.pth"), _use_new_zipfile_serialization=False)
    elif fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(d, "weights.safetensors"))
    # A model spec retrain reads with --model: architecture plus the preprocessing to use.
    spec = {
        "name": name,
        "config": config,
        "preprocess": {"resize": size + size // 7, "crop": size, "interpolation": "bilinear",
                       "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    }
    if os.path.exists(os.path.join(d, "config.json")):
        os.remove(os.path.join(d, "config.json"))
    with open(os.path.join(d, "model.json"), "w") as f:
        json.dump(spec, f, indent=1)
    np.save(os.path.join(d, "input.npy"), x.numpy())
    np.save(os.path.join(d, "logits.npy"), logits.numpy())
    np.save(os.path.join(d, "features.npy"), features.numpy())
    n = sum(p.numel() for p in model.parameters())
    print(f"{name}: {n} parameters, logits {tuple(logits.shape)}, features {tuple(features.shape)}")


def _pool(x):
    return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


FEATURES = {
    "resnet": lambda m, x: _pool(
        m.layer4(m.layer3(m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x))))))))
    ),
    "mobilenet_v2": lambda m, x: _pool(m.features(x)),
    "mobilenet_v3": lambda m, x: _pool(m.features(x)),
    "efficientnet": lambda m, x: _pool(m.features(x)),
    "efficientnet_lite": lambda m, x: m._avg_pooling(m.extract_features(x)).flatten(1),
}


def reduced_resnet(block, layers, width, classes):
    """torchvision's ResNet and blocks, with the stem/stage widths scaled down."""
    m = tv_resnet.ResNet(block, layers, num_classes=classes)
    m.inplanes = width
    m.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    m.bn1 = nn.BatchNorm2d(width)
    m.layer1 = m._make_layer(block, width, layers[0])
    m.layer2 = m._make_layer(block, width * 2, layers[1], stride=2)
    m.layer3 = m._make_layer(block, width * 4, layers[2], stride=2)
    m.layer4 = m._make_layer(block, width * 8, layers[3], stride=2)
    m.fc = nn.Linear(width * 8 * block.expansion, classes)
    return m


def main():
    torch.manual_seed(0)
    # ResNet, basic blocks, torch.save zip.
    save_fixture(
        "resnet_basic",
        reduced_resnet(tv_resnet.BasicBlock, [1, 1, 2, 1], 8, 10),
        {"family": "resnet", "bottleneck": False, "layers": [1, 1, 2, 1], "width": 8},
        64,
        "zip",
    )
    # ResNet, bottlenecks, legacy torch.save wrapped as a DataParallel checkpoint.
    save_fixture(
        "resnet_bottleneck",
        reduced_resnet(tv_resnet.Bottleneck, [1, 2, 1, 1], 8, 7),
        {"family": "resnet", "bottleneck": True, "layers": [1, 2, 1, 1], "width": 8},
        64,
        "legacy",
        wrap="state_dict",
    )
    # MobileNetV2, width 0.5, shortened table, safetensors.
    setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 2, 2]]
    save_fixture(
        "mobilenet_v2",
        tv_mbv2.MobileNetV2(num_classes=5, width_mult=0.5, inverted_residual_setting=setting),
        {"family": "mobilenet_v2", "width_mult": 0.5, "setting": setting},
        64,
        "safetensors",
    )
    # MobileNetV3: SE and hard-swish mixed, expand and no-expand blocks, torchvision classes.
    rows = [
        (16, 3, 16, 16, True, "RE", 2, 1),
        (16, 3, 72, 24, False, "RE", 2, 1),
        (24, 3, 88, 24, False, "RE", 1, 1),
        (24, 5, 96, 40, True, "HS", 2, 1),
        (40, 5, 120, 40, True, "HS", 1, 1),
    ]
    cnf = [tv_mbv3.InvertedResidualConfig(*r, width_mult=1.0) for r in rows]
    save_fixture(
        "mobilenet_v3",
        tv_mbv3.MobileNetV3(cnf, last_channel=64, num_classes=6),
        {
            "family": "mobilenet_v3",
            "last_channel": 64,
            "blocks": [
                {"cin": r[0], "kernel": r[1], "expanded": r[2], "cout": r[3], "se": r[4],
                 "hardswish": r[5] == "HS", "stride": r[6]}
                for r in rows
            ],
        },
        64,
        "zip",
    )
    # EfficientNet (torchvision), width 0.5 / depth 0.5 of a shortened B0 table, eps 1e-3.
    b_rows = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 3), (6, 3, 1, 40, 48, 1)]
    conf = partial(tv_eff.MBConvConfig, width_mult=0.5, depth_mult=0.5)
    save_fixture(
        "efficientnet",
        tv_eff.EfficientNet([conf(*r) for r in b_rows], dropout=0.2, num_classes=4,
                            norm_layer=partial(nn.BatchNorm2d, eps=1e-3)),
        {
            "family": "efficientnet", "width_mult": 0.5, "depth_mult": 0.5, "bn_eps": 1e-3,
            "rows": [dict(zip(["expand", "kernel", "stride", "cin", "cout", "repeats"], r)) for r in b_rows],
        },
        64,
        "zip",
    )
    # EfficientNet-Lite (efficientnet_lite_pytorch), width 1.1 / depth 1.2, odd input size 67
    # so the static TF SAME padding is asymmetric on some layers and not others.
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite_pytorch.utils import BlockDecoder, efficientnet_lite

    lite_rows = ["r1_k3_s11_e1_i32_o16", "r2_k3_s22_e6_i16_o24", "r2_k5_s22_e6_i24_o40", "r1_k3_s11_e6_i40_o48"]
    _, gp = efficientnet_lite(width_coefficient=1.1, depth_coefficient=1.2, image_size=67, num_classes=3)
    lite = EfficientNet(BlockDecoder.decode(lite_rows), gp)
    decoded = BlockDecoder.decode(lite_rows)
    save_fixture(
        "efficientnet_lite",
        lite,
        {
            "family": "efficientnet_lite", "width_mult": 1.1, "depth_mult": 1.2, "image_size": 67,
            "rows": [
                {"expand": b.expand_ratio, "kernel": b.kernel_size, "stride": b.stride[0],
                 "cin": b.input_filters, "cout": b.output_filters, "repeats": b.num_repeat}
                for b in decoded
            ],
        },
        67,
        "legacy",
    )
    reader_fixtures()
    image_fixtures()
    real_fixtures()


class _Evil:
    """An object whose unpickling runs a shell command: a weights file must never do that."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/retrain-pwned",))


def reader_fixtures():
    d = os.path.join(ROOT, "files")
    os.makedirs(d, exist_ok=True)
    sd = {"a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3),
          "a.bias": torch.tensor([0.5, -0.5], dtype=torch.float64),
          "b.half": torch.tensor([1.5, 2.0], dtype=torch.float16),
          "b.transposed": torch.arange(6, dtype=torch.float32).reshape(3, 2).t(),
          "n": torch.tensor(7)}
    # A zip whose root folder name has 21 characters: its first central-directory entry is
    # 76 bytes, the size of a zip64 record, which trips zip's archive-offset detection.
    torch.save(sd, os.path.join(d, "abcdefghijklmnopqrstu.pt"))
    torch.save({"state_dict": sd, "evil": _Evil()}, os.path.join(d, "malicious.pt"))
    torch.save(sd, os.path.join(d, "legacy.pth"), _use_new_zipfile_serialization=False)
    print("reader fixtures written")


def image_fixtures():
    """Small images in the colour models and containers users have."""
    from PIL import Image

    d = os.path.join(ROOT, "images")
    os.makedirs(d, exist_ok=True)
    g = np.random.default_rng(0)
    rgb = Image.fromarray(g.integers(0, 255, (48, 80, 3), dtype=np.uint8), "RGB")
    rgb.save(os.path.join(d, "rgb.png"))
    rgb.convert("L").save(os.path.join(d, "gray.png"))
    rgb.convert("CMYK").save(os.path.join(d, "cmyk.jpg"), quality=90)
    rgb.convert("P").save(os.path.join(d, "palette.gif"))
    rgb.save(os.path.join(d, "rgb.bmp"))
    rgb.save(os.path.join(d, "rgb.webp"), lossless=True)
    # Stored 80x48 with EXIF orientation 6 (rotate 90° clockwise): displayed 48x80.
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb.save(os.path.join(d, "rotated.jpg"), exif=exif, quality=90)
    print("image fixtures written")


REAL_IMAGES = [
    "val/ants/10308379_1b6c72e180.jpg",
    "val/ants/1119630822_cd325ea21a.jpg",
    "val/bees/1032546534_06907fe3b3.jpg",
    "val/bees/10870992_eebeeb3a12.jpg",
]


def real_fixtures():
    data = os.environ.get("HYMENOPTERA_DIR")
    lite_w = os.environ.get("LITE0_WEIGHTS")
    mbv2_w = os.environ.get("MOBILENET_V2_WEIGHTS")
    if not (data and lite_w and mbv2_w):
        print("real fixtures skipped: set HYMENOPTERA_DIR, LITE0_WEIGHTS, MOBILENET_V2_WEIGHTS")
        return
    from PIL import Image
    from torchvision import transforms
    from torchvision.models import mobilenet_v2
    from efficientnet_lite_pytorch import EfficientNet

    d = os.path.join(ROOT, "real")
    os.makedirs(d, exist_ok=True)
    crop = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])
    crops = []
    for i, rel in enumerate(REAL_IMAGES):
        img = crop(Image.open(os.path.join(data, rel)).convert("RGB"))
        img.save(os.path.join(d, f"crop{i}.png"))
        crops.append(img)
    x01 = torch.stack([transforms.functional.to_tensor(c) for c in crops])

    lite = EfficientNet.from_name("efficientnet-lite0")
    lite.load_state_dict(torch.load(lite_w, map_location="cpu", weights_only=True))
    mbv2 = mobilenet_v2()
    mbv2.load_state_dict(torch.load(mbv2_w, map_location="cpu", weights_only=True))
    for name, model, mean, std in [
        ("efficientnet_lite0", lite, [127 / 255] * 3, [128 / 255] * 3),
        ("mobilenet_v2", mbv2, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ]:
        model.eval()
        x = transforms.functional.normalize(x01, mean, std)
        fam = "efficientnet_lite" if name.startswith("efficientnet") else "mobilenet_v2"
        with torch.no_grad():
            np.save(os.path.join(d, f"{name}_features.npy"), FEATURES[fam](model, x).numpy())
            np.save(os.path.join(d, f"{name}_logits.npy"), model(x).numpy())
    with open(os.path.join(d, "images.json"), "w") as f:
        json.dump(REAL_IMAGES, f, indent=1)
    print("real fixtures written for", len(REAL_IMAGES), "images")


if __name__ == "__main__":
    main()
