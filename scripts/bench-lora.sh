#!/usr/bin/env bash
# LoRA stacks against their peer: cfmem's stack of G LoRA models over one frozen base, and
# a transformers + peft loop that trains one LoRA model at a time (scripts/train_peer.py),
# the same base, rank, targets, batch and sequence length, in one run on this machine.
# Prints both in models per hour and their ratio, medians of the timed steps.
#
#     bash scripts/bench-lora.sh [OUT_DIR]
#
# Settings (environment): SHAPE (default distilgpt2: GPT-2 small's shape with 6 layers,
# random weights made by transformers), STACK (16), RANK (8), TARGETS (c_attn), BATCH (4),
# TIME (64 tokens a row; cut to the base's context − 1 when longer), STEPS (3 timed, after one untimed), MODEL_STEPS (the steps of the
# fine-tune a "model" stands for in models per hour: 1000; the ratio does not depend on it),
# DEVICE (cpu; cuda runs both sides on the GPU, the peer's peak memory then its device's).
# About 10 minutes on two cores at the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
source scripts/hf-env.sh
cargo build --release --locked -p pipeline
cfmem=$PWD/target/release/cfmem
out=${1:-$(mktemp -d)}
mkdir -p "$out"
STACK=${STACK:-16} RANK=${RANK:-8} TARGETS=${TARGETS:-c_attn} BATCH=${BATCH:-4} TIME=${TIME:-64}
STEPS=${STEPS:-3} MODEL_STEPS=${MODEL_STEPS:-1000} DEVICE=${DEVICE:-cpu} SHAPE=${SHAPE:-distilgpt2}

case $SHAPE in
    distilgpt2) shape_flags=(--shape gpt2-small --n-layer 6) ;;
    gpt2-small) shape_flags=(--shape gpt2-small) ;;
    tiny) shape_flags=() ;;
    *) echo "SHAPE must be distilgpt2, gpt2-small or tiny, not $SHAPE" >&2; exit 2 ;;
esac
[ -f "$out/base/model.safetensors" ] || "$CFMEM_HF_PYTHON" tests/hf/tiny_model.py "$out/base" "${shape_flags[@]}"
# cfmem cuts a longer document to the context's window (context − 1); the peer refuses one.
window=$(($(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["n_positions"])' "$out/base/config.json") - 1))
if [ "$TIME" -gt "$window" ]; then
    echo "TIME $TIME is beyond the base's window; both sides train rows of $window tokens" >&2
    TIME=$window
fi
targets_toml=$(echo "$TARGETS" | sed 's/[^,]*/"&"/g; s/,/, /g')
cat > "$out/lora.toml" <<TOML
[train]
adapter = "lora"
lora_rank = $RANK
lora_alpha = $((2 * RANK))
lora_targets = [$targets_toml]
batch_size = $BATCH
eval_batch_size = $BATCH
lr = 1e-3
weight_decay = 0.0
TOML

echo "cfmem: a stack of $STACK LoRA models" >&2
"$cfmem" bench --device "$DEVICE" --init "$out/base" --config "$out/lora.toml" --stacks "$STACK" \
    --steps "$STEPS" --document-tokens "$TIME" --json > "$out/cfmem.json"
echo "peer: transformers + peft, one model" >&2
"$CFMEM_HF_PYTHON" scripts/train_peer.py "$out/base" --rank "$RANK" --alpha $((2 * RANK)) --targets "$TARGETS" \
    --batch "$BATCH" --time "$TIME" --steps "$STEPS" --warmup-steps 1 --lr 1e-3 --weight-decay 0.0 \
    --device "$DEVICE" > "$out/peer.json"

python3 - "$out" "$MODEL_STEPS" <<'PY'
import json, pathlib, sys
out, model_steps = pathlib.Path(sys.argv[1]), int(sys.argv[2])
cfmem = json.loads((out / "cfmem.json").read_text())
peer = json.loads((out / "peer.json").read_text())
run = cfmem["runs"][0]
stack = run["stack"]
cfmem_per_hour = 3600 / run["step_seconds"] * stack / model_steps
peer_per_hour = 3600 / peer["step_seconds_median"] / model_steps
gib = lambda b: b / 2**30
print(f"device: {cfmem['device']}; base of {peer['base_parameters']:,} parameters, "
      f"LoRA rank {peer['rank']} on {', '.join(peer['targets'])} ({cfmem['adapter_parameters']:,} adapter parameters "
      f"a model); batch {peer['batch']} × {peer['time']} tokens; a model = {model_steps} steps")
print(f"cfmem, stack of {stack}: {run['step_seconds']:.2f} s a step (median), {cfmem_per_hour:.2f} models per hour, "
      f"peak memory {gib(run['peak_memory_bytes']):.2f} GiB")
print(f"transformers + peft, one model at a time: {peer['step_seconds_median']:.2f} s a step (median), "
      f"{peer_per_hour:.2f} models per hour, peak memory {gib(peer['peak_device_bytes'] or peer['peak_rss_bytes']):.2f} GiB")
print(f"ratio: {cfmem_per_hour / peer_per_hour:.2f}× the peer's models per hour")
PY
