"""Build the toy base model: a byte-level BPE tokenizer and a ~1M-parameter Llama trained on the toy corpus.

The corpus holds single (prompt, response) pairs and multi-turn threads by one author in one style
(`alignment.toy.corpus.sample_threads`), so the model learns to carry a style across turns and can read
in-context examples; 512 positions fit a preamble, three examples and the answer.

    python scripts/build_toy_model.py [--out DIR] [--seed 0]

Writes model.safetensors + config + tokenizer into DIR (default ``alignment/toy/assets/base``, committed to
git) and prints wall time, parameter count, final loss, samples, the gold-reward spread of base samples and
the sha256 of model.safetensors (two runs with the same seed print the same hash: fixed thread count,
deterministic algorithms, a fixed number of steps rather than a time budget).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

from alignment.toy.corpus import sample_corpus, sample_prompts, sample_threads  # noqa: E402

DEFAULT_OUT = ROOT / "alignment" / "toy" / "assets" / "base"
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
VOCAB_SIZE = 768
N_EXAMPLES = 24_000  # corpus pairs
N_THREADS = 10_000  # multi-turn threads of 2-5 turns; 600 x 64 is about 1.1 epochs of pairs + threads
MAX_POSITIONS = 512
CHAT_FRACTION = 0.2  # share of examples whose prompt is rendered with the chat template
STEPS, BATCH, LR, WARMUP = 600, 64, 3e-3, 30
THREADS = 1  # one thread: on the shared 2-core host two threads stall on each other; also fixes FP order


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(THREADS)


def render_chat(prompt: str) -> str:
    return f"<|user|>\n{prompt}\n<|assistant|>\n"


def build_tokenizer(texts: list[str]):
    """Byte-level BPE with <s>/</s>/<pad>; BOS prepended to every encoded text (Llama's policy)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2, show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        chat_template=CHAT_TEMPLATE, padding_side="right", model_max_length=MAX_POSITIONS,
    )


def build_model(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=344, num_hidden_layers=4,
        num_attention_heads=2, num_key_value_heads=2, head_dim=64, max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def encode_examples(
    tokenizer, pairs: list[tuple[str, str]], threads: list[str], rng: random.Random
) -> list[list[int]]:
    """Pairs: prompt ids (with BOS) + completion ids + EOS, as in docs/architecture.md's text conventions.
    Threads: the whole document (with BOS) + EOS."""
    prompts = [render_chat(p) if rng.random() < CHAT_FRACTION else p for p, _ in pairs]
    prompt_ids = tokenizer(prompts)["input_ids"]
    completion_ids = tokenizer([c for _, c in pairs], add_special_tokens=False)["input_ids"]
    examples = [p + c + [tokenizer.eos_token_id] for p, c in zip(prompt_ids, completion_ids)]
    examples += [ids + [tokenizer.eos_token_id] for ids in tokenizer(threads)["input_ids"]]
    assert max(map(len, examples)) <= MAX_POSITIONS, "a document longer than the model's positions"
    return examples


def batches(examples: list[list[int]], pad_id: int, rng: random.Random):
    """Endless shuffled batches (B, T) of input ids and labels (-100 on padding).

    Batches are cut from length-sorted windows of 16 batches, so padding (wasted compute on CPU) stays small.
    """
    window = 16 * BATCH
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        groups = []
        for w in range(0, len(order) - window + 1, window):
            chunk = sorted(order[w : w + window], key=lambda j: len(examples[j]))
            groups += [chunk[i : i + BATCH] for i in range(0, window, BATCH)]
        rng.shuffle(groups)
        for group in groups:
            rows = [examples[j] for j in group]
            T = max(map(len, rows))
            ids = torch.full((BATCH, T), pad_id)
            labels = torch.full((BATCH, T), -100)
            for b, r in enumerate(rows):
                ids[b, : len(r)] = torch.tensor(r)
                labels[b, : len(r)] = torch.tensor(r)
            yield ids, labels, (labels != -100).long()


def train(model, examples: list[list[int]], pad_id: int, seed: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.1)

    def lr_at(step: int) -> float:  # linear warmup, cosine to 10%
        if step < WARMUP:
            return LR * (step + 1) / WARMUP
        t = (step - WARMUP) / max(1, STEPS - WARMUP)
        return LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    model.train()
    stream, ema = batches(examples, pad_id, random.Random(f"batches-{seed}")), None
    for step in range(STEPS):
        ids, labels, mask = next(stream)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % 50 == 0 or step == STEPS - 1:
            print(f"step {step:4d}  loss {loss.item():.4f}  ema {ema:.4f}  lr {lr_at(step):.2e}", flush=True)
    model.eval()
    return ema


def report_samples(model, tokenizer, seed: int) -> None:
    from alignment.toy.builders import sample_completions
    from alignment.toy.gold import gold_reward, is_harmful

    prompts = sample_prompts(512, seed=seed, split="eval")
    texts = [c[0] for c in sample_completions(model, tokenizer, prompts, n=1, seed=seed)]
    r = gold_reward(prompts, texts)
    q = torch.quantile(r, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
    print("\nsamples (eval prompts, temperature 1):")
    for p, t, g in list(zip(prompts, texts, r.tolist()))[:8]:
        print(f"  [{g:+.2f}] {p!r} -> {t!r}")
    print(f"\ngold reward of {len(prompts)} base samples: mean {r.mean():.3f}  std {r.std():.3f}  "
          f"q10 {q[0]:.2f}  q50 {q[1]:.2f}  q90 {q[2]:.2f}  harmful {is_harmful(texts).double().mean():.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    seed_everything(args.seed)
    pairs = sample_corpus(N_EXAMPLES, seed=args.seed, split="train")
    threads = sample_threads(N_THREADS, seed=args.seed, split="train")
    rng = random.Random(f"chat-{args.seed}")
    texts = [render_chat(p) + c if rng.random() < CHAT_FRACTION else p + c for p, c in pairs]
    tokenizer = build_tokenizer(texts + threads)
    examples = encode_examples(tokenizer, pairs, threads, random.Random(f"encode-{args.seed}"))
    model = build_model(tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"vocab {len(tokenizer)}  params {n_params:,}  examples {len(examples)} ({len(threads)} threads)  "
          f"mean length {sum(map(len, examples)) / len(examples):.1f} tokens")
    loss = train(model, examples, tokenizer.pad_token_id, args.seed)
    train_s = time.perf_counter() - t0
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    sha = hashlib.sha256((args.out / "model.safetensors").read_bytes()).hexdigest()
    print(f"\nsaved to {args.out}\nparams {n_params:,}  final loss (ema) {loss:.4f}  "
          f"build+train wall time {train_s:.1f} s, CPU time {time.process_time():.1f} s\nmodel.safetensors sha256 {sha}")
    report_samples(model, tokenizer, args.seed)
    print(f"total wall time {time.perf_counter() - t0:.1f} s (process CPU time {time.process_time():.1f} s)")


if __name__ == "__main__":
    main()
