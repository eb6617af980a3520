#!/usr/bin/env python3
"""Test setup for the PaddleClas comparison (tests/paddle_lcnet.rs): installs PaddlePaddle
(CPU) and PaddleClas's source.

    python3 scripts/paddle_setup.py

paddleclas is installed without its dependencies: they pin numpy < 2 (faiss-cpu,
opencv-python builds), which would replace the numpy that onnx and onnxruntime need. The test
only needs PaddleClas's model code, which tests/paddle/lcnet_run.py loads without the
package's __init__ (which imports those dependencies). A registry that cannot be reached
leaves paddle missing, and the test skips with a message.
"""
import subprocess
import sys


def pip(*args):
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]).returncode == 0


def have(module):
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def main():
    if not have("paddle") and not pip("install", "paddlepaddle==3.3.1"):
        print("paddle_setup: could not install paddlepaddle (registry unreachable?)", file=sys.stderr)
    found = subprocess.run(
        [sys.executable, "-c", "import importlib.util as u, sys; sys.exit(u.find_spec('paddleclas') is None)"],
        capture_output=True,
    ).returncode == 0
    if not found and not pip("install", "--no-deps", "paddleclas==2.6.0"):
        print("paddle_setup: could not install paddleclas (registry unreachable?)", file=sys.stderr)


if __name__ == "__main__":
    main()
