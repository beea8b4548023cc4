# Sourced by the real-text evidence scripts (finetune-evidence.sh, lora-evidence.sh,
# family-evidence.sh), with their arguments: builds cfmem ($cfmem), makes the output
# directory ($out: $1, or a new temporary one), writes the real-text test's corpus and
# background into it, and sets the models per audit ($models) and the [model] section every
# audit uses ($MODEL_TOML, the real-text test's: 2 layers, d_model 64, context 128, byte
# tokens).
source scripts/env.sh
cargo build --release --locked -p pipeline
cfmem=$PWD/target/release/cfmem
out=${1:-$(mktemp -d)}
mkdir -p "$out"
python3 tests/real_text/docstrings.py "$out"
models=16
MODEL_TOML='[model]
n_layer = 2
n_head = 4
d_model = 64
context = 128'
