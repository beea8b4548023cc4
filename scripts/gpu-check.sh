#!/usr/bin/env bash
# Every CUDA check of cfmem in one call on a machine with one NVIDIA GPU: first the
# correctness tests on CUDA (a stack equals its models trained alone, in every family, full
# and LoRA; bf16 within its stated tolerance of fp32; a base and a LoRA run equal
# `transformers` and `peft`), then the GPU benchmarks (stack sizes 1 to 64 in fp32 and bf16;
# a GPT-2 small full fine-tune's tokens/s and fraction of the matmul peak; a LoRA stack of 64
# against transformers + peft training one model at a time; the new families' benchmark
# shapes). Writes OUT_DIR/gpu-check.json (every number) and OUT_DIR/gpu-check.md (a
# readable table), with each step's log beside them. About 5 minutes on an H100; at most 8.
#
#     bash scripts/gpu-check.sh OUT_DIR
#         builds with cargo first (the venv of scripts/env.sh must hold a CUDA torch 2.11.0:
#         point CFMEM_VENV at one).
#     bash scripts/gpu-check.sh --prepare DIR
#         on a build machine (no GPU needed): builds and copies into DIR the binaries the
#         check runs, stripped (about 40 MB), for a GPU machine without Rust; then there:
#     CFMEM_PREBUILT=DIR bash scripts/gpu-check.sh OUT_DIR
#         runs them with the machine's own python3 (CUDA torch, transformers, peft), libtorch
#         from that torch. CFMEM_PYTHON names another python.
#
# On a machine without CUDA it says so in one line and exits with status 3. A failed check
# does not stop the others: the exit status is 1 when any failed, and the table says which.
set -euo pipefail
cd "$(dirname "$0")/.."

# The test binaries the check runs: the jobs crate's unit tests, and the end-to-end tests
# that compare with transformers (families.rs, base.rs).
test_binaries() {
    cargo test --release --locked --no-run --message-format=json -p jobs -p tests --lib --test families --test base |
        python3 -c '
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message.get("executable") and message["profile"]["test"]:
        print(message["target"]["name"], message["executable"])'
}

if [ "${1:-}" = --prepare ]; then
    dir=${2:?usage: bash scripts/gpu-check.sh --prepare DIR}
    source scripts/env.sh
    cargo build --release --locked -p pipeline
    mkdir -p "$dir"
    cp target/release/cfmem "$dir/cfmem"
    test_binaries | while read -r name executable; do
        case $name in jobs | families | base) cp "$executable" "$dir/$name-tests" ;; esac
    done
    strip "$dir/cfmem" "$dir"/*-tests
    # The tests find their scripts (tests/hf) under the checkout they were built in.
    echo "$PWD" > "$dir/source-dir"
    du -sh "$dir"
    exit 0
fi

out=${1:?usage: bash scripts/gpu-check.sh OUT_DIR (or --prepare DIR)}
mkdir -p "$out"
out=$(cd "$out" && pwd)

if [ -n "${CFMEM_PREBUILT:-}" ]; then
    python=${CFMEM_PYTHON:-python3}
    export CFMEM_HF_PYTHON=${CFMEM_HF_PYTHON:-$python}
else
    source scripts/env.sh
    source scripts/hf-env.sh
    python=$CFMEM_VENV/bin/python
fi
device=$("$python" -c 'import torch
print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>/dev/null) || device=""
if [ -z "$device" ]; then
    echo "gpu-check: no CUDA device here (the torch of $python sees none, or does not import); nothing was checked" >&2
    exit 3
fi
torch_lib=$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH=$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

if [ -n "${CFMEM_PREBUILT:-}" ]; then
    bin=$(cd "$CFMEM_PREBUILT" && pwd)
    cfmem=$bin/cfmem
    jobs_tests=$bin/jobs-tests families_tests=$bin/families-tests base_tests=$bin/base-tests
    source_dir=$(cat "$bin/source-dir")
    if [ "$source_dir" != "$PWD" ] && [ ! -e "$source_dir" ]; then
        mkdir -p "$(dirname "$source_dir")"
        ln -s "$PWD" "$source_dir"
    fi
else
    cargo build --release --locked -p pipeline
    cfmem=$PWD/target/release/cfmem
    while read -r name executable; do
        case $name in
            jobs) jobs_tests=$executable ;;
            families) families_tests=$executable ;;
            base) base_tests=$executable ;;
        esac
    done < <(test_binaries)
fi
export CFMEM_BIN=$cfmem

# Each step: its name, then the command; its output goes to OUT_DIR/NAME.log, its status
# and seconds to OUT_DIR/steps.tsv.
: > "$out/steps.tsv"
step() {
    local name=$1 start status
    shift
    echo "gpu-check: $name" >&2
    start=$(date +%s.%N)
    set +e
    "$@" > "$out/$name.log" 2>&1
    status=$?
    set -e
    printf '%s\t%s\t%s\n' "$name" "$status" "$(python3 -c "import sys; print(round($(date +%s.%N) - $start, 1))")" >> "$out/steps.tsv"
    [ "$status" = 0 ] || echo "gpu-check: $name FAILED (status $status): see $out/$name.log" >&2
}

# Correctness on CUDA.
step stacks-equal-singles "$jobs_tests" --include-ignored --test-threads 1 --nocapture \
    a_stack_of_four_is_four_models_trained_alone_in_every_family \
    a_lora_stack_of_four_is_four_lora_models_trained_alone_in_every_family \
    models_are_independent_of_their_place_in_the_stack
step bf16-tolerance "$jobs_tests" --include-ignored --nocapture bf16_on_cuda_stays_within_its_tolerance_of_fp32
step families-equal-transformers env CFMEM_TEST_DEVICE=cuda "$families_tests" --include-ignored --test-threads 1 \
    a_transformers_model_of_every_family_evaluates_in_cfmem_as_in_transformers \
    lora_runs_of_every_family_keep_adapters_for_peft_and_export_merged_models_for_transformers
step gpt2-and-lora-equal-transformers env CFMEM_TEST_DEVICE=cuda "$base_tests" --include-ignored --test-threads 1 \
    a_transformers_gpt2_evaluates_in_cfmem_as_in_transformers \
    a_lora_run_keeps_each_models_adapters_and_exports_it_merged_for_transformers_and_peft

# Benchmarks. Bases are random weights of real shapes, made by transformers.
work=$out/work
mkdir -p "$work"
base() { # NAME TINY_MODEL_FLAGS...
    local name=$1
    shift
    [ -f "$work/$name/model.safetensors" ] || "$CFMEM_HF_PYTHON" tests/hf/tiny_model.py "$work/$name" "$@"
}
lora_config() { # FILE [TARGETS_TOML]: rank 8, batch 4; without targets, the family's own
    printf '[train]\nadapter = "lora"\nlora_rank = 8\nlora_alpha = 16\nbatch_size = 4\neval_batch_size = 4\nlr = 1e-3\nweight_decay = 0.0\n' > "$1"
    [ -z "${2:-}" ] || echo "lora_targets = $2" >> "$1"
}
bench() { # JSON_NAME CFMEM_BENCH_FLAGS...
    local name=$1
    shift
    "$cfmem" bench --device cuda --json "$@" > "$out/$name.json"
}
gpt2_small() (
    set -e
    base gpt2-small --shape gpt2-small
    bench bench-gpt2-small --init "$work/gpt2-small" --stacks 1 --precisions fp32,bf16
)
lora_against_peer() (
    set -e
    base distilgpt2 --shape gpt2-small --n-layer 6
    lora_config "$work/lora-gpt2.toml" '["c_attn"]'
    bench bench-lora-64 --init "$work/distilgpt2" --config "$work/lora-gpt2.toml" --stacks 64 --steps 20 \
        --document-tokens 64
    "$CFMEM_HF_PYTHON" scripts/train_peer.py "$work/distilgpt2" --rank 8 --alpha 16 --targets c_attn --batch 4 \
        --time 64 --steps 20 --warmup-steps 10 --lr 1e-3 --weight-decay 0.0 --device cuda > "$out/peer-lora.json"
)
family_shape() ( # SHAPE: a full fine-tune, and a LoRA stack of 16 on the family's default targets
    set -e
    base "$1" --shape "$1"
    lora_config "$work/lora-$1.toml"
    bench "bench-$1-full" --init "$work/$1" --stacks 1 --steps 20 --document-tokens 64
    bench "bench-$1-lora" --init "$work/$1" --config "$work/lora-$1.toml" --stacks 16 --steps 20 --document-tokens 64
)
step bench-stacks bench bench-stacks --stacks 1,4,16,64 --precisions fp32,bf16
step bench-gpt2-small gpt2_small
step bench-lora-64 lora_against_peer
step bench-smollm2-135m family_shape smollm2-135m
step bench-pythia-160m family_shape pythia-160m
rm -rf "$work"

"$python" scripts/gpu_check_report.py "$out" "$device"
! grep -qv $'\t0\t' "$out/steps.tsv"
