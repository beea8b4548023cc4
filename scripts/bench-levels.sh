#!/usr/bin/env bash
# What passage units add to `cfmem plan` on the duplicate engine's benchmark corpus (shape
# `a` of `cargo bench -p duplicates --bench dups`: DOCS documents of ~550 bytes with planted
# near-duplicate and exact-duplicate groups, default 1,000,000): the same plan with
# `--unit document` and with `--unit passage`, back to back, each timed with GNU time (wall
# time and peak RSS; RUNS times each, alternating, and the medians). Passage groups come from the same suffix-array pass as the repeat
# fractions every plan computes, so the difference is the union-find, the units and
# units.parquet's extra rows. Run it by hand:
#     flock /tmp/cfmem-heavy.lock bash scripts/bench-levels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release --locked -p pipeline
DOCS=${DOCS:-1000000}
CFMEM=$PWD/target/release/cfmem
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo bench -p duplicates --bench dups -- a "$DOCS" --jsonl "$work/corpus.jsonl" > /dev/null
printf '[model]\nn_layer = 1\nn_head = 2\nd_model = 32\ncontext = 64\n' > "$work/model.toml"

# Prints "wall_s s, peak RSS MiB" from GNU time's -v report in $1.
report() {
    awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i] }
                /Maximum resident set size/ { rss = $2 / 1024 }
                END { printf "%.2f s, peak RSS %.0f MiB\n", s, rss }' "$1"
}

RUNS=${RUNS:-3}
for run in $(seq "$RUNS"); do
    for unit in document passage; do
        /usr/bin/time -v "$CFMEM" plan --corpus "$work/corpus.jsonl" --out "$work/run-$unit" --models 4 --keep 0.5 \
            --seed 1 --config "$work/model.toml" --unit "$unit" 2> "$work/plan-$unit.time" > /dev/null
        echo "$unit $(report "$work/plan-$unit.time")" | tee -a "$work/results"
        grep -E "^  level" "$work/plan-$unit.time" || true
        rm -rf "$work/run-$unit"
    done
done
# Medians over the runs, per unit.
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
for unit in document passage; do
    seconds=$(awk -v u="$unit" '$1 == u { print $2 }' "$work/results" | median)
    rss=$(awk -v u="$unit" '$1 == u { print $6 }' "$work/results" | median)
    echo "plan --unit $unit, $DOCS documents: median of $RUNS runs $seconds s, peak RSS $rss MiB"
done
