#!/usr/bin/env python3
"""Training data for `oar train`: scikit-learn's bundled digits (1,797 8x8 grey images of the
digits 0-9, shipped inside the scikit-learn package, no download) as `.npy` shards.

    python3 scripts/data_setup.py [OUT_DIR]     (default: target/data/digits)

OUT_DIR/images.npy   float32 [1797, 1, 8, 8], pixel values scaled from 0..16 to [0, 1]
OUT_DIR/labels.npy   int64 [1797], the digit
OUT_DIR/meta.json    {"classes": 10, "source": ..., "samples": 1797, ...}
Installs scikit-learn with pip when it is missing; skipped when OUT_DIR is already complete.
A machine without the package or a registry leaves the data missing, and the tests that need
it skip with a message.
"""
import json
import os
import subprocess
import sys


def ensure_sklearn():
    try:
        import sklearn  # noqa: F401
        return True
    except ImportError:
        pass
    print("data_setup: installing scikit-learn")
    ok = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q",
                         "install", "scikit-learn"]).returncode == 0
    if not ok:
        print("data_setup: scikit-learn could not be installed; no digits data", file=sys.stderr)
    return ok


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join("target", "data", "digits")
    files = ["images.npy", "labels.npy", "meta.json"]
    if all(os.path.isfile(os.path.join(out, f)) for f in files):
        print(f"data_setup: {out} is ready")
        return 0
    if not ensure_sklearn():
        return 0
    import numpy as np
    import sklearn
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    labels = d.target.astype(np.int64)
    assert images.shape == (1797, 1, 8, 8) and labels.shape == (1797,)
    os.makedirs(out, exist_ok=True)
    np.save(os.path.join(out, "images.npy"), np.ascontiguousarray(images))
    np.save(os.path.join(out, "labels.npy"), labels)
    meta = {
        "classes": 10,
        "samples": int(labels.shape[0]),
        "image_shape": [1, 8, 8],
        "source": f"sklearn.datasets.load_digits (scikit-learn {sklearn.__version__}): "
                  "the UCI optical recognition of handwritten digits test set",
        "scaling": "pixel / 16",
    }
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print(f"data_setup: wrote {labels.shape[0]} digits to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
