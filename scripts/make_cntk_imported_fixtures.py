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
      (default weights/mobilenet_v2_cntk.model: 14 MB, not committed).
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


if __name__ == "__main__":
    {"export": export, "convert": convert}[sys.argv[1]](sys.argv[2:])
