#!/usr/bin/env bash
# README command A: set up (PyTorch venv, release build of cfmem) and run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release --locked -p pipeline
exec target/release/cfmem demo "$@"
