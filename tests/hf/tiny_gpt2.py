"""Writes a random GPT-2 in the Hugging Face layout, for the reference checks of cfmem's
Hugging Face import and export: OUT_DIR/config.json and OUT_DIR/model.safetensors from
transformers' own `save_pretrained`, and OUT_DIR/tokenizer.json, a small byte-level BPE.

    tiny_gpt2.py OUT_DIR [--seed N] [--n-layer 2] [--n-head 2] [--n-embd 32]
                 [--n-positions 32] [--activation gelu_new] [--untied] [--shape gpt2-small]

Nothing comes from the Hugging Face hub: the weights are `torch.manual_seed(seed)` random
(float32) and the tokenizer is trained here on the paragraph below, to about 350 tokens,
with `<|endoftext|>` added last as the BOS and EOS token. The model's vocab_size is the
tokenizer's, except for `--shape gpt2-small` (GPT-2 small's 124M-parameter shape, vocab
50257, whose explicit flags still win): there the tokenizer uses only the first ids of a
larger embedding, which a model may do. Dropout is 0, so the model is the same function in
train and eval mode. Prints nothing but errors.
"""

import argparse
import inspect
import os
import sys

# Before transformers is imported: nothing may try the network, and nothing needs to talk.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

EOS = "<|endoftext|>"
# Pairs seen fewer times are never merged, as in cfmem's own BPE training.
MIN_PAIR_FREQUENCY = 2
# The trainer's target before <|endoftext|> is added; the paragraph yields about this many.
BPE_VOCAB = 352

PARAGRAPH = """\
The quick brown fox jumps over the lazy dog, and the dog does not seem to mind. In the
morning the farmer walks to the field with his two dogs, and they run ahead of him along the
old stone wall. The river that runs past the farm is cold and clear; in the summer the
children swim in it, and in the winter it freezes at the edges. Every evening the farmer
writes in a small notebook what the weather was, how many eggs the hens laid, and which of
the cows gave the most milk. His grandmother kept such a notebook for forty years, and he
still reads her pages when the nights are long. She wrote that the best years were the ones
with a wet spring and a dry autumn, and that a farmer should never sell the land his father
gave him. The town is three miles to the north. On market days the road is full of carts and
people, and the smell of bread comes from the bakery on the corner. The baker starts work at
four in the morning, long before the sun is up, and by seven the first loaves are on the
shelves. Some people say that the bread was better in the old days, but the baker only
laughs and says that people have always said that about everything. In the afternoon the
school bell rings, and the children come out into the square, shouting and laughing, while
their parents wait by the fountain and talk about the price of wheat, the new teacher, and
the storm that is coming from the west. Numbers such as 1, 2, 3, 10, 42 and 2024 appear in
the notebook too, with dates like 12/03 and times like 07:30, and now and then a question:
will it rain tomorrow? Nobody knows, but everybody has an opinion.
"""

SHAPES = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=32, n_positions=32, vocab_size=None),
    "gpt2-small": dict(n_layer=12, n_head=12, n_embd=768, n_positions=1024, vocab_size=50257),
}


def train_tokenizer() -> Tokenizer:
    """A byte-level BPE on PARAGRAPH (deterministic), <|endoftext|> with the last id."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        min_frequency=MIN_PAIR_FREQUENCY,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tokenizer.train_from_iterator(PARAGRAPH.splitlines(keepends=True), trainer=trainer)
    tokenizer.add_special_tokens([EOS])
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    eos = tokenizer.token_to_id(EOS)
    if eos != max(vocab.values()) or len(vocab) != eos + 1:
        raise SystemExit(f"{EOS} got id {eos}, not the last of {len(vocab)}")
    return tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    # None: the shape's value.
    parser.add_argument("--n-layer", type=int)
    parser.add_argument("--n-head", type=int)
    parser.add_argument("--n-embd", type=int)
    parser.add_argument("--n-positions", type=int)
    parser.add_argument("--activation", default="gelu_new")
    parser.add_argument("--untied", action="store_true", help="tie_word_embeddings=False: lm_head.weight of its own")
    args = parser.parse_args()

    shape = dict(SHAPES[args.shape])
    for key in ("n_layer", "n_head", "n_embd", "n_positions"):
        if getattr(args, key) is not None:
            shape[key] = getattr(args, key)

    tokenizer = train_tokenizer()
    eos = tokenizer.token_to_id(EOS)
    vocab_size = shape.pop("vocab_size") or eos + 1
    if vocab_size <= eos:
        raise SystemExit(f"vocab_size {vocab_size} does not hold the tokenizer's ids 0..{eos}")

    config = GPT2Config(
        vocab_size=vocab_size,
        **shape,
        activation_function=args.activation,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        summary_first_dropout=0.0,
        bos_token_id=eos,
        eos_token_id=eos,
        tie_word_embeddings=not args.untied,
    )
    torch.manual_seed(args.seed)
    model = GPT2LMHeadModel(config).to(torch.float32).eval()

    os.makedirs(args.out_dir, exist_ok=True)
    # transformers 5 always writes safetensors (its save_pretrained has no
    # safe_serialization any more); 4.x needs the flag.
    kwargs = {}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        kwargs["safe_serialization"] = True
    model.save_pretrained(args.out_dir, **kwargs)
    tokenizer.save(os.path.join(args.out_dir, "tokenizer.json"))
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not os.path.isfile(os.path.join(args.out_dir, name)):
            raise SystemExit(f"{name} was not written in {args.out_dir}")


if __name__ == "__main__":
    sys.exit(main())
