#!/usr/bin/env bash
# README command B: set up (PyTorch venv, release build) and run every test of the workspace,
# the end-to-end tests of the real cfmem binary included, then the Python interop test.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

# The report's browser test renders pages in Debian's chromium, installed once where this
# runs as root (as CI does); elsewhere without it the browser checks are skipped, saying why.
if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing chromium for the report's browser test (once)" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
    else
        echo "chromium is missing and only root can install it: the browser checks will be skipped" >&2
    fi
fi
# As root every test runs (chromium installed above, the local Slurm started by its test):
# a test that cannot, fails instead of skipping.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export CFMEM_REQUIRE_ALL=1
fi

# The interop test's venv (pyarrow, pandas, DuckDB), cached like the PyTorch one and named
# after its pinned requirements.
INTEROP_REQUIREMENTS=tests/interop/requirements.txt
INTEROP_VENV=${CFMEM_INTEROP_VENV:-$HOME/.cache/cfmem/venv-interop-$(sha256sum "$INTEROP_REQUIREMENTS" | cut -c1-12)}
if ! "$INTEROP_VENV/bin/python" -c "import duckdb, pandas, pyarrow" 2>/dev/null; then
    echo "setting up the interop venv in $INTEROP_VENV (once; about 420 MB, 20 s)" >&2
    mkdir -p "$(dirname "$INTEROP_VENV")"
    python3 -m venv "$INTEROP_VENV"
    "$INTEROP_VENV/bin/pip" install --quiet -r "$INTEROP_REQUIREMENTS"
fi

# The Hugging Face reference checks' venv (transformers, peft): scripts/hf-env.sh.
source scripts/hf-env.sh

cargo build --release --locked -p pipeline
if [ "$(id -u)" != 0 ]; then
    echo "note: the Slurm test (tests/tests/slurm.rs) is skipped (it fails on CI): it needs root to start a local Slurm" >&2
fi
cargo test --release --locked --workspace

interop_dir=$(mktemp -d)
trap 'rm -rf "$interop_dir"' EXIT
"$INTEROP_VENV/bin/python" tests/interop/check_parquet.py target/release/cfmem "$interop_dir"
