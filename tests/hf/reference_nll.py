"""transformers' own per-document loss and accuracy of a Hugging Face causal language model
(GPT-2, Llama, Qwen2 or GPT-NeoX), cut into windows exactly as cfmem evaluates a document:
the reference that cfmem's evaluation of an imported model must match.

    reference_nll.py MODEL_DIR CORPUS_JSONL OUT_JSONL [--window W] [--adapter DIR]

MODEL_DIR holds config.json, model.safetensors and tokenizer.json (as tiny_model.py writes
them); the model, whatever its family, is loaded with `AutoModelForCausalLM` and runs in
float32, eval mode, on the CPU. With --adapter, the LoRA adapters in DIR
(adapter_config.json, adapter_model.safetensors) are loaded over it with peft's
`PeftModel.from_pretrained`, unmerged: the model evaluated is the base plus its adapters.
Each document (a JSONL object with a "text" field; blank lines are skipped, as cfmem skips
them) is encoded with `Tokenizer.encode(text, add_special_tokens=False)`, so a literal
"<|endoftext|>" in a text is that special token, as in cfmem, which encodes the same way,
and a tokenizer whose post-processor adds a BOS token (as Llama's does) adds nothing here.

A document of n tokens t[0..n) is cut into windows [start, end), start = 0, W, 2W, ... and
end = min(start + W, n), W defaulting to the context - 1 (the context: n_positions for
GPT-2, max_position_embeddings for the others). A window's input is
[t[start - 1] if start > 0 else BOS] + t[start:end - 1] (BOS = config.bos_token_id) and its
targets are t[start:end]: every token is predicted once, each window is a forward of its
own with positions from 0. Per document, one line of OUT_JSONL:

    {"ids": [...], "tokens": n, "nll": float, "correct": int}

nll sums -log_softmax(logits)[target] (float32) over all targets in float64, in token
order; correct counts the targets equal to the first argmax of their logits. An empty
document gives nll 0 and correct 0. The windows run one at a time, so nothing depends on
batching. Prints nothing but errors.
"""

import argparse
import json
import os
import sys
import warnings

# Before transformers is imported: nothing may try the network, and nothing needs to talk.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402


def windows(n: int, width: int):
    """The [start, end) windows of a document of n tokens."""
    return [(start, min(start + width, n)) for start in range(0, n, width)]


def score(model, ids: list[int], bos: int, width: int) -> tuple[float, int]:
    """(nll, correct) of one document's tokens."""
    nll = 0.0  # a Python float: float64
    correct = 0
    for start, end in windows(len(ids), width):
        first = ids[start - 1] if start > 0 else bos
        inputs = torch.tensor([[first] + ids[start : end - 1]], dtype=torch.long)
        targets = torch.tensor(ids[start:end], dtype=torch.long)
        logits = model(input_ids=inputs).logits[0].to(torch.float32)
        log_probs = torch.log_softmax(logits, dim=-1)
        picked = log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)
        # Added one by one in token order, so the float64 sum is the same on every
        # Python (3.12's sum() of floats compensates; a loop does not).
        for value in picked.tolist():
            nll -= value
        correct += int((logits.argmax(dim=-1) == targets).sum())
    return nll, correct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("corpus_jsonl")
    parser.add_argument("out_jsonl")
    parser.add_argument("--window", type=int, help="tokens per window (default: the context - 1)")
    parser.add_argument("--adapter", help="a directory of LoRA adapters (peft's layout) to load over the model")
    args = parser.parse_args()

    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).to("cpu").eval()
    config = model.config
    if args.adapter is not None:
        from peft import PeftModel

        # peft asks transformers 5 about gradient checkpointing with a name that warns.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model = PeftModel.from_pretrained(model, args.adapter).eval()
    tokenizer = Tokenizer.from_file(os.path.join(args.model_dir, "tokenizer.json"))
    bos = config.bos_token_id
    if bos is None:
        raise SystemExit(f"{args.model_dir}/config.json has no bos_token_id")
    # GPT-2's context is n_positions; the others' (and GPT-2's alias of it) max_position_embeddings.
    context = config.n_positions if config.model_type == "gpt2" else config.max_position_embeddings
    width = args.window if args.window is not None else context - 1
    if not 1 <= width <= context:
        raise SystemExit(f"--window {width} is not in 1..{context}, the model's context")

    results = []
    # utf-8-sig: a byte-order mark is not part of the first text, as cfmem reads it.
    with open(args.corpus_jsonl, encoding="utf-8-sig") as corpus, torch.inference_mode():
        for number, line in enumerate(corpus, start=1):
            if not line.strip():
                continue
            text = json.loads(line)["text"]
            ids = tokenizer.encode(text, add_special_tokens=False).ids
            too_big = [i for i in ids if i >= config.vocab_size]
            if too_big:
                raise SystemExit(f"line {number}: token id {too_big[0]} is not below vocab_size {config.vocab_size}")
            nll, correct = score(model, ids, bos, width)
            results.append({"ids": ids, "tokens": len(ids), "nll": nll, "correct": correct})

    with open(args.out_jsonl, "w", encoding="utf-8") as out:
        for result in results:
            out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    sys.exit(main())
