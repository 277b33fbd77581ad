"""Write ONNX's own operator conformance cases (one node each) in ONNX's test-data layout.

The onnx wheel ships the generators of its backend node tests, not their data; this script
runs them (onnx.backend.test.case.node.collect_testcases) and writes every case as

    <out>/<case>/model.onnx
    <out>/<case>/test_data_set_<i>/input_<j>.pb      TensorProto (or Sequence/Map/Optional
    <out>/<case>/test_data_set_<i>/output_<j>.pb     Proto, as onnx's cmd_tools writes them)

with <case>/case.json holding the op type, domain, opset imports and onnx's tolerances
(rtol, atol). The output is not committed (default target/onnx-node-cases); regenerate it.
It prints how many cases, the op types and the size written.

tests/onnx_conformance.rs runs them (scripts/test.sh makes them first).

Usage:  python3 -m venv .venv-onnx && .venv-onnx/bin/pip install -r scripts/requirements-onnx-cases.txt
        .venv-onnx/bin/python scripts/make_onnx_node_cases.py [OUT_DIR] [--op OP_TYPE]
"""
import argparse
import collections
import json
import os
import shutil
import warnings

import onnx
from onnx import TensorProto, numpy_helper
from onnx.backend.test.case import node as node_cases

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def serialise(value, vi):
    t = vi.type
    if t.HasField("map_type"):
        return numpy_helper.from_dict(value, vi.name).SerializeToString()
    if t.HasField("sequence_type"):
        return numpy_helper.from_list(value, vi.name).SerializeToString()
    if t.HasField("optional_type"):
        return numpy_helper.from_optional(value, vi.name).SerializeToString()
    assert t.HasField("tensor_type"), vi
    if isinstance(value, TensorProto):
        return value.SerializeToString()
    return numpy_helper.from_array(value, vi.name).SerializeToString()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=os.path.join(ROOT, "target", "onnx-node-cases"))
    ap.add_argument("--op", default=None, help="only the cases of this op type")
    args = ap.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node_cases.collect_testcases(args.op)
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    ops = collections.Counter()
    expanded = 0
    for case in cases:
        d = os.path.join(args.out, case.name)
        os.makedirs(d)
        model = case.model
        with open(os.path.join(d, "model.onnx"), "wb") as f:
            f.write(model.SerializeToString())
        g = model.graph
        # A case is one node, or (*_expanded*) the node's function body inlined.
        op_types = sorted({(n.domain or "ai.onnx", n.op_type) for n in g.node})
        if "_expanded" in case.name:
            expanded += 1
        else:
            for dom, op in op_types:
                ops[op if dom == "ai.onnx" else f"{dom}.{op}"] += 1
        for i, (inputs, outputs) in enumerate(case.data_sets):
            ds = os.path.join(d, f"test_data_set_{i}")
            os.makedirs(ds)
            for j, value in enumerate(inputs):
                with open(os.path.join(ds, f"input_{j}.pb"), "wb") as f:
                    f.write(serialise(value, g.input[j]))
            for j, value in enumerate(outputs):
                with open(os.path.join(ds, f"output_{j}.pb"), "wb") as f:
                    f.write(serialise(value, g.output[j]))
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump({
                "name": case.name,
                "nodes": [{"domain": dom, "op_type": op} for dom, op in op_types],
                "expanded_function": "_expanded" in case.name,
                "opset_import": {o.domain or "ai.onnx": o.version for o in model.opset_import},
                "ir_version": model.ir_version,
                "rtol": case.rtol,
                "atol": case.atol,
            }, f, indent=1)
            f.write("\n")
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(args.out) for f in fs)
    files = sum(len(fs) for _, _, fs in os.walk(args.out))
    print(f"onnx {onnx.__version__}: {len(cases)} node cases ({expanded} of them expanded "
          f"function bodies) in {args.out}, {files} files, {size} bytes ({size / 2**20:.1f} MiB)")
    print(f"{len(ops)} op types (cases each):")
    print(", ".join(f"{op} {n}" for op, n in sorted(ops.items())))


if __name__ == "__main__":
    main()
