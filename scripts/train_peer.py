"""The benchmark peer of cfmem's training: what a user would write without cfmem to
fine-tune one causal language model at a time with Hugging Face transformers (and peft, for
LoRA), timed step by step, so that cfmem's own trainer can be compared with it. Every
family cfmem reads: gpt2, llama, qwen2 and gpt_neox.

    train_peer.py BASE_DIR [--adapter lora|full] [--rank 8] [--alpha 16] [--targets NAMES|all]
                  [--batch 4] [--time 64] [--steps 10] [--warmup-steps 3] [--lr 1e-3]
                  [--lr-warmup N] [--weight-decay 0.0] [--grad-clip 1.0] [--threads N] [--device cpu|cuda]
                  [--seed 0] [--fixed-batch] [--verbose]

BASE_DIR holds config.json and model.safetensors (as tests/hf/tiny_model.py or cfmem
pretrain writes them). The model is loaded with `AutoModelForCausalLM.from_pretrained(BASE_DIR,
dtype=torch.float32)` on the CPU, every dropout of its config (resid_pdrop, embd_pdrop,
attn_pdrop, summary_first_dropout, attention_dropout, hidden_dropout, classifier_dropout,
whichever the family has) set to 0 and every torch.nn.Dropout's p to 0 (cfmem trains
without dropout), and put in train mode. Its config's model_type is the family; another
model_type is refused.

--adapter lora (the default): the model is wrapped with `peft.get_peft_model` and a
`LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, bias="none", fan_in_fan_out=<gpt2
only, whose Conv1D stores weights [in, out]>)` whose target_modules is the explicit list of
full module names that the target names (peft's, as cfmem's `train.lora_targets` names
them) select in every block i:

    gpt2      transformer.h.i.    c_attn -> attn.c_attn, attn.c_proj -> attn.c_proj,
                                  c_fc -> mlp.c_fc, mlp.c_proj -> mlp.c_proj
    llama,    model.layers.i.     q_proj, k_proj, v_proj, o_proj -> self_attn.NAME,
    qwen2                         gate_proj, up_proj, down_proj -> mlp.NAME
    gpt_neox  gpt_neox.layers.i.  query_key_value -> attention.query_key_value,
                                  dense -> attention.dense, dense_h_to_4h -> mlp.dense_h_to_4h,
                                  dense_4h_to_h -> mlp.dense_4h_to_h

(peft's bare "c_proj" would match both of GPT-2's c_proj, and a bare "dense" would match
GPT-NeoX's dense_h_to_4h and dense_4h_to_h too: hence the full names.) --targets is a
comma-separated list of those names, or "all" (every one of the family's), and defaults to
cfmem's default for the family (gpt2 c_attn; llama and qwen2 q_proj,v_proj; gpt_neox
query_key_value). The script checks that exactly n_layer x len(targets) modules got an
adapter and that only LoRA A and B matrices train; AdamW's weight decay acts on them alone.

--adapter full: every parameter trains (a tied head once, as the embedding it is); AdamW
decays the matrices (every 2-D parameter but the embedding tables, so an untied head
decays and a tied one does not) and not the embeddings, norms or biases, as cfmem does.
--rank, --alpha and --targets are refused with --adapter full.

The data are random token ids in [0, vocab_size), [batch, time + 1] per step, all drawn
before anything is timed from a `torch.Generator` seeded with --seed (with --fixed-batch,
one batch is drawn and every step trains on it: a quick check that the loss falls). A
step feeds the first `time` ids of each row as input_ids and computes
`torch.nn.functional.cross_entropy` of the logits against the next ids, so exactly
batch x time targets are predicted, averaged. Then, as a careful user would write it:
`loss.backward()`, `clip_grad_norm_(trainable, grad_clip)` when grad_clip > 0,
`AdamW(groups, lr, betas=(0.9, 0.99), eps=1e-8).step()`, a LambdaLR step and
`zero_grad(set_to_none=True)`. The learning rate is cfmem's schedule (jobs/src/train.rs
`learning_rate`): linear warmup to lr over --lr-warmup steps (default --warmup-steps), then
cosine decay to 0 at the last of warmup-steps + steps steps.

First --warmup-steps steps run untimed (allocator, thread pools and the first backward's
setup warm up), then --steps steps are each timed with `time.perf_counter()` from before
the forward to after zero_grad; reading the loss for the log is outside the timing.
--threads N > 0 calls `torch.set_num_threads(N)` first; 0 leaves torch's default. With
--device cuda the model and the batches live on the GPU, and each timed step is bracketed
by `torch.cuda.synchronize()`.

stdout is one JSON object:

    {"step_seconds_median", "step_seconds" (every timed step), "tokens_per_second"
     (batch * time / median), "trainable_parameters", "base_parameters" (the base model's,
     tied weights once), "decayed_parameters" (those AdamW decays when --weight-decay > 0),
     "peak_rss_bytes" (ru_maxrss * 1024, loading included), "device", "peak_device_bytes"
     (CUDA: torch.cuda.max_memory_allocated; else null), "batch", "time", "adapter"
     ("lora" or "full"), "family" (config.json's model_type), "rank", "alpha", "targets"
     (null with --adapter full), "torch_threads", "transformers", "peft", "torch",
     "lr_warmup", "fixed_batch", "losses" (every step's loss, untimed ones first)}

Everything else goes to stderr. A BASE_DIR without config.json, a family cfmem does not
read, an unknown target name or a --time beyond the context (n_positions or
max_position_embeddings) exits non-zero with a message naming the problem.
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
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

NAME = "train_peer"

_LLAMA_TARGETS = {
    "q_proj": "self_attn.q_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
    "o_proj": "self_attn.o_proj",
    "gate_proj": "mlp.gate_proj",
    "up_proj": "mlp.up_proj",
    "down_proj": "mlp.down_proj",
}
# family -> (the blocks' module path: block i is PATH.i, {target name -> module path inside a
# block}, the default targets: cfmem's, subsets/src/family.rs `default_lora_targets`).
FAMILIES = {
    "gpt2": (
        "transformer.h",
        {"c_attn": "attn.c_attn", "attn.c_proj": "attn.c_proj", "c_fc": "mlp.c_fc", "mlp.c_proj": "mlp.c_proj"},
        ["c_attn"],
    ),
    "llama": ("model.layers", _LLAMA_TARGETS, ["q_proj", "v_proj"]),
    "qwen2": ("model.layers", _LLAMA_TARGETS, ["q_proj", "v_proj"]),
    "gpt_neox": (
        "gpt_neox.layers",
        {
            "query_key_value": "attention.query_key_value",
            "dense": "attention.dense",
            "dense_h_to_4h": "mlp.dense_h_to_4h",
            "dense_4h_to_h": "mlp.dense_4h_to_h",
        },
        ["query_key_value"],
    ),
}
# Config fields that hold a dropout probability, in one family or another.
DROPOUTS = (
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "summary_first_dropout",
    "attention_dropout",
    "hidden_dropout",
    "classifier_dropout",
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fail(message: str) -> SystemExit:
    return SystemExit(f"{NAME}: {message}")


def parse_targets(text: str | None, family: str) -> list[str]:
    _, known, default = FAMILIES[family]
    if text is None:
        return list(default)
    if text.strip() == "all":
        return list(known)
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise fail("--targets is empty")
    unknown = [name for name in names if name not in known]
    if unknown:
        raise fail(f"unknown target {', '.join(unknown)} for a {family} model; known: {', '.join(known)}, or all")
    if len(set(names)) != len(names):
        raise fail(f"--targets names a module twice: {text}")
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


def load(base_dir: str):
    """The base as transformers loads it, without dropout; and its family."""
    try:
        config = AutoConfig.from_pretrained(base_dir)
    except (OSError, ValueError) as error:
        raise fail(f"cannot read the config of {base_dir}: {error}")
    family = config.model_type
    if family not in FAMILIES:
        raise fail(f"{base_dir} is a {family} model; this peer trains {', '.join(FAMILIES)}")
    for field in DROPOUTS:
        if isinstance(getattr(config, field, None), float):
            setattr(config, field, 0.0)
    try:
        model = AutoModelForCausalLM.from_pretrained(base_dir, config=config, dtype=torch.float32)
    except (OSError, ValueError) as error:
        raise fail(f"cannot load a {family} model from {base_dir}: {error}")
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model, family


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_dir")
    parser.add_argument("--adapter", choices=("lora", "full"), default="lora")
    parser.add_argument("--rank", type=int, help="LoRA rank (default 8)")
    parser.add_argument("--alpha", type=float, help="LoRA alpha (default 16)")
    parser.add_argument("--targets", help="comma-separated LoRA targets of the family, or all (default: cfmem's)")
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

    lora = args.adapter == "lora"
    if not lora:
        given = [flag for flag in ("rank", "alpha", "targets") if getattr(args, flag) is not None]
        if given:
            settings = "is a LoRA setting" if len(given) == 1 else "are LoRA settings"
            raise fail(f"--{', --'.join(given)} {settings}; --adapter full trains every weight")
    rank = 8 if args.rank is None else args.rank
    alpha = 16.0 if args.alpha is None else args.alpha
    for flag, value in (("rank", rank), ("batch", args.batch), ("time", args.time), ("steps", args.steps)):
        if value < 1:
            raise fail(f"--{flag} must be at least 1")
    if args.warmup_steps < 0:
        raise fail("--warmup-steps must not be negative")
    lr_warmup = args.warmup_steps if args.lr_warmup is None else args.lr_warmup
    if lr_warmup < 0:
        raise fail("--lr-warmup must not be negative")
    if not os.path.isdir(args.base_dir):
        raise fail(f"base directory {args.base_dir} does not exist")
    if not os.path.isfile(os.path.join(args.base_dir, "config.json")):
        raise fail(f"{args.base_dir} has no config.json")

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    model, family = load(args.base_dir)
    targets = parse_targets(args.targets, family) if lora else None
    config = model.config
    context = getattr(config, "n_positions", None) or config.max_position_embeddings
    if args.time > context:
        field = "n_positions" if getattr(config, "n_positions", None) else "max_position_embeddings"
        raise fail(f"--time {args.time} exceeds {field} {context}")
    n_layer = config.num_hidden_layers
    base_parameters = sum(p.numel() for p in model.parameters())
    embeddings = {
        id(module.weight) for module in model.modules() if isinstance(module, torch.nn.Embedding)
    }

    target_modules = []
    if lora:
        blocks, paths, _ = FAMILIES[family]
        module_names = {name for name, _ in model.named_modules()}
        for layer in range(n_layer):
            for target in targets:
                name = f"{blocks}.{layer}.{paths[target]}"
                if name not in module_names:
                    raise fail(f"the base model has no module {name}")
                target_modules.append(name)
        lora_config = peft.LoraConfig(
            r=rank,
            lora_alpha=alpha,
            lora_dropout=0.0,
            target_modules=target_modules,
            fan_in_fan_out=family == "gpt2",
            bias="none",
        )
        model = peft.get_peft_model(model, lora_config)
    device = torch.device(args.device)
    model.to(device).train()
    if any(module.p != 0.0 for module in model.modules() if isinstance(module, torch.nn.Dropout)):
        raise fail("a dropout is still active")

    trainable_named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    trainable = [p for _, p in trainable_named]
    trainable_parameters = sum(p.numel() for p in trainable)
    if lora:
        adapted = sorted(
            name.removeprefix("base_model.model.")
            for name, module in model.named_modules()
            if has_adapter(module)
        )
        if adapted != sorted(target_modules):
            raise fail(
                f"LoRA went to {adapted}, not exactly the {len(target_modules)} modules {sorted(target_modules)}"
            )
        names = [n for n, _ in trainable_named]
        if not all(".lora_A." in n or ".lora_B." in n for n in names):
            raise fail(f"parameters other than LoRA train: {names}")
        decayed = trainable
        groups = [{"params": trainable, "weight_decay": args.weight_decay}]
        log(
            f"{NAME}: {family}, LoRA on {len(adapted)} modules ({n_layer} layers x {len(targets)} targets), "
            f"trainable parameters {trainable_parameters} of {base_parameters} base"
        )
        if args.verbose:
            for name in adapted:
                log(f"{NAME}: adapter on {name}")
    else:
        if trainable_parameters != base_parameters:
            raise fail(f"{trainable_parameters} of the {base_parameters} parameters train, not all")
        decayed = [p for p in trainable if p.dim() == 2 and id(p) not in embeddings]
        kept = [p for p in trainable if not (p.dim() == 2 and id(p) not in embeddings)]
        groups = [
            {"params": decayed, "weight_decay": args.weight_decay},
            {"params": kept, "weight_decay": 0.0},
        ]
        log(
            f"{NAME}: {family}, full fine-tuning of {base_parameters} parameters, "
            f"{sum(p.numel() for p in decayed)} of them matrices under weight decay"
        )
        if args.verbose:
            for name, p in trainable_named:
                log(f"{NAME}: {name} {tuple(p.shape)} decay {p.dim() == 2 and id(p) not in embeddings}")

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

    optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.99), eps=1e-8)
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
            log(f"{NAME}: step {step} {'timed' if timed else 'warmup'} loss {losses[-1]:.6f} {elapsed:.4f}s")

    median = statistics.median(step_seconds)
    result = {
        "step_seconds_median": median,
        "step_seconds": step_seconds,
        "tokens_per_second": args.batch * args.time / median,
        "trainable_parameters": trainable_parameters,
        "base_parameters": base_parameters,
        "decayed_parameters": sum(p.numel() for p in decayed),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "device": str(device),
        "peak_device_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        "batch": args.batch,
        "time": args.time,
        "adapter": args.adapter,
        "family": family,
        "rank": rank if lora else None,
        "alpha": alpha if lora else None,
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
