"""Model-only inference (batch 32, 224x224, to the pre-logits features) of a torchvision
network in PyTorch (eval mode, no_grad) and in ONNX Runtime (its export, CPU provider, all
graph optimisations), both on 2 threads, for scripts/bench-infer.sh. Also writes the state
dict as safetensors, for retrain to time the same weights.

Usage: python bench_peer_infer.py --arch mobilenet_v2 [--weights mobilenet_v2.pth] \
           --save DIR/mobilenet_v2.safetensors [--iters 6]
Prints one JSON line: {"torch_b32": img/s, "ort_b32": img/s, "torch": ..., "onnxruntime": ...}
"""
import argparse
import json
import os
import tempfile
import time

import numpy as np
import onnxruntime as ort
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn


def median_rate(fn, batch, warmup, iters):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return batch / sorted(times)[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", required=True)
    ap.add_argument("--weights")
    ap.add_argument("--save", required=True)
    ap.add_argument("--iters", type=int, default=6)
    a = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = getattr(torchvision.models, a.arch)()
    if a.weights:
        model.load_state_dict(torch.load(a.weights, map_location="cpu", weights_only=True))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, a.save)
    # The features: the last Linear (the classifier) becomes the identity.
    head = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    *path, last = head.split(".")
    setattr(model.get_submodule(".".join(path)), last, nn.Identity())
    model.eval()
    x = torch.randn(32, 3, 224, 224)

    def torch_infer():
        with torch.no_grad():
            model(x)

    torch_rate = median_rate(torch_infer, 32, 1, a.iters)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.onnx")
        torch.onnx.export(model, x[:1], path, input_names=["input"], output_names=["features"],
                          opset_version=17, dynamic_axes={"input": {0: "batch"}}, dynamo=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        feed = {"input": x.numpy().astype(np.float32)}
        ort_rate = median_rate(lambda: sess.run(None, feed), 32, 1, a.iters)
    print(json.dumps({"arch": a.arch, "torch_b32": torch_rate, "ort_b32": ort_rate,
                      "torch": torch.__version__, "onnxruntime": ort.__version__}))


if __name__ == "__main__":
    main()
