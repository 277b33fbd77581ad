"""Keras Applications as full models, for running a Keras file of any Application (a user's
fine-tuned model saved with `model.save`) as its own graph: Keras' own application code,
reduced, with random weights (random biases, BatchNorm statistics, LayerNormalization and
LayerScale parameters), saved by Keras 3 as `.keras` (its zip members then deflated, which
Keras writes stored) and ConvNeXt also as a legacy `.h5`, with Keras' own outputs.

  tests/fixtures/keras_apps/
    xception.keras        keras.applications.Xception, convolution widths / 16, 71x71
    inception_v3.keras    keras.applications.InceptionV3, widths / 16, 75x75
    resnet50v2.keras      keras.applications.ResNet50V2 (pre-activation), widths / 32
    densenet121.keras     keras.applications.DenseNet121, widths / 16
    nasnet.keras          keras.applications NASNet (penultimate_filters 96, one block)
    mobilenet_v3_small.keras
                          MobileNetV3Small(alpha=0.1): Rescaling, hard-swish and hard-sigmoid
                          written as Keras 3 operations on tensors (`x + 3.0`, `x * (1/6)`)
    efficientnet_v2.keras EfficientNetV2 (width and depth coefficients 0.1): fused MBConv
    convnext.keras, convnext.h5
                          ConvNeXt (depths 1-1-2-1, widths 8-32): Normalization input,
                          LayerNormalization over channels, Dense on maps, LayerScale, GELU,
                          a nested Sequential stem
    custom_scale.keras    InceptionResNetV2's CustomScaleLayer (x[0] + x[1] * scale) in a
                          small residual network
    tf_ops_keras2.h5      a Keras 2 (tf_keras) model written with TensorFlow operations on
                          tensors, TFOpLambda layers in its config (`x / 255.0`, `a + b`,
                          `tf.nn.relu(x + 3.0) * (1 / 6)`, as tf.keras' MobileNetV3 writes
                          its hard sigmoid)
    <name>_input.npy      NCHW float32 input (pixels 0..255 for models that rescale their
                          own input, else -1..1)
    <name>_features.npy   the classifier's input
    <name>_logits.npy     the last Dense's output before its softmax (MobileNetV3: the 1x1
                          `Logits` convolution's, flattened)

"widths / k": the application's own code, with every Conv2D's and SeparableConv2D's filter
count divided by k while the model is built (the topology, layer names and layer types are
Keras'); the classifier keeps its class count.

Usage (Python 3.11, scripts/requirements-tf-fixtures.txt, which has tf_keras):
  python scripts/make_keras_app_fixtures.py
"""
import os
import sys
import zipfile
import zlib

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "0")

import numpy as np
import keras
from keras.src.legacy.saving import legacy_h5_format

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_keras_graph_fixtures import outputs, randomise  # noqa: E402
# Widths divided while Keras' application code builds a model (its hidden Dense layers
# too; these applications have none).
from make_keras_application_fixtures import narrower  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                    "keras_apps")
CLASSES = 5


def randomise_all(model, rng):
    """randomise() of make_keras_graph_fixtures, and LayerNormalization's and LayerScale's
    parameters (Keras starts them at 1, 0 and 1e-6, which hide a wrongly loaded one)."""
    randomise(model, rng)
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            randomise_all(layer, rng)
        elif isinstance(layer, keras.layers.LayerNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") if i == 0 else
                               rng.normal(0, 0.1, w.shape).astype("float32")
                               for i, w in enumerate(layer.get_weights())])
        elif type(layer).__name__ == "LayerScale":
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32")
                               for w in layer.get_weights()])


def head_outputs(model, x):
    """The classifier's input and pre-activation output: the last Dense's, or MobileNetV3's
    1x1 `logits` convolution's (on a 1x1 map), flattened."""
    dense = [l for l in model.layers if isinstance(l, keras.layers.Dense)]
    if dense:
        return outputs(model, x, dense[-1])
    head = model.get_layer("logits")
    f, l = keras.Model(model.inputs, [head.input, head.output])(x, training=False)
    flat = lambda t: np.asarray(keras.ops.convert_to_numpy(t)).reshape(len(x), -1)
    return flat(f), flat(l)


def deflated(path):
    """Keras writes the .keras zip uncompressed; the same members deflated keep the
    fixture small (HDF5's headers and padding compress well)."""
    with zipfile.ZipFile(path) as z:
        members = [(i.filename, z.read(i)) for i in z.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name, data in members:
            z.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)), data,
                       compress_type=zipfile.ZIP_DEFLATED)


def custom_scale():
    from keras.src.applications.inception_resnet_v2 import CustomScaleLayer
    L = keras.layers
    inp = keras.Input((16, 16, 3), name="input")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    up = L.Conv2D(8, 1, use_bias=True, name="block_up")(x)
    x = CustomScaleLayer(0.17, name="block_scale")([x, up])
    x = L.Activation("relu", name="block_ac")(x)
    x = L.GlobalAveragePooling2D(name="avg_pool")(x)
    out = L.Dense(CLASSES, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name="custom_scale")


def build(name):
    """(model, input size, whether it takes 0..255 pixels)."""
    A = keras.applications
    common = dict(weights=None, classes=CLASSES)
    if name == "xception":
        with narrower(16):
            return A.Xception(input_shape=(71, 71, 3), **common), 71, False
    if name == "inception_v3":
        with narrower(16):
            return A.InceptionV3(input_shape=(75, 75, 3), **common), 75, False
    if name == "resnet50v2":
        with narrower(32):
            return A.ResNet50V2(input_shape=(32, 32, 3), **common), 32, False
    if name == "densenet121":
        with narrower(16):
            return A.DenseNet121(input_shape=(32, 32, 3), **common), 32, False
    if name == "nasnet":
        from keras.src.applications.nasnet import NASNet
        return NASNet(input_shape=(32, 32, 3), penultimate_filters=96, num_blocks=1,
                      stem_block_filters=8, skip_reduction=False, default_size=32,
                      name="nasnet", **common), 32, False
    if name == "mobilenet_v3_small":
        return A.MobileNetV3Small(input_shape=(32, 32, 3), alpha=0.1, **common), 32, True
    if name == "efficientnet_v2":
        from keras.src.applications.efficientnet_v2 import EfficientNetV2
        return EfficientNetV2(0.1, 0.1, 32, name="efficientnetv2-b0", input_shape=(32, 32, 3),
                              **common), 32, True
    if name == "convnext":
        from keras.src.applications.convnext import ConvNeXt
        return ConvNeXt([1, 1, 2, 1], [8, 16, 24, 32], default_size=32, name="convnext_tiny",
                        input_shape=(32, 32, 3), **common), 32, True
    if name == "custom_scale":
        return custom_scale(), 16, False
    raise ValueError(name)


def keras2(name):
    """The Keras 2 (tf_keras) models: (model, input size, whether it takes 0..255 pixels)."""
    import tf_keras as k
    L = k.layers
    inp = k.Input((16, 16, 3), name="image")
    x = inp / 255.0
    x = L.Conv2D(6, 3, name="conv1")(x)
    y = L.Conv2D(6, 3, padding="same", name="conv2")(x)
    z = x + y
    z = k.activations.relu(z + 3.0) * (1 / 6)
    z = L.GlobalAveragePooling2D(name="pool")(z)
    out = L.Dense(CLASSES, name="predictions")(z)
    return k.Model(inp, out, name="tf_ops"), 16, True


def randomise_by_name(model, rng):
    """Random BatchNorm statistics, scales and biases by variable name (tf_keras layers)."""
    for layer in model.layers:
        new = []
        for v, w in zip(layer.weights, layer.get_weights()):
            kind = v.name.split("/")[-1].split(":")[0]
            new.append({
                "moving_variance": lambda: rng.uniform(0.5, 2.0, w.shape),
                "moving_mean": lambda: rng.normal(0, 0.1, w.shape),
                "gamma": lambda: rng.uniform(0.5, 1.5, w.shape),
                "beta": lambda: rng.normal(0, 0.1, w.shape),
                "bias": lambda: rng.normal(0, 0.1, w.shape),
            }.get(kind, lambda: w)().astype("float32"))
        if new:
            layer.set_weights(new)


def save_keras2(name):
    import tf_keras as k
    k.utils.set_random_seed(0)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    model, size, pixels = keras2(name)
    randomise_by_name(model, rng)
    x = (rng.uniform(0, 255, (2, size, size, 3)) if pixels
         else rng.uniform(-1, 1, (2, size, size, 3))).astype("float32")
    model.save(os.path.join(ROOT, f"{name}.h5"), save_format="h5")
    head = [l for l in model.layers if isinstance(l, k.layers.Dense)][-1]
    f, l = k.Model(model.inputs, [head.input, head.output])(x, training=False)
    features = np.asarray(f).reshape(len(x), -1)
    logits = np.asarray(l).reshape(len(x), -1)
    np.save(os.path.join(ROOT, f"{name}_input.npy"),
            np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    np.save(os.path.join(ROOT, f"{name}_features.npy"), features.astype("float32"))
    np.save(os.path.join(ROOT, f"{name}_logits.npy"), logits.astype("float32"))
    size_kb = os.path.getsize(os.path.join(ROOT, f"{name}.h5")) / 1024
    print(f"{name}: {model.count_params()} parameters, {size_kb:.0f} KB (Keras 2)")


KERAS2 = ["tf_ops_keras2"]

NAMES = ["xception", "inception_v3", "resnet50v2", "densenet121", "nasnet",
         "mobilenet_v3_small", "efficientnet_v2", "convnext",
         "custom_scale"]


def main():
    os.makedirs(ROOT, exist_ok=True)
    for name in sys.argv[1:] or NAMES + KERAS2:
        if name in KERAS2:
            save_keras2(name)
            continue
        keras.utils.set_random_seed(0)
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        model, size, pixels = build(name)
        randomise_all(model, rng)
        x = (rng.uniform(0, 255, (2, size, size, 3)) if pixels
             else rng.uniform(-1, 1, (2, size, size, 3))).astype("float32")
        model.save(os.path.join(ROOT, f"{name}.keras"))
        deflated(os.path.join(ROOT, f"{name}.keras"))
        if name == "convnext":
            legacy_h5_format.save_model_to_hdf5(model, os.path.join(ROOT, f"{name}.h5"))
        features, logits = head_outputs(model, x)
        full = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))
        e = np.exp(logits - logits.max(1, keepdims=True))
        assert np.allclose(full, e / e.sum(1, keepdims=True), atol=1e-5), name
        np.save(os.path.join(ROOT, f"{name}_input.npy"),
                np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        np.save(os.path.join(ROOT, f"{name}_features.npy"), features.astype("float32"))
        np.save(os.path.join(ROOT, f"{name}_logits.npy"), logits.astype("float32"))
        size_kb = os.path.getsize(os.path.join(ROOT, f"{name}.keras")) / 1024
        print(f"{name}: {model.count_params()} parameters, {size_kb:.0f} KB, features "
              f"{features.shape}, logits |max| {np.abs(logits).max():.3g}")


if __name__ == "__main__":
    main()
