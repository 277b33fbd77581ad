"""ONNX models whose image input is not the NCHW RGB batch torch.onnx writes, derived from
the committed torch.onnx MobileNetV2 (tests/fixtures/onnx/mobilenet_v2_op13):

  mobilenet_v2_nhwc/  an NHWC input, as tf2onnx writes Keras models: a Transpose from
      [n, h, w, c] to the [n, c, h, w] the convolutions take. Its outputs on the NHWC input
      are the original's on the NCHW one (a transpose is exact): the references are that
      fixture's onnxruntime outputs, copied.
  mobilenet_v2_grey/  a one-channel (greyscale) input, repeated to three channels by a
      Concat. References: onnxruntime's outputs on the first channel of the original
      input; input.npy holds that channel three times (what retrain's RGB batches of a grey
      picture are), so that its luma conversion gives the grey input back.

Each folder: model.onnx, input.npy (NCHW, what retrain feeds), logits.npy, features.npy,
meta.json.

Usage:  .venv-onnx/bin/pip install -r scripts/requirements-onnx-cases.txt onnxruntime==1.32.0
        .venv-onnx/bin/python scripts/make_onnx_input_fixtures.py
"""
import json
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "onnx")
SRC = os.path.join(ROOT, "mobilenet_v2_op13")


def derive(name, new_input, node, meta_update):
    """The source model with `new_input` feeding `node`, which makes the old input."""
    out = os.path.join(ROOT, name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    m = onnx.load(os.path.join(SRC, "model.onnx"))
    g = m.graph
    g.node.insert(0, node)
    del g.input[0]
    g.input.insert(0, new_input)
    m.producer_name = "retrain make_onnx_input_fixtures"
    onnx.checker.check_model(m)
    onnx.save(m, os.path.join(out, "model.onnx"))
    with open(os.path.join(SRC, "meta.json")) as f:
        meta = json.load(f)
    meta.update(meta_update, derived_from="mobilenet_v2_op13")
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    return out, m, meta


def main():
    m = onnx.load(os.path.join(SRC, "model.onnx"))
    old = m.graph.input[0].name
    n, c, h, w = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]

    nhwc = helper.make_tensor_value_info("image_nhwc", onnx.TensorProto.FLOAT, [n, h, w, c])
    out, _, _ = derive("mobilenet_v2_nhwc", nhwc,
                       helper.make_node("Transpose", ["image_nhwc"], [old], perm=[0, 3, 1, 2],
                                        name="nhwc_to_nchw"),
                       dict(input_name="image_nhwc", input_shape=[n, h, w, c], layout="NHWC"))
    for f in ("input.npy", "logits.npy", "features.npy"):
        shutil.copy(os.path.join(SRC, f), os.path.join(out, f))
    print("wrote", out)

    grey = helper.make_tensor_value_info("grey", onnx.TensorProto.FLOAT, [n, 1, h, w])
    out, model, meta = derive("mobilenet_v2_grey", grey,
                              helper.make_node("Concat", ["grey"] * 3, [old], axis=1,
                                               name="grey_to_rgb"),
                              dict(input_name="grey", input_shape=[n, 1, h, w], channels=1))
    x = np.load(os.path.join(SRC, "input.npy"))[:, :1]
    # onnxruntime's outputs: logits, and the features value made a graph output for it.
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_empty_tensor_value_info(meta["features_value"]))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    logits, features = sess.run([model.graph.output[0].name, meta["features_value"]],
                                {"grey": x})
    np.save(os.path.join(out, "input.npy"), np.ascontiguousarray(np.repeat(x, 3, axis=1)))
    np.save(os.path.join(out, "logits.npy"), logits)
    np.save(os.path.join(out, "features.npy"), features)
    print("wrote", out)


if __name__ == "__main__":
    main()
