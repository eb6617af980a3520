#!/usr/bin/env python3
"""Test setup for the PaddleClas, PaddleNLP and PaddleDetection comparisons
(tests/paddle_classifiers.rs, tests/paddle_ernie.rs, tests/paddle_picodet.rs): installs PaddlePaddle
(CPU), PaddleClas's, PaddleNLP's and PaddleDetection's source.

    python3 scripts/paddle_setup.py

paddleclas is installed without its dependencies: they pin numpy < 2 (faiss-cpu,
opencv-python builds), which would replace the numpy that onnx and onnxruntime need. The test
only needs PaddleClas's model code, which tests/paddle/paddleclas_run.py loads without the
package's __init__ (which imports those dependencies). paddlenlp is installed without its
dependencies for the same reason (datasets, paddle2onnx, dill < 0.3.5, ...): the ERNIE test
needs only its ERNIE configuration and modeling code, which tests/paddle/ernie_paddle.py loads
without the package __init__s. paddledet likewise (its dependencies pin numpy < 2 through
opencv and scipy builds and pull pycocotools, shapely, lap, ...): the PicoDet test loads only
ESNet, CSPPAN and PicoHead (tests/paddle/picodet_run.py), which import yaml and six besides
paddle and tqdm. A registry that cannot be reached leaves paddle missing, and
the tests skip with a message.
"""
import subprocess
import sys


def pip(*args):
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]).returncode == 0


def have(module):
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def found(package):
    """Whether `package` is installed, without importing it (its __init__ may not import)."""
    check = f"import importlib.util as u, sys; sys.exit(u.find_spec('{package}') is None)"
    return subprocess.run([sys.executable, "-c", check], capture_output=True).returncode == 0


def main():
    if not have("paddle") and not pip("install", "paddlepaddle==3.3.1"):
        print("paddle_setup: could not install paddlepaddle (registry unreachable?)", file=sys.stderr)
    # paddleclas's model code imports tqdm (ppcls/utils/download.py), paddledet's yaml
    # (ppdet/core/workspace.py) and six (ppdet/modeling/layers.py); with --no-deps nothing
    # else brings them, and a fresh machine does not have them.
    for module, package in [("tqdm", "tqdm"), ("yaml", "pyyaml"), ("six", "six")]:
        if not have(module) and not pip("install", package):
            print(f"paddle_setup: could not install {package} (registry unreachable?)", file=sys.stderr)
    for package, version in [("paddleclas", "2.6.0"), ("paddlenlp", "2.8.1"), ("paddledet", "2.6.0")]:
        if not found(package) and not pip("install", "--no-deps", f"{package}=={version}"):
            print(f"paddle_setup: could not install {package} (registry unreachable?)", file=sys.stderr)


if __name__ == "__main__":
    main()
