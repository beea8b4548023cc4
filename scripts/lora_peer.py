"""The benchmark peer of cfmem's LoRA training: what a user would write without cfmem to
LoRA-fine-tune one GPT-2 at a time with Hugging Face transformers and peft, timed step by
step, so that cfmem's own trainer can be compared with it in models per hour.

    lora_peer.py BASE_DIR [--rank 8] [--alpha 16] [--targets c_attn[,attn.c_proj,c_fc,mlp.c_proj]]
                 [--batch 4] [--time 64] [--steps 10] [--warmup-steps 3] [--lr 1e-3]
                 [--lr-warmup N] [--weight-decay 0.0] [--grad-clip 1.0] [--threads N] [--device cpu|cuda]
                 [--seed 0] [--fixed-batch] [--verbose]

BASE_DIR holds config.json and model.safetensors (as tests/hf/tiny_model.py writes them).
The model is loaded with `GPT2LMHeadModel.from_pretrained(BASE_DIR, dtype=torch.float32)`
on the CPU, with its dropouts forced to 0 (cfmem trains without dropout), and put in train
mode. It is wrapped with `peft.get_peft_model` and a `LoraConfig(r=rank, lora_alpha=alpha,
lora_dropout=0.0, fan_in_fan_out=True, bias="none")` whose target_modules is the explicit
list of full module names that the cfmem target names select in every block i:

    c_attn       transformer.h.i.attn.c_attn    (the fused q, k, v projection)
    attn.c_proj  transformer.h.i.attn.c_proj    (the attention output projection)
    c_fc         transformer.h.i.mlp.c_fc       (the MLP's up projection)
    mlp.c_proj   transformer.h.i.mlp.c_proj     (the MLP's down projection)

(peft's bare "c_proj" would match both c_proj's, hence the full names.) The script checks
that exactly n_layer x len(targets) modules got an adapter, and prints the trainable
parameter count to stderr; only the LoRA A and B matrices train.

The data are random token ids in [0, vocab_size), [batch, time + 1] per step, all drawn
before anything is timed from a `torch.Generator` seeded with --seed (with --fixed-batch,
one batch is drawn and every step trains on it: a quick check that the loss falls). A
step feeds the first `time` ids of each row as input_ids and computes
`torch.nn.functional.cross_entropy` of the logits against the next ids, so exactly
batch x time targets are predicted, averaged. Then, as a careful user would write it:
`loss.backward()`, `clip_grad_norm_(trainable, grad_clip)` when grad_clip > 0,
`AdamW(trainable, lr, betas=(0.9, 0.99), eps=1e-8, weight_decay).step()`, a LambdaLR
step and `zero_grad(set_to_none=True)`. The learning rate is cfmem's schedule
(jobs/src/train.rs `learning_rate`): linear warmup to lr over --lr-warmup steps (default
--warmup-steps), then cosine decay to 0 at the last of warmup-steps + steps steps.

First --warmup-steps steps run untimed (allocator, thread pools and the first backward's
setup warm up), then --steps steps are each timed with `time.perf_counter()` from before
the forward to after zero_grad; reading the loss for the log is outside the timing.
--threads N > 0 calls `torch.set_num_threads(N)` first; 0 leaves torch's default. With
--device cuda the model and the batches live on the GPU, and each timed step is bracketed
by `torch.cuda.synchronize()`.

stdout is one JSON object:

    {"step_seconds_median", "step_seconds" (every timed step), "tokens_per_second"
     (batch * time / median), "trainable_parameters", "base_parameters" (the base model's,
     tied weights once), "peak_rss_bytes" (ru_maxrss * 1024), "batch", "time", "rank",
     "alpha", "targets", "torch_threads", "transformers", "peft", "torch",
     "lr_warmup", "fixed_batch", "losses" (every step's loss, untimed ones first)}

Everything else goes to stderr. A BASE_DIR without config.json, an unknown target name or
a --time beyond n_positions exits non-zero with a message naming the problem.
"""

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time
import warnings

# Before transformers is imported: nothing may try the network, and nothing needs to talk.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# peft asks transformers a deprecated question while wrapping; the answer is unaffected.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

import peft  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import GPT2LMHeadModel  # noqa: E402

# cfmem target name -> the module path inside a block transformer.h.i.
TARGETS = {
    "c_attn": "attn.c_attn",
    "attn.c_proj": "attn.c_proj",
    "c_fc": "mlp.c_fc",
    "mlp.c_proj": "mlp.c_proj",
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_targets(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise SystemExit("lora_peer: --targets is empty")
    unknown = [name for name in names if name not in TARGETS]
    if unknown:
        raise SystemExit(
            f"lora_peer: unknown target {', '.join(unknown)}; known: {', '.join(TARGETS)}"
        )
    if len(set(names)) != len(names):
        raise SystemExit(f"lora_peer: --targets names a module twice: {text}")
    return names


def learning_rate_factor(step: int, total: int, warmup: int) -> float:
    """cfmem's schedule over the peak: linear warmup, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    decay_steps = max(total - warmup, 1)
    progress = (step - warmup) / decay_steps
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def has_adapter(module) -> bool:
    """Whether a module carries a LoRA adapter (peft's LoraLayer has a non-empty lora_A)."""
    lora_a = getattr(module, "lora_A", None)
    return isinstance(lora_a, torch.nn.ModuleDict) and len(lora_a) > 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_dir")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--targets", default="c_attn", help=f"comma-separated: {', '.join(TARGETS)}")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--time", type=int, default=64, help="tokens fed per row")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lr-warmup", type=int, help="LR warmup steps (default: --warmup-steps)")
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--grad-clip", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads when > 0")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fixed-batch", action="store_true", help="train every step on one batch")
    parser.add_argument("--verbose", action="store_true", help="list the adapted modules and losses")
    args = parser.parse_args()

    targets = parse_targets(args.targets)
    for flag in ("rank", "batch", "time", "steps"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"lora_peer: --{flag} must be at least 1")
    if args.warmup_steps < 0:
        raise SystemExit("lora_peer: --warmup-steps must not be negative")
    lr_warmup = args.warmup_steps if args.lr_warmup is None else args.lr_warmup
    if lr_warmup < 0:
        raise SystemExit("lora_peer: --lr-warmup must not be negative")
    if not os.path.isdir(args.base_dir):
        raise SystemExit(f"lora_peer: base directory {args.base_dir} does not exist")
    if not os.path.isfile(os.path.join(args.base_dir, "config.json")):
        raise SystemExit(f"lora_peer: {args.base_dir} has no config.json")

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    try:
        model = GPT2LMHeadModel.from_pretrained(
            args.base_dir,
            dtype=torch.float32,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            summary_first_dropout=0.0,
        )
    except (OSError, ValueError) as error:
        raise SystemExit(f"lora_peer: cannot load a GPT-2 from {args.base_dir}: {error}")
    config = model.config
    if args.time > config.n_positions:
        raise SystemExit(f"lora_peer: --time {args.time} exceeds n_positions {config.n_positions}")
    base_parameters = sum(p.numel() for p in model.parameters())

    module_names = {name for name, _ in model.named_modules()}
    target_modules = []
    for layer in range(config.n_layer):
        for target in targets:
            name = f"transformer.h.{layer}.{TARGETS[target]}"
            if name not in module_names:
                raise SystemExit(f"lora_peer: the base model has no module {name}")
            target_modules.append(name)

    lora_config = peft.LoraConfig(
        r=args.rank,
        lora_alpha=args.alpha,
        lora_dropout=0.0,
        target_modules=target_modules,
        fan_in_fan_out=True,
        bias="none",
    )
    model = peft.get_peft_model(model, lora_config)
    device = torch.device(args.device)
    model.to(device).train()

    adapted = sorted(
        name.removeprefix("base_model.model.")
        for name, module in model.named_modules()
        if has_adapter(module)
    )
    if adapted != sorted(target_modules):
        raise SystemExit(
            f"lora_peer: LoRA went to {adapted}, not exactly the {len(target_modules)} modules "
            f"{sorted(target_modules)}"
        )
    trainable = [p for p in model.parameters() if p.requires_grad]
    trainable_parameters = sum(p.numel() for p in trainable)
    trainable_names = [n for n, p in model.named_parameters() if p.requires_grad]
    if not all(".lora_A." in n or ".lora_B." in n for n in trainable_names):
        raise SystemExit(f"lora_peer: parameters other than LoRA train: {trainable_names}")
    log(
        f"lora_peer: {len(adapted)} adapted modules ({config.n_layer} layers x {len(targets)} "
        f"targets), trainable parameters {trainable_parameters} of {base_parameters} base"
    )
    if args.verbose:
        for name in adapted:
            log(f"lora_peer: adapter on {name}")

    total = args.warmup_steps + args.steps
    generator = torch.Generator().manual_seed(args.seed)
    draws = 1 if args.fixed_batch else total
    data = torch.randint(
        0, config.vocab_size, (draws, args.batch, args.time + 1), generator=generator, dtype=torch.long
    )
    batches = [
        (data[i, :, :-1].contiguous().to(device), data[i, :, 1:].contiguous().to(device)) for i in range(draws)
    ]

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    optimizer = torch.optim.AdamW(
        trainable, lr=args.lr, betas=(0.9, 0.99), eps=1e-8, weight_decay=args.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, total, lr_warmup)
    )

    def train_step(step: int) -> torch.Tensor:
        inputs, labels = batches[0 if args.fixed_batch else step]
        logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), labels.reshape(-1)
        )
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trainable, args.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    losses = []
    step_seconds = []
    for step in range(total):
        timed = step >= args.warmup_steps
        synchronize()
        start = time.perf_counter()
        loss = train_step(step)
        synchronize()
        elapsed = time.perf_counter() - start
        if timed:
            step_seconds.append(elapsed)
        losses.append(loss.item())
        if args.verbose:
            log(f"lora_peer: step {step} {'timed' if timed else 'warmup'} loss {losses[-1]:.6f} {elapsed:.4f}s")

    median = statistics.median(step_seconds)
    result = {
        "step_seconds_median": median,
        "step_seconds": step_seconds,
        "tokens_per_second": args.batch * args.time / median,
        "trainable_parameters": trainable_parameters,
        "base_parameters": base_parameters,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "device": str(device),
        "peak_device_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        "batch": args.batch,
        "time": args.time,
        "rank": args.rank,
        "alpha": args.alpha,
        "targets": targets,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "torch": torch.__version__,
        "lr_warmup": lr_warmup,
        "fixed_batch": args.fixed_batch,
        "losses": losses,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
