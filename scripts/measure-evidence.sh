#!/usr/bin/env bash
# Which measure ranks documents stably with fewer models (docs/ "Ranking by loss"): the
# real-text test's corpus (160 standard-library docstrings audited), one base pretrained on
# its background, and M = 64 models fine-tuned from it twice with the same seed: every
# weight trained (configs/finetune.toml) and rank-8 LoRA adapters (configs/lora.toml, 8
# models per job so that its first 8 models are one job). Then, for the first 8, 16, 32 and
# 64 models of each run (a copy of the run with only those models' logs), `cfmem analyze`
# and each measure's split-half reliability and models needed for 0.9; and, on all 64 models,
# the membership attacks and the documents' exposure (docs/guide/membership-inference.md).
#
#     bash scripts/measure-evidence.sh [OUT_DIR]     # about 45 minutes on two cores
#
# Training is skipped where an earlier call of the script left complete runs in OUT_DIR
# (the wall time of `cfmem run` is kept in OUT_DIR/{full,lora}.seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/real-text-setup.sh
source scripts/hf-env.sh
models=64

pretrain_base
sed 's/^stack = 16$/stack = 8/' configs/lora.toml > "$out/lora.toml"

for audit in full lora; do
    config=configs/finetune.toml
    [ $audit = lora ] && config="$out/lora.toml"
    [ -f "$out/$audit/run.toml" ] ||
        "$cfmem" plan --corpus "$out/corpus.jsonl" --out "$out/$audit" --models $models --keep 0.5 --seed 1 \
            --init "$out/base" --config "$config"
    if [ ! -f "$out/$audit.seconds" ]; then
        start=$SECONDS
        "$cfmem" run "$out/$audit" --device cpu
        echo $((SECONDS - start)) > "$out/$audit.seconds"
    fi
    # Complete jobs are skipped: this writes reference.parquet (the base evaluated, the
    # reference attack's model) for a run trained before cfmem wrote it.
    [ -f "$out/$audit/reference.parquet" ] || "$cfmem" run "$out/$audit" --device cpu
    for size in 8 16 32 64; do
        subset="$out/$audit-first-$size"
        rm -rf "$subset"
        cp -r "$out/$audit" "$subset"
        rm -rf "$subset/analysis/"{scores,clusters,copies,reliability,profile}.parquet "$subset/analysis/summary.json"
        # Keep the logs of the jobs whose models are all below $size.
        "$CFMEM_HF_PYTHON" - "$subset" "$size" <<'PY'
import pathlib, sys
import pyarrow.parquet as pq
run, size = pathlib.Path(sys.argv[1]), int(sys.argv[2])
jobs = pq.read_table(run / "jobs.parquet").to_pydict()
last = {}
for job, model in zip(jobs["job"], jobs["model"]):
    last[job] = max(last.get(job, -1), model)
for job, model in last.items():
    if model >= size:
        for suffix in (".parquet", ".done"):
            (run / "logs" / f"job-{job:05d}{suffix}").unlink(missing_ok=True)
PY
        "$cfmem" analyze "$subset" --partial > "$subset.txt"
    done
done

"$CFMEM_HF_PYTHON" - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print("audit  models   mem_loss: reliability  needed    mem_acc: reliability  needed")
for audit in ("full", "lora"):
    for size in (8, 16, 32, 64):
        summary = json.loads((out / f"{audit}-first-{size}" / "analysis/summary.json").read_text())
        assert summary["models"] == size, (audit, size, summary["models"])
        cells = []
        for score in ("mem_loss", "mem_acc"):
            r = summary["reliability"][score]
            predicted = "-" if r["predicted"] is None else f"{r['predicted']:.2f}"
            needed = "-" if r["models_for_stable"] is None else str(r["models_for_stable"])
            cells.append(f"{predicted:>20}  {needed:>6}")
        print(f"{audit:<6} {size:>6}  " + "  ".join(cells))
    print(f"{audit}: cfmem run took {(out / f'{audit}.seconds').read_text().strip()} s for 64 models")
print()
print("membership attacks on the 64-model runs (each model the target, the others its shadows):")
print("audit  attack         AUC [95% interval]     TPR at 1% FPR [95%]     at 0.1% FPR [95%]      Spearman with mem_loss")
for audit in ("full", "lora"):
    summary = json.loads((out / f"{audit}-first-64" / "analysis/summary.json").read_text())
    for a in summary["attacks"]["attacks"]:
        if a["auc"] is None:
            print(f"{audit:<6} {a['attack']:<13}  unavailable: {a['note']}")
            continue
        tpr = lambda key: (f"{100 * a[key]:.1f}% [{100 * a[key + '_lo']:.1f}, {100 * a[key + '_hi']:.1f}]")
        print(f"{audit:<6} {a['attack']:<13}  {a['auc']:.3f} [{a['auc_lo']:.3f}, {a['auc_hi']:.3f}]  "
              f"{tpr('tpr_at_1pct_fpr'):<22}  {tpr('tpr_at_0_1pct_fpr'):<21}  {a['spearman_mem_loss']:+.2f}")
    m = summary["membership"]
    print(f"{audit:<6} exposure: median d' {m['median_exposure_d']:+.2f}, median AUC {m['median_exposure_auc']:.3f}, "
          f"{100 * m['saturated']:.0f}% of documents at AUC 1 ({m['variance']} variance)")
PY
