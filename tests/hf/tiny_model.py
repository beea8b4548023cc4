"""Writes a random causal language model in the Hugging Face layout, for the reference checks
of cfmem's Hugging Face import and export: OUT_DIR/config.json and OUT_DIR/model.safetensors
from transformers' own `save_pretrained` (float32), and OUT_DIR/tokenizer.json, a small BPE.

    tiny_model.py OUT_DIR [--family gpt2|llama|qwen2|gpt_neox] [--seed N] [--scale S]
                  [--shape tiny|gpt2-small|smollm2-135m|pythia-160m]
                  [--n-layer L] [--n-head H] [--n-embd D] [--n-positions P]
                  [--intermediate I] [--activation ACT] [--untied | --tied]
                  [--kv-heads K] [--head-dim HD] [--rope-theta T] [--llama3-rope FACTOR]
                  [--attention-bias] [--mlp-bias] [--rotary-pct R] [--sequential]
                  [--shard-size SIZE]

Nothing comes from the Hugging Face hub: the weights are `torch.manual_seed(seed)` random,
dropout is 0 everywhere (so a model is the same function in train and eval mode), and the
tokenizer is trained here on the paragraph below. The families, with their "tiny" shapes
(the default; --n-layer, --n-head, --n-embd (hidden size), --n-positions (context),
--intermediate and --activation override a shape's values):

  gpt2      GPT2LMHeadModel: 2 layers, 2 heads, 32 wide, 32 positions, gelu_new, tied head
            (--untied: an lm_head.weight of its own). Exactly what the former tiny_gpt2.py wrote.
  llama     LlamaForCausalLM: 2 layers, 4 heads, --kv-heads 2 (grouped-query attention),
            --head-dim (default hidden / heads), hidden 32, intermediate 80 (not 4x on
            purpose), 32 positions, rms_norm_eps 1e-6, --rope-theta 10000, silu, tied head
            (--untied unties), no biases unless --attention-bias / --mlp-bias; --llama3-rope
            FACTOR: Llama 3's rope scaling (low 1, high 4, over an original context of half
            the model's).
  qwen2     Qwen2ForCausalLM: as llama's tiny shape (2 KV heads), but an untied head (--tied
            ties it) and the q/k/v biases Qwen2 always has.
  gpt_neox  GPTNeoXForCausalLM: 2 layers, 4 heads, hidden 32, intermediate 128, 32
            positions, --rotary-pct 0.25, parallel residual (--sequential:
            use_parallel_residual=False), attention biases, layer_norm_eps 1e-5, gelu, an
            untied head (saved as embed_out.weight).

The tokenizers: gpt2, qwen2 and gpt_neox get a byte-level BPE trained to about 350 tokens,
with `<|endoftext|>` added last as the BOS and EOS token. llama gets a SentencePiece-style
BPE as Llama 2 / TinyLlama have: `<unk>` = 0, `<s>` = 1 (BOS), `</s>` = 2 (EOS), the 256
byte tokens `<0x00>`..`<0xFF>` next (byte fallback for every character it did not learn),
then the learned pieces; a Metaspace pre-tokenizer ("▁", prepend_scheme "first") and a
post-processor that adds `<s>` by itself (`encode(text, add_special_tokens=True)`).

--scale S: S = 1 keeps transformers' own initialization untouched (normal(0, 0.02) matrices,
zero biases, unit norms). Any other S redraws every parameter from a generator seeded with
--seed, so that a tiny model's predictions are far from uniform and differ clearly from one
document to the next: every 2-D matrix (the embeddings included) from normal(0, S * 0.02),
every bias from normal(0, 0.1), every norm weight from 1 + normal(0, 0.1). S = 0 or no
--scale means the family's default: 1 for gpt2 (so its output is what it always was) and
20 for llama, qwen2 and gpt_neox, except for the benchmark shapes below, whose default is 1.
At 20 (matrices normal(0, 0.4), non-zero biases) a tiny model's mean entropy is about 3.5
to 4 nats against the uniform ln(vocab) of about 6, the per-token loss is about 8 nats, and
the mean loss of the paragraph's sentences differs by some 15 to 25% from one to another
(at 10 it is often under 10%).

--shape gives a real model's shape, random weights, for benchmarks, with the family's
tokenizer using only the first ids of the larger vocabulary (which a model may do):
gpt2-small (GPT-2 small, 124M parameters, vocab 50257), smollm2-135m (llama: hidden 576,
30 layers, 9 heads, 3 KV heads, intermediate 1536, vocab 49152, tied, 2048 positions,
rope_theta 100000, rms_norm_eps 1e-5) and pythia-160m (gpt_neox: hidden 768, 12 layers, 12
heads, intermediate 3072, rotary_pct 0.25, vocab 50304, untied, 2048 positions, parallel
residual). Without --family, the family is the shape's (gpt2 for tiny). Explicit flags win
over a shape's values. --shard-size SIZE saves the weights in shards of at most SIZE
(`save_pretrained`'s max_shard_size, e.g. 20KB) with `model.safetensors.index.json`, as
large models are saved. The tiny models are reloaded with `AutoModelForCausalLM` at the end
and must give the same logits. Prints nothing but errors.
"""

import argparse
import inspect
import json
import os
import sys

# Before transformers is imported: nothing may try the network, and nothing needs to talk.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

EOS = "<|endoftext|>"
# Pairs seen fewer times are never merged, as in cfmem's own BPE training.
MIN_PAIR_FREQUENCY = 2
# The trainer's target before <|endoftext|> is added; the paragraph yields about this many.
BPE_VOCAB = 352
# llama: the SentencePiece-style special tokens, with their ids, and the trainer's target
# (specials and learned pieces; the 256 byte tokens come on top).
UNK, BOS_PIECE, EOS_PIECE = "<unk>", "<s>", "</s>"
SPM_SPECIALS = [UNK, BOS_PIECE, EOS_PIECE]
SPM_VOCAB = 352
METASPACE = "\u2581"  # ▁

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

FAMILIES = ("gpt2", "llama", "qwen2", "gpt_neox")

# The generic keys: n_layer, n_head, n_embd (hidden size), n_positions (context), intermediate
# (None: the family's own default), vocab_size (None: the tokenizer's); the rest are the
# family's own config fields.
TINY = {
    "gpt2": dict(n_layer=2, n_head=2, n_embd=32, n_positions=32, intermediate=None, vocab_size=None),
    "llama": dict(n_layer=2, n_head=4, n_embd=32, n_positions=32, intermediate=80, vocab_size=None,
                  kv_heads=2, rope_theta=10000.0, rms_norm_eps=1e-6, tied=True),
    "qwen2": dict(n_layer=2, n_head=4, n_embd=32, n_positions=32, intermediate=80, vocab_size=None,
                  kv_heads=2, rope_theta=10000.0, rms_norm_eps=1e-6, tied=False),
    "gpt_neox": dict(n_layer=2, n_head=4, n_embd=32, n_positions=32, intermediate=128, vocab_size=None,
                     rope_theta=10000.0, rotary_pct=0.25, layer_norm_eps=1e-5, tied=False),
}
# (family, shape)
SHAPES = {
    "tiny": (None, None),
    "gpt2-small": ("gpt2", dict(n_layer=12, n_head=12, n_embd=768, n_positions=1024, vocab_size=50257)),
    "smollm2-135m": ("llama", dict(n_layer=30, n_head=9, n_embd=576, n_positions=2048, intermediate=1536,
                                   vocab_size=49152, kv_heads=3, rope_theta=100000.0, rms_norm_eps=1e-5,
                                   tied=True)),
    "pythia-160m": ("gpt_neox", dict(n_layer=12, n_head=12, n_embd=768, n_positions=2048, intermediate=3072,
                                     vocab_size=50304, rotary_pct=0.25, tied=False)),
}
DEFAULT_SCALE = {"gpt2": 1.0, "llama": 20.0, "qwen2": 20.0, "gpt_neox": 20.0}
ACTIVATION = {"gpt2": "gelu_new", "llama": "silu", "qwen2": "silu", "gpt_neox": "gelu"}
# The flags that only some families take: flag -> families.
FAMILY_FLAGS = {
    "kv_heads": ("llama", "qwen2"),
    "head_dim": ("llama",),
    "rope_theta": ("llama", "qwen2", "gpt_neox"),
    "llama3_rope": ("llama",),
    "attention_bias": ("llama",),
    "mlp_bias": ("llama",),
    "rotary_pct": ("gpt_neox",),
    "sequential": ("gpt_neox",),
    "untied": ("gpt2", "llama"),
    "tied": ("qwen2",),
}
# std of the biases and of a norm weight around 1 when --scale redraws the parameters.
BIAS_STD = 0.1
NORM_STD = 0.1


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


def train_spm_tokenizer() -> Tokenizer:
    """A SentencePiece-style BPE on PARAGRAPH (deterministic), as Llama 2's tokenizer.json is
    laid out: <unk> 0, <s> 1, </s> 2, <0x00>..<0xFF> 3..258, then the learned pieces."""
    tokenizer = Tokenizer(models.BPE(unk_token=UNK, byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=SPM_VOCAB,
        min_frequency=MIN_PAIR_FREQUENCY,
        show_progress=False,
        special_tokens=SPM_SPECIALS,
    )
    tokenizer.train_from_iterator(PARAGRAPH.splitlines(keepends=True), trainer=trainer)

    # The trainer gives the specials 0..2 and the learned pieces after them; the byte tokens
    # go in between, as ordinary pieces of the model's vocabulary (not added tokens).
    trained = json.loads(tokenizer.to_str())
    learned = sorted(trained["model"]["vocab"].items(), key=lambda item: item[1])
    if [piece for piece, _ in learned[: len(SPM_SPECIALS)]] != SPM_SPECIALS:
        raise SystemExit(f"the trainer did not give {SPM_SPECIALS} the first ids")
    pieces = SPM_SPECIALS + [f"<0x{byte:02X}>" for byte in range(256)]
    pieces += [piece for piece, _ in learned[len(SPM_SPECIALS) :] if piece not in pieces]
    merges = [
        tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in trained["model"]["merges"]
    ]

    tokenizer = Tokenizer(
        models.BPE(
            vocab={piece: index for index, piece in enumerate(pieces)},
            merges=merges,
            unk_token=UNK,
            byte_fallback=True,
        )
    )
    tokenizer.add_special_tokens(SPM_SPECIALS)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="first")
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace(METASPACE, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    bos = pieces.index(BOS_PIECE)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_PIECE} $A", pair=f"{BOS_PIECE} $A {BOS_PIECE} $B", special_tokens=[(BOS_PIECE, bos)]
    )
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    if len(vocab) != len(pieces) or max(vocab.values()) != len(pieces) - 1:
        raise SystemExit(f"the tokenizer has {len(vocab)} ids, not the {len(pieces)} pieces 0..{len(pieces) - 1}")
    return tokenizer


def redraw(model, scale: float, seed: int) -> None:
    """Every parameter drawn anew from a generator seeded with `seed` (see --scale)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # named_parameters() lists a tied head once, as the embedding it is.
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float32)
            if parameter.dim() == 2:
                value = noise * (scale * 0.02)
            elif name.endswith("bias"):
                value = noise * BIAS_STD
            elif parameter.dim() == 1:
                value = 1.0 + noise * NORM_STD
            else:
                raise SystemExit(f"do not know how to draw {name} of shape {tuple(parameter.shape)}")
            parameter.copy_(value)


def build(family: str, shape: dict, args, vocab_size: int, bos: int, eos: int):
    """The model (random, float32) of this family and shape."""
    activation = args.activation or ACTIVATION[family]
    if family == "gpt2":
        config = GPT2Config(
            vocab_size=vocab_size,
            n_layer=shape["n_layer"],
            n_head=shape["n_head"],
            n_embd=shape["n_embd"],
            n_positions=shape["n_positions"],
            **({"n_inner": shape["intermediate"]} if shape["intermediate"] is not None else {}),
            activation_function=activation,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            summary_first_dropout=0.0,
            bos_token_id=bos,
            eos_token_id=eos,
            tie_word_embeddings=not args.untied,
        )
        torch.manual_seed(args.seed)
        return GPT2LMHeadModel(config)

    common = dict(
        vocab_size=vocab_size,
        hidden_size=shape["n_embd"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["n_layer"],
        num_attention_heads=shape["n_head"],
        max_position_embeddings=shape["n_positions"],
        hidden_act=activation,
        attention_dropout=0.0,
        bos_token_id=bos,
        eos_token_id=eos,
    )
    theta = shape["rope_theta"] if args.rope_theta is None else args.rope_theta
    rope = {"rope_type": "default", "rope_theta": float(theta)}
    if args.llama3_rope is not None:
        # Llama 3's scaling over an original context of half the model's, so that the
        # tiny model's frequencies fall in all three of its bands (kept, interpolated,
        # divided by the factor).
        rope = dict(
            rope,
            rope_type="llama3",
            factor=args.llama3_rope,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=shape["n_positions"] // 2,
        )
    if family == "llama":
        config = LlamaConfig(
            **common,
            num_key_value_heads=shape["kv_heads"],
            head_dim=args.head_dim,
            rms_norm_eps=shape["rms_norm_eps"],
            rope_parameters=rope,
            attention_bias=args.attention_bias,
            mlp_bias=args.mlp_bias,
            tie_word_embeddings=shape["tied"] and not args.untied,
        )
        model_class = LlamaForCausalLM
    elif family == "qwen2":
        config = Qwen2Config(
            **common,
            num_key_value_heads=shape["kv_heads"],
            rms_norm_eps=shape["rms_norm_eps"],
            rope_parameters=rope,
            use_sliding_window=False,
            tie_word_embeddings=shape["tied"] or args.tied,
        )
        model_class = Qwen2ForCausalLM
    else:
        rope["partial_rotary_factor"] = float(shape["rotary_pct"] if args.rotary_pct is None else args.rotary_pct)
        config = GPTNeoXConfig(
            **common,
            hidden_dropout=0.0,
            classifier_dropout=0.0,
            layer_norm_eps=shape.get("layer_norm_eps", 1e-5),
            rope_parameters=rope,
            use_parallel_residual=not args.sequential,
            attention_bias=True,
            tie_word_embeddings=False,
        )
        model_class = GPTNeoXForCausalLM
    torch.manual_seed(args.seed)
    return model_class(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--family", choices=FAMILIES, help="default: the shape's family (gpt2 for tiny)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--shard-size", help="save_pretrained's max_shard_size (e.g. 20KB): sharded weights with their index"
    )
    parser.add_argument(
        "--scale", type=float, help="redraw the weights at S * 0.02 (1: keep transformers' init; 0: the default)"
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    # None: the shape's value.
    parser.add_argument("--n-layer", type=int)
    parser.add_argument("--n-head", type=int)
    parser.add_argument("--n-embd", type=int, help="the hidden size")
    parser.add_argument("--n-positions", type=int, help="the context (max_position_embeddings)")
    parser.add_argument("--intermediate", type=int, help="the MLP's inner size (gpt2: n_inner)")
    parser.add_argument("--activation", help="default: gelu_new (gpt2), silu (llama, qwen2), gelu (gpt_neox)")
    parser.add_argument("--untied", action="store_true", help="gpt2, llama: an output head of its own")
    parser.add_argument("--tied", action="store_true", help="qwen2: the output head is the token embedding")
    parser.add_argument("--kv-heads", type=int, help="llama, qwen2: key/value heads (default 2)")
    parser.add_argument("--head-dim", type=int, help="llama: per-head size (default hidden / heads)")
    parser.add_argument("--rope-theta", type=float, help="llama, qwen2, gpt_neox: RoPE base (default 10000)")
    parser.add_argument(
        "--llama3-rope", type=float, metavar="FACTOR", help="llama: Llama 3's rope scaling (rope_type llama3) by FACTOR"
    )
    parser.add_argument("--attention-bias", action="store_true", help="llama: biases on q/k/v/o")
    parser.add_argument("--mlp-bias", action="store_true", help="llama: biases on gate/up/down")
    parser.add_argument("--rotary-pct", type=float, help="gpt_neox: the rotated share of a head (default 0.25)")
    parser.add_argument("--sequential", action="store_true", help="gpt_neox: use_parallel_residual=False")
    args = parser.parse_args()

    shape_family, shape_values = SHAPES[args.shape]
    family = args.family or shape_family or "gpt2"
    if shape_family is not None and family != shape_family:
        raise SystemExit(f"--shape {args.shape} is a {shape_family} shape, not {family}")
    for flag, families in FAMILY_FLAGS.items():
        value = getattr(args, flag)
        if value is not None and value is not False and family not in families:
            raise SystemExit(f"--{flag.replace('_', '-')} is for --family {' or '.join(families)}, not {family}")

    shape = dict(TINY[family])
    shape.update(shape_values or {})
    for key in ("n_layer", "n_head", "n_embd", "n_positions", "intermediate", "kv_heads"):
        if getattr(args, key) is not None:
            shape[key] = getattr(args, key)
    scale = args.scale or (DEFAULT_SCALE[family] if args.shape == "tiny" else 1.0)

    if family == "llama":
        tokenizer = train_spm_tokenizer()
        bos, eos = tokenizer.token_to_id(BOS_PIECE), tokenizer.token_to_id(EOS_PIECE)
        top = tokenizer.get_vocab_size(with_added_tokens=True) - 1
    else:
        tokenizer = train_tokenizer()
        bos = eos = top = tokenizer.token_to_id(EOS)
    vocab_size = shape["vocab_size"] or top + 1
    if vocab_size <= top:
        raise SystemExit(f"vocab_size {vocab_size} does not hold the tokenizer's ids 0..{top}")

    model = build(family, shape, args, vocab_size, bos, eos)
    if scale != 1.0:
        redraw(model, scale, args.seed)
    model = model.to(torch.float32).eval()

    os.makedirs(args.out_dir, exist_ok=True)
    # transformers 5 always writes safetensors (its save_pretrained has no
    # safe_serialization any more); 4.x needs the flag.
    kwargs = {}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        kwargs["safe_serialization"] = True
    if args.shard_size is not None:
        kwargs["max_shard_size"] = args.shard_size
    model.save_pretrained(args.out_dir, **kwargs)
    tokenizer.save(os.path.join(args.out_dir, "tokenizer.json"))
    weights = "model.safetensors" if args.shard_size is None else "model.safetensors.index.json"
    for name in ("config.json", weights, "tokenizer.json"):
        if not os.path.isfile(os.path.join(args.out_dir, name)):
            raise SystemExit(f"{name} was not written in {args.out_dir}")

    if args.shape == "tiny":
        # What was written is the model: transformers reads it back to the same function.
        inputs = torch.tensor([tokenizer.encode(PARAGRAPH[:80], add_special_tokens=False).ids[:8]])
        reloaded = AutoModelForCausalLM.from_pretrained(args.out_dir, dtype=torch.float32).eval()
        with torch.inference_mode():
            expected = model(input_ids=inputs).logits
            got = reloaded(input_ids=inputs).logits
        if not torch.equal(expected, got):
            raise SystemExit(
                f"{args.out_dir} reloads to other logits (max difference {float((expected - got).abs().max())})"
            )


if __name__ == "__main__":
    sys.exit(main())
