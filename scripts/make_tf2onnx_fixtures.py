"""ONNX files written by tf2onnx (a second producer beside torch.onnx) from Keras 3 models
with random weights (random biases and BatchNorm statistics), with onnxruntime's outputs
as references, checked against Keras' own:

  tests/fixtures/onnx/keras_mobilenet_v2_tf2onnx_op13/
      keras.applications.MobileNetV2(alpha=0.1, input_shape=(64, 64, 3), weights=None,
      classes=10), converted at opset 13
  tests/fixtures/onnx/keras_residual_tf2onnx_op17/
      a small Functional residual network at 32x32 (Conv2D + BatchNormalization + ReLU,
      SeparableConv2D, DepthwiseConv2D, Concatenate, Add, MaxPooling2D,
      GlobalAveragePooling2D, Dense with softmax, 5 classes), converted at opset 17

tf2onnx keeps Keras' layout: the graph's input is NHWC, [batch, h, w, 3], with a symbolic
batch axis, followed by a Transpose to NCHW. It folds a BatchNorm into a bias-free Conv
before it and writes the others (after depthwise or biased convolutions) as Mul + Add of
[1, C, 1, 1] constants; no BatchNormalization node remains. The features are
GlobalAveragePool then Squeeze; the classifier is MatMul + Add, then Softmax (the graph's
output). All kept as written.

Each folder: model.onnx (as tf2onnx wrote it), input.npy (float32 NCHW, batch 2, uniform in
[-1, 1]: what retrain feeds), logits.npy (the last Dense's output before its softmax),
features.npy (that Dense's input, the global average pool), meta.json. The references are
onnxruntime's, on the NHWC transpose of input.npy, run on a probe copy of the model whose
graph outputs include the features and pre-softmax logits values; meta.json records their
max |diff| from Keras (`model(x, training=False)`).

The weights, inputs and references are the same on every run; the names tf2onnx makes up
(Conv__N, unk__N, ..._Squeeze__N, const_fold_opt__N) are numbered in an order that varies
from run to run (PYTHONHASHSEED does not fix it), so a rerun rewrites model.onnx and the
value names in meta.json (features_value, first_conv_node) together.

Versions (Python 3.11): tf2onnx 1.17.0, tensorflow-cpu 2.21.0, keras 3.15.1, onnx 1.23.2,
onnxruntime 1.32.0, numpy 2.4.6, protobuf 7.36.2 (scripts/requirements-tf2onnx-fixtures.txt).

Usage:  python3.11 -m venv /tmp/venv-tf2onnx
        /tmp/venv-tf2onnx/bin/pip install -r scripts/requirements-tf2onnx-fixtures.txt
        /tmp/venv-tf2onnx/bin/python scripts/make_tf2onnx_fixtures.py
"""
import json
import os
import shutil
import sys
import warnings
import zlib

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np
import tensorflow as tf
import keras
import onnx
import onnxruntime as ort
import tf2onnx
from onnx import helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_keras_graph_fixtures import randomise  # noqa: E402  (random biases, BN statistics)

# Keras 3 on a Functional model's single input given as a tensor, not a list: harmless.
warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "onnx")
TOLERANCE = 1e-5


def mobilenet_v2():
    return keras.applications.MobileNetV2(alpha=0.1, input_shape=(64, 64, 3), weights=None,
                                          classes=10)


def residual():
    L = keras.layers
    inp = keras.Input((32, 32, 3), name="image")
    x = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    s = L.SeparableConv2D(16, 3, padding="same", name="sep")(x)
    s = L.BatchNormalization(name="sep_bn")(s)
    s = L.ReLU(name="sep_relu")(s)
    d = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    d = L.BatchNormalization(name="dw_bn")(d)
    d = L.ReLU(6.0, name="dw_relu")(d)
    c = L.Concatenate(name="concat")([s, d])
    c = L.Conv2D(16, 1, name="project")(c)
    c = L.BatchNormalization(name="project_bn")(c)
    y = L.Add(name="add")([x, c])
    y = L.ReLU(name="add_relu")(y)
    y = L.MaxPooling2D(2, name="pool")(y)
    y = L.Conv2D(24, 3, padding="same", name="conv2")(y)
    y = L.BatchNormalization(name="conv2_bn")(y)
    y = L.ReLU(name="conv2_relu")(y)
    f = L.GlobalAveragePooling2D(name="features")(y)
    out = L.Dense(5, activation="softmax", name="predictions")(f)
    return keras.Model(inp, out, name="residual")


def last_dense(model):
    return [l for l in model.layers if isinstance(l, keras.layers.Dense)][-1]


def keras_outputs(model, x):
    """Keras' features (the last Dense's input), pre-activation logits and output."""
    dense = last_dense(model)
    features = keras.Model(model.inputs, dense.input)(x, training=False)
    features = np.asarray(keras.ops.convert_to_numpy(features), dtype="float32")
    kernel, bias = dense.get_weights()
    logits = (features @ kernel + bias).astype("float32")
    full = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)), dtype="float32")
    return features, logits, full


def locate(model):
    """The classifier (the last MatMul or Gemm), its input (the features value), the value
    holding the logits (its bias Add's output, or the Gemm's) and the final Softmax if any."""
    g = model.graph
    by_output = {o: n for n in g.node for o in n.output}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    cls = [n for n in g.node if n.op_type in ("MatMul", "Gemm")][-1]
    features = cls.input[0]
    logits, bias_node = cls.output[0], None
    if cls.op_type == "MatMul":
        after = consumers.get(logits, [])
        if len(after) == 1 and after[0].op_type == "Add":
            bias_node = after[0]
            logits = bias_node.output[0]
    out = g.output[0].name
    last = by_output[out]
    softmax = last if last.op_type == "Softmax" and last.input[0] == logits else None
    if softmax is None:
        assert logits == out, (logits, out)
    return cls, bias_node, features, logits, softmax


def onnxruntime_outputs(model, names, x_nhwc):
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for n in names:
        if n not in have:
            probe.graph.output.append(helper.make_empty_tensor_value_info(n))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(names, {model.graph.input[0].name: x_nhwc})


def build(name, arch, make, opset, notes):
    seed = zlib.crc32(arch.encode())
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    km = make()
    randomise(km, rng)
    h, w, c = km.inputs[0].shape[1:]
    x = rng.uniform(-1, 1, (2, c, h, w)).astype("float32")
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))

    input_name = km.layers[0].name
    spec = (tf.TensorSpec((None, h, w, c), tf.float32, name=input_name),)
    model, _ = tf2onnx.convert.from_keras(km, input_signature=spec, opset=opset)
    onnx.checker.check_model(model)
    g = model.graph

    cls, bias_node, features_value, logits_value, softmax = locate(model)
    output_name = g.output[0].name
    f_ort, l_ort, o_ort = onnxruntime_outputs(model, [features_value, logits_value, output_name],
                                              x_nhwc)
    f_k, l_k, o_k = keras_outputs(km, x_nhwc)
    diff = {"logits": float(np.abs(l_ort - l_k).max()),
            "features": float(np.abs(f_ort - f_k).max()),
            "output": float(np.abs(o_ort - o_k).max())}
    assert max(diff.values()) <= TOLERANCE, (name, diff)

    # The batch axis is symbolic: three rows give the same first two.
    dims = g.input[0].type.tensor_type.shape.dim
    dynamic = dims[0].HasField("dim_param")
    if dynamic:
        x3 = np.concatenate([x_nhwc, x_nhwc[:1]])
        l3, = onnxruntime_outputs(model, [logits_value], x3)
        assert np.abs(l3[:2] - l_ort).max() <= 1e-6

    out = os.path.join(ROOT, name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    onnx.save(model, os.path.join(out, "model.onnx"))
    np.save(os.path.join(out, "input.npy"), x)
    np.save(os.path.join(out, "logits.npy"), l_ort.astype("float32"))
    np.save(os.path.join(out, "features.npy"), f_ort.astype("float32"))

    ops = sorted({n.op_type for n in g.node})
    bn = sum(n.op_type == "BatchNormalization" for n in g.node)
    # tf2onnx folds a BatchNorm into the Conv before it when that Conv has no bias (the
    # Conv's bias is then the BN's .../batchnorm/sub); after a depthwise convolution or a
    # biased one it stays as Keras' inference form, x * mul + add with [1, C, 1, 1]
    # constants (Mul .../batchnorm/mul_1, Add .../batchnorm/add_1).
    bn_in_conv = sum(n.op_type == "Conv" and len(n.input) > 2 and "batchnorm" in n.input[2]
                     for n in g.node)
    bn_mul_add = sum(n.op_type == "Mul" and n.name.endswith("batchnorm/mul_1") for n in g.node)
    keras_bn = sum(isinstance(l, keras.layers.BatchNormalization) for l in km.layers)
    assert bn_in_conv + bn_mul_add == keras_bn, (bn_in_conv, bn_mul_add, keras_bn)
    convs = [n for n in g.node if n.op_type == "Conv"]
    meta = {
        "producer": f"tf2onnx {tf2onnx.__version__} (keras {keras.__version__}, "
                    f"tensorflow {tf.__version__})",
        "producer_name": model.producer_name,
        "producer_version": model.producer_version,
        "exporter": "tf2onnx",
        "opset": opset,
        "ir_version": model.ir_version,
        "architecture": arch,
        "input_name": g.input[0].name,
        "input_shape": [int(d) for d in x_nhwc.shape],
        "onnx_input_dims": [d.dim_param if d.HasField("dim_param") else d.dim_value for d in dims],
        "layout": "NHWC",
        "output_name": output_name,
        "num_classes": int(l_ort.shape[1]),
        "dynamic_batch": dynamic,
        "features_value": features_value,
        "features_dim": int(f_ort.shape[1]),
        "classifier_node": cls.name,
        "classifier_op": cls.op_type,
        "classifier_bias_node": bias_node.name if bias_node is not None else None,
        "logits_value": logits_value,
        "final_softmax_node": softmax.name if softmax is not None else None,
        "keras_classifier_layer": last_dense(km).name,
        "first_conv_node": convs[0].name,
        "first_conv_initializer": convs[0].input[1],
        "bn_folded": bn == 0 and bn_mul_add == 0,
        "batchnorm_nodes": bn,
        "keras_batchnorm_layers": keras_bn,
        "batchnorm_folded_into_conv": bn_in_conv,
        "batchnorm_as_mul_add": bn_mul_add,
        "final_squeeze": any(n.op_type == "Squeeze" and n.output[0] == features_value
                             for n in g.node),
        "initializers_total": len(g.initializer),
        "nodes_total": len(g.node),
        "op_types": ops,
        "external_data": None,
        "tolerance_abs": TOLERANCE,
        "max_abs_diff_vs_keras": diff,
        "notes": notes + f" Keras seed and numpy seed {seed} (crc32 of '{arch}'); biases and "
                 "BatchNorm gamma/beta/moving statistics randomised. Converted with "
                 f"tf2onnx.convert.from_keras(input_signature=[TensorSpec((None, {h}, {w}, {c}), "
                 f"name='{input_name}')], opset={opset}), default optimizers. References from "
                 "onnxruntime (CPU) on the NHWC transpose of input.npy, with the features and "
                 "pre-softmax logits made graph outputs of a probe copy only. No BatchNormalization "
                 "nodes: tf2onnx folds a BN into a bias-free Conv before it (Conv bias "
                 ".../batchnorm/sub) and writes the others (after depthwise or biased "
                 "convolutions) as Mul + Add of [1, C, 1, 1] constants. The features are "
                 "GlobalAveragePool then Squeeze; the classifier is MatMul + Add (BiasAdd), "
                 "then Softmax.",
    }
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    size = sum(os.path.getsize(os.path.join(out, p)) for p in os.listdir(out))
    print(f"wrote {out}: {size} bytes, model {os.path.getsize(os.path.join(out, 'model.onnx'))}, "
          f"diff vs keras {diff}, ops {ops}")


def main():
    build("keras_mobilenet_v2_tf2onnx_op13", "keras_mobilenet_v2", mobilenet_v2, 13,
          "keras.applications.MobileNetV2(alpha=0.1, input_shape=(64, 64, 3), weights=None, "
          "classes=10, classifier_activation='softmax'): last conv 1280 channels, Dense 10 "
          "with softmax.")
    build("keras_residual_tf2onnx_op17", "keras_residual", residual, 17,
          "Functional residual net at 32x32: strided Conv2D 16 + BN + ReLU stem; a "
          "SeparableConv2D 16 + BN + ReLU branch and a DepthwiseConv2D + BN + ReLU6 branch, "
          "Concatenate, 1x1 Conv2D + BN, Add with the stem, ReLU, MaxPooling2D 2, Conv2D 24 + "
          "BN + ReLU, GlobalAveragePooling2D, Dense 5 with softmax.")


if __name__ == "__main__":
    main()
