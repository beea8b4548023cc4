#!/usr/bin/env bash
# Full fine-tuning against LoRA on real text (docs/guide/lora.md): the real-text
# test's corpus (160 standard-library docstrings audited), one base pretrained on its
# background (the other docstrings), and M = 16 models fine-tuned from it twice, with the
# same seed (so the same subsets and data order):
#   (a) every weight trained (configs/finetune.toml);
#   (b) rank-8 adapters on every matrix over the frozen base (configs/lora.toml).
# Prints, for both, per-source median mem_acc, IN and OUT accuracy, the bigram baseline,
# split-half reliability and the wall time of `cfmem run`.
#
#     bash scripts/lora-evidence.sh [OUT_DIR]     # about 10 minutes on two cores
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/real-text-setup.sh

pretrain_base

for audit in full lora; do
    config=configs/finetune.toml
    [ $audit = lora ] && config=configs/lora.toml
    "$cfmem" plan --corpus "$out/corpus.jsonl" --out "$out/$audit" --models $models --keep 0.5 --seed 1 \
        --init "$out/base" --config $config
    start=$SECONDS
    "$cfmem" run "$out/$audit" --device cpu
    echo $((SECONDS - start)) > "$out/$audit.seconds"
    "$cfmem" analyze "$out/$audit" > "$out/$audit.txt"
done

python3 - "$out" <<'PY'
import json, pathlib, re, sys
out = pathlib.Path(sys.argv[1])
for run in ("full", "lora"):
    summary = json.loads((out / run / "analysis/summary.json").read_text())
    reliability = re.search(r"reliability \(mem_acc\): .*", (out / f"{run}.txt").read_text()).group(0)
    overall = summary["diagnosis"]["overall"]
    seconds = int((out / f"{run}.seconds").read_text())
    print(f"== {run}: cfmem run took {seconds} s; {reliability}")
    print(f"   overall: acc IN {overall['acc_in']:.3f}, acc OUT {overall['acc_out']:.3f}, "
          f"bigram {overall['bigram_baseline']:.3f}, median mem_acc {summary['mem_acc_quantiles']['median']:+.3f}")
    for source in summary["diagnosis"]["sources"]:
        name = source["source"]
        median = summary["sources"].get(name, {}).get("mem_acc", {}).get("median")
        print(f"   {name:<12} acc IN {source['acc_in']:.3f}  acc OUT {source['acc_out']:.3f}  "
              f"median mem_acc {median if median is None else f'{median:+.3f}'}")
PY
