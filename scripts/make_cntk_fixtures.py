"""CNTK models for running CNTK files as their own graph: small networks built with CNTK's
own layers API, random weights and non-trivial BatchNorm statistics, each saved by CNTK 2.7
in both of its formats, with CNTK's own outputs.

  tests/fixtures/cntk/
    <name>.model        v2 (`Function.save`: a protobuf Dictionary)
    <name>_v1.dnn       the legacy v1 format (`cntk_py.save_as_legacy_model`)
    <name>_input.npy    NCHW float32 input (what the model's input variable takes)
    <name>_features.npy the classifier's input
    <name>_logits.npy   the classifier's output (the model's output)

  convnet   Convolution (3x3 "same" without bias, 4x4 stride 2 "same" = an even kernel,
            3x3 "same" in 4 groups, 3x3 "valid"), reflection Pad, spatial BatchNormalization, ReLU / ELU / LeakyReLU,
            MaxPooling 3x3 stride 2 "same", AveragePooling 2x2, Dense on a 2x2 map (Times of
            rank 3), Dense tanh, non-spatial BatchNormalization, Dropout, Dense head
  plain     what CNTK's v1 format holds (no ELU): 3x3 "same" convolution and BatchNorm,
            MaxPooling 3x3 stride 2 "same" on an odd size, 4x4 stride 2 "same", AveragePooling
            3x3 "same" counting the padding, a 1x1 stride-3 "same" convolution (its window
            starts inside the input), Dense on a map, per-element BatchNorm, Dropout, Dense
  resnet    a ResNet: conv + BatchNorm + ReLU, two residual blocks (the second strided with
            a 1x1 projection), a Splice of two branches, AveragePooling 3x3 "same" (padding
            not counted), GlobalAveragePooling, sigmoid * x, Dense head

  shapes    Slice (one axis, and two), TransposeAxes, Reshape, ReduceElements on
            activations, saved as v1 too
  grouped   a convolution in 4 groups, saved as v1 too (which leaves the groups out)
  lstm.model  a recurrent text model (LSTM), which is not an image model

  real/     CNTK's outputs for the real files in ../shared/data/cntk (references only; the
            files stay there): <file>_input.npy, <file>_output.npy

Usage (CNTK 2.7 needs Python 3.6: see ../shared/FORMATS.md, section CNTK):
  LD_LIBRARY_PATH=$PWD/mpishim venv36/bin/python scripts/make_cntk_fixtures.py
"""
import os

import numpy as np
import cntk as C
from cntk.layers import (AveragePooling, BatchNormalization, Convolution2D, Dense, Dropout,
                         GlobalAveragePooling, MaxPooling)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "tests", "fixtures", "cntk")
SHARED = os.path.join(HERE, "..", "..", "shared", "data", "cntk")


def randomise(model, rng):
    """Random weights, biases, BatchNorm scales and running statistics (positive variances
    and a sample count, as after training)."""
    for p in model.parameters:
        scale = 1.0 / np.sqrt(max(1, np.prod(p.shape[1:]) if len(p.shape) > 1 else 4))
        v = rng.standard_normal(p.shape) * scale
        if p.name == "scale":
            v = 0.5 + rng.random_sample(p.shape)
        p.value = v.astype(np.float32)
    for c in model.constants:
        if c.name == "aggregate_mean":
            c.value = (rng.standard_normal(c.shape) * 0.3).astype(np.float32)
        elif c.name == "aggregate_variance":
            c.value = (0.4 + rng.random_sample(c.shape)).astype(np.float32)
        elif c.name == "aggregate_count":
            c.value = np.full(c.shape, 1000.0, np.float32)


def convnet(x):
    h = Convolution2D((3, 3), 8, pad=True, bias=False, name="conv1")(x)
    h = C.relu(BatchNormalization(map_rank=1, name="bn1")(h))
    h = MaxPooling((3, 3), strides=2, pad=True, name="pool1")(h)
    h = Convolution2D((4, 4), 12, strides=2, pad=True, activation=C.elu, name="conv2")(h)
    # The layers API has no groups: CNTK's own convolution op does.
    w = C.parameter((12, 3, 3, 3), init=C.glorot_uniform(), name="W")
    h = C.convolution(w, h, auto_padding=[False, True, True], groups=4, name="grouped")
    h = C.pad(h, pattern=[(0, 0), (1, 2), (2, 1)], mode=C.REFLECT_PAD, name="pad")
    h = AveragePooling((2, 2), strides=2, name="pool2")(h)
    h = Convolution2D((3, 3), 16, pad=False, activation=C.leaky_relu, name="conv3")(h)
    h = Dense(24, activation=C.tanh, name="fc1")(h)
    h = BatchNormalization(name="bn_fc")(h)
    features = Dropout(0.3, name="drop")(h)
    return features, Dense(5, name="classifier")(features)


def plain(x):
    h = Convolution2D((3, 3), 8, pad=True, bias=False, name="conv1")(x)
    h = C.relu(BatchNormalization(map_rank=1, name="bn1")(h))
    h = MaxPooling((3, 3), strides=2, pad=True, name="pool1")(h)
    h = Convolution2D((4, 4), 12, strides=2, pad=True, activation=C.relu, name="conv2")(h)
    h = C.pooling(h, C.AVG_POOLING, (3, 3), strides=(1, 1), auto_padding=[True],
                  include_pad=True, name="pool2")
    h = Convolution2D((1, 1), 10, strides=3, pad=True, activation=C.sigmoid, name="conv3")(h)
    h = Dense(24, activation=C.tanh, name="fc1")(h)
    h = BatchNormalization(name="bn_fc")(h)
    features = Dropout(0.3, name="drop")(h)
    return features, Dense(5, name="classifier")(features)


def shapes(x):
    h = Convolution2D((3, 3), 8, pad=True, activation=C.relu, name="conv1")(x)
    h = C.slice(h, 0, 2, 8, name="channels")
    h = C.transpose(h, (0, 2, 1), name="swap")
    h = C.slice(h, [1, 2], [1, 0], [11, 12], name="window")
    h = C.reshape(h, (6, 120), name="rows")
    h = C.reduce_mean(h, axis=1, name="mean")
    features = C.reshape(h, (6,), name="flat")
    return features, Dense(3, name="classifier")(features)


def grouped(x):
    h = Convolution2D((3, 3), 8, pad=True, activation=C.relu, name="conv1")(x)
    w = C.parameter((8, 2, 3, 3), init=C.glorot_uniform(), name="W")
    h = C.relu(C.convolution(w, h, auto_padding=[False, True, True], groups=4, name="grouped"))
    features = GlobalAveragePooling(name="gap")(h)
    return features, Dense(3, name="classifier")(features)


def resnet(x):
    def conv_bn(h, k, n, strides=1, relu=True, name=""):
        h = Convolution2D((k, k), n, strides=strides, pad=True, bias=False, name=name)(h)
        h = BatchNormalization(map_rank=1, name=name + "_bn")(h)
        return C.relu(h) if relu else h

    h = conv_bn(x, 3, 8, name="stem")
    r = conv_bn(conv_bn(h, 3, 8, name="b1c1"), 3, 8, relu=False, name="b1c2")
    h = C.relu(h + r)
    r = conv_bn(conv_bn(h, 3, 16, strides=2, name="b2c1"), 3, 16, relu=False, name="b2c2")
    s = conv_bn(h, 1, 16, strides=2, relu=False, name="b2proj")
    h = C.relu(r + s)
    a = conv_bn(h, 1, 6, name="branch_a")
    b = AveragePooling((3, 3), strides=1, pad=True, name="branch_b")(h)
    h = C.splice(a, b, axis=0, name="concat")
    h = h * C.sigmoid(h)
    features = GlobalAveragePooling(name="gap")(h)
    return features, Dense(4, name="classifier")(features)


def make(name, build, channels, size, rng, v1=True, reload_v1=True):
    x = C.input_variable((channels, size, size), name="image")
    features, logits = build(x)
    randomise(logits, rng)
    logits.save(os.path.join(ROOT, name + ".model"))
    files = [name + ".model"]
    if v1:
        C.cntk_py.save_as_legacy_model(logits, os.path.join(ROOT, name + "_v1.dnn"))
        files.append(name + "_v1.dnn")
    data = rng.standard_normal((2, channels, size, size)).astype(np.float32)
    out = C.combine([features, logits]).eval({x: data})
    by_name = {v.uid: out[v] for v in out}
    np.save(os.path.join(ROOT, name + "_input.npy"), data)
    feats = np.asarray(by_name[features.output.uid], np.float32).reshape(2, -1)
    np.save(os.path.join(ROOT, name + "_features.npy"), feats)
    np.save(os.path.join(ROOT, name + "_logits.npy"),
            np.asarray(by_name[logits.output.uid], np.float32).reshape(2, -1))
    # Both files must load back in CNTK and give the same outputs.
    for f in files if reload_v1 else files[:1]:
        m = C.load_model(os.path.join(ROOT, f))
        got = np.asarray(m.eval({m.arguments[0]: data}), np.float32).reshape(2, -1)
        want = np.load(os.path.join(ROOT, name + "_logits.npy"))
        assert np.abs(got - want).max() < 1e-5, (f, np.abs(got - want).max())
    print(name, "features", feats.shape, "logits", by_name[logits.output.uid].shape)


def recurrent():
    """A text model (not an image model, which retrain must refuse by name): a sequence of
    vectors through an LSTM recurrence and a Dense layer."""
    from cntk.layers import LSTM, Recurrence
    x = C.sequence.input_variable(8, name="tokens")
    model = Dense(3, name="classifier")(C.sequence.last(Recurrence(LSTM(4))(x)))
    model.save(os.path.join(ROOT, "lstm.model"))


def real_references(rng):
    """CNTK's outputs for the real files on real images: the two MNIST digits (grey 0..255)
    for mnist_conv.cmf; for the CIFAR-10 models, two photographs minus 128 (ConvNet, as it
    was trained) and as they are (ResNet-20)."""
    out = os.path.join(ROOT, "real")
    os.makedirs(out, exist_ok=True)
    from PIL import Image
    digits = np.stack([
        np.asarray(Image.open(os.path.join(SHARED, f)).convert("L"), np.float32)[None]
        for f in ["sample_4.bmp", "sample_9.bmp"]])
    # Two real photographs (an ant, a bee), 32x32, BGR 0..255 as CNTK's image reader gives.
    photos = os.path.join(SHARED, "..", "hymenoptera_data", "val")
    cifar = np.stack([
        np.asarray(Image.open(os.path.join(photos, f)).convert("RGB").resize(
            (32, 32), Image.BILINEAR), np.float32)[:, :, ::-1].transpose(2, 0, 1)
        for f in ["ants/10308379_1b6c72e180.jpg", "bees/1032546534_06907fe3b3.jpg"]])
    for f, data in [("mnist_conv.cmf", digits), ("ConvNet_CIFAR10_DataAug_13.dnn", cifar - 128),
                    ("ResNet20_CIFAR10_DataAug.dnn", cifar),
                    ("batch.norm.no.sample.count.v2.bin", None)]:
        path = os.path.join(SHARED, f)
        if not os.path.exists(path):
            print("skipped (absent):", path)
            continue
        m = C.load_model(path)
        args = m.arguments
        image = [a for a in args if len(a.shape) == 3][0]
        if data is None:
            data = rng.standard_normal((2,) + image.shape).astype(np.float32)
        feed = {image: data}
        # A training graph's root combines the model's output with its criteria: the
        # model's is the first that needs the image alone.
        output = [o for o in m.outputs
                  if [a.uid for a in C.combine([o]).arguments] == [image.uid]][0]
        _, values = m.forward(feed, [output])
        got = values[output]
        got = np.asarray(got, np.float32).reshape(2, -1)
        np.save(os.path.join(out, f + "_input.npy"), data.astype(np.float32))
        np.save(os.path.join(out, f + "_output.npy"), got)
        print(f, [a.shape for a in args], "->", got.shape, "argmax", got.argmax(1))


def main():
    os.makedirs(ROOT, exist_ok=True)
    rng = np.random.RandomState(0)
    # CNTK 2.7 cannot load back the ELU it writes in the v1 format: v2 only.
    make("convnet", convnet, 3, 36, rng, v1=False)
    make("plain", plain, 3, 33, rng)
    make("resnet", resnet, 3, 20, rng)
    # The v1 format does not store a convolution's groups: CNTK 2.7 cannot load its own
    # file back (a reader infers them from the kernel); the v2 run is the reference.
    make("grouped", grouped, 3, 12, rng, reload_v1=False)
    # CNTK 2.7 cannot load back the transpose it writes in the v1 format either.
    make("shapes", shapes, 3, 12, rng, reload_v1=False)
    recurrent()
    real_references(rng)


if __name__ == "__main__":
    main()
