"""Checks ONNX files written by `retrain export` with the ONNX checker and ONNX Runtime.

Usage: check_onnx_export.py CASE_DIR...

Each CASE_DIR holds `model.onnx`, `input.npy` (a preprocessed NCHW batch) and retrain's own
outputs for that batch: `features.npy` and, when the model has a classifier, `logits.npy`.
For each case it checks
  - the model passes `onnx.checker.check_model(full_check=True)` (types and shapes
    inferred through every node), its default-domain opset is at least 17 and its batch
    dimension is free;
  - the metadata holds `retrain.preprocess` (resize, crop, interpolation, mean, std, bgr)
    and `retrain.classes` (a list, one name per logit when names are known);
  - ONNX Runtime's outputs equal retrain's within 1e-4 (largest absolute difference), on
    the batch as given and, where the batch is free, on its first image alone.
Prints one line per case and exits 1 if any check fails.
"""
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

TOL = 1e-4


def check(case: Path) -> list[str]:
    errors = []
    path = case / "model.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 17:
        errors.append(f"opset {opset} < 17")
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    x = np.load(case / "input.npy").astype(np.float32)
    # A graph exported for one batch size keeps it (retrain runs it chunk by chunk): only
    # that batch size is run.
    fixed = batch.dim_value if not batch.dim_param else None
    if fixed and fixed != x.shape[0]:
        errors.append(f"the batch dimension is fixed to {fixed}")
    meta = {p.key: p.value for p in model.metadata_props}
    pre = json.loads(meta.get("retrain.preprocess", "{}"))
    for key in ["resize", "crop", "interpolation", "mean", "std", "bgr"]:
        if key not in pre:
            errors.append(f"retrain.preprocess has no {key}")
    classes = json.loads(meta.get("retrain.classes", "null"))
    if not isinstance(classes, list):
        errors.append("retrain.classes is not a list")

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    diffs = {}
    runs = [("batch", x, slice(None))]
    if not fixed:
        runs.append(("one image", x[:1], slice(0, 1)))
    for batch_name, xb, rows in runs:
        got = dict(zip(names, session.run(None, {session.get_inputs()[0].name: xb})))
        for what in ["logits", "features"]:
            want_path = case / f"{what}.npy"
            if not want_path.exists():
                if what in got:
                    errors.append(f"{what}: an output without retrain's reference")
                continue
            if what not in got:
                errors.append(f"no `{what}` output")
                continue
            want = np.load(want_path)[rows]
            if got[what].shape != want.shape:
                errors.append(f"{what} ({batch_name}): shape {got[what].shape} != {want.shape}")
                continue
            d = float(np.max(np.abs(got[what] - want))) if want.size else 0.0
            diffs[f"{what} ({batch_name})"] = d
            if not d <= TOL:
                errors.append(f"{what} ({batch_name}): max |diff| {d:.2e} > {TOL:.0e}")
        if "logits" in got and classes and len(classes) != got["logits"].shape[1]:
            errors.append(f"{len(classes)} class names for {got['logits'].shape[1]} logits")
    shown = ", ".join(f"{k} {v:.2e}" for k, v in diffs.items())
    print(f"{case.name}: opset {opset}, {len(model.graph.node)} nodes; max |diff| {shown}")
    return errors


def main() -> int:
    failed = 0
    for arg in sys.argv[1:]:
        case = Path(arg)
        try:
            errors = check(case)
        except Exception as e:  # a checker or runtime failure is this case's failure
            errors = [f"{type(e).__name__}: {e}"]
        for e in errors:
            print(f"FAILED {case.name}: {e}")
        failed += bool(errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
