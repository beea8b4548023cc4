#!/usr/bin/env bash
# Fine-tuning audits from a GPT-2 base and from a Llama-family base of the same size, on
# real text: the real-text test's corpus (160 standard-library docstrings audited) and
# background (the other docstrings), as scripts/finetune-evidence.sh. Two bases, pretrained
# on the background with finetune-evidence.sh's pretraining settings (8 epochs, batch 16,
# peak learning rate 0.01, byte tokens, context 128, 2 layers, 4 heads):
#   (gpt2)  the real-text test's model: d_model 64, learned positions, LayerNorm, a GELU MLP
#           of 4·d_model, biases (141,312 parameters);
#   (llama) `architecture = "llama"`: rotary positions, RMSNorm, a SwiGLU MLP, no biases,
#           d_model 64 and d_mlp 192 (the family's usual 8/3·d_model rounded up to a
#           multiple of 64), which puts its parameter count within 5% of the GPT-2's
#           (139,840: 1.0% fewer). The script computes both counts, prints them, checks
#           them against what `cfmem pretrain` says it trains, and stops if they differ by
#           more than 5%.
# Then M = 16 models fine-tuned from each base on their subsets (`cfmem plan --init BASE
# --config configs/finetune.toml`, `run`, `analyze`), the same seed, so the same subsets.
# Prints, for both, per-source median mem_acc, IN and OUT accuracy, the bigram baseline,
# split-half reliability, the base's held-out loss and accuracy, and the wall time of the
# pretraining and of `cfmem run`.
#
#     bash scripts/family-evidence.sh [OUT_DIR]     # about 5 to 10 minutes on two cores
#
# (Estimated: with MODELS=2 PRETRAIN_EPOCHS=1 FINETUNE_EPOCHS=1 THREADS=1 it took 31 s, a
# pretraining epoch 9 s for either base; scripts/finetune-evidence.sh's base took 3 minutes
# and its 16 fine-tuned models about 1 minute.) Run again into the same OUT_DIR, it redoes
# nothing finished, and the wall times it prints are then those of the skipped work.
#
# Settings (environment), for quick checks: MODELS (16), PRETRAIN_EPOCHS (8),
# FINETUNE_EPOCHS (configs/finetune.toml's 4; another value runs a copy of that file with
# it), LLAMA_D_MODEL (64), LLAMA_D_MLP (192), THREADS (0: libtorch's default).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/real-text-setup.sh
models=${MODELS:-16}
PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-8} LLAMA_D_MODEL=${LLAMA_D_MODEL:-64} LLAMA_D_MLP=${LLAMA_D_MLP:-192}
THREADS=${THREADS:-0}

# The bases: finetune-evidence.sh's pretraining settings, one [model] per family.
pretrain_train="[train]
epochs = $PRETRAIN_EPOCHS
batch_size = 16
lr = 0.01"
printf '%s\n%s\n' "$MODEL_TOML" "$pretrain_train" > "$out/pretrain-gpt2.toml"
printf '%s\narchitecture = "llama"\nd_mlp = %s\n%s\n' \
    "$(echo "$MODEL_TOML" | sed "s/^d_model = .*/d_model = $LLAMA_D_MODEL/")" "$LLAMA_D_MLP" "$pretrain_train" \
    > "$out/pretrain-llama.toml"

finetune_config=configs/finetune.toml
if [ -n "${FINETUNE_EPOCHS:-}" ]; then
    finetune_config=$out/finetune.toml
    sed "s/^epochs = .*/epochs = $FINETUNE_EPOCHS/" configs/finetune.toml > "$finetune_config"
fi

# Parameter counts from the [model] sections (byte tokens: 256 rows, then BOS and PAD).
python3 - "$out" <<'PY'
import pathlib, sys, tomllib
out = pathlib.Path(sys.argv[1])
rows = 258

def parameters(family):
    m = tomllib.loads((out / f"pretrain-{family}.toml").read_text())["model"]
    L, d, ctx = m["n_layer"], m["d_model"], m["context"]
    if family == "gpt2":
        mlp = m.get("d_mlp", 4 * d)
        # embeddings, per block LayerNorms, c_attn, attn.c_proj, c_fc, mlp.c_proj (biases
        # everywhere), final LayerNorm, untied head
        block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * mlp + mlp) + (mlp * d + d)
        return rows * d + ctx * d + L * block + 2 * d + d * rows
    mlp = m["d_mlp"]
    # token embedding; per block two RMSNorms, q, k, v, o (n_kv_head = n_head), gate, up,
    # down, no biases; final RMSNorm; untied head
    block = 2 * d + 4 * d * d + 3 * d * mlp
    return rows * d + L * block + d + d * rows

counts = {family: parameters(family) for family in ("gpt2", "llama")}
(out / "parameters.txt").write_text(f"{counts['gpt2']} {counts['llama']}\n")
difference = counts["llama"] / counts["gpt2"] - 1
print(f"parameters: gpt2 {counts['gpt2']:,}, llama {counts['llama']:,} ({100 * difference:+.1f}%)", file=sys.stderr)
if abs(difference) > 0.05:
    sys.exit(f"the llama base's {counts['llama']:,} parameters are not within 5% of the gpt2 base's "
             f"{counts['gpt2']:,}: change LLAMA_D_MODEL or LLAMA_D_MLP")
PY
read -r expected_gpt2 expected_llama < "$out/parameters.txt"

for family in gpt2 llama; do
    start=$SECONDS
    "$cfmem" pretrain --corpus "$out/background.jsonl" --config "$out/pretrain-$family.toml" --out "$out/base-$family" \
        --device cpu --threads "$THREADS" 2>&1 | tee "$out/pretrain-$family.log" >&2
    echo $((SECONDS - start)) > "$out/pretrain-$family.seconds"
    expected=expected_$family
    said=$(grep -o "pretraining a [a-z_0-9]* model of [0-9]* parameters" "$out/pretrain-$family.log" | head -1 || true)
    if [ -n "$said" ] && [ "$said" != "pretraining a $family model of ${!expected} parameters" ]; then
        echo "cfmem says \"$said\", not a $family model of the ${!expected} parameters counted here" >&2
        exit 1
    fi
    [ -n "$said" ] || echo "(cfmem pretrain printed no parameter count: it resumed or had finished)" >&2

    "$cfmem" plan --corpus "$out/corpus.jsonl" --out "$out/$family" --models $models --keep 0.5 --seed 1 \
        --init "$out/base-$family" --config "$finetune_config"
    start=$SECONDS
    "$cfmem" run "$out/$family" --device cpu --threads "$THREADS"
    echo $((SECONDS - start)) > "$out/$family.seconds"
    "$cfmem" analyze "$out/$family" > "$out/$family.txt"
done

python3 - "$out" <<'PY'
import json, pathlib, re, sys, tomllib
out = pathlib.Path(sys.argv[1])
counts = dict(zip(("gpt2", "llama"), map(int, (out / "parameters.txt").read_text().split())))
medians = {}
for family in ("gpt2", "llama"):
    summary = json.loads((out / family / "analysis/summary.json").read_text())
    reliability = re.search(r"reliability \(mem_acc\): .*", (out / f"{family}.txt").read_text()).group(0)
    pretraining = tomllib.loads((out / f"base-{family}/pretraining.toml").read_text())
    overall = summary["diagnosis"]["overall"]
    pretrain_seconds = int((out / f"pretrain-{family}.seconds").read_text())
    run_seconds = int((out / f"{family}.seconds").read_text())
    print(f"== {family} base, {counts[family]:,} parameters: pretrained on {pretraining['tokens_trained']:,} tokens in "
          f"{pretrain_seconds} s, held-out loss {pretraining['held_out_loss']:.3f}, accuracy "
          f"{pretraining['held_out_accuracy']:.3f}; cfmem run took {run_seconds} s; {reliability}")
    print(f"   overall: acc IN {overall['acc_in']:.3f}, acc OUT {overall['acc_out']:.3f}, "
          f"bigram {overall['bigram_baseline']:.3f}, median mem_acc {summary['mem_acc_quantiles']['median']:+.3f}")
    for source in summary["diagnosis"]["sources"]:
        name = source["source"]
        median = summary["sources"].get(name, {}).get("mem_acc", {}).get("median")
        medians.setdefault(name, {})[family] = median
        print(f"   {name:<12} acc IN {source['acc_in']:.3f}  acc OUT {source['acc_out']:.3f}  "
              f"bigram {source['bigram_baseline']:.3f}  median mem_acc {median if median is None else f'{median:+.3f}'}")
sign = lambda v: "-" if v is None else f"{v:+.3f}"
print("per source, median mem_acc gpt2 / llama: " + ", ".join(
    f"{name} {sign(v.get('gpt2'))} / {sign(v.get('llama'))}" for name, v in medians.items()))
PY
