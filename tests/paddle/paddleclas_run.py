#!/usr/bin/env python3
"""Runs one of PaddleClas's own classifiers on oar's weights and writes its logits.

    python3 tests/paddle/paddleclas_run.py VARIANT WEIGHTS.safetensors INPUT.npy OUT.npy

VARIANT is a PaddleClas model name such as `PPLCNet_x0_25`, `ResNet50_vd` or
`MobileNetV3_small_x0_5`: its factory in ppcls/arch/backbone/legendary_models/ (pp_lcnet.py,
resnet.py, mobilenet_v3.py; installed `paddleclas` package) builds the model
(pretrained=False), put in eval mode.
`paddleclas/__init__.py` imports cv2/faiss builds that need numpy < 2, so the package
__init__s on the way to the model file are replaced by empty packages: the network code that
runs is PaddleClas's and Paddle's own. Parameters are loaded by name; every Paddle parameter
must come from the file with the same shape (oar's names follow PaddleClas's).

Exit code 3: paddle or paddleclas is not importable (the Rust test skips).
"""
import importlib
import importlib.util
import json
import os
import struct
import sys
import types

import numpy as np


# Model-name prefix -> the legendary_models module that defines it.
MODULES = {"PPLCNet_": "pp_lcnet", "ResNet": "resnet", "MobileNetV3_": "mobilenet_v3"}


def load_pplcnet_module():
    return load_paddleclas_module("pp_lcnet")


def load_paddleclas_module(module):
    target = "paddleclas.ppcls.arch.backbone.legendary_models." + module
    if "paddleclas.ppcls" in sys.modules:  # the stub packages are already in place
        return importlib.import_module(target)
    spec = importlib.util.find_spec("paddleclas")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("paddleclas is not installed")
    root = spec.submodule_search_locations[0]
    for pkg in ["paddleclas", "ppcls", "ppcls/arch", "ppcls/arch/backbone",
                "ppcls/arch/backbone/legendary_models", "ppcls/utils"]:
        name = "paddleclas" if pkg == "paddleclas" else "paddleclas." + pkg.replace("/", ".")
        path = root if pkg == "paddleclas" else os.path.join(root, pkg)
        m = types.ModuleType(name)
        m.__path__ = [path]
        sys.modules[name] = m
    # ResNet's constructor logs a deprecation through ppcls's logger, which must exist.
    importlib.import_module("paddleclas.ppcls.utils.logger").init_logger(log_level=40)
    return importlib.import_module(target)


def read_safetensors(path):
    """name -> float32 array; only the F32 tensors oar writes."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] != "F32":
            raise ValueError(f"{name}: dtype {meta['dtype']} (expected F32)")
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(meta["shape"])
    return out


def main():
    variant, weights_path, input_path, out_path = sys.argv[1:5]
    try:
        import paddle
        module = next((m for p, m in MODULES.items() if variant.startswith(p)), None)
        if module is None:
            print(f"{variant}: not a PaddleClas model this script knows ({list(MODULES)})",
                  file=sys.stderr)
            sys.exit(2)
        mod = load_paddleclas_module(module)
    except ImportError as e:
        print(f"paddle/paddleclas not importable: {e}", file=sys.stderr)
        sys.exit(3)
    paddle.set_device("cpu")
    net = getattr(mod, variant)(pretrained=False)
    net.eval()
    ours = read_safetensors(weights_path)
    state = net.state_dict()
    missing = [k for k in state if k not in ours]
    wrong = [(k, list(state[k].shape), list(ours[k].shape))
             for k in state if k in ours and list(state[k].shape) != list(ours[k].shape)]
    unused = [k for k in ours if k not in state]
    if missing or wrong or unused:
        print(f"name/shape mismatch: missing {missing[:8]}, wrong shapes {wrong[:8]}, "
              f"unused {unused[:8]}", file=sys.stderr)
        sys.exit(1)
    net.set_state_dict({k: paddle.to_tensor(np.array(ours[k])) for k in state})
    x = paddle.to_tensor(np.load(input_path).astype("float32"))
    with paddle.no_grad():
        y = net(x).numpy().astype("float32")
    np.save(out_path, y)


if __name__ == "__main__":
    main()
