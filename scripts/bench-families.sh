#!/usr/bin/env bash
# cfmem's trainer against a transformers peer, for every model family and both ways of
# fine-tuning: for each shape of SHAPES, a base of that shape (random weights made by
# transformers, tests/hf/tiny_model.py --shape), then
#   (full) every weight trained: cfmem `bench --stacks 1`, against scripts/train_peer.py
#          --adapter full (AutoModelForCausalLM, AdamW over every weight, decay on matrices);
#   (lora) rank-RANK adapters on every attention and MLP matrix of the family (gpt2 c_attn,
#          attn.c_proj, c_fc, mlp.c_proj; llama and qwen2 q/k/v/o_proj, gate/up/down_proj;
#          gpt_neox query_key_value, dense, dense_h_to_4h, dense_4h_to_h): cfmem
#          `bench --stacks STACK`, a stack over one frozen base, against train_peer.py
#          --adapter lora (peft, one model at a time),
# with the same batch, tokens a row, timed steps, learning rate, weight decay and adapter
# settings, in one run on this machine. Prints one markdown table row per (shape, adapter):
# cfmem's tokens/s (all models of the stack, and per model), its model FLOP/s as a fraction
# of the matmul peak it measured, its peak memory against the memory check's estimate, the
# peer's tokens/s and peak memory, and cfmem/peer tokens/s (a stack's tokens/s, all its
# models, over the peer's one model). The JSON of every side stays in OUT_DIR/SHAPE/.
#
#     bash scripts/bench-families.sh [OUT_DIR]
#
# Settings (environment): SHAPES (default "smollm2-135m pythia-160m"; also gpt2-small,
# distilgpt2 (gpt2-small with 6 layers), and tiny-gpt2, tiny-llama, tiny-qwen2,
# tiny-gpt_neox for a quick check: tiny_model.py's default shape of that family),
# STACK (16: the LoRA stack; the full fine-tune is always a stack of 1), RANK (8; alpha
# 2·RANK), BATCH (4), TIME (64 tokens a row; cut to the base's context − 1 when longer, said
# so), STEPS (3 timed, after cfmem's untimed warmup: one on the CPU, ten on CUDA, where
# cfmem also rounds the timed steps up to a multiple of ten; the peer's untimed steps,
# PEER_WARMUP, default the same), LR_FULL (1e-4), LR_LORA (1e-3), WEIGHT_DECAY (0),
# THREADS (0: libtorch's default, both sides), DEVICE (cpu; cuda runs both sides on the
# GPU, the peer's peak memory then torch's max_memory_allocated, cfmem's the device's memory
# in use). A base already in OUT_DIR/SHAPE/base is reused.
#
# Time: SHAPES="tiny-llama tiny-gpt_neox" STEPS=2 STACK=2 took 46 s on two cores shared
# with a build (most of it Python's imports and making the bases). The defaults are not
# measured; extrapolated from docs/benchmarks.md's distilgpt2 numbers on two cores (3.06 s a full
# step, about 15 s a LoRA step of 16 models) by training FLOPs per token (about 1.7x for
# smollm2-135m, 1.5x for pythia-160m), about 10 to 15 minutes on two cores: per shape,
# making the base (under a minute), four full-fine-tuning steps of about 5 s on each side,
# four LoRA steps of a stack of 16 at 25 to 30 s plus the evaluation cfmem bench times, and
# the peer's four LoRA steps of a few seconds. Memory: the largest is the smollm2-135m
# LoRA stack of 16, which the memory check estimates at about 10 GiB (9.6 GiB of it the 16
# models' activations at batch 4 x 64); pythia-160m's, about 6.8 GiB.
#
# The memory estimate column reads `runs[0].memory_estimate_bytes` of cfmem's JSON (what
# jobs::train::check_memory compares with the free memory).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
source scripts/hf-env.sh
cargo build --release --locked -p pipeline
cfmem=$PWD/target/release/cfmem
out=${1:-$(mktemp -d)}
mkdir -p "$out"
SHAPES=${SHAPES:-smollm2-135m pythia-160m} STACK=${STACK:-16} RANK=${RANK:-8} BATCH=${BATCH:-4}
TIME=${TIME:-64} STEPS=${STEPS:-3} LR_FULL=${LR_FULL:-1e-4} LR_LORA=${LR_LORA:-1e-3}
WEIGHT_DECAY=${WEIGHT_DECAY:-0.0} THREADS=${THREADS:-0} DEVICE=${DEVICE:-cpu}
case $DEVICE in cuda*) default_warmup=10 ;; *) default_warmup=1 ;; esac
PEER_WARMUP=${PEER_WARMUP:-$default_warmup}

for shape in $SHAPES; do
    case $shape in
        tiny-gpt2 | tiny-llama | tiny-qwen2 | tiny-gpt_neox | distilgpt2 | gpt2-small | smollm2-135m | pythia-160m) ;;
        *)
            echo "SHAPES: $shape is not one of smollm2-135m, pythia-160m, gpt2-small, distilgpt2, tiny-gpt2," \
                "tiny-llama, tiny-qwen2, tiny-gpt_neox" >&2
            exit 2
            ;;
    esac
done

for shape in $SHAPES; do
    dir=$out/$shape
    mkdir -p "$dir"
    if [ ! -f "$dir/base/model.safetensors" ]; then
        echo "$shape: making the base" >&2
        case $shape in
            tiny-*) shape_flags=(--family "${shape#tiny-}") ;;
            distilgpt2) shape_flags=(--shape gpt2-small --n-layer 6) ;;
            *) shape_flags=(--shape "$shape") ;;
        esac
        "$CFMEM_HF_PYTHON" tests/hf/tiny_model.py "$dir/base" "${shape_flags[@]}"
    fi
    # The family, its LoRA targets (every attention and MLP matrix) and the tokens a row.
    read -r family context < <(python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))
print(c["model_type"], c.get("n_positions") or c["max_position_embeddings"])' "$dir/base/config.json")
    case $family in
        gpt2) targets='"c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"' ;;
        llama | qwen2) targets='"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"' ;;
        gpt_neox) targets='"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"' ;;
        *) echo "$shape: a $family base; this script knows gpt2, llama, qwen2 and gpt_neox" >&2; exit 2 ;;
    esac
    time=$TIME
    if [ "$time" -gt $((context - 1)) ]; then
        time=$((context - 1))
        echo "$shape: TIME $TIME is beyond the context's window; both sides train rows of $time tokens" >&2
    fi
    echo "$time" > "$dir/time"

    cat > "$dir/full.toml" <<TOML
[train]
adapter = "full"
batch_size = $BATCH
eval_batch_size = $BATCH
lr = $LR_FULL
weight_decay = $WEIGHT_DECAY
TOML
    cat > "$dir/lora.toml" <<TOML
[train]
adapter = "lora"
lora_rank = $RANK
lora_alpha = $((2 * RANK))
lora_targets = [$targets]
batch_size = $BATCH
eval_batch_size = $BATCH
lr = $LR_LORA
weight_decay = $WEIGHT_DECAY
TOML

    for adapter in full lora; do
        if [ $adapter = full ]; then
            stack=1 lr=$LR_FULL peer_flags=()
        else
            stack=$STACK lr=$LR_LORA peer_flags=(--rank "$RANK" --alpha $((2 * RANK)) --targets all)
        fi
        echo "$shape ($family), $adapter: cfmem, a stack of $stack" >&2
        "$cfmem" bench --device "$DEVICE" --threads "$THREADS" --init "$dir/base" --config "$dir/$adapter.toml" \
            --stacks "$stack" --steps "$STEPS" --document-tokens "$time" --json > "$dir/cfmem-$adapter.json"
        echo "$shape ($family), $adapter: the peer, one model" >&2
        "$CFMEM_HF_PYTHON" scripts/train_peer.py "$dir/base" --adapter $adapter "${peer_flags[@]}" \
            --batch "$BATCH" --time "$time" --steps "$STEPS" --warmup-steps "$PEER_WARMUP" --lr "$lr" \
            --weight-decay "$WEIGHT_DECAY" --threads "$THREADS" --device "$DEVICE" > "$dir/peer-$adapter.json"
    done
done

python3 - "$out" "$SHAPES" <<'PY'
import json, pathlib, sys
out, shapes = pathlib.Path(sys.argv[1]), sys.argv[2].split()
gib = lambda b: "-" if b is None else f"{b / 2**30:.2f} GiB"
count = lambda n: f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n:,}"
def rate(r):
    return f"{r / 1e3:.1f} k" if r >= 1e3 else f"{r:.0f}"
rows, devices, missing_estimate = [], set(), False
for shape in shapes:
    for adapter in ("full", "lora"):
        cfmem = json.loads((out / shape / f"cfmem-{adapter}.json").read_text())
        peer = json.loads((out / shape / f"peer-{adapter}.json").read_text())
        run = cfmem["runs"][0]
        devices.add(cfmem["device"])
        estimate = run.get("memory_estimate_bytes")
        missing_estimate |= estimate is None
        peer_memory = peer["peak_device_bytes"] if peer["peak_device_bytes"] is not None else peer["peak_rss_bytes"]
        what = "full" if adapter == "full" else f"LoRA r{peer['rank']} on {len(peer['targets'])} targets"
        trained = peer["base_parameters"] if adapter == "full" else cfmem["adapter_parameters"]
        rows.append((
            shape, peer["family"], count(peer["base_parameters"]), what, f"{trained:,}", run["stack"],
            rate(run["tokens_per_second"]), rate(run["tokens_per_second_per_model"]),
            f"{100 * run['fraction_of_peak']:.1f}%", gib(run["peak_memory_bytes"]), gib(estimate),
            rate(peer["tokens_per_second"]), gib(peer_memory),
            f"{run['tokens_per_second'] / peer['tokens_per_second']:.2f}×",
        ))
first = json.loads((out / shapes[0] / "cfmem-full.json").read_text())
peer = json.loads((out / shapes[0] / "peer-full.json").read_text())
times = {shape: (out / shape / "time").read_text().strip() for shape in shapes}
print(f"device: {', '.join(sorted(devices))}; fp32 matmul peak {first['matmul_peak_flops']['fp32'] / 1e12:.3f} TFLOP/s "
      f"(first bench); batch {peer['batch']} × {', '.join(sorted(set(times.values())))} tokens a row per model; "
      f"peer: transformers {peer['transformers']}, peft {peer['peft']}, torch {peer['torch']}, "
      f"{peer['torch_threads']} threads")
header = ("shape", "family", "base", "adapter", "trained parameters a model", "stack", "cfmem tokens/s",
          "per model", "of peak", "cfmem peak memory", "memory estimate", "peer tokens/s", "peer peak memory",
          "cfmem/peer")
print("| " + " | ".join(header) + " |")
print("|" + "---|" * len(header))
for row in rows:
    print("| " + " | ".join(str(cell) for cell in row) + " |")
print("\ntokens/s: predicted training tokens per second, cfmem's of all models of the stack; of peak: cfmem's "
      "model FLOP/s over the fp32 matmul peak it measured; peak memory: CPU peak RSS (cfmem: during the stack's "
      "run, the base loaded before; the peer: the whole process, loading included), CUDA: device memory in use "
      "(cfmem) or torch's max_memory_allocated (the peer); cfmem/peer: tokens/s of the stack over the peer's one model.")
if missing_estimate:
    print("memory estimate: this cfmem's bench JSON gives none (runs[].memory_estimate_bytes).")
PY
