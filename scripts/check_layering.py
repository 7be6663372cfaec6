#!/usr/bin/env python3
"""Checks that kiln's crates depend only on the crates ARCHITECTURE.md allows (dependencies point down)."""
import json
import subprocess
import sys

# crate -> kiln crates it may depend on (normal and dev dependencies alike).
ALLOWED = {
    "kiln-tensor": set(),
    "kiln-gguf": set(),
    "kiln-quant": {"kiln-tensor"},
    "kiln-tokenizer": {"kiln-gguf"},
    "kiln-sampler": set(),
    "kiln-kvcache": {"kiln-tensor"},
    "kiln-nn": {"kiln-tensor", "kiln-quant", "kiln-kvcache"},
    "kiln-models": {"kiln-nn", "kiln-gguf", "kiln-quant", "kiln-tensor", "kiln-kvcache"},
    "kiln-engine": {"kiln-models", "kiln-kvcache", "kiln-sampler", "kiln-tokenizer", "kiln-gguf", "kiln-tensor", "kiln-quant"},
    "kiln-server": {"kiln-engine"},
    "kiln-audio": {"kiln-tensor", "kiln-models"},
    "kiln-cli": None,  # the binary may use every crate
}


def main() -> int:
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    errors = []
    for pkg in meta["packages"]:
        name = pkg["name"]
        if name not in ALLOWED:
            errors.append(f"{name}: not in the crate map (add it to ARCHITECTURE.md and this script)")
            continue
        allowed = ALLOWED[name]
        for dep in pkg["dependencies"]:
            d = dep["name"]
            if not d.startswith("kiln-") or allowed is None:
                continue
            if d not in allowed:
                errors.append(f"{name} depends on {d}, which the crate map does not allow")
    for e in errors:
        print("layering:", e, file=sys.stderr)
    if not errors:
        print(f"layering: {len(meta['packages'])} crates respect the crate map")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
