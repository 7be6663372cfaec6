#!/usr/bin/env bash
# The whole test suite: formatting, lints, the layering check, then every test with the
# dispatched (SIMD) kernels and again with KILN_KERNELS=generic. Fetches the real model
# first (the end-to-end tests need it).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== fmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== layering"
python3 scripts/check_layering.py
echo "== fetch the default model"
cargo run --release --locked -q -p kiln-cli -- pull
echo "== tests (dispatched kernels)"
cargo test --workspace --locked
echo "== tests (KILN_KERNELS=generic)"
KILN_KERNELS=generic cargo test --workspace --locked
