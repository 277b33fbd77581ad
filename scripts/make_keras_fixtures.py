"""Keras fixtures for retrain's parity tests: reduced Keras Applications models with random
weights and randomised BatchNorm statistics, saved as Keras files, with Keras' own outputs.

Runs Keras 3 (any backend; torch here: KERAS_BACKEND=torch) — the Keras layers define the
semantics (TF "SAME" padding, ZeroPadding2D, BatchNorm epsilon 1e-3), whatever the backend.

  tests/fixtures/keras_mobilenet_v2/
    weights.h5          Keras 2 weights file (root attr layer_names, Layer/Layer/kernel:0),
                        the layout of Keras Applications' *_tf_dim_ordering_tf_kernels.h5
    model.h5            full-model legacy file (weights under /model_weights)
    model.keras         Keras 3 archive (config.json + model.weights.h5: /layers/<class>_N/vars)
  tests/fixtures/keras_mobilenet/  MobileNet v1 (alpha 0.25, odd 67x67 input), weights.h5 only
  tests/fixtures/keras_resnet/     ResNet50's code with 1 block per stage, width 8
  tests/fixtures/keras_vgg/        VGG16's layers at reduced widths, with the top
  tests/fixtures/keras_efficientnet/  EfficientNet (B0 code, width/depth 0.25), every format
    input.npy           NCHW float32 input (already preprocessed)
    features.npy        GlobalAveragePooling output
    logits.npy          Dense output before softmax
    model.json          retrain model spec

Usage: KERAS_BACKEND=torch python scripts/make_keras_fixtures.py
"""
import json
import os

import numpy as np
import keras
from keras.src.legacy.saving import legacy_h5_format
import h5py

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")


def randomise_batchnorm(model, rng, layers=keras.layers):
    """Random BatchNorm statistics, and random biases (Keras initialises them to zero, which
    would leave a wrongly loaded bias unnoticed). `layers`: Keras 2's (tf_keras) for its models."""
    for layer in model.layers:
        if isinstance(layer, (layers.Conv2D, layers.Dense)) and layer.use_bias:
            w = layer.get_weights()
            w[1] = rng.normal(0, 0.1, w[1].shape).astype("float32")
            layer.set_weights(w)
        if isinstance(layer, layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, g.shape).astype("float32"),
                rng.normal(0, 0.1, b.shape).astype("float32"),
                rng.normal(0, 0.1, m.shape).astype("float32"),
                rng.uniform(0.5, 2.0, v.shape).astype("float32"),
            ])


def small_resnet(size, width, classes, keras2=False):
    """ResNet50's code (Keras' v1 layout) with one block per stage of `width`·(1, 2, 4, 8)
    bottleneck channels. keras2: the same from tf_keras (Keras 2)."""
    if keras2:
        from tf_keras.src.applications import resnet
        stack = resnet.stack1
    else:
        from keras.src.applications import resnet
        stack = resnet.stack_residual_blocks_v1

    def stack_fn(x):
        x = stack(x, width, 1, stride1=1, name="conv2")
        x = stack(x, width * 2, 1, name="conv3")
        x = stack(x, width * 4, 1, name="conv4")
        return stack(x, width * 8, 1, name="conv5")

    args = dict(weights=None, input_shape=(size, size, 3), classes=classes,
                classifier_activation=None)
    if keras2:
        return resnet.ResNet(stack_fn, False, True, "resnet_small", **args)
    return resnet.ResNet(stack_fn, False, True, name="resnet_small", **args)


def save(model, name, spec, size, formats=(), features_layer=None, inputs=None):
    """weights.h5 always; `formats` adds "model.h5" (Keras 2 full model) and/or "keras"."""
    out = os.path.join(ROOT, name)
    os.makedirs(out, exist_ok=True)
    with h5py.File(os.path.join(out, "weights.h5"), "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    if "model.h5" in formats:
        legacy_h5_format.save_model_to_hdf5(model, os.path.join(out, "model.h5"))
    if "keras" in formats:
        model.save(os.path.join(out, "model.keras"))
    rng = np.random.default_rng(1)
    x = inputs if inputs is not None else rng.uniform(-1, 1, (2, size, size, 3)).astype("float32")
    logits = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))
    if features_layer:
        pooled = keras.Model(model.inputs, model.get_layer(features_layer).output)
    else:
        # The last one: EfficientNet's squeeze-excitation blocks pool too.
        gap = [l for l in model.layers if isinstance(l, keras.layers.GlobalAveragePooling2D)][-1]
        pooled = keras.Model(model.inputs, gap.output)
    features = np.asarray(keras.ops.convert_to_numpy(pooled(x, training=False)))
    features = features.reshape(features.shape[0], -1)
    np.save(os.path.join(out, "input.npy"), np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    np.save(os.path.join(out, "features.npy"), features)
    np.save(os.path.join(out, "logits.npy"), logits)
    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump(spec, f, indent=1)
    print(name, logits.shape, features.shape, model.count_params())


def main():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    size, alpha, classes = 64, 0.2, 5
    m = keras.applications.MobileNetV2(alpha=alpha, input_shape=(size, size, 3), weights=None,
                                       classes=classes, classifier_activation=None)
    randomise_batchnorm(m, rng)
    save(m, "keras_mobilenet_v2", {
        "name": "keras_mobilenet_v2",
        "config": {"family": "keras_mobilenet_v2", "alpha": alpha, "input_size": size},
        "preprocess": {"resize": size, "crop": size, "interpolation": "bilinear",
                       "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    }, size, formats=("model.h5", "keras"))

    # MobileNet v1 at an odd input size: Keras pads stride-2 layers (0, 1) whatever the
    # size, where TF "SAME" would pad (1, 1).
    keras.utils.set_random_seed(1)
    size, alpha = 67, 0.25
    m = keras.applications.MobileNet(alpha=alpha, input_shape=(size, size, 3), weights=None,
                                     classes=classes, classifier_activation=None)
    randomise_batchnorm(m, rng)
    save(m, "keras_mobilenet", {
        "name": "keras_mobilenet",
        "config": {"family": "keras_mobilenet", "alpha": alpha},
        "preprocess": {"resize": size, "crop": size, "interpolation": "bilinear",
                       "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    }, size, formats=())


    # ResNet (Keras' v1 layout, ResNet50's code) with one block per stage and narrow stages:
    # biases on every convolution, stride on the first 1x1, "caffe" preprocessing.
    keras.utils.set_random_seed(2)
    size, width = 64, 8
    m = small_resnet(size, width, classes)
    randomise_batchnorm(m, rng)
    save(m, "keras_resnet", {
        "name": "keras_resnet",
        "config": {"family": "keras_resnet", "blocks": [1, 1, 1, 1], "width": width},
        "preprocess": {"resize": size, "crop": size, "interpolation": "bilinear",
                       "mean": [103.939 / 255, 116.779 / 255, 123.68 / 255],
                       "std": [1 / 255, 1 / 255, 1 / 255], "bgr": True},
    }, size, formats=())


    # VGG16's layers (keras.applications.vgg16 builds exactly these) at reduced widths, with
    # the top: Flatten of the NHWC activation, fc1, fc2, predictions.
    keras.utils.set_random_seed(3)
    size, blocks, fc = 64, [[2, 4], [2, 8], [3, 16], [3, 16], [3, 16]], 32
    inp = keras.Input((size, size, 3))
    x = inp
    for b, (n, f) in enumerate(blocks, 1):
        for i in range(1, n + 1):
            x = keras.layers.Conv2D(f, 3, activation="relu", padding="same",
                                    name=f"block{b}_conv{i}")(x)
        x = keras.layers.MaxPooling2D(2, strides=2, name=f"block{b}_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(fc, activation="relu", name="fc1")(x)
    feats = keras.layers.Dense(fc, activation="relu", name="fc2")(x)
    out = keras.layers.Dense(classes, name="predictions")(feats)
    m = keras.Model(inp, out, name="vgg16_small")
    randomise_batchnorm(m, rng)
    save(m, "keras_vgg", {
        "name": "keras_vgg",
        "config": {"family": "keras_vgg", "blocks": blocks, "include_top": True, "fc": fc,
                   "input_size": size},
        "preprocess": {"resize": size, "crop": size, "interpolation": "bilinear",
                       "mean": [103.939 / 255, 116.779 / 255, 123.68 / 255],
                       "std": [1 / 255, 1 / 255, 1 / 255], "bgr": True},
    }, size, formats=(), features_layer="fc2")


    # EfficientNet (EfficientNetB0's code) narrowed and shortened: the model's own input
    # Rescaling + Normalization (random mean/variance), SE blocks, swish, TF SAME padding.
    from keras.src.applications import efficientnet
    keras.utils.set_random_seed(4)
    size, width, depth = 64, 0.25, 0.25
    m = efficientnet.EfficientNet(width, depth, size, weights=None, input_shape=(size, size, 3),
                                  classes=classes, classifier_activation=None,
                                  name="efficientnet_small")
    randomise_batchnorm(m, rng)
    norm = m.get_layer("normalization")
    norm.set_weights([rng.uniform(100, 150, 3).astype("float32"),
                      rng.uniform(2000, 5000, 3).astype("float32"),
                      np.array(1000, dtype=norm.get_weights()[2].dtype)])
    rng2 = np.random.default_rng(5)
    x = rng2.uniform(0, 255, (2, size, size, 3)).astype("float32")
    save(m, "keras_efficientnet", {
        "name": "keras_efficientnet",
        "config": {"family": "keras_efficientnet", "width": width, "depth": depth,
                   "input_size": size, "imagenet_rescaling": False},
        "preprocess": {"resize": size, "crop": size, "interpolation": "bilinear",
                       "mean": [0, 0, 0], "std": [1 / 255, 1 / 255, 1 / 255]},
    }, size, formats=("keras",), inputs=x)


if __name__ == "__main__":
    main()
