"""Writes a torchvision classifier twice, for comparing retrain's zoo architecture with the
same network run from its ONNX graph: its state dict as safetensors and its ONNX export
(torch.onnx, TorchScript exporter, opset 13, eval mode, dynamic batch, no constant folding:
BatchNorm stays a node, so a fine-tune trains it on both sides and inference folds it at
load, as the zoo does).

Usage: python export_torchvision_onnx.py --arch mobilenet_v2 [--weights mobilenet_v2.pth] \
           --out-dir DIR      (writes DIR/<arch>.safetensors and DIR/<arch>.onnx)
Without --weights the architecture's random initialisation (seed 0) is written: speed does
not depend on the values.
"""
import argparse
import os

import torch
import torchvision
from safetensors.torch import save_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", required=True)
    ap.add_argument("--weights")
    ap.add_argument("--out-dir", required=True)
    a = ap.parse_args()
    torch.manual_seed(0)
    model = getattr(torchvision.models, a.arch)()
    if a.weights:
        model.load_state_dict(torch.load(a.weights, map_location="cpu", weights_only=True))
    model.eval()
    os.makedirs(a.out_dir, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              os.path.join(a.out_dir, f"{a.arch}.safetensors"))
    torch.onnx.export(model, torch.randn(1, 3, 224, 224), os.path.join(a.out_dir, f"{a.arch}.onnx"),
                      input_names=["input"], output_names=["logits"], opset_version=13,
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
                      do_constant_folding=False, training=torch.onnx.TrainingMode.EVAL)


if __name__ == "__main__":
    main()
