"""One optimizer step of a Hugging Face causal language model in PyTorch: the reference that
a training step of cfmem on an imported model must match.

    reference_step.py MODEL_DIR BATCH_JSON [BATCH_JSON ...] OUT_DIR --lr LR
                      [--weight-decay 0.01] [--beta1 0.9] [--beta2 0.99] [--clip 1.0]

MODEL_DIR holds config.json and model.safetensors (as tiny_model.py writes them), any family
`AutoModelForCausalLM` loads; the model runs in float32, train mode (its dropout is 0), on
the CPU. BATCH_JSON is {"inputs": [[ids...], ...], "targets": [[ids or -100...], ...]}:
rows of one length, padded at the end, -100 where a position has no target. No attention
mask is passed: the padding sits after every real position of a causal row, so it changes
none of them.

The loss is the mean cross-entropy over the targets that are not -100 (`F.cross_entropy(
logits.view(-1, V), targets.view(-1), ignore_index=-100)`), the gradient its backward.
With --clip > 0, `torch.nn.utils.clip_grad_norm_` scales the gradients of all parameters
together to a norm of at most --clip. Then one `torch.optim.AdamW` step (lr --lr, betas
(--beta1, --beta2), eps 1e-8) with two groups: --weight-decay on the 2-D weight matrices of
the linear layers (q/k/v/o, query_key_value, dense*, gate/up/down, GPT-2's Conv1D c_attn,
c_proj and c_fc, and an untied output head: lm_head or embed_out), none on the embeddings
(the token embedding, hence a tied head, and GPT-2's position embedding), the norm weights
and the biases. A tied head stays tied: it is the embedding's parameter, stepped once.

Each batch steps the model of MODEL_DIR afresh (one python start for several references).
With one batch OUT_DIR, with several OUT_DIR/0, OUT_DIR/1, ... in their order, gets the
stepped model from `save_pretrained` (config.json, model.safetensors,
float32), MODEL_DIR's tokenizer.json when it has one (so OUT_DIR is a model directory of
its own), and loss.json, {"loss": float}: the loss before the step. Prints nothing but
errors.
"""

import argparse
import inspect
import json
import os
import shutil
import sys

# Before transformers is imported: nothing may try the network, and nothing needs to talk.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

IGNORE = -100


def read_batch(path: str, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), two [rows, length] long tensors, checked."""
    with open(path, encoding="utf-8") as file:
        batch = json.load(file)
    inputs, targets = batch.get("inputs"), batch.get("targets")
    if not inputs or not isinstance(inputs, list) or not isinstance(targets, list):
        raise SystemExit(f"{path}: needs non-empty lists \"inputs\" and \"targets\"")
    if len(inputs) != len(targets):
        raise SystemExit(f"{path}: {len(inputs)} input rows but {len(targets)} target rows")
    length = len(inputs[0])
    for number, (row, target) in enumerate(zip(inputs, targets)):
        if len(row) != length or len(target) != length:
            raise SystemExit(f"{path}: row {number} is not {length} long in both inputs and targets")
        if any(not 0 <= i < vocab_size for i in row):
            raise SystemExit(f"{path}: row {number} has an input id outside 0..{vocab_size - 1}")
        if any(t != IGNORE and not 0 <= t < vocab_size for t in target):
            raise SystemExit(f"{path}: row {number} has a target outside 0..{vocab_size - 1} and not {IGNORE}")
    inputs = torch.tensor(inputs, dtype=torch.long)
    targets = torch.tensor(targets, dtype=torch.long)
    if not (targets != IGNORE).any():
        raise SystemExit(f"{path}: every target is {IGNORE}: there is no loss")
    return inputs, targets


def parameter_groups(model, weight_decay: float) -> list[dict]:
    """AdamW's groups: decay on the linear layers' 2-D matrices (and an untied head's), none
    on embeddings (so none on a tied head), norm weights and biases."""
    embeddings = {
        id(module.weight) for module in model.modules() if isinstance(module, torch.nn.Embedding)
    }
    decay, no_decay = [], []
    # parameters() lists a tied head once: it is the token embedding's parameter.
    for parameter in model.parameters():
        if parameter.dim() == 2 and id(parameter) not in embeddings:
            decay.append(parameter)
        else:
            no_decay.append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("batch_json", nargs="+")
    parser.add_argument("out_dir")
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--beta1", type=float, default=0.9)
    parser.add_argument("--beta2", type=float, default=0.99)
    parser.add_argument("--clip", type=float, default=1.0, help="the gradient norm's limit (0: no clipping)")
    args = parser.parse_args()

    for index, batch_json in enumerate(args.batch_json):
        out_dir = args.out_dir if len(args.batch_json) == 1 else os.path.join(args.out_dir, str(index))
        step(args, batch_json, out_dir)


def step(args, batch_json: str, out_dir: str) -> None:
    """One step of MODEL_DIR's model on the batch of `batch_json`, saved in `out_dir`."""
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).to("cpu").train()
    config = model.config
    tied = bool(getattr(config, "tie_word_embeddings", False))
    head, embedding = model.get_output_embeddings(), model.get_input_embeddings()
    if tied and head.weight is not embedding.weight:
        raise SystemExit(f"{args.model_dir}: tie_word_embeddings is set, but the head is not the embedding")
    inputs, targets = read_batch(batch_json, config.vocab_size)

    logits = model(input_ids=inputs, use_cache=False).logits.to(torch.float32)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE)
    loss.backward()
    parameters = list(model.parameters())
    if args.clip > 0:
        torch.nn.utils.clip_grad_norm_(parameters, args.clip)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, args.weight_decay),
        lr=args.lr,
        betas=(args.beta1, args.beta2),
        eps=1e-8,
    )
    optimizer.step()
    if tied and model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
        raise SystemExit("the step untied the head from the embedding")

    os.makedirs(out_dir, exist_ok=True)
    model = model.eval()
    # transformers 5 always writes safetensors (its save_pretrained has no
    # safe_serialization any more); 4.x needs the flag.
    kwargs = {}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        kwargs["safe_serialization"] = True
    model.save_pretrained(out_dir, **kwargs)
    tokenizer = os.path.join(args.model_dir, "tokenizer.json")
    if os.path.isfile(tokenizer) and not os.path.samefile(args.model_dir, out_dir):
        shutil.copyfile(tokenizer, os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "loss.json"), "w", encoding="utf-8") as out:
        json.dump({"loss": float(loss.detach())}, out)
        out.write("\n")
    for name in ("config.json", "model.safetensors", "loss.json"):
        if not os.path.isfile(os.path.join(out_dir, name)):
            raise SystemExit(f"{name} was not written in {out_dir}")


if __name__ == "__main__":
    sys.exit(main())
