#!/usr/bin/env bash
# The fine-tuning audit against the from-scratch audit on real text (docs/guide/fine-tuning.md, "Fine-tuning
# audits"): the real-text test's corpus (160 standard-library docstrings audited) and
# background (other docstrings), M = 16 models each way:
#   (a) from scratch, the background mixed into every model (the real-text test's settings);
#   (b) one base pretrained on the background, then every model fine-tuned from it on its
#       subset alone (configs/finetune.toml).
# Prints, for both, per-source median mem_acc, IN and OUT accuracy, the bigram baseline,
# split-half reliability and the training tokens of all models, the pretraining included.
#
#     bash scripts/finetune-evidence.sh [OUT_DIR]     # about 15 minutes on two cores
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/real-text-setup.sh

cat > "$out/scratch.toml" <<TOML
$MODEL_TOML
[train]
epochs = 2
batch_size = 16
lr = 0.01
[jobs]
stack = 4
TOML
# The base: the same model, trained once on the background for four times the epochs.
sed 's/^epochs = 2$/epochs = 8/' "$out/scratch.toml" > "$out/pretrain.toml"

time_of() { local start=$SECONDS; "$@"; echo $((SECONDS - start)) > "$out/.seconds"; }

time_of "$cfmem" plan --corpus "$out/corpus.jsonl" --background "$out/background.jsonl" --out "$out/scratch" \
    --models $models --keep 0.5 --seed 1 --config "$out/scratch.toml"
time_of "$cfmem" run "$out/scratch" --device cpu
scratch_seconds=$(cat "$out/.seconds")
"$cfmem" analyze "$out/scratch" > "$out/scratch.txt"

time_of "$cfmem" pretrain --corpus "$out/background.jsonl" --config "$out/pretrain.toml" --out "$out/base" --device cpu
pretrain_seconds=$(cat "$out/.seconds")
"$cfmem" plan --corpus "$out/corpus.jsonl" --out "$out/finetuned" --models $models --keep 0.5 --seed 1 \
    --init "$out/base" --config configs/finetune.toml
time_of "$cfmem" run "$out/finetuned" --device cpu
finetune_seconds=$(cat "$out/.seconds")
"$cfmem" analyze "$out/finetuned" > "$out/finetuned.txt"

python3 - "$out" "$scratch_seconds" "$pretrain_seconds" "$finetune_seconds" <<'PY'
import json, pathlib, re, sys, tomllib
out = pathlib.Path(sys.argv[1])
seconds = {"scratch": int(sys.argv[2]), "pretrain": int(sys.argv[3]), "finetuned": int(sys.argv[4])}

def training_tokens(run):
    """Tokens every model of a run trains on: epochs x its nominal training set."""
    config = tomllib.loads((out / run / "run.toml").read_text())
    t, d = config["tokens"], config["design"]
    per_model = config["train"]["epochs"] * (d["keep"] * t["corpus"] + t["background"])
    return d["models"] * per_model

pretraining = tomllib.loads((out / "base/pretraining.toml").read_text())
rows = []
for run, extra in (("scratch", 0), ("finetuned", pretraining["tokens_trained"])):
    summary = json.loads((out / run / "analysis/summary.json").read_text())
    printed = (out / f"{run}.txt").read_text()
    reliability = re.search(r"reliability \(mem_acc\): .*", printed).group(0)
    overall = summary["diagnosis"]["overall"]
    rows.append((run, overall, summary, reliability, training_tokens(run) + extra))
    print(f"== {run}: {reliability}")
    print(f"   overall: acc IN {overall['acc_in']:.3f}, acc OUT {overall['acc_out']:.3f}, "
          f"bigram {overall['bigram_baseline']:.3f}, median mem_acc {summary['mem_acc_quantiles']['median']:+.3f}")
    for source in summary["diagnosis"]["sources"]:
        name = source["source"]
        median = summary["sources"].get(name, {}).get("mem_acc", {}).get("median")
        print(f"   {name:<12} acc IN {source['acc_in']:.3f}  acc OUT {source['acc_out']:.3f}  "
              f"bigram {source['bigram_baseline']:.3f}  median mem_acc {median if median is None else f'{median:+.3f}'}")
    print(f"   training tokens, all models{' and the pretraining' if extra else ''}: {training_tokens(run) + extra:,.0f}")
print(f"base: {pretraining['tokens_trained']:,} tokens, held-out loss {pretraining['held_out_loss']:.3f}, "
      f"accuracy {pretraining['held_out_accuracy']:.3f}")
print(f"wall seconds: scratch run {seconds['scratch']}, pretraining {seconds['pretrain']}, fine-tuned run {seconds['finetuned']}")
PY
