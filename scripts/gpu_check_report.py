"""The report of scripts/gpu-check.sh: reads what its steps left in OUT_DIR (steps.tsv, each
benchmark's JSON, the bf16 test's printed gaps) and writes OUT_DIR/gpu-check.json (every
number) and OUT_DIR/gpu-check.md (a table for docs/benchmarks.md).

    python scripts/gpu_check_report.py OUT_DIR DEVICE_NAME
"""

import json
import pathlib
import re
import sys

out, device = pathlib.Path(sys.argv[1]), sys.argv[2]


def load(name):
    path = out / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


steps = []
for line in (out / "steps.tsv").read_text().splitlines():
    name, status, seconds = line.split("\t")
    steps.append({"step": name, "passed": status == "0", "status": int(status), "seconds": float(seconds)})

bf16_log = out / "bf16-tolerance.log"
bf16 = [
    {"family": m[1], "same_weights_largest_gap": float(m[2]), "trained_bf16": float(m[3]), "trained_fp32": float(m[4])}
    for m in re.finditer(
        r"(\w+): bf16 evaluation of fp32 weights within ([\d.]+) nats per token of fp32; trained in bf16 ([\d.]+) "
        r"against ([\d.]+)",
        bf16_log.read_text() if bf16_log.exists() else "",
    )
]

benchmarks = {name: load(name) for name in [
    "bench-stacks", "bench-gpt2-small", "bench-lora-64",
    "bench-smollm2-135m-full", "bench-smollm2-135m-lora", "bench-pythia-160m-full", "bench-pythia-160m-lora",
]}
peer = load("peer-lora")
lora_ratio = None
if benchmarks["bench-lora-64"] and peer:
    run = benchmarks["bench-lora-64"]["runs"][0]
    # Models per hour: a stack trains `stack` models a step, the peer one.
    lora_ratio = (run["stack"] / run["step_seconds"]) / (1 / peer["step_seconds_median"])

report = {"device": device, "steps": steps, "bf16": bf16, "benchmarks": benchmarks, "peer_lora": peer,
          "lora_64_models_per_hour_over_peer": lora_ratio}
(out / "gpu-check.json").write_text(json.dumps(report, indent=2) + "\n")

lines = [f"# gpu-check on {device}", "", "| check | result | seconds |", "|---|---|---|"]
lines += [f"| {s['step']} | {'passed' if s['passed'] else 'FAILED (status %d)' % s['status']} | {s['seconds']} |"
          for s in steps]
if bf16:
    lines += ["", "| family | bf16 on fp32 weights: largest gap (nats/token) | trained in bf16 | trained in fp32 |",
              "|---|---|---|---|"]
    lines += [f"| {b['family']} | {b['same_weights_largest_gap']:.4f} | {b['trained_bf16']:.4f} | {b['trained_fp32']:.4f} |"
              for b in bf16]
lines += ["", "| benchmark | stack | precision | tokens/s | tokens/s a model | fraction of peak | peak memory (GiB) |",
          "|---|---|---|---|---|---|---|"]
for name, result in benchmarks.items():
    for run in (result or {}).get("runs", []):
        memory = run.get("peak_memory_bytes")
        lines.append(
            f"| {name} | {run['stack']} | {run['precision']} | {run['tokens_per_second']:,.0f} | "
            f"{run['tokens_per_second_per_model']:,.0f} | {100 * run['fraction_of_peak']:.1f}% | "
            f"{'' if memory is None else f'{memory / 2**30:.2f}'} |"
        )
if lora_ratio is not None:
    lines += ["", f"LoRA stack of 64 (distilgpt2 shape, rank 8 on c_attn) against transformers + peft training one "
              f"model at a time: {lora_ratio:.1f}× the peer's models per hour "
              f"(peer {peer['tokens_per_second']:,.0f} tokens/s)."]
(out / "gpu-check.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
