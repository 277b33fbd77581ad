"""Small TFLite files for operators and metadata the TFLite graph front-end reads
(tests/graph.rs), with the TFLite interpreter's outputs.

Writes tests/fixtures/tflite_ops/:
    dense_keep_dims.tflite  Keras Dense on a rank-4 conv output ([1, 12, 12, 8]) and on a
                        rank-3 tensor ([1, 144, 12]), converted with a fixed batch of 1: the
                        converter emits both as FULLY_CONNECTED with keep_num_dims (with a
                        free batch it emits SHAPE/GATHER/…/RESHAPE around an FC that
                        flattens instead)
    mirror_pad.tflite   tf.pad REFLECT and SYMMETRIC between convolutions: MIRROR_PAD in both
                        modes, uneven pads, a channel pad, a SYMMETRIC pad as wide as its axis
    metadata.tflite     a float conv net carrying TFLite metadata as tflite_support's
                        MetadataPopulator writes it: a `TFLITE_METADATA` buffer (ModelMetadata,
                        metadata_schema.fbs) whose input tensor has NormalizationOptions with
                        per-channel mean and std on 0..255 pixels, and a labels file packed as a
                        zip after the flatbuffer
    input.npy           two inputs, NCHW float32 (what every file's graph takes)
    <stem>_features.npy the classifier's input (the last FULLY_CONNECTED's input tensor)
    <stem>_logits.npy   the model's output
    pixels.npy          two images, NCHW float32 0..255
    metadata_pixels_logits.npy  metadata.tflite's output on pixels.npy normalised as its
                        metadata says: (pixel − mean) / std per channel

The interpreter runs its builtin kernels (no XNNPACK delegate), one image at a time (the files
have a batch of 1).

Usage: python scripts/make_tflite_op_fixtures.py
(pip install -r scripts/requirements-tf-fixtures.txt; TF 2.21 here. The metadata flatbuffer
is written with the `flatbuffers` package that TensorFlow depends on, following
metadata_schema.fbs: tflite-support pins protobuf 3 and does not install beside TF 2.21.)
"""

import io
import os
import shutil
import zipfile

import flatbuffers
import keras
import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
SIZE = 24
CLASSES = 5
MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]


class MirrorPad(keras.layers.Layer):
    def __init__(self, pads, mode, **kw):
        super().__init__(**kw)
        self.pads, self.mode = pads, mode

    def call(self, x):
        return tf.pad(x, self.pads, mode=self.mode)


def dense_keep_dims():
    inp = keras.Input((SIZE, SIZE, 3), batch_size=1)
    y = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    y = keras.layers.Dense(12, activation="relu")(y)  # on [1, 12, 12, 8]
    y = keras.layers.Reshape((144, 12))(y)
    # Without an op between them the converter moves the reshape after the next Dense.
    y = keras.layers.LeakyReLU(0.1)(y)
    y = keras.layers.Dense(10)(y)  # on [1, 144, 12]
    y = keras.layers.GlobalAveragePooling1D()(y)
    return keras.Model(inp, keras.layers.Dense(CLASSES)(y))


def mirror_pad():
    inp = keras.Input((SIZE, SIZE, 3), batch_size=1)
    y = keras.layers.Conv2D(8, 3, activation="relu")(inp)  # 22×22
    y = MirrorPad([[0, 0], [1, 2], [2, 1], [0, 0]], "REFLECT")(y)  # 25×25
    y = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(y)  # 12×12
    y = MirrorPad([[0, 0], [3, 0], [1, 2], [1, 1]], "SYMMETRIC")(y)  # 15×15×10
    y = keras.layers.Conv2D(8, 3, strides=2)(y)  # 7×7
    y = MirrorPad([[0, 0], [7, 0], [0, 7], [0, 0]], "SYMMETRIC")(y)  # as wide as the axis
    y = MirrorPad([[0, 0], [13, 0], [0, 1], [0, 0]], "REFLECT")(y)  # 27×15, pad = dim − 1
    y = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    return keras.Model(inp, keras.layers.Dense(CLASSES)(y))


def small_convnet():
    inp = keras.Input((SIZE, SIZE, 3), batch_size=1)
    y = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu6")(inp)
    y = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6")(y)
    y = keras.layers.Conv2D(16, 1)(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    return keras.Model(inp, keras.layers.Dense(CLASSES)(y))


def convert(model):
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def operators(model_bytes):
    """(builtin operator name, options as a dict) of each operator, in order."""
    m = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for op in m.subgraphs[0].operators:
        code = m.operatorCodes[op.opcodeIndex]
        name = names[max(code.builtinCode, code.deprecatedBuiltinCode)]
        out.append((name, vars(op.builtinOptions) if op.builtinOptions else {}))
    return out


def run(model_bytes, x):
    """The output and the classifier's input (the last FULLY_CONNECTED's input) per image."""
    m = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    fc = [op for op, (name, _) in zip(m.subgraphs[0].operators, operators(model_bytes))
          if name == "FULLY_CONNECTED"][-1]
    it = tf.lite.Interpreter(
        model_content=bytes(model_bytes), experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.
        BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    logits, features = [], []
    for img in x:
        it.set_tensor(inp["index"], img[None])
        it.invoke()
        logits.append(it.get_tensor(out["index"]).reshape(1, -1))
        features.append(it.get_tensor(fc.inputs[0]).reshape(1, -1))
    return np.concatenate(features), np.concatenate(logits)


def metadata_buffer(mean, std):
    """A ModelMetadata flatbuffer (metadata_schema.fbs, identifier M001): one subgraph, its
    image input with ImageProperties (RGB), NormalizationOptions and the stats they give,
    its output with a labels file."""
    b = flatbuffers.Builder(1024)

    def floats(v):
        b.StartVector(4, len(v), 4)
        for f in reversed(v):
            b.PrependFloat32(f)
        return b.EndVector()

    def tables(v):
        b.StartVector(4, len(v), 4)
        for t in reversed(v):
            b.PrependUOffsetTRelative(t)
        return b.EndVector()

    # NormalizationOptions { mean:[float]; std:[float]; }
    mean_v, std_v = floats(mean), floats(std)
    b.StartObject(2)
    b.PrependUOffsetTRelativeSlot(0, mean_v, 0)
    b.PrependUOffsetTRelativeSlot(1, std_v, 0)
    norm = b.EndObject()
    # ProcessUnit { options:ProcessUnitOptions; }: the union's type (1 =
    # NormalizationOptions) in slot 0, its table in slot 1.
    b.StartObject(2)
    b.PrependUint8Slot(0, 1, 0)
    b.PrependUOffsetTRelativeSlot(1, norm, 0)
    unit = b.EndObject()
    units = tables([unit])
    # ImageProperties { color_space:ColorSpaceType (RGB = 1); default_size:ImageSize; }
    b.StartObject(2)
    b.PrependInt8Slot(0, 1, 0)
    image = b.EndObject()
    # Content { content_properties:ContentProperties (ImageProperties = 2); range; }
    b.StartObject(3)
    b.PrependUint8Slot(0, 2, 0)
    b.PrependUOffsetTRelativeSlot(1, image, 0)
    content = b.EndObject()
    # Stats { max:[float]; min:[float]; } of the normalised input.
    hi = floats([(255 - m) / s for m, s in zip(mean, std)])
    lo = floats([(0 - m) / s for m, s in zip(mean, std)])
    b.StartObject(2)
    b.PrependUOffsetTRelativeSlot(0, hi, 0)
    b.PrependUOffsetTRelativeSlot(1, lo, 0)
    stats = b.EndObject()
    # TensorMetadata { name; description; dimension_names; content; process_units; stats; … }
    name, desc = b.CreateString("image"), b.CreateString("Input image to be classified.")
    b.StartObject(7)
    b.PrependUOffsetTRelativeSlot(0, name, 0)
    b.PrependUOffsetTRelativeSlot(1, desc, 0)
    b.PrependUOffsetTRelativeSlot(3, content, 0)
    b.PrependUOffsetTRelativeSlot(4, units, 0)
    b.PrependUOffsetTRelativeSlot(5, stats, 0)
    input_meta = b.EndObject()
    # AssociatedFile { name; description; type (TENSOR_AXIS_LABELS = 2); … }
    fname, fdesc = b.CreateString("labels.txt"), b.CreateString("Labels for the classes.")
    b.StartObject(5)
    b.PrependUOffsetTRelativeSlot(0, fname, 0)
    b.PrependUOffsetTRelativeSlot(1, fdesc, 0)
    b.PrependInt8Slot(2, 2, 0)
    labels = b.EndObject()
    files = tables([labels])
    name = b.CreateString("probability")
    b.StartObject(7)
    b.PrependUOffsetTRelativeSlot(0, name, 0)
    b.PrependUOffsetTRelativeSlot(6, files, 0)
    output_meta = b.EndObject()
    inputs, outputs = tables([input_meta]), tables([output_meta])
    # SubGraphMetadata { name; description; input_tensor_metadata; output_tensor_metadata; … }
    b.StartObject(10)
    b.PrependUOffsetTRelativeSlot(2, inputs, 0)
    b.PrependUOffsetTRelativeSlot(3, outputs, 0)
    subgraph = b.EndObject()
    subgraphs = tables([subgraph])
    # ModelMetadata { name; description; version; subgraph_metadata; author; license; …;
    # min_parser_version }
    name, desc = b.CreateString("small conv net"), b.CreateString("retrain fixture")
    min_parser_version = b.CreateString("1.0.0")
    b.StartObject(8)
    b.PrependUOffsetTRelativeSlot(0, name, 0)
    b.PrependUOffsetTRelativeSlot(1, desc, 0)
    b.PrependUOffsetTRelativeSlot(3, subgraphs, 0)
    b.PrependUOffsetTRelativeSlot(7, min_parser_version, 0)
    root = b.EndObject()
    b.Finish(root, file_identifier=b"M001")
    return bytes(b.Output())


def with_metadata(model_bytes, metadata, labels):
    """What MetadataPopulator writes: the metadata as a new buffer named by a `metadata`
    entry `TFLITE_METADATA`, the model packed anew, then the associated files as a zip
    appended to it."""
    m = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    buf = schema.BufferT()
    buf.data = np.frombuffer(metadata, dtype=np.uint8)
    m.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = "TFLITE_METADATA"
    entry.buffer = len(m.buffers) - 1
    m.metadata = (m.metadata or []) + [entry]
    b = flatbuffers.Builder(0)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    out = io.BytesIO(bytes(b.Output()))
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a") as z:
        z.writestr("labels.txt", labels)
    return out.getvalue()


def main():
    out = os.path.join(ROOT, "tflite_ops")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    keras.utils.set_random_seed(30)
    x = np.random.default_rng(31).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype("float32")
    np.save(os.path.join(out, "input.npy"), np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    files = {}
    files["dense_keep_dims"] = convert(dense_keep_dims())
    fcs = [o for n, o in operators(files["dense_keep_dims"]) if n == "FULLY_CONNECTED"]
    assert [o["keepNumDims"] for o in fcs] == [True, True, False], fcs
    m = flatbuffer_utils.convert_bytearray_to_object(bytearray(files["dense_keep_dims"]))
    ranks = [len(m.subgraphs[0].tensors[op.inputs[0]].shape) for op, (n, _) in
             zip(m.subgraphs[0].operators, operators(files["dense_keep_dims"]))
             if n == "FULLY_CONNECTED"]
    assert ranks == [4, 3, 2], ranks
    files["mirror_pad"] = convert(mirror_pad())
    modes = [o["mode"] for n, o in operators(files["mirror_pad"]) if n == "MIRROR_PAD"]
    assert modes == [0, 1, 1, 0], modes  # REFLECT, SYMMETRIC, SYMMETRIC, REFLECT
    plain = convert(small_convnet())
    labels = "".join(f"class_{i}\n" for i in range(CLASSES))
    files["metadata"] = with_metadata(plain, metadata_buffer(MEAN, STD), labels)

    for stem, model in files.items():
        with open(os.path.join(out, f"{stem}.tflite"), "wb") as f:
            f.write(model)
        features, logits = run(model, x)
        np.save(os.path.join(out, f"{stem}_features.npy"), features)
        np.save(os.path.join(out, f"{stem}_logits.npy"), logits)
        print(f"{stem}.tflite: {len(model)} bytes, {[n for n, _ in operators(model)]}")
    # The interpreter ignores metadata: normalise the pixels as it says.
    assert np.array_equal(run(plain, x)[1], run(files["metadata"], x)[1])
    pixels = np.round(np.random.default_rng(32).uniform(0, 255, (2, SIZE, SIZE, 3)))
    pixels = pixels.astype("float32")
    np.save(os.path.join(out, "pixels.npy"), np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))
    normalised = ((pixels - np.float32(MEAN)) / np.float32(STD)).astype("float32")
    np.save(os.path.join(out, "metadata_pixels_logits.npy"), run(files["metadata"], normalised)[1])


if __name__ == "__main__":
    main()
