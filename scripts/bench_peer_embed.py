"""The peer pipeline's feature extraction (../shared/peers, exp_a_features.py's extract()),
timed end to end from JPEG files: ImageFolder + Resize/CenterCrop/ToTensor/Normalize, batch
32, torch with 2 threads, pooled penultimate features. Prints one JSON line.
Any other torchvision architecture (vit_b_16, convnext_tiny, ...) runs with its weights
enum's own transforms and its last Linear replaced by Identity (the pre-logits features);
`--limit N` takes the first N images only (the slow transformers).

Usage: peer-venv/bin/python scripts/bench_peer_embed.py <peers-dir> <lite0|mobilenet_v2|arch> <weights> <list-out> [--limit N]
"""
import json
import os
import sys
import time

peers, arch, weights, list_out = sys.argv[1:5]
limit = int(sys.argv[6]) if len(sys.argv) > 6 and sys.argv[5] == "--limit" else None
os.environ.setdefault("LITE0_WEIGHTS", weights)
sys.path.insert(0, peers)
import torch  # noqa: E402
from torch.utils.data import ConcatDataset, DataLoader  # noqa: E402

import common  # noqa: E402  (the peer's own helpers)

common.setup()
t_load = time.perf_counter()
if arch == "lite0":
    model = common.load_lite0(pretrained=True).eval()
    tf = common.val_transform()

    def features(x):
        return common.pooled_features(model, x)
elif arch != "mobilenet_v2":
    import torchvision
    from safetensors.torch import load_file

    model = getattr(torchvision.models, arch)()
    state = load_file(weights) if weights.endswith(".safetensors") else torch.load(
        weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    last = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    *path, leaf = last.split(".")
    setattr(model.get_submodule(".".join(path)), leaf, torch.nn.Identity())
    model.eval()
    tf = torchvision.models.get_model_weights(arch).IMAGENET1K_V1.transforms()

    def features(x):
        return model(x)
else:
    import torchvision

    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    tf = common.val_transform(common.IMAGENET_MEAN, common.IMAGENET_STD)

    def features(x):
        return torch.flatten(torch.nn.functional.adaptive_avg_pool2d(model.features(x), 1), 1)
load_s = time.perf_counter() - t_load

tr, va = common.datasets_(train_tf=tf, val_tf=tf)
data = ConcatDataset([tr, va])
if limit is not None:
    data = torch.utils.data.Subset(data, range(min(limit, len(data))))
with open(list_out, "w") as f:
    for p, _ in (tr.samples + va.samples)[: len(data)]:
        f.write(p + "\n")
meter = common.Meter()
n = 0
with torch.no_grad():
    for x, _ in DataLoader(data, batch_size=32, shuffle=False, num_workers=0):
        n += features(x).shape[0]
m = meter.stop()
print(json.dumps({"images": n, "seconds": m["wall_s"], "img_per_s": n / m["wall_s"],
                  "model_load_s": load_s, "other_cores": m["other_cores"]}))
