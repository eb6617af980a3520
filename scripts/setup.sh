#!/usr/bin/env bash
# Installs the system packages oar builds and tests against, on Debian 12.
# Idempotent and quiet: packages already present are not fetched again.
set -euo pipefail

packages=(
  llvm-22-dev libmlir-22-dev mlir-22-tools libclang-22-dev clang-22 libpolly-22-dev
  libclang-rt-22-dev
  libopenmpi-dev openmpi-bin graphviz pkg-config zlib1g-dev libzstd-dev libxml2-dev
  python3.11-doc
  fonts-dejavu-core  # the fonts scripts/ocr_setup.py renders the OCR test images in
  # Headless Chromium loads the HTML reports in tests/html_report.rs (~290 MB, ~70 s).
  chromium
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# numpy computes the reference values the interpreter's op tests compare against.
if ! python3 -c "import numpy" 2>/dev/null; then
  echo "setup: installing numpy"
  python3 -m pip install -q --disable-pip-version-check numpy
fi
# mpi4py: the reference side of benches/mpi_allreduce.rs (built against the OpenMPI above).
if ! python3 -c "import mpi4py" 2>/dev/null; then
  echo "setup: installing mpi4py"
  python3 -m pip install -q --disable-pip-version-check mpi4py || echo "setup: mpi4py failed to install; the MPI bench will skip its reference"
fi
# safetensors: the reference side of the checkpoint bandwidth bench (docs/checkpoints.md).
if ! python3 -c "import safetensors" 2>/dev/null; then
  echo "setup: installing safetensors"
  python3 -m pip install -q --disable-pip-version-check safetensors || echo "setup: safetensors failed to install; the checkpoint bench will skip its reference"
fi
echo "setup: system packages ready"
