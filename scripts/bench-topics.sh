#!/usr/bin/env bash
# Topic units' cost at plan time (docs/benchmarks.md, "Topics"): `cfmem plan` of a
# corpus of N documents planted on 20 topics, with levels document,topic:20, from the text
# alone and from a base of cfmem's default shape (2 layers, d_model 128, bytes), whose
# embedding pass prints its documents per second. Each plan is timed against the same plan
# with levels document alone, in the same call.
#
#     bash scripts/bench-topics.sh [OUT_DIR] [N]     # N = 20000 by default
#
# The 10⁶-document bench of the text method alone is `cargo bench -p duplicates --bench topics`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
out=${1:-/tmp/cfmem-bench-topics}
documents=${2:-20000}
mkdir -p "$out"
cargo build --release --locked -p pipeline >&2
cfmem=target/release/cfmem

python3 - "$out" "$documents" <<'PY'
import json, random, sys
out, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(1)
topics = [[f"{chr(97 + t % 26)}{chr(97 + t // 26)}{w}" for w in range(40)] for t in range(20)]
common = ["the", "of", "and", "a", "to", "in", "is", "it", "that", "for"]
def document(i):
    words = topics[i % 20]
    return " ".join(rng.choice(words) if rng.random() < 0.6 else rng.choice(common) for _ in range(50))
for name, count in (("corpus.jsonl", n), ("pretraining.jsonl", 2000)):
    with open(f"{out}/{name}", "w") as f:
        for i in range(count):
            f.write(json.dumps({"id": f"{name[0]}{i}", "text": document(i)}) + "\n")
PY
printf '[train]\nepochs = 1\n' > "$out/pretrain.toml"
[ -f "$out/base/model.safetensors" ] ||
    "$cfmem" pretrain --corpus "$out/pretraining.jsonl" --config "$out/pretrain.toml" --out "$out/base" --seed 1 >&2

plan() {  # name, extra flags…
    local name=$1; shift
    rm -rf "$out/$name"
    /usr/bin/time -f "%e s, peak RSS %M KB" -o "$out/$name.time" \
        "$cfmem" plan --corpus "$out/corpus.jsonl" --out "$out/$name" --models 4 --keep 0.5 --seed 1 "$@" \
        2> "$out/$name.log" > /dev/null
    echo "$name: $(cat "$out/$name.time")"
    grep -h "embedded" "$out/$name.log" || true
}
plan documents --levels document,cluster
plan text-topics --levels document,topic:20 --max-unit-fraction 0.1
plan base-documents --init "$out/base" --levels document,cluster
plan base-topics --init "$out/base" --levels document,topic:20 --max-unit-fraction 0.1
