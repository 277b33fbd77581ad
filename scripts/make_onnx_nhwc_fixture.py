"""An ONNX model with an NHWC image input, as tf2onnx writes Keras models: the committed
torch.onnx MobileNetV2 (tests/fixtures/onnx/mobilenet_v2_op13) behind a Transpose from
[n, h, w, c] to the [n, c, h, w] its convolutions take. Its outputs on the NHWC input are
the original's on the NCHW one (a transpose is exact), so the fixture's references are
that fixture's onnxruntime outputs, copied.

  tests/fixtures/onnx/mobilenet_v2_nhwc/{model.onnx, input.npy (NCHW), logits.npy,
  features.npy, meta.json}

Usage:  .venv-onnx/bin/python scripts/make_onnx_nhwc_fixture.py
        (pip install -r scripts/requirements-onnx-cases.txt)
"""
import json
import os
import shutil

import onnx
from onnx import helper

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "onnx")


def main():
    src = os.path.join(ROOT, "mobilenet_v2_op13")
    out = os.path.join(ROOT, "mobilenet_v2_nhwc")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    m = onnx.load(os.path.join(src, "model.onnx"))
    g = m.graph
    inp = g.input[0]
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    n, c, h, w = dims
    nhwc = helper.make_tensor_value_info("image_nhwc", onnx.TensorProto.FLOAT, [n, h, w, c])
    g.node.insert(0, helper.make_node("Transpose", ["image_nhwc"], [inp.name], perm=[0, 3, 1, 2],
                                      name="nhwc_to_nchw"))
    del g.input[0]
    g.input.insert(0, nhwc)
    m.producer_name = "retrain make_onnx_nhwc_fixture"
    onnx.checker.check_model(m)
    onnx.save(m, os.path.join(out, "model.onnx"))
    for f in ("input.npy", "logits.npy", "features.npy"):
        shutil.copy(os.path.join(src, f), os.path.join(out, f))
    with open(os.path.join(src, "meta.json")) as f:
        meta = json.load(f)
    meta.update(input_name="image_nhwc", input_shape=[n, h, w, c], layout="NHWC",
                derived_from="mobilenet_v2_op13")
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
