"""Weights-only files of reduced Keras Applications, for the zoo's `keras_*` entries that
run on Keras' own architecture (zoo/keras_applications.rs): each family built by Keras'
application code with every convolution's (and hidden Dense's) width divided, random
weights and BatchNorm statistics.

The weights are written as the two producers users bring them from: tf_keras (Keras 2)
writes the top model's `.h5` with `save_weights`, under Keras 2's layer names (DenseNet's
`conv1/conv`, MobileNetV3's `expanded_conv/depthwise/BatchNorm`), as Keras Applications'
own files are; Keras 3 writes the model without top as `.weights.h5`. The architecture is
Keras 3's, as the zoo holds it; the outputs are tf_keras' (top) and Keras 3's (no top).

  tests/fixtures/keras_applications/
    <family>.architecture.json.xz  {"top", "notop", "weights"} as the zoo's files
                                   (scripts/make_keras_applications.py)
    <family>_top.h5                tf_keras save_weights (Keras 2 HDF5 layout)
    <family>_checkpoint/model.*    the same as a TensorFlow checkpoint (families in
                                   CHECKPOINTS)
    <family>_notop.weights.h5      Keras 3 save_weights of the model without top (not for
                                   the families in NO_BASE)
    <family>_input.npy             NCHW float32 input (as the entry's preprocessing gives)
    <family>_features.npy          the classifier's input
    <family>_logits.npy            the classifier's output before its softmax
    <family>_notop_features.npy    the model without top, its last map averaged

Usage (Python 3.11, scripts/requirements-tf-fixtures.txt):
  python scripts/make_keras_application_fixtures.py [family ...]
"""
import json
import lzma
import os
import sys
import zlib

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "0")

import numpy as np  # noqa: E402
import keras  # noqa: E402
import tf_keras  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_keras_applications import variables  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                    "keras_applications")
CLASSES = 5


class narrower:
    """While active, every Conv2D, SeparableConv2D and hidden Dense of both Kerases that
    `which(name)` selects is built with its width // k (at least 2); layers whose width is
    the class count keep it. (Layers whose width is read from their input, such as a
    residual branch's projection back, must not be selected twice.)"""

    def __init__(self, k, which=lambda name: True):
        self.k, self.which = k, which

    def __enter__(self):
        self.saved = []
        for lib in (keras, tf_keras):
            for cls, arg in [(lib.layers.Conv2D, "filters"),
                             (lib.layers.SeparableConv2D, "filters"),
                             (lib.layers.Dense, "units")]:
                init = cls.__init__
                self.saved.append((cls, init))

                def patched(layer, width=None, *a, _init=init, _arg=arg, **kw):
                    if width is None:
                        width = kw.pop(_arg)
                    if width != CLASSES and self.which(kw.get("name") or ""):
                        width = max(2, width // self.k)
                    _init(layer, width, *a, **kw)

                cls.__init__ = patched
        return self

    def __exit__(self, *exc):
        for cls, init in reversed(self.saved):
            cls.__init__ = init


# family -> (entry, size, pixels 0..255, narrower, builder(lib, include_top, input_shape))
def efficientnet(lib, top, shape):
    mod = (keras.src.applications.efficientnet if lib is keras
           else tf_keras.src.applications.efficientnet)
    named = {"name" if lib is keras else "model_name": "efficientnetb1"}
    return mod.EfficientNet(0.2, 0.2, 32, 0.2, include_top=top, weights=None,
                            input_shape=shape, classes=CLASSES, **named)


def efficientnet_v2(lib, top, shape):
    mod = (keras.src.applications.efficientnet_v2 if lib is keras
           else tf_keras.src.applications.efficientnet_v2)
    named = {"name" if lib is keras else "model_name": "efficientnetv2-s"}
    return mod.EfficientNetV2(0.1, 0.1, 32, include_top=top, weights=None,
                              input_shape=shape, classes=CLASSES, **named)


def convnext(lib, top, shape):
    mod = (keras.src.applications.convnext if lib is keras
           else tf_keras.src.applications.convnext)
    named = {"name" if lib is keras else "model_name": "convnext_tiny"}
    return mod.ConvNeXt([1, 1, 2, 1], [8, 16, 24, 32], default_size=32, include_top=top,
                        weights=None, input_shape=shape, classes=CLASSES, **named)


def nasnet(lib, top, shape):
    mod = keras.src.applications.nasnet if lib is keras else tf_keras.src.applications.nasnet
    return mod.NASNet(input_shape=shape, penultimate_filters=96, num_blocks=1,
                      stem_block_filters=8, skip_reduction=False, default_size=32,
                      include_top=top, weights=None, classes=CLASSES)


def densenet(lib, top, shape):
    mod = keras.src.applications.densenet if lib is keras else tf_keras.src.applications.densenet
    return mod.DenseNet([1, 2, 2, 1], include_top=top, weights=None, input_shape=shape,
                        classes=CLASSES)


def app(cls, **extra):
    return lambda lib, top, shape: getattr(lib.applications, cls)(
        include_top=top, weights=None, input_shape=shape, classes=CLASSES, **extra)


# Families whose model without top is not kept: their HDF5 files run past 1 MB (every
# dataset costs a few KB of headers), and the base is the top's layers less the head.
NO_BASE = {"resnet50", "resnet50_v2", "inception_v3", "inception_resnet_v2", "nasnet"}

# Families whose top is also written as a TensorFlow checkpoint (tf_keras' `save_weights`
# in TF format: an object graph naming each variable by its Keras layer).
CHECKPOINTS = {"xception", "densenet", "mobilenet_v3_large"}

FAMILIES = {
    "xception": ("keras_xception", 71, False, narrower(32), app("Xception")),
    "vgg19": ("keras_vgg19", 32, False, narrower(32), app("VGG19")),
    # ResNet50's code is ResNet101's and ResNet152's with fewer blocks; likewise V2.
    "resnet50": ("keras_resnet101", 32, False, narrower(32), app("ResNet50")),
    "resnet50_v2": ("keras_resnet152_v2", 32, False, narrower(32), app("ResNet50V2")),
    "inception_v3": ("keras_inception_v3", 75, False, narrower(32), app("InceptionV3")),
    # The residual branches' last convolution (`block35_1_conv`, …) is as wide as the
    # block's input, already narrowed.
    "inception_resnet_v2": ("keras_inception_resnet_v2", 75, False,
                            narrower(64, lambda n: not (n.startswith("block")
                                                        and n.endswith("_conv"))),
                            app("InceptionResNetV2")),
    # DenseNet121's code with blocks of 1, 2, 2 and 1 layers.
    "densenet": ("keras_densenet121", 32, False, narrower(16), densenet),
    "nasnet": ("keras_nasnet_mobile", 32, False, narrower(1), nasnet),
    # Squeeze-excite convolutions are as wide as their input: only the head is narrowed.
    "mobilenet_v3_large": ("keras_mobilenet_v3_large", 32, True,
                           narrower(8, lambda n: n.lower() == "conv_2"),
                           app("MobileNetV3Large", alpha=0.1)),
    "mobilenet_v3_small_minimalistic": ("keras_mobilenet_v3_small_minimalistic", 32, True,
                                        narrower(8, lambda n: n.lower() == "conv_2"),
                                        app("MobileNetV3Small", alpha=0.1, minimalistic=True)),
    "efficientnet": ("keras_efficientnet_b1", 32, True, narrower(1), efficientnet),
    "efficientnet_v2": ("keras_efficientnet_v2_s", 32, True, narrower(1), efficientnet_v2),
    "convnext": ("keras_convnext_tiny", 32, True, narrower(1), convnext),
}


def randomise(model, rng):
    """Random values for every variable by kind (tf_keras model): kernels as initialised,
    biases, BatchNorm and Normalization statistics, LayerNormalization and LayerScale
    parameters drawn so that a wrongly loaded one shows."""
    for layer in model.layers:
        if isinstance(layer, tf_keras.Model):
            randomise(layer, rng)
            continue
        new = []
        for v, w in zip(layer.weights, layer.get_weights()):
            kind = v.name.split("/")[-1].split(":")[0]
            if kind in ("moving_variance", "variance"):
                w = rng.uniform(0.5, 2.0, w.shape)
            elif kind in ("moving_mean", "mean", "beta", "bias"):
                w = rng.normal(0, 0.1, w.shape)
            elif kind == "gamma" or kind.startswith("variable"):
                w = rng.uniform(0.5, 1.5, w.shape)
            new.append(np.asarray(w).astype(w.dtype if kind == "count" else "float32"))
        if new:
            layer.set_weights(new)


def head(model, lib):
    """The classifier layer: the last Dense, or MobileNetV3's 1x1 `Logits` convolution."""
    dense = [l for l in model.layers if isinstance(l, lib.layers.Dense)]
    return dense[-1] if dense else [l for l in model.layers if l.name.lower() == "logits"][0]


def run(model, layer, x, lib):
    """The classifier's input and its output before the softmax (a Dense applies its
    activation itself: the logits are computed from its kernel)."""
    m = lib.Model(model.inputs, [layer.input, layer.output])
    f, l = m(x, training=False)
    flat = lambda t: np.asarray(t).reshape(len(x), -1).astype("float32")
    if isinstance(layer, lib.layers.Dense):
        kernel, bias = layer.get_weights()
        return flat(f), (flat(f) @ kernel + bias).astype("float32")
    return flat(f), flat(l)


def make(family):
    entry, size, pixels, narrow, build = FAMILIES[family]
    rng = np.random.default_rng(zlib.crc32(family.encode()))
    keras.utils.set_random_seed(0)
    tf_keras.utils.set_random_seed(0)
    shape = (size, size, 3)
    # Each Keras 3 model is built in a fresh session, so that the layers Keras names itself
    # (`conv2d_4`) are named alike with and without top, as in the zoo's architectures.
    with narrow:
        k2 = build(tf_keras, True, shape)
        keras.backend.clear_session()
        k3 = build(keras, True, shape)
        keras.backend.clear_session()
        k3_base = build(keras, False, None)
    randomise(k2, rng)
    arch = {"top": json.loads(k3.to_json()), "notop": json.loads(k3_base.to_json()),
            "weights": {"top": variables(k3), "notop": variables(k3_base)}}
    text = json.dumps(arch, separators=(",", ":"), sort_keys=True).encode()
    with open(os.path.join(ROOT, f"{family}.architecture.json.xz"), "wb") as f:
        f.write(lzma.compress(text, preset=9 | lzma.PRESET_EXTREME))
    k2.save_weights(os.path.join(ROOT, f"{family}_top.h5"))
    if family in CHECKPOINTS:
        k2.save_weights(os.path.join(ROOT, f"{family}_checkpoint", "model"), save_format="tf")
    # Keras 3's model holds the same variables in the same order; the base takes its
    # layers' by name.
    k3.set_weights(k2.get_weights())
    if family not in NO_BASE:
        top_layers = {layer.name for layer in k3.layers}
        for layer in k3_base.layers:
            if not layer.weights:
                continue
            if layer.name in top_layers:
                layer.set_weights(k3.get_layer(layer.name).get_weights())
            else:
                # ConvNeXt's base ends in a LayerNormalization that the top has not.
                layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32")
                                   for w in layer.get_weights()])
        k3_base.save_weights(os.path.join(ROOT, f"{family}_notop.weights.h5"))
    x = (rng.uniform(0, 255, (2,) + shape) if pixels
         else rng.uniform(-1, 1, (2,) + shape)).astype("float32")
    features, logits = run(k2, head(k2, tf_keras), x, tf_keras)
    f3, l3 = run(k3, head(k3, keras), x, keras)
    assert np.allclose(f3, features, atol=1e-4) and np.allclose(l3, logits, atol=1e-4), family
    np.save(os.path.join(ROOT, f"{family}_input.npy"),
            np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    np.save(os.path.join(ROOT, f"{family}_features.npy"), features)
    np.save(os.path.join(ROOT, f"{family}_logits.npy"), logits)
    if family not in NO_BASE:
        base = np.asarray(k3_base(x, training=False)).mean(axis=(1, 2)).astype("float32")
        np.save(os.path.join(ROOT, f"{family}_notop_features.npy"), base)
    kb = sum(os.path.getsize(os.path.join(ROOT, f)) for f in os.listdir(ROOT)
             if f.startswith(family + "_") or f.startswith(family + ".")) // 1024
    print(f"{family} ({entry}): {k2.count_params()} parameters, {kb} KB, features "
          f"{features.shape}")


def main():
    os.makedirs(ROOT, exist_ok=True)
    for family in sys.argv[1:] or FAMILIES:
        make(family)


if __name__ == "__main__":
    main()
