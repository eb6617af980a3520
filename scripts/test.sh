#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine and runs every check: format, lints, all tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
