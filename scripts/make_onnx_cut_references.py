"""onnxruntime's values at inner cut points of committed ONNX fixtures, for the tests that
cut a graph there (tests/graph.rs): a token model's encoder-block output, which retrain
only finds as a cut once it has folded the graph's shape arithmetic.

Writes, beside each fixture's model.onnx and input.npy:
    tests/fixtures/onnx/vit_op17/tokens_layer0.npy   /encoder/layers/encoder_layer_0/Add_1
                                                     (the first encoder block's output,
                                                     [n, tokens, width])

Usage: python scripts/make_onnx_cut_references.py
(pip install -r scripts/requirements-onnx-fixtures.txt)
"""

import os

import numpy as np
import onnx
import onnxruntime as ort

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "onnx")
CUTS = [("vit_op17", "/encoder/layers/encoder_layer_0/Add_1_output_0", "tokens_layer0.npy")]


def main():
    for fixture, value, out in CUTS:
        d = os.path.join(ROOT, fixture)
        model = onnx.load(os.path.join(d, "model.onnx"))
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(value))
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        x = np.load(os.path.join(d, "input.npy"))
        (y,) = sess.run([value], {sess.get_inputs()[0].name: x})
        np.save(os.path.join(d, out), y.astype(np.float32))
        print(f"{fixture}: {value} {y.shape} -> {out}")


if __name__ == "__main__":
    main()
