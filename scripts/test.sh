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

# The Hugging Face reference checks' venv (transformers, peft, safetensors, tokenizers),
# cached and named after its pinned requirements like the interop one. It lives beside the
# PyTorch venv and reuses its torch through a .pth file instead of installing a second 5 GB
# copy: pip then sees torch as installed and leaves it alone. The check also wants that torch
# to be $CFMEM_VENV's, so that pointing CFMEM_VENV elsewhere rewrites the .pth.
HF_REQUIREMENTS=tests/hf/requirements.txt
HF_VENV=${CFMEM_HF_VENV:-$HOME/.cache/cfmem/venv-hf-$(sha256sum "$HF_REQUIREMENTS" | cut -c1-12)}
if ! CFMEM_VENV="$CFMEM_VENV" "$HF_VENV/bin/python" -c "import os, sys, torch, transformers, peft
sys.exit(not os.path.realpath(torch.__file__).startswith(os.path.realpath(os.environ['CFMEM_VENV']) + os.sep))" 2>/dev/null; then
    echo "setting up the Hugging Face venv in $HF_VENV (once; about 310 MB, 40 s)" >&2
    mkdir -p "$(dirname "$HF_VENV")"
    python3 -m venv "$HF_VENV"
    torch_site=$("$CFMEM_VENV/bin/python" -c "import sysconfig; print(sysconfig.get_path('purelib'))")
    hf_site=$("$HF_VENV/bin/python" -c "import sysconfig; print(sysconfig.get_path('purelib'))")
    echo "$torch_site" > "$hf_site/cfmem-torch-venv.pth"
    "$HF_VENV/bin/pip" install --quiet -r "$HF_REQUIREMENTS"
fi
# The Rust tests that compare with transformers run the scripts of tests/hf with this python.
export CFMEM_HF_PYTHON="$HF_VENV/bin/python"

cargo build --release --locked -p pipeline
if [ "$(id -u)" != 0 ]; then
    echo "note: the Slurm test (tests/tests/slurm.rs) is skipped (it fails on CI): it needs root to start a local Slurm" >&2
fi
cargo test --release --locked --workspace

interop_dir=$(mktemp -d)
trap 'rm -rf "$interop_dir"' EXIT
"$INTEROP_VENV/bin/python" tests/interop/check_parquet.py target/release/cfmem "$interop_dir"
