"""CNTK models imported from ONNX, as CNTK users make them from torchvision networks: CNTK
2.7 imports ONNX up to about opset 9, so torchvision's MobileNetV2 is exported at opset 9
(TorchScript exporter) and imported with `Function.load(format=ONNX)`, then saved as v2.
Such a model takes its batch as a static axis, unpacks it around each convolution, keeps its
weights as constants reshaped and scaled in the graph, and pads explicitly.

Two steps, in two Python environments (torch does not run on CNTK's Python 3.6):

  python scripts/make_cntk_imported_fixtures.py export [--weights mobilenet_v2.pth] DIR
      (torch, torchvision, onnx) writes DIR/mobilenet_v2_small.onnx: torchvision's
      MobileNetV2 at width 0.25, random weights and BatchNorm statistics (seed 0); with
      --weights also DIR/mobilenet_v2.onnx, the real network. (Reduced: 4 stages of
      inverted residuals.)
  LD_LIBRARY_PATH=$PWD/mpishim venv36/bin/python scripts/make_cntk_imported_fixtures.py \\
      convert DIR [--real-out FILE]
      (CNTK 2.7, see ../shared/FORMATS.md) imports them: tests/fixtures/cntk/
      mobilenet_v2_small.model with CNTK's logits on a random 64x64 input
      (mobilenet_v2_small_input.npy, _logits.npy); the real one, if exported, to FILE
      (default weights/mobilenet_v2_cntk.model: 14 MB, not committed), and the same
      weights in a network built with CNTK's layers API saved in the v1 format
      (FILE with _v1.dnn for .model): CNTK's v1 writer refuses ONNX imports.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures", "cntk")


def export(argv):
    import torch
    import torchvision

    weights = None
    if argv[0] == "--weights":
        weights, argv = argv[1], argv[2:]
    out = argv[0]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    # Fewer blocks than MobileNetV2's 17 (every kind kept: expansion 1 and 6, strides 1
    # and 2, residual adds) for a small file.
    small = torchvision.models.mobilenet_v2(
        width_mult=0.25, num_classes=7,
        inverted_residual_setting=[[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 1, 2]])
    for m in small.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    nets = [("mobilenet_v2_small", small, 64)]
    if weights:
        real = torchvision.models.mobilenet_v2()
        real.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        nets.append(("mobilenet_v2", real, 224))
    if weights:
        import numpy as np
        np.savez(os.path.join(out, "mobilenet_v2.npz"),
                 **{k: v.numpy() for k, v in real.state_dict().items()})
    for name, net, size in nets:
        net.eval()
        torch.onnx.export(net, torch.zeros(1, 3, size, size), os.path.join(out, name + ".onnx"),
                          opset_version=9, dynamo=False, input_names=["image"],
                          output_names=["logits"])
        print("exported", name)


def convert(argv):
    import numpy as np
    import cntk as C

    src = argv[0]
    real_out = os.path.join(HERE, "..", "weights", "mobilenet_v2_cntk.model")
    if len(argv) > 2 and argv[1] == "--real-out":
        real_out = argv[2]
    m = C.Function.load(os.path.join(src, "mobilenet_v2_small.onnx"), format=C.ModelFormat.ONNX)
    m.save(os.path.join(FIXTURES, "mobilenet_v2_small.model"))
    m = C.load_model(os.path.join(FIXTURES, "mobilenet_v2_small.model"))
    x = np.random.RandomState(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    y = np.asarray(m.eval({m.arguments[0]: x}), np.float32).reshape(1, -1)
    np.save(os.path.join(FIXTURES, "mobilenet_v2_small_input.npy"), x)
    np.save(os.path.join(FIXTURES, "mobilenet_v2_small_logits.npy"), y)
    print("mobilenet_v2_small.model", y.shape)
    real = os.path.join(src, "mobilenet_v2.onnx")
    if os.path.exists(real):
        C.Function.load(real, format=C.ModelFormat.ONNX).save(real_out)
        print("wrote", real_out)
    state = os.path.join(src, "mobilenet_v2.npz")
    if os.path.exists(state):
        v1_out = real_out.replace(".model", "_v1.dnn")
        C.cntk_py.save_as_legacy_model(layers_mobilenet_v2(dict(np.load(state))), v1_out)
        print("wrote", v1_out)


def layers_mobilenet_v2(sd):
    """torchvision's MobileNetV2 built with CNTK's own ops and layers (CNTK's v1 writer
    refuses an ONNX import's Padding), its parameters set from the state dict `sd`: for a
    real-weight v1 file. Convolutions are "same"-padded (CNTK's padding equals torch's
    pad 1 for these kernels and strides), ReLU6 is a clip, depthwise convolutions are
    grouped (the v1 format does not store groups: a reader infers them)."""
    import cntk as C
    import numpy as np
    from cntk.layers import BatchNormalization, Dense, GlobalAveragePooling

    def bn(h, prefix):
        layer = BatchNormalization(map_rank=1, epsilon=1e-5, name=prefix)
        out = layer(h)
        for p in layer.parameters:
            p.value = sd[prefix + (".weight" if p.name == "scale" else ".bias")]
        for c in layer.constants:
            if c.name == "aggregate_mean":
                c.value = sd[prefix + ".running_mean"]
            elif c.name == "aggregate_variance":
                c.value = sd[prefix + ".running_var"]
            elif c.name == "aggregate_count":
                c.value = np.full(c.shape, 1000.0, np.float32)
        return out

    def block(x, prefix, stride, relu6=True, groups=1):
        w = sd[prefix + ".0.weight"]
        kernel = C.parameter(w.shape, init=w)
        pad = w.shape[-1] > 1
        h = C.convolution(kernel, x, strides=(1, stride, stride), groups=groups,
                          auto_padding=[False, pad, pad])
        h = bn(h, prefix + ".1")
        return C.clip(h, 0.0, 6.0) if relu6 else h

    x = C.input_variable((3, 224, 224), name="image")
    h = block(x, "features.0", 2)
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1)]
    index, channels = 1, 32
    for t, c, n, s in settings:
        for i in range(n):
            stride = s if i == 0 else 1
            p = "features.%d.conv" % index
            hidden = channels * t
            inner, k = h, 0
            if t != 1:
                inner = block(inner, "%s.%d" % (p, k), 1)
                k += 1
            inner = block(inner, "%s.%d" % (p, k), stride, groups=hidden)
            w = sd["%s.%d.weight" % (p, k + 1)]
            inner = C.convolution(C.parameter(w.shape, init=w), inner,
                                  auto_padding=[False, False, False])
            inner = bn(inner, "%s.%d" % (p, k + 2))
            h = h + inner if stride == 1 and channels == c else inner
            channels, index = c, index + 1
    h = block(h, "features.18", 1)
    h = GlobalAveragePooling()(h)
    head = Dense(1000, name="classifier")
    out = head(h)
    for p in head.parameters:
        if p.name == "W":
            p.value = sd["classifier.1.weight"].T.reshape(p.shape).copy()
        elif p.name == "b":
            p.value = sd["classifier.1.bias"]
    return out


if __name__ == "__main__":
    {"export": export, "convert": convert}[sys.argv[1]](sys.argv[2:])
