#!/usr/bin/env bash
# Benchmark of the run format at scale (issue targets: `plan` under 60 s and 2 GiB peak RSS;
# one worker's setup before its first training step under 10 s and 1 GiB), on a synthetic
# corpus of DOCS short documents (default 1,000,000) and MODELS models (default 1,000),
# keep 0.5, on the CPU. Prints wall time and peak RSS (GNU time) of each. Run it by hand:
#     flock /tmp/cfmem-heavy.lock bash scripts/bench-plan.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release --locked -p pipeline
DOCS=${DOCS:-1000000}
MODELS=${MODELS:-1000}
CFMEM=$PWD/target/release/cfmem
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

awk -v n="$DOCS" 'BEGIN { for (i = 0; i < n; i++) printf "{\"id\":\"d%07d\",\"text\":\"document %d says %x and %d.\"}\n", i, i, i * 2654435761 % 4294967296, i % 977 }' \
    > "$work/corpus.jsonl"
printf '[model]\nn_layer = 1\nn_head = 2\nd_model = 32\ncontext = 64\n' > "$work/model.toml"

# Prints "wall_s peak_rss_mib" from GNU time's -v report in $1.
report() {
    awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i] }
                /Maximum resident set size/ { rss = $2 / 1024 }
                END { printf "%.2f s, peak RSS %.0f MiB\n", s, rss }' "$1"
}

/usr/bin/time -v "$CFMEM" plan --corpus "$work/corpus.jsonl" --out "$work/run" --models "$MODELS" --keep 0.5 \
    --seed 1 --config "$work/model.toml" 2> "$work/plan.time"
echo "plan, $DOCS documents × $MODELS models: $(report "$work/plan.time")"
du -sh "$work/run/membership.bin" "$work/run/corpus.parquet"

# A worker, from its start to its first job's training: killed as soon as it says so.
start=$(date +%s.%N)
/usr/bin/time -v "$CFMEM" run "$work/run" --job 0 --device cpu --threads 2 2> "$work/run.time" &
timer=$!
until grep -q "job 0: training" "$work/run.time"; do
    kill -0 "$timer" 2> /dev/null || { cat "$work/run.time"; exit 1; }
    sleep 0.05
done
setup=$(echo "$(date +%s.%N) - $start" | bc)
kill "$(pgrep -P "$timer")"
wait "$timer" || true
echo "worker setup until its first job starts training: ${setup} s; $(report "$work/run.time" | sed 's/.*, peak/peak/') (to the kill)"
