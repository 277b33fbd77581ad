"""TensorFlow fixtures for retrain's parity tests: Keras Applications models built and saved
by TensorFlow itself (Keras 3 on its TensorFlow backend), in TensorFlow's own formats, with
TensorFlow's outputs.

  tests/fixtures/tf_mobilenet_v2/   MobileNetV2 (alpha 0.35, 48x48), random weights and BN
    checkpoint/model.index, model.data-0000S-of-00002
                        tf.train.Checkpoint(model=m).write, split into two data shards
    model.tflite        TFLiteConverter.from_keras_model: BatchNorm folded, float32
    model_int8.tflite   the same with Optimize.DEFAULT: int8 weights (per-channel scales)
    model_full_int8.tflite  full integer quantisation (calibrated on 16 random inputs):
                        int8 weights and activations, int32 biases
    model_f16.tflite    float16 quantisation: float16 weights, each behind a DEQUANTIZE
                        operator that gives the float32 the interpreter computes with
    input.npy, features.npy, logits.npy   Keras/TensorFlow outputs (NCHW input)
    tflite_{int8,full_int8,f16}_{logits,features}.npy   the TFLite interpreter's outputs for
                        the quantised models (it computes with int8 activations, hence a
                        looser tolerance in the test)
    model.json          retrain model spec
  tests/fixtures/tf_resnet/         ResNet50's code with 1 block per stage, width 8:
    training_checkpoint/ckpt.*  the model and its SGD optimizer (momentum slots), where the
                        optimizer's paths key the trainable variables
    saved_model/variables/variables.{index,data-00000-of-00001}
                        model.export(): the SavedModel's variables (its saved_model.pb, the
                        graph, is not committed: retrain reads only the variables)
    model.tflite        biased convolutions with their BatchNorm folded in, max pooling
  tests/fixtures/keras_mobilenet/model.tflite  the MobileNet v1 Keras fixture as TFLite
  tests/fixtures/tf_keras2_resnet/  the same architecture in Keras 2 (tf_keras):
    checkpoint/weights.*  model.save_weights in TensorFlow's format (layer_with_weights-N keys)

Usage: python scripts/make_tf_fixtures.py   (pip install tensorflow-cpu; TF 2.21 here)
"""
import json
import os
import shutil

import numpy as np
import tensorflow as tf
import keras

from make_keras_fixtures import randomise_batchnorm, small_resnet

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")


def fresh(name):
    out = os.path.join(ROOT, name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    return out


def gap_model(model, k=keras):
    gap = [l for l in model.layers if isinstance(l, k.layers.GlobalAveragePooling2D)][-1]
    return k.Model(model.inputs, gap.output)


def tflite_run(path, x, features_shape):
    """The interpreter's logits, and the pooled features (the MEAN op's output tensor)."""
    it = tf.lite.Interpreter(model_path=path, experimental_preserve_all_tensors=True)
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], x.shape)
    it.allocate_tensors()
    it.set_tensor(inp["index"], x)
    it.invoke()
    logits = it.get_tensor(it.get_output_details()[0]["index"])
    feats = [t for t in it.get_tensor_details()
             if tuple(t["shape"]) == (x.shape[0], features_shape) and "Mean" in t["name"]]
    features = it.get_tensor(feats[-1]["index"])
    if features.dtype != np.float32:  # an int8 activation: dequantise it as TFLite defines
        scale, zero = feats[-1]["quantization"]
        features = (features.astype(np.float32) - zero) * scale
    return logits, features


class TwoShards(tf.train.experimental.ShardingCallback):
    """Whole variables in two data shards. (MaxShardSizePolicy would also cut variables into
    slices, which retrain refuses: partitioned variables are not a zoo's format.)"""

    @property
    def description(self):
        return "two shards of whole variables"

    def __call__(self, shardable_tensors):
        shards = [{}, {}]
        for i, t in enumerate(shardable_tensors):
            shards[i % 2].setdefault(t.checkpoint_key, {})[t.slice_spec] = t.tensor
        return shards


def write_tflite(model, path, int8=False, calibration=None, f16=False):
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8 or f16:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if f16:
        conv.target_spec.supported_types = [tf.float16]
    if calibration is not None:
        # Full integer quantisation: int8 activations too, int32 biases (scale = input scale
        # × weight scale); float input and output through QUANTIZE/DEQUANTIZE.
        conv.representative_dataset = lambda: ([c[None]] for c in calibration)
    with open(path, "wb") as f:
        f.write(conv.convert())


def outputs(model, out, x, k=keras):
    """Saves the input (NCHW) and the model's logits and pooled features. k: the Keras."""
    logits = model(x, training=False).numpy()
    features = gap_model(model, k)(x, training=False).numpy()
    np.save(os.path.join(out, "input.npy"), np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    np.save(os.path.join(out, "features.npy"), features)
    np.save(os.path.join(out, "logits.npy"), logits)
    return logits, features


def main():
    keras.utils.set_random_seed(10)
    rng = np.random.default_rng(10)
    size, alpha, classes = 48, 0.35, 5
    m = keras.applications.MobileNetV2(alpha=alpha, input_shape=(size, size, 3), weights=None,
                                       classes=classes, classifier_activation=None)
    randomise_batchnorm(m, rng)
    out = fresh("tf_mobilenet_v2")
    x = np.random.default_rng(11).uniform(-1, 1, (2, size, size, 3)).astype("float32")
    logits, features = outputs(m, out, x)

    sharding = TwoShards()
    tf.train.Checkpoint(model=m).write(
        os.path.join(out, "checkpoint", "model"),
        options=tf.train.CheckpointOptions(experimental_sharding_callback=sharding))
    write_tflite(m, os.path.join(out, "model.tflite"))
    write_tflite(m, os.path.join(out, "model_int8.tflite"), int8=True)
    calibration = np.random.default_rng(14).uniform(-1, 1, (16, size, size, 3)).astype("float32")
    write_tflite(m, os.path.join(out, "model_full_int8.tflite"), int8=True,
                 calibration=calibration)
    write_tflite(m, os.path.join(out, "model_f16.tflite"), f16=True)
    for name in ("model.tflite", "model_int8.tflite", "model_full_int8.tflite",
                 "model_f16.tflite"):
        tl, tfeat = tflite_run(os.path.join(out, name), x, features.shape[1])
        print(name, "interpreter vs Keras: logits", np.abs(tl - logits).max(),
              "features", np.abs(tfeat - features).max())
        if name != "model.tflite":
            stem = name[len("model_"):-len(".tflite")]
            np.save(os.path.join(out, f"tflite_{stem}_logits.npy"), tl)
            np.save(os.path.join(out, f"tflite_{stem}_features.npy"), tfeat)
    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump({
            "name": "tf_mobilenet_v2",
            "config": {"family": "keras_mobilenet_v2", "alpha": alpha, "input_size": size},
            "preprocess": {"resize": size, "crop": size, "interpolation": "bilinear",
                           "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        }, f, indent=1)

    keras.utils.set_random_seed(12)
    size, width = 48, 8
    m = small_resnet(size, width, classes)
    randomise_batchnorm(m, rng)
    out = fresh("tf_resnet")
    x = np.random.default_rng(13).uniform(-120, 150, (2, size, size, 3)).astype("float32")
    logits, features = outputs(m, out, x)
    # A training checkpoint: the model with its optimizer (SGD with momentum, one step taken,
    # then the weights put back), as tf.train.Checkpoint(model=, optimizer=) writes it. The
    # optimizer tracks the trainable variables too: they are keyed under
    # optimizer/_trainable_variables/N.
    weights = m.get_weights()
    opt = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
    m.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    m.fit(x, np.array([0, 1]), epochs=1, verbose=0)
    m.set_weights(weights)
    tf.train.Checkpoint(model=m, optimizer=opt).write(
        os.path.join(out, "training_checkpoint", "ckpt"))
    saved = os.path.join(out, "saved_model")
    m.export(saved)
    for extra in ("saved_model.pb", "fingerprint.pb", "assets"):
        p = os.path.join(saved, extra)
        shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
    write_tflite(m, os.path.join(out, "model.tflite"))
    tl, tfeat = tflite_run(os.path.join(out, "model.tflite"), x, features.shape[1])
    print("resnet model.tflite interpreter vs Keras: logits", np.abs(tl - logits).max())
    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump({
            "name": "tf_resnet",
            "config": {"family": "keras_resnet", "blocks": [1, 1, 1, 1], "width": width},
            "preprocess": {"resize": size, "crop": size, "interpolation": "bilinear",
                           "mean": [103.939 / 255, 116.779 / 255, 123.68 / 255],
                           "std": [1 / 255, 1 / 255, 1 / 255], "bgr": True},
        }, f, indent=1)

    # MobileNet v1 (the Keras fixture's weights, from its weights.h5) as TFLite: its (0, 1)
    # stride-2 padding is an explicit PAD operator, its classifier a 1x1 convolution.
    from keras.src.legacy.saving import legacy_h5_format
    import h5py
    v1 = keras.applications.MobileNet(alpha=0.25, input_shape=(67, 67, 3), weights=None,
                                      classes=classes, classifier_activation=None)
    with h5py.File(os.path.join(ROOT, "keras_mobilenet", "weights.h5"), "r") as f:
        legacy_h5_format.load_weights_from_hdf5_group(f, v1)
    write_tflite(v1, os.path.join(ROOT, "keras_mobilenet", "model.tflite"))

    # Keras 2 (tf_keras): model.save_weights in TensorFlow's format (no .h5 suffix), keys
    # layer_with_weights-N/kernel/.ATTRIBUTES/VARIABLE_VALUE.
    import tf_keras
    tf_keras.utils.set_random_seed(15)
    m2 = small_resnet(size, width, classes, keras2=True)
    randomise_batchnorm(m2, rng, layers=tf_keras.layers)
    out = fresh("tf_keras2_resnet")
    x = np.random.default_rng(16).uniform(-120, 150, (2, size, size, 3)).astype("float32")
    outputs(m2, out, x, k=tf_keras)
    m2.save_weights(os.path.join(out, "checkpoint", "weights"))
    os.remove(os.path.join(out, "checkpoint", "checkpoint"))  # the text pointer file
    shutil.copy(os.path.join(ROOT, "tf_resnet", "model.json"), os.path.join(out, "model.json"))


if __name__ == "__main__":
    main()
