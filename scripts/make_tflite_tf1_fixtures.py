"""TFLite files converted from a TF1 graph, named the way TF-slim names them, for the
TFLite graph front-end (tests/graph.rs).

Writes tests/fixtures/tflite_tf1/:
    model.tflite        a reduced MobileNet v1 (TF-slim scopes `MobilenetV1/Conv2d_1_depthwise`,
                        BatchNorm folded, ReLU6, a 7×7 average pool, a 1×1-convolution
                        classifier over 1001 classes squeezed to a vector, softmax), built as a
                        tf.compat.v1 graph and converted from the session; float32
    model_uint8.tflite  the same trained with fake quantisation and converted with
                        inference_type uint8: uint8 activations and weights, the input
                        quantised with mean 127.5 and std 127.5 (pixels as they are)
    input.npy           two images, NCHW float32 0..255
    logits.npy          the interpreter's softmax input, per file: `<stem>_logits.npy`
    features.npy        the average pool's output (the classifier's input): `<stem>_features.npy`

Usage: python scripts/make_tflite_tf1_fixtures.py
(pip install -r scripts/requirements-tf-fixtures.txt; TF 2.21 here.)
"""

import os
import shutil

import numpy as np
import tensorflow as tf

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
SIZE = 56
CLASSES = 1001
# (stride, output channels) of the separable blocks: reduced from MobileNet v1's 13.
BLOCKS = [(1, 16), (2, 24), (1, 24), (2, 32), (2, 48)]

v1 = tf.compat.v1


def conv_bn(x, scope, kind, out, stride, rng, quant):
    """conv (or depthwise) + BatchNorm (inference, random statistics) + ReLU6, in `scope`."""
    cin = int(x.shape[-1])
    with v1.variable_scope(scope):
        if kind == "depthwise":
            k = v1.get_variable("depthwise_weights", initializer=rng.normal(
                0, 0.5, (3, 3, cin, 1)).astype("float32"))
            y = tf.nn.depthwise_conv2d(x, k, [1, stride, stride, 1], "SAME", name="depthwise")
            out = cin
        else:
            ksize = 3 if scope.endswith("Conv2d_0") else 1
            k = v1.get_variable("weights", initializer=rng.normal(
                0, (2.0 / (ksize * ksize * cin)) ** 0.5, (ksize, ksize, cin, out)).astype("float32"))
            y = tf.nn.conv2d(x, k, [1, stride, stride, 1], "SAME", name="Conv2D")
        with v1.variable_scope("BatchNorm"):
            gamma = rng.uniform(0.5, 1.5, out).astype("float32")
            beta = rng.normal(0, 0.1, out).astype("float32")
            mean = rng.normal(0, 0.1, out).astype("float32")
            var = rng.uniform(0.5, 1.5, out).astype("float32")
            y = tf.nn.batch_normalization(y, mean, var, beta, gamma, 1e-3, name="batchnorm")
        y = tf.nn.relu6(y, name="Relu6")
        if quant:
            y = tf.quantization.fake_quant_with_min_max_args(y, 0.0, 6.0, name="act_quant")
    return y


def build(x, rng, quant):
    with v1.variable_scope("MobilenetV1"):
        y = conv_bn(x, "MobilenetV1/Conv2d_0", "conv", 8, 2, rng, quant)
        for i, (stride, out) in enumerate(BLOCKS, start=1):
            y = conv_bn(y, f"MobilenetV1/Conv2d_{i}_depthwise", "depthwise", None, stride, rng,
                        quant)
            y = conv_bn(y, f"MobilenetV1/Conv2d_{i}_pointwise", "conv", out, 1, rng, quant)
        with v1.variable_scope("Logits"):
            pooled = tf.nn.avg_pool2d(y, int(y.shape[1]), 1, "VALID", name="AvgPool_1a")
            with v1.variable_scope("Conv2d_1c_1x1"):
                cin = int(pooled.shape[-1])
                k = v1.get_variable("weights", initializer=rng.normal(
                    0, 0.3, (1, 1, cin, CLASSES)).astype("float32"))
                b = v1.get_variable("biases", initializer=rng.normal(
                    0, 0.1, CLASSES).astype("float32"))
                logits = tf.nn.bias_add(tf.nn.conv2d(pooled, k, 1, "SAME", name="Conv2D"), b,
                                        name="BiasAdd")
            if quant:
                logits = tf.quantization.fake_quant_with_min_max_args(logits, -12.0, 12.0,
                                                                      name="logits_quant")
            logits = tf.squeeze(logits, [1, 2], name="SpatialSqueeze")
        probs = tf.nn.softmax(logits, name="Predictions/Softmax")
    return pooled, logits, probs


def convert(quant, x):
    graph = tf.Graph()
    with graph.as_default():
        rng = np.random.default_rng(21)
        inp = v1.placeholder(tf.float32, (1, SIZE, SIZE, 3), name="input")
        scaled = inp / 127.5 - 1.0
        if quant:
            scaled = tf.quantization.fake_quant_with_min_max_args(scaled, -1.0, 1.0,
                                                                  name="input_quant")
        pooled, logits, probs = build(scaled, rng, quant)
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            conv = v1.lite.TFLiteConverter.from_session(sess, [inp], [probs])
            if quant:
                conv.inference_type = tf.uint8
                conv.quantized_input_stats = {"input": (0.0, 1.0)}
            return conv.convert()


def run(model, x):
    """The interpreter's softmax input and average-pool output for each image."""
    it = tf.lite.Interpreter(model_content=model, experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    details = {t["name"]: t for t in it.get_tensor_details()}

    def find(part):
        """The activation named after `part` (not the constants named alike)."""
        names = [n for n, t in details.items()
                 if part in n and len(t["shape"]) >= 2 and t["shape"][0] == 1]
        assert names, (part, sorted(details))
        return details[names[-1]]

    pool, squeeze = find("AvgPool_1a"), find("SpatialSqueeze")
    got = {"logits": [], "features": []}
    for img in x:
        q = img[None]
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            q = np.clip(np.round(q / scale + zero), 0, 255)
        it.set_tensor(inp["index"], q.astype(inp["dtype"]))
        it.invoke()
        for what, t in (("logits", squeeze), ("features", pool)):
            v = it.get_tensor(t["index"]).astype(np.float32)
            if t["dtype"] != np.float32:
                scale, zero = t["quantization"]
                v = (v - zero) * scale
            got[what].append(v.reshape(1, -1))
    return {k: np.concatenate(v) for k, v in got.items()}


def main():
    out = os.path.join(ROOT, "tflite_tf1")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    # Whole pixel values: the uint8 file takes them as they are.
    x = np.round(np.random.default_rng(22).uniform(0, 255, (2, SIZE, SIZE, 3))).astype("float32")
    np.save(os.path.join(out, "input.npy"), np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    for stem, quant in (("float", False), ("uint8", True)):
        model = convert(quant, x)
        name = "model.tflite" if stem == "float" else f"model_{stem}.tflite"
        with open(os.path.join(out, name), "wb") as f:
            f.write(model)
        got = run(model, x)
        for what, v in got.items():
            np.save(os.path.join(out, f"{stem}_{what}.npy"), v)
        print(name, len(model), "bytes; top-1", got["logits"].argmax(1))


if __name__ == "__main__":
    main()
