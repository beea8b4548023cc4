# Sourced by the real-text evidence scripts (finetune-evidence.sh, lora-evidence.sh,
# family-evidence.sh), with their arguments: builds cfmem ($cfmem), makes the output
# directory ($out: $1, or a new temporary one), writes the real-text test's corpus and
# background into it, and sets the models per audit ($models) and the [model] section every
# audit uses ($MODEL_TOML, the real-text test's: 2 layers, d_model 64, context 128, byte
# tokens); `pretrain_base` pretrains the audits' base on the background into $out/base
# (finetune-evidence.sh's: the same model, 8 epochs), unless it is there.
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

pretrain_base() {
    cat > "$out/pretrain.toml" <<TOML
$MODEL_TOML
[train]
epochs = 8
batch_size = 16
lr = 0.01
TOML
    [ -f "$out/base/config.json" ] ||
        "$cfmem" pretrain --corpus "$out/background.jsonl" --config "$out/pretrain.toml" --out "$out/base" --device cpu
}
