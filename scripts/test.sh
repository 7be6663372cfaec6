#!/usr/bin/env bash
# The whole test suite: formatting, lints, the layering check, then every test with the
# dispatched (SIMD) kernels and again with KILN_KERNELS=generic. Fetches the real model
# first (the end-to-end tests need it), and ends with the official `openai` Python client
# (installed from the package registry into target/pydeps) driving `kiln serve`.
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
echo "== the official openai client against kiln serve (real model)"
pydeps=target/pydeps
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-warn-conflicts \
    --target "$pydeps" --upgrade "openai==3.54.0"
log=$(mktemp)
target/release/kiln serve --port 0 --api-key test-key 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 300); do
    grep -q "serving on" "$log" && break
    kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.2
done
url=$(grep -o 'http://[0-9.:]*' "$log" | head -1)
PYTHONPATH="$pydeps" python3 scripts/openai_client_test.py "$url" test-key
kill -TERM $server
wait $server
