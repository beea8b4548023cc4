#!/usr/bin/env bash
# README command B: set up (PyTorch venv, release build) and run every test of the workspace,
# the end-to-end tests of the real cfmem binary included, then the Python interop test.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

# The report's browser tests render pages in Debian's chromium, installed once where this
# runs as root (as CI does).
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium for the report's browser tests (once)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
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

# The lints: formatting, clippy on every target with warnings as errors, the docs.
cargo fmt --all --check
cargo clippy --release --locked --workspace --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --release --locked --workspace --no-deps --quiet

cargo build --release --locked -p pipeline
# Tests that need more than cargo are #[ignore]d with the reason (a plain `cargo test` lists
# them as ignored); here they run wherever what they need is provided: the Hugging Face venv
# always (above), chromium where installed, the local Slurm as root. The browser tests' names
# end in `in_chromium`, the Slurm test's names `on_a_local_slurm`. The tests that need a CUDA
# device (names with `on_cuda`) are scripts/gpu-check.sh's, never run here.
unavailable=(--skip on_cuda)
if ! command -v chromium >/dev/null; then
    echo "note: chromium is missing and only root can install it: the browser tests stay ignored" >&2
    unavailable+=(--skip in_chromium)
fi
if [ "$(id -u)" != 0 ]; then
    echo "note: the Slurm test (tests/tests/slurm.rs) stays ignored: it needs root to start a local Slurm" >&2
    unavailable+=(--skip on_a_local_slurm)
fi
cargo test --release --locked --workspace -- --include-ignored "${unavailable[@]}"

interop_dir=$(mktemp -d)
trap 'rm -rf "$interop_dir"' EXIT
"$INTEROP_VENV/bin/python" tests/interop/check_parquet.py target/release/cfmem "$interop_dir"
