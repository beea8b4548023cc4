#!/usr/bin/env bash
# README command B: set up (PyTorch venv, release build) and run every test of the workspace,
# the end-to-end tests of the real cfmem binary included.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release --locked -p pipeline
if [ "$(id -u)" != 0 ]; then
    echo "note: the Slurm test (tests/tests/slurm.rs) is skipped: it needs root to start a local Slurm" >&2
fi
cargo test --release --locked --workspace
