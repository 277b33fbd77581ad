"""Peer training-step throughput for torchvision architectures, measured exactly as the peer's
bench_throughput.py measures EfficientNet-Lite0 (synthetic 224x224 input, batch 16, 2 threads):

  train_b16  : train mode, forward + cross-entropy + backward + SGD(momentum 0.9) step, all layers
  freeze_b16 : backbone in eval mode with requires_grad off, new head trained (fwd + bwd + step)
  infer_b32  : (--infer) model-only inference, batch 32, eval mode, to the pre-logits features

The new head replaces the model's last Linear (torchvision's classifier output), whatever the
family calls it (fc, classifier.1, heads.head, classifier.2).

Also writes the model's state dict as safetensors (--save), so that retrain's side of the
benchmark runs the very same weights (random init for resnet50: no ImageNet file is reachable
here; step time does not depend on the values).

On a GPU (--device cuda) the model and batches live on the device, torch.backends.cudnn.benchmark
is on, and every timed step ends with a synchronize, so the figure is the device's step time.

Usage: python bench_peer_train.py --arch mobilenet_v2 [--weights mobilenet_v2.pth] --save out.safetensors
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torchvision
from safetensors.torch import save_file


def median_time(fn, warmup, iters, sync):
    for _ in range(warmup):
        fn()
    sync()
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", required=True,
                    choices=["mobilenet_v2", "resnet50", "vit_b_16", "convnext_tiny"])
    ap.add_argument("--infer", action="store_true")
    ap.add_argument("--weights")
    ap.add_argument("--save")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    a = ap.parse_args()
    if a.device == "cuda":
        torch.backends.cudnn.benchmark = True
        sync = torch.cuda.synchronize
    else:
        torch.set_num_threads(2)
        sync = lambda: None  # noqa: E731
    torch.manual_seed(0)
    model = getattr(torchvision.models, a.arch)()
    if a.weights:
        model.load_state_dict(torch.load(a.weights, map_location="cpu", weights_only=True))
    if a.save:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, a.save)
    head_name = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    *path, last = head_name.split(".")
    parent = model.get_submodule(".".join(path))
    head = nn.Linear(parent.get_submodule(last).in_features, 2)
    setattr(parent, last, head)
    model.to(a.device)
    crit = nn.CrossEntropyLoss()
    x16 = torch.randn(16, 3, 224, 224, device=a.device)
    y16 = torch.randint(0, 2, (16,), device=a.device)
    opt_full = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def train_full():
        opt_full.zero_grad(set_to_none=True)
        crit(model(x16), y16).backward()
        opt_full.step()

    opt_head = torch.optim.SGD(head.parameters(), lr=1e-3, momentum=0.9)

    def train_freeze():
        opt_head.zero_grad(set_to_none=True)
        crit(model(x16), y16).backward()
        opt_head.step()

    model.train()
    full = 16 / median_time(train_full, a.warmup, a.iters, sync)
    for p in model.parameters():
        p.requires_grad = False
    for p in head.parameters():
        p.requires_grad = True
    model.eval()
    frozen = 16 / median_time(train_freeze, a.warmup, a.iters, sync)
    result = {"arch": a.arch, "train_b16": full, "freeze_b16": frozen,
              "head": head_name, "torch": torch.__version__, "device": a.device}
    if a.infer:
        setattr(parent, last, nn.Identity())
        x32 = torch.randn(32, 3, 224, 224, device=a.device)

        def infer():
            with torch.no_grad():
                model(x32)

        result["infer_b32"] = 32 / median_time(infer, 1, max(3, a.iters // 2), sync)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
