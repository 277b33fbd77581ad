"""Generate the ONNX parity fixtures under tests/fixtures/onnx/ (committed; small).

Each fixture is a reduced-width/-depth torchvision model (random init; BatchNorm affines and
running statistics, LayerNorm affines, ConvNeXt layer scales and the ViT class token
randomised as in make_fixtures.py, except that BatchNorm statistics are measured on a random
batch before being perturbed and the final Linear is rescaled, so that signal and gradients
are of order one: see randomise), put in eval mode and exported to ONNX by torch.onnx, with
an input batch, onnxruntime's outputs of the exported graph, and torch autograd's gradients:

    tests/fixtures/onnx/<name>/model.onnx          the exported graph (weights inline, except
                                                   the *_external fixture: model.onnx.data)
    tests/fixtures/onnx/<name>/input.npy           (2, 3, S, S) float32
    tests/fixtures/onnx/<name>/logits.npy          onnxruntime (CPUExecutionProvider) on model.onnx
    tests/fixtures/onnx/<name>/features.npy        the classifier's input (meta.json
                                                   "features_value"), read from onnxruntime by
                                                   making that value an extra graph output
    tests/fixtures/onnx/<name>/probe.npy           fixed random array shaped like logits
    tests/fixtures/onnx/<name>/grad_input.npy      dL/d(input) for L = sum(logits * probe)
    tests/fixtures/onnx/<name>/grad_first_conv.npy dL/d(initializer "first_conv_initializer"),
                                                   i.e. of the first Conv's weight as stored in
                                                   model.onnx (see meta.json "bn_folded")
    tests/fixtures/onnx/<name>/meta.json           producer, opset, value/node/initializer names

Every number is checked before it is written: onnxruntime's logits and features equal
torch's own forward (and forward hook on the final Linear) within TOL (absolute), and the
first-conv initializer equals the torch tensor the gradient was taken against. Models are
seeded by architecture, so the fixtures of one architecture at several opsets share weights,
input and reference outputs, and regenerating gives the same numbers.

Usage:  python3 -m venv .venv-onnx
        .venv-onnx/bin/pip install -r scripts/requirements-onnx-fixtures.txt
        .venv-onnx/bin/python scripts/make_onnx_fixtures.py [NAME ...]
"""
import copy
import json
import os
import shutil
import sys
import warnings
import zlib
from functools import partial

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
from onnx import helper
from torchvision.models import convnext as tv_convnext
from torchvision.models import efficientnet as tv_eff
from torchvision.models import mobilenetv2 as tv_mbv2
from torchvision.models import mobilenetv3 as tv_mbv3
from torchvision.models import resnet as tv_resnet
from torchvision.models import vision_transformer as tv_vit

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "onnx")
TOL = 1e-5
MAX_MODEL_BYTES = 300 * 1024
DROPPED_METADATA = {"pkg.torch.onnx.stack_trace", "pkg.torch.onnx.class_hierarchy",
                    "pkg.torch.onnx.fx_node"}


# ---------------------------------------------------------------- architectures


def reduced_resnet(block, layers, width, classes):
    """torchvision's ResNet and blocks, with the stem/stage widths scaled down."""
    m = tv_resnet.ResNet(block, layers, num_classes=classes)
    m.inplanes = width
    m.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    m.bn1 = nn.BatchNorm2d(width)
    m.layer1 = m._make_layer(block, width, layers[0])
    m.layer2 = m._make_layer(block, width * 2, layers[1], stride=2)
    m.layer3 = m._make_layer(block, width * 4, layers[2], stride=2)
    m.layer4 = m._make_layer(block, width * 8, layers[3], stride=2)
    m.fc = nn.Linear(width * 8 * block.expansion, classes)
    return m


def build_resnet():
    return reduced_resnet(tv_resnet.BasicBlock, [1, 1, 1, 1], 4, 10)


def build_mobilenet_v2():
    setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 2, 2]]
    return tv_mbv2.MobileNetV2(num_classes=5, width_mult=0.25, inverted_residual_setting=setting)


def build_mobilenet_v3():
    # MobileNetV3-small-like rows: SE and hard-swish mixed, expand and no-expand blocks.
    rows = [
        (16, 3, 16, 16, True, "RE", 2, 1),
        (16, 3, 72, 24, False, "RE", 2, 1),
        (24, 3, 88, 24, False, "RE", 1, 1),
        (24, 5, 96, 40, True, "HS", 2, 1),
        (40, 5, 120, 40, True, "HS", 1, 1),
    ]
    cnf = [tv_mbv3.InvertedResidualConfig(*r, width_mult=0.5) for r in rows]
    return tv_mbv3.MobileNetV3(cnf, last_channel=64, num_classes=6)


def build_efficientnet():
    # A shortened B0 table at width 0.5 / depth 0.5, eps 1e-3 as in B0 (SiLU, SE, stochastic
    # depth, which is the identity in eval mode).
    rows = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 3), (6, 3, 1, 40, 48, 1)]
    conf = partial(tv_eff.MBConvConfig, width_mult=0.5, depth_mult=0.5)
    return tv_eff.EfficientNet([conf(*r) for r in rows], dropout=0.2, stochastic_depth_prob=0.2,
                               num_classes=4, norm_layer=partial(nn.BatchNorm2d, eps=1e-3))


def build_convnext():
    cfg = [tv_convnext.CNBlockConfig(16, 32, 1), tv_convnext.CNBlockConfig(32, None, 1)]
    return tv_convnext.ConvNeXt(cfg, stochastic_depth_prob=0.1, num_classes=7)


def build_vit():
    return tv_vit.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                    hidden_dim=32, mlp_dim=64, num_classes=8)


# key -> builder, input size, first conv module, BatchNorm right after it (or None),
# final Linear module, a description for meta.json.
ARCHS = {
    "resnet": (build_resnet, 32, "conv1", "bn1", "fc",
               "torchvision ResNet, BasicBlock, layers [1,1,1,1], width 4, 10 classes"),
    "mobilenet_v2": (build_mobilenet_v2, 32, "features.0.0", "features.0.1", "classifier.1",
                     "torchvision MobileNetV2, width_mult 0.25, setting [[1,16,1,1],[6,24,2,2],"
                     "[6,32,2,2]], last channel 1280, 5 classes"),
    "mobilenet_v3": (build_mobilenet_v3, 32, "features.0.0", "features.0.1", "classifier.3",
                     "torchvision MobileNetV3 (small-like rows, width_mult 0.5, SE, hardswish, "
                     "hardsigmoid), last_channel 64, 6 classes"),
    "efficientnet": (build_efficientnet, 32, "features.0.0", "features.0.1", "classifier.1",
                     "torchvision EfficientNet, B0 rows shortened, width 0.5 / depth 0.5, "
                     "BN eps 1e-3, SiLU, SE, 4 classes"),
    "convnext": (build_convnext, 32, "features.0.0", None, "classifier.2",
                 "torchvision ConvNeXt, stages (16, 1 block) (32, 1 block), LayerNorm2d, "
                 "GELU, permutes, layer scale randomised, 7 classes"),
    "vit": (build_vit, 32, "conv_proj", None, "heads.head",
            "torchvision VisionTransformer image 32, patch 8, 2 layers, 2 heads, hidden 32, "
            "mlp 64, 8 classes; features = class-token vector after the encoder's LayerNorm"),
}

# name -> architecture, exporter, opset, fold BN, dynamic batch. Fold BN is do_constant_folding
# for the torchscript exporter and optimize for the dynamo one (its optimizer folds BN too).
FIXTURES = [
    ("resnet_op9", "resnet", "torchscript", 9, True, False),
    ("resnet_op13", "resnet", "torchscript", 13, False, False),
    ("resnet_op17", "resnet", "torchscript", 17, False, False),
    ("resnet_dynamo", "resnet", "dynamo", 18, True, False),
    ("mobilenet_v2_op9", "mobilenet_v2", "torchscript", 9, False, False),
    ("mobilenet_v2_op13", "mobilenet_v2", "torchscript", 13, False, False),
    ("mobilenet_v2_op17", "mobilenet_v2", "torchscript", 17, True, False),
    ("mobilenet_v2_dynamo", "mobilenet_v2", "dynamo", 18, False, False),
    ("mobilenet_v3_op9", "mobilenet_v3", "torchscript", 9, False, False),
    ("mobilenet_v3_op13", "mobilenet_v3", "torchscript", 13, True, False),
    ("mobilenet_v3_op17", "mobilenet_v3", "torchscript", 17, False, True),
    ("efficientnet_op9", "efficientnet", "torchscript", 9, True, False),
    ("efficientnet_op13", "efficientnet", "torchscript", 13, False, False),
    ("efficientnet_op17", "efficientnet", "torchscript", 17, True, False),
    ("convnext_op9", "convnext", "torchscript", 9, False, True),
    ("convnext_op13", "convnext", "torchscript", 13, True, False),
    ("convnext_op17", "convnext", "torchscript", 17, False, False),
    # (ViT exports from opset 14 on: torch.onnx has no aten::unflatten before 13 and no
    # scaled_dot_product_attention before 14.)
    ("vit_op14", "vit", "torchscript", 14, True, False),
    ("vit_op17", "vit", "torchscript", 17, False, True),
]
# Re-saved copies of a fixture with its tensors in an external data file.
EXTERNAL = [("mobilenet_v2_op13_external", "mobilenet_v2_op13")]


def randomise(model, gen, size, classifier):
    """Random but well-scaled: every normalisation and scale non-trivial, signal and gradients
    of order one at the input and the logits.

    torchvision's init with BatchNorm in eval mode lets the signal vanish in the MobileNets
    and EfficientNet (depthwise convs get fan-out init): gradients at the input would be
    ~1e-8. So BatchNorm running statistics are first measured on a random calibration batch
    (BatchNorm layers alone in train mode, cumulative average), then perturbed: variance
    times U(0.5, 2), mean shifted by 0.2 standard deviations. The final Linear is redrawn
    so that the logits have unit scale.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            c = m.num_features
            m.weight.copy_(torch.rand(c, generator=gen) * 1.5 + 0.25)
            m.bias.copy_(torch.randn(c, generator=gen) * 0.2)
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            elif isinstance(m, tv_convnext.CNBlock):
                # torchvision initialises layer scale to 1e-6: the blocks would vanish.
                m.layer_scale.copy_(torch.rand(m.layer_scale.shape, generator=gen) * 0.5 + 0.25)
            elif isinstance(m, tv_vit.VisionTransformer):
                m.class_token.copy_(torch.randn(m.class_token.shape, generator=gen) * 0.5)
        model.eval()
        if bns:
            for m in bns:
                m.reset_running_stats()
                m.momentum = None
                m.train()
            model(torch.randn(8, 3, size, size, generator=gen))
            model.eval()
            for m in bns:
                m.momentum = 0.1
                c = m.num_features
                std = m.running_var.sqrt()
                m.running_mean.add_(torch.randn(c, generator=gen) * 0.2 * std)
                m.running_var.mul_(torch.rand(c, generator=gen) * 1.5 + 0.5)
        head = model.get_submodule(classifier)
        captured = []
        hook = head.register_forward_pre_hook(lambda mod, inp: captured.append(inp[0]))
        model(torch.randn(8, 3, size, size, generator=gen))
        hook.remove()
        feats = captured[0]
        scale = feats.pow(2).mean().sqrt() * feats.shape[1] ** 0.5
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) / scale)
        head.bias.copy_(torch.randn(head.bias.shape, generator=gen) * 0.1)


def make_model(arch):
    builder, size, first_conv, first_bn, classifier, desc = ARCHS[arch]
    seed = zlib.crc32(arch.encode())
    torch.manual_seed(seed)
    model = builder()
    gen = torch.Generator().manual_seed(seed)
    randomise(model, gen, size, classifier)
    model.eval()
    x = torch.randn(2, 3, size, size, generator=gen)
    return model, x, gen, seed


# ---------------------------------------------------------------- torch references


def torch_reference(model, x, probe, classifier, first_conv, first_bn, bn_folded):
    """Logits, classifier input, and gradients of sum(logits * probe) from torch autograd."""
    captured = {}
    hook = model.get_submodule(classifier).register_forward_pre_hook(
        lambda mod, inp: captured.__setitem__("features", inp[0].detach().clone()))
    xg = x.clone().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    logits = model(xg)
    hook.remove()
    (logits * probe).sum().backward()
    conv = model.get_submodule(first_conv)
    ref = {
        "logits": logits.detach().numpy(),
        "features": captured["features"].numpy(),
        "grad_input": xg.grad.numpy().copy(),
        "first_conv_weight": conv.weight.detach().numpy().copy(),
        "grad_first_conv": conv.weight.grad.numpy().copy(),
    }
    if bn_folded and first_bn is not None:
        # The exporter folded first_bn into the conv: the initializer is the folded weight.
        # Take the gradient against that weight, on a copy with conv + BN fused as torch does.
        fused = copy.deepcopy(model)
        fconv = torch.nn.utils.fusion.fuse_conv_bn_eval(fused.get_submodule(first_conv),
                                                        fused.get_submodule(first_bn))
        parent, _, leaf = first_conv.rpartition(".")
        setattr(fused.get_submodule(parent) if parent else fused, leaf, fconv)
        parent, _, leaf = first_bn.rpartition(".")
        setattr(fused.get_submodule(parent) if parent else fused, leaf, nn.Identity())
        fused.zero_grad(set_to_none=True)
        xg2 = x.clone().requires_grad_(True)
        out = fused(xg2)
        assert np.abs(out.detach().numpy() - ref["logits"]).max() < TOL, "fused model differs"
        (out * probe).sum().backward()
        ref["first_conv_weight"] = fconv.weight.detach().numpy().copy()
        ref["grad_first_conv"] = fconv.weight.grad.numpy().copy()
        ref["grad_first_conv_param"] = conv.weight.grad.numpy().copy()
        assert np.abs(xg2.grad.numpy() - ref["grad_input"]).max() < TOL
    return ref


# ---------------------------------------------------------------- export and ONNX side


def export(model, x, path, exporter, opset, fold, dynamic):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            axes = {"input": {0: "n"}, "logits": {0: "n"}} if dynamic else None
            torch.onnx.export(model, (x,), path, dynamo=False, opset_version=opset,
                              training=torch.onnx.TrainingMode.EVAL, do_constant_folding=fold,
                              input_names=["input"], output_names=["logits"], dynamic_axes=axes)
        else:
            assert not dynamic
            torch.onnx.export(model, (x,), path, dynamo=True, opset_version=opset,
                              input_names=["input"], output_names=["logits"],
                              external_data=False, optimize=fold)
        # The dynamo exporter annotates every node with metadata_props, among them Python
        # stack traces holding this machine's paths: drop those (and the bulky class
        # hierarchy / FX text), keep "namespace" and the name scopes.
        proto = onnx.load(path)
        for node in proto.graph.node:
            keep = [p for p in node.metadata_props if p.key not in DROPPED_METADATA]
            del node.metadata_props[:]
            node.metadata_props.extend(keep)
        onnx.save_model(proto, path)


def producer_of(graph):
    return {o: n for n in graph.node for o in n.output}


def find_classifier(graph):
    """The final Gemm/MatMul: the node computing the logits (through a bias Add if any)."""
    prod = producer_of(graph)
    node = prod[graph.output[0].name]
    seen = []
    while node.op_type not in ("Gemm", "MatMul"):
        seen.append(node.op_type)
        assert node.op_type in ("Add", "Identity", "Reshape", "Flatten"), seen
        cands = [prod[i] for i in node.input if i in prod]
        mm = [c for c in cands if c.op_type in ("Gemm", "MatMul")]
        node = mm[0] if mm else cands[0]
    return node


def find_first_conv(graph):
    inits = {i.name for i in graph.initializer}
    for node in graph.node:  # exporters emit topologically sorted graphs
        if node.op_type == "Conv":
            assert node.input[1] in inits, f"first conv weight {node.input[1]} not an initializer"
            return node
    raise AssertionError("no Conv")


def session(model_or_path):
    src = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"])


def with_extra_output(model, value):
    m = copy.deepcopy(model)
    m.graph.output.append(helper.make_tensor_value_info(value, onnx.TensorProto.FLOAT, None))
    return m


def max_diff(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def initializer_report(graph, model):
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    same, differ, other = [], [], []
    for init in graph.initializer:
        arr = onnx.numpy_helper.to_array(init)
        if init.name in sd:
            ok = arr.shape == sd[init.name].shape and np.array_equal(arr, sd[init.name])
            (same if ok else differ).append(init.name)
        else:
            other.append(init.name)
    return same, differ, other


def make_fixture(name, arch, exporter, opset, fold, dynamic):
    builder, size, first_conv, first_bn, classifier, desc = ARCHS[arch]
    model, x, gen, seed = make_model(arch)
    with torch.no_grad():
        k = model(x).shape[1]
    probe = torch.randn(2, k, generator=gen)
    d = os.path.join(ROOT, name)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    path = os.path.join(d, "model.onnx")
    export(model, x, path, exporter, opset, fold, dynamic)
    onnx.checker.check_model(path, full_check=True)
    proto = onnx.load(path)
    g = proto.graph
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    bn_nodes = sum(n.op_type == "BatchNormalization" for n in g.node)
    bn_folded = has_bn and bn_nodes == 0
    assert not has_bn or bn_folded == fold, (name, bn_nodes)

    ref = torch_reference(model, x, probe, classifier, first_conv, first_bn, bn_folded)

    cls = find_classifier(g)
    features_value = cls.input[0]
    conv = find_first_conv(g)
    w_name = conv.input[1]
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    w_diff = max_diff(inits[w_name], ref["first_conv_weight"])
    assert w_diff < 1e-6, (name, w_name, w_diff)

    input_name = g.input[0].name
    sess = session(with_extra_output(proto, features_value))
    logits, features = sess.run([g.output[0].name, features_value], {input_name: x.numpy()})
    plain = session(path).run(None, {input_name: x.numpy()})[0]
    assert np.array_equal(plain, logits) or max_diff(plain, logits) < 1e-6
    dl, df = max_diff(plain, ref["logits"]), max_diff(features, ref["features"])
    assert dl <= TOL and df <= TOL, (name, dl, df)
    if dynamic:
        out1 = session(path).run(None, {input_name: x.numpy()[:1]})[0]
        assert max_diff(out1, plain[:1]) <= TOL

    np.save(os.path.join(d, "input.npy"), x.numpy())
    np.save(os.path.join(d, "logits.npy"), plain)
    np.save(os.path.join(d, "features.npy"), features)
    np.save(os.path.join(d, "probe.npy"), probe.numpy())
    np.save(os.path.join(d, "grad_input.npy"), ref["grad_input"])
    np.save(os.path.join(d, "grad_first_conv.npy"), ref["grad_first_conv"])

    same, differ, other = initializer_report(g, model)
    in_dims = [dd.dim_param or dd.dim_value for dd in g.input[0].type.tensor_type.shape.dim]
    producer = ("torch.onnx (torchscript, dynamo=False)" if exporter == "torchscript"
                else "torch.onnx (dynamo=True)") + f" {torch.__version__.split('+')[0]}"
    notes = [desc + ".", f"Exported in eval mode; torch seed {seed} (crc32 of {arch!r}), shared "
             f"by every {arch} fixture."]
    if exporter == "torchscript":
        notes.append(f"training=TrainingMode.EVAL, do_constant_folding={fold}.")
    else:
        notes.append(f"optimize={fold}, external_data=False; node metadata_props "
                     f"{sorted(DROPPED_METADATA)} removed after export (stack traces with "
                     f"local paths), the others kept.")
    if bn_folded:
        naming = ("they are named onnx::Conv_* and are not torch tensors"
                  if exporter == "torchscript" else
                  "they keep the torch conv weight names (<conv>.weight) but hold the folded "
                  "values, and the conv biases are new initializers")
        notes.append(f"BatchNorm folded into the Conv initializers by the exporter: {naming}. "
                     f"first_conv_initializer "
                     f"{w_name} = {first_conv}.weight * gamma / sqrt(var + eps) of {first_bn}; "
                     f"grad_first_conv.npy is dL/d of that folded weight (torch autograd on the "
                     f"model with that conv + BN fused by torch.nn.utils.fusion), and "
                     f"grad_first_conv_param.npy is dL/d({first_conv}.weight) of the unfused "
                     f"model.")
        np.save(os.path.join(d, "grad_first_conv_param.npy"), ref["grad_first_conv_param"])
    elif has_bn:
        notes.append("BatchNorm kept as BatchNormalization nodes (not folded).")
    if differ:
        notes.append("Initializers named as torch tensors but holding other values: "
                     + ", ".join(differ) + ".")
    if dynamic:
        notes.append("Batch axis dynamic ('n') on input and logits; input.npy has batch 2 "
                     "(checked with batch 1 too).")
    else:
        notes.append("Batch axis static (2).")
    meta = {
        "producer": producer,
        "producer_name": proto.producer_name,
        "producer_version": proto.producer_version,
        "exporter": exporter,
        "opset": next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "ir_version": proto.ir_version,
        "architecture": arch,
        "input_name": input_name,
        "input_shape": in_dims,
        "output_name": g.output[0].name,
        "num_classes": int(k),
        "dynamic_batch": bool(dynamic),
        "features_value": features_value,
        "features_dim": int(features.shape[1]),
        "classifier_node": cls.name,
        "classifier_op": cls.op_type,
        "classifier_torch_module": classifier,
        "first_conv_node": conv.name,
        "first_conv_initializer": w_name,
        "first_conv_torch_param": f"{first_conv}.weight",
        "first_conv_initializer_equals_torch_param": bool(np.array_equal(
            inits[w_name], model.get_submodule(first_conv).weight.detach().numpy())),
        "bn_folded": bn_folded,
        "batchnorm_nodes": bn_nodes,
        "initializers_total": len(g.initializer),
        "initializers_equal_to_torch": len(same),
        "initializers_differing_from_torch": differ,
        "initializers_not_torch_names": len(other),
        "op_types": sorted({n.op_type for n in g.node}),
        "external_data": None,
        "grad_loss": "L = sum(logits * probe)",
        "grad_first_conv": f"dL/d({w_name}) as stored in model.onnx",
        "tolerance_abs": TOL,
        "max_abs_diff_vs_torch": {"logits": dl, "features": df},
        "notes": " ".join(notes),
    }
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    size_b = os.path.getsize(path)
    assert size_b <= MAX_MODEL_BYTES, (name, size_b)
    print(f"{name}: {meta['producer']} opset {meta['opset']}, {size_b} bytes, "
          f"features {features_value!r} {features.shape}, classifier {cls.name!r}, "
          f"first conv {w_name!r}, bn_folded={bn_folded}, diff logits {dl:.1e} features {df:.1e}")


def make_external(name, source):
    src = os.path.join(ROOT, source)
    d = os.path.join(ROOT, name)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    proto = onnx.load(os.path.join(src, "model.onnx"))
    path = os.path.join(d, "model.onnx")
    onnx.save_model(proto, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=0)
    onnx.checker.check_model(path, full_check=True)
    for f in os.listdir(src):
        if f.endswith(".npy"):
            shutil.copy(os.path.join(src, f), os.path.join(d, f))
    with open(os.path.join(src, "meta.json")) as f:
        meta = json.load(f)
    x = np.load(os.path.join(d, "input.npy"))
    logits = session(path).run(None, {meta["input_name"]: x})[0]
    assert max_diff(logits, np.load(os.path.join(d, "logits.npy"))) <= 1e-6
    full = onnx.load(path)  # loads the external data too
    feats = session(with_extra_output(full, meta["features_value"])).run(
        [meta["features_value"]], {meta["input_name"]: x})[0]
    assert max_diff(feats, np.load(os.path.join(d, "features.npy"))) <= 1e-6
    meta["external_data"] = "model.onnx.data"
    meta["notes"] += (f" Re-saved from {source} with onnx.save_model(save_as_external_data=True, "
                      f"all_tensors_to_one_file=True, location='model.onnx.data', "
                      f"size_threshold=0): every initializer is in model.onnx.data.")
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(f"{name}: external data, model.onnx {os.path.getsize(path)} bytes, model.onnx.data "
          f"{os.path.getsize(os.path.join(d, 'model.onnx.data'))} bytes")


def main():
    torch.backends.mha.set_fastpath_enabled(False)
    torch.set_num_threads(1)
    only = set(sys.argv[1:])
    for fx in FIXTURES:
        if not only or fx[0] in only:
            make_fixture(*fx)
    for name, source in EXTERNAL:
        if not only or name in only or source in only:
            make_external(name, source)
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(ROOT) for f in fs)
    print(f"tests/fixtures/onnx: {total} bytes")


if __name__ == "__main__":
    main()
