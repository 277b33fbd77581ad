"""Keras full models of custom networks, for running a Keras file as its own graph: small
networks with random weights (random biases and BatchNorm statistics), saved by two
producers, with Keras' own outputs.

  tests/fixtures/keras_graph/
    cnn.keras, cnn.h5     a plain CNN (Sequential: Rescaling, Conv2D, BatchNormalization,
                          MaxPooling2D, LeakyReLU, AveragePooling2D "same", Flatten of a 5x5
                          map, Dropout, Dense elu, Dense softmax) by Keras 3
    cnn_keras2.h5         the same network and weights saved by Keras 2 (tf_keras)
    nested.keras, nested.h5
                          a transfer model: a Functional base (ZeroPadding2D, strided Conv2D,
                          DepthwiseConv2D, ReLU(6), Add) used as a layer of another model
                          with a Rescaling input, GlobalAveragePooling2D, Dropout, Dense
    residual.keras, residual.h5
                          Normalization (mean/variance in the config), swish, SeparableConv2D
                          with depth multiplier 2, BatchNormalization without scale, PReLU,
                          gelu, hard_sigmoid, MaxPooling2D "same", Concatenate, Add, a
                          squeeze-excitation Multiply, Cropping2D, ELU, Reshape, Softmax,
                          GlobalMaxPooling2D
    <name>_input.npy      NCHW float32 input (what the model's first layer takes)
    <name>_features.npy   the classifier's input
    <name>_logits.npy     the last Dense's output before its activation

Usage (Python 3.11, scripts/requirements-tf-fixtures.txt plus tf_keras):
  python scripts/make_keras_graph_fixtures.py
"""
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "0")

import numpy as np
import keras
from keras.src.legacy.saving import legacy_h5_format

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                    "keras_graph")


def randomise(model, rng):
    """Random biases, BatchNorm statistics and PReLU slopes (Keras starts them at 0 or 1,
    which would leave a wrongly loaded one unnoticed); nested models too."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            randomise(layer, rng)
            continue
        w = layer.get_weights()
        if not w:
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            shapes = [a.shape for a in w]
            new = []
            names = [v.path.split("/")[-1] for v in layer.weights]
            for name, s in zip(names, shapes):
                new.append({
                    "gamma": lambda: rng.uniform(0.5, 1.5, s),
                    "beta": lambda: rng.normal(0, 0.1, s),
                    "moving_mean": lambda: rng.normal(0, 0.1, s),
                    "moving_variance": lambda: rng.uniform(0.5, 2.0, s),
                }[name]().astype("float32"))
            layer.set_weights(new)
        elif isinstance(layer, keras.layers.PReLU):
            layer.set_weights([rng.uniform(0.05, 0.4, w[0].shape).astype("float32")])
        elif getattr(layer, "use_bias", False):
            w[-1] = rng.normal(0, 0.1, w[-1].shape).astype("float32")
            layer.set_weights(w)


def cnn(k, keras2=False):
    """The plain CNN, from Keras 3 (`k` = keras) or Keras 2 (`k` = tf_keras)."""
    L = k.layers
    slope = dict(alpha=0.1) if keras2 else dict(negative_slope=0.1)
    return k.Sequential([
        k.Input((24, 24, 3)),
        L.Rescaling(1 / 127.5, offset=-1, name="scale"),
        L.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
        L.BatchNormalization(name="bn1"),
        L.MaxPooling2D(2, name="pool1"),
        L.Conv2D(16, 3, strides=2, use_bias=False, name="conv2"),
        L.LeakyReLU(name="leaky", **slope),
        L.AveragePooling2D(2, padding="same", name="pool2"),
        L.Flatten(name="flatten"),
        L.Dropout(0.3, name="drop"),
        L.Dense(32, activation="elu", name="fc"),
        L.Dense(5, activation="softmax", name="predictions"),
    ], name="plain_cnn")


def nested():
    L = keras.layers
    inp = keras.Input((32, 32, 3), name="image")
    x = L.ZeroPadding2D(((0, 1), (0, 1)), name="stem_pad")(inp)
    x = L.Conv2D(8, 3, strides=2, use_bias=False, name="stem_conv")(x)
    x = L.BatchNormalization(epsilon=1e-3, momentum=0.999, name="stem_bn")(x)
    stem = L.ReLU(6.0, name="stem_relu")(x)
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(stem)
    x = L.BatchNormalization(name="dw_bn")(x)
    x = L.ReLU(6.0, name="dw_relu")(x)
    x = L.Conv2D(8, 1, use_bias=False, name="project")(x)
    x = L.BatchNormalization(name="project_bn")(x)
    x = L.Add(name="add")([stem, x])
    x = L.Conv2D(16, 1, name="expand")(x)
    x = L.Activation("relu6", name="out_relu")(x)
    base = keras.Model(inp, x, name="base")

    inp = keras.Input((32, 32, 3), name="pixels")
    x = L.Rescaling(1 / 255.0, name="to_unit")(inp)
    x = base(x, training=False)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    x = L.Dropout(0.2, name="drop")(x)
    out = L.Dense(3, name="head")(x)
    return keras.Model(inp, out, name="transfer")


def residual():
    L = keras.layers
    inp = keras.Input((24, 24, 3), name="input")
    x = L.Normalization(mean=[0.1, -0.2, 0.3], variance=[0.5, 2.0, 1.5], name="norm")(inp)
    x = L.Conv2D(8, 3, padding="same", activation="swish", name="conv1")(x)
    s = L.SeparableConv2D(12, 3, padding="same", depth_multiplier=2, name="sep")(x)
    s = L.BatchNormalization(scale=False, name="sep_bn")(s)
    s = L.PReLU(shared_axes=[1, 2], name="prelu")(s)
    a = L.Conv2D(6, 1, activation="gelu", name="branch_a")(s)
    b = L.MaxPooling2D(3, strides=1, padding="same", name="branch_pool")(s)
    b = L.Conv2D(6, 1, activation="hard_sigmoid", name="branch_b")(b)
    c = L.Concatenate(name="concat")([a, b])
    r = L.Conv2D(12, 1, name="shortcut")(x)
    y = L.Add(name="add")([c, r])
    g = L.GlobalAveragePooling2D(keepdims=True, name="se_pool")(y)
    g = L.Conv2D(12, 1, activation="sigmoid", name="se_gate")(g)
    y = L.Multiply(name="se")([y, g])
    y = L.Cropping2D(((1, 2), (2, 1)), name="crop")(y)
    y = L.ELU(name="elu")(y)
    y = L.Conv2D(16, 3, strides=2, name="conv2")(y)
    y = L.Reshape((10, 10 * 16), name="rows")(y)
    y = L.Reshape((10, 10, 16), name="map")(y)
    f = L.GlobalMaxPooling2D(name="features")(y)
    z = L.Dense(4, name="head")(f)
    out = L.Softmax(name="probs")(z)
    return keras.Model(inp, out, name="residual")


def last_dense(model):
    return [l for l in model.layers if isinstance(l, keras.layers.Dense)][-1]


def outputs(model, x, dense):
    """The classifier's input and its pre-activation output, computed by Keras."""
    features = keras.Model(model.inputs, dense.input)(x, training=False)
    features = np.asarray(keras.ops.convert_to_numpy(features))
    kernel, bias = dense.get_weights()
    return features, features @ kernel + bias


def save(name, model, x, keras2_model=None):
    os.makedirs(ROOT, exist_ok=True)
    model.save(os.path.join(ROOT, f"{name}.keras"))
    legacy_h5_format.save_model_to_hdf5(model, os.path.join(ROOT, f"{name}.h5"))
    features, logits = outputs(model, x, last_dense(model))
    # The whole model agrees: the logits' softmax (or the logits) is its output.
    full = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))
    e = np.exp(logits - logits.max(1, keepdims=True))
    assert np.allclose(full, logits, atol=1e-5) or np.allclose(full, e / e.sum(1, keepdims=True),
                                                               atol=1e-5)
    if keras2_model is not None:
        keras2_model.set_weights(model.get_weights())
        keras2_model.save(os.path.join(ROOT, f"{name}_keras2.h5"), save_format="h5")
        k2 = np.asarray(keras2_model(x, training=False))
        assert np.allclose(k2, full, atol=1e-5), np.abs(k2 - full).max()
    np.save(os.path.join(ROOT, f"{name}_input.npy"), np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    np.save(os.path.join(ROOT, f"{name}_features.npy"), features.astype("float32"))
    np.save(os.path.join(ROOT, f"{name}_logits.npy"), logits.astype("float32"))
    print(name, features.shape, logits.shape, model.count_params())


def main():
    import tf_keras
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)

    m = cnn(keras)
    randomise(m, rng)
    tf_keras.utils.set_random_seed(0)
    save("cnn", m, rng.uniform(0, 255, (2, 24, 24, 3)).astype("float32"),
         keras2_model=cnn(tf_keras, keras2=True))

    m = nested()
    randomise(m, rng)
    save("nested", m, rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32"))

    m = residual()
    randomise(m, rng)
    save("residual", m, rng.uniform(-1, 1, (2, 24, 24, 3)).astype("float32"))


if __name__ == "__main__":
    main()
