"""The architectures of every Keras Application, as Keras itself writes them, for the zoo's
`keras_*` entries that are not written by hand: each entry's model built by
`keras.applications` as it is built for its ImageNet weights (with `weights="imagenet"`:
EfficientNet B0-B7 then add the Rescaling that their weights need), with and without top,
its `model.to_json()` stored xz-compressed; and Keras' own parameter counts, which the
tests compare with retrain's.

  crates/retrain/src/zoo/keras_applications/<entry>.json.xz
      {"top": <model config>, "notop": <model config>,
       "weights": {"top": [[layer, [[variable, shape], ...]], ...], "notop": ...}}
      (JSON, minified, xz): the configs as `model.to_json()` writes them; every layer's
      variables in Keras' order and layout, for describing and matching weights files
      without building the model
  tests/fixtures/keras_applications/parameters.json
      {<entry>: {"top": [trainable, non_trainable], "notop": [...]}}

No weights are downloaded: Keras' `get_file` and `load_weights` are stubbed while a model is
built, so the architecture is the one the official weights load into.

Usage (Python 3.11, scripts/requirements-tf-fixtures.txt):
  python scripts/make_keras_applications.py [entry ...]
"""
import json
import lzma
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "0")

import keras  # noqa: E402
from keras.src.utils import file_utils  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "crates", "retrain", "src", "zoo", "keras_applications")
COUNTS = os.path.join(HERE, "..", "tests", "fixtures", "keras_applications", "parameters.json")

# entry name -> (keras.applications class, keyword arguments)
ENTRIES = {
    "keras_xception": ("Xception", {}),
    "keras_vgg19": ("VGG19", {}),
    "keras_resnet101": ("ResNet101", {}),
    "keras_resnet152": ("ResNet152", {}),
    "keras_resnet50_v2": ("ResNet50V2", {}),
    "keras_resnet101_v2": ("ResNet101V2", {}),
    "keras_resnet152_v2": ("ResNet152V2", {}),
    "keras_inception_v3": ("InceptionV3", {}),
    "keras_inception_resnet_v2": ("InceptionResNetV2", {}),
    "keras_densenet121": ("DenseNet121", {}),
    "keras_densenet169": ("DenseNet169", {}),
    "keras_densenet201": ("DenseNet201", {}),
    "keras_nasnet_mobile": ("NASNetMobile", {}),
    "keras_nasnet_large": ("NASNetLarge", {}),
    **{f"keras_efficientnet_b{i}": (f"EfficientNetB{i}", {}) for i in range(1, 8)},
    **{f"keras_efficientnet_v2_{s.lower()}": (f"EfficientNetV2{s}", {})
       for s in ["B0", "B1", "B2", "B3", "S", "M", "L"]},
    **{f"keras_convnext_{s.lower()}": (f"ConvNeXt{s}", {})
       for s in ["Tiny", "Small", "Base", "Large", "XLarge"]},
}
# MobileNetV3: the three weight files Keras publishes per size: alpha 1.0 and 0.75, and
# alpha 1.0 minimalistic (no squeeze-excite, ReLU, 3x3 kernels).
for size in ["Small", "Large"]:
    for suffix, kwargs in [("", {}), ("_075", {"alpha": 0.75}),
                           ("_minimalistic", {"minimalistic": True})]:
        ENTRIES[f"keras_mobilenet_v3_{size.lower()}{suffix}"] = (f"MobileNetV3{size}", kwargs)


class no_downloads:
    """Builds with `weights="imagenet"` without fetching or loading any file."""

    def __enter__(self):
        self.saved = (file_utils.get_file, keras.Model.load_weights)
        file_utils.get_file = lambda *a, **k: "/nonexistent.h5"
        keras.Model.load_weights = lambda self, *a, **k: None

    def __exit__(self, *exc):
        file_utils.get_file, keras.Model.load_weights = self.saved


def variables(model):
    """[[layer, [[variable, shape], ...]], ...] for every layer with variables, the layers
    of a model within the model (ConvNeXt's stem) in its place."""
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out += variables(layer)
        elif layer.weights:
            out.append([layer.name, [[w.path.split("/")[-1], list(w.shape)]
                                     for w in layer.weights]])
    return out


def counts(model):
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    frozen = sum(int(w.numpy().size) for w in model.non_trainable_weights)
    return [trainable, frozen]


def main():
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(os.path.dirname(COUNTS), exist_ok=True)
    table = json.load(open(COUNTS)) if os.path.exists(COUNTS) else {}
    for entry in sys.argv[1:] or ENTRIES:
        cls, kwargs = ENTRIES[entry]
        configs = {"weights": {}}
        for key, top in [("top", True), ("notop", False)]:
            with no_downloads():
                model = getattr(keras.applications, cls)(
                    weights="imagenet", include_top=top, **kwargs)
            configs[key] = json.loads(model.to_json())
            configs["weights"][key] = variables(model)
            table.setdefault(entry, {})[key] = counts(model)
            keras.backend.clear_session()
        text = json.dumps(configs, separators=(",", ":"), sort_keys=True).encode()
        blob = lzma.compress(text, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64,
                             preset=9 | lzma.PRESET_EXTREME)
        with open(os.path.join(OUT, f"{entry}.json.xz"), "wb") as f:
            f.write(blob)
        print(f"{entry}: {cls}{kwargs or ''} {table[entry]} {len(blob) // 1024} KB")
    with open(COUNTS, "w") as f:
        json.dump(dict(sorted(table.items())), f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
