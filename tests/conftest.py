"""Shared fixtures: a tiny Llama + tokenizer built once per session (no download, seconds to build).

The model is deliberately *not* the toy asset (which is trained elsewhere and changes): tests assert
exact behaviour of code, so they use a fixed model whose construction is seeded and lives here.
It is a 2-layer Llama, hidden 128, 2 heads (head_dim 64, what vLLM's CPU attention supports), with a
byte-level BPE tokenizer (bos <s> added to every prompt, eos </s>, pad <pad>). A few seeded Adam steps
on a tiny corpus give it a peaked distribution and a habit of ending sentences with EOS, so samples
have varied lengths (a random-init model would almost never stop).
"""

from __future__ import annotations

import os
import random
import textwrap
from pathlib import Path

import pytest
import torch

TINY_WORDS = (
    "the cat dog bird sees likes eats runs to a red blue small big fast slow happy tree house river "
    "and but then very quite on under over good bad answer question please thanks yes no"
).split()


def tiny_corpus(n: int, *, seed: int) -> list[str]:
    """Short sentences ending with a period, e.g. 'the red cat likes a tree.'"""
    rng = random.Random(seed)
    return [" ".join(rng.choice(TINY_WORDS) for _ in range(rng.randint(2, 9))) + "." for _ in range(n)]


def tiny_prompts(n: int, *, seed: int = 0) -> list[str]:
    """Prompts of 1-5 words (varied lengths, so left padding is exercised)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(TINY_WORDS) for _ in range(rng.randint(1, 5))) for _ in range(n)]


def build_tiny_tokenizer(vocab_size: int = 320):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tiny_corpus(2000, seed=1), trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def build_tiny_llama(
    tokenizer,
    *,
    hidden: int = 128,
    layers: int = 2,
    heads: int = 2,
    intermediate: int = 256,
    seed: int = 0,
    train_steps: int = 20,
):
    """A seeded tiny LlamaForCausalLM, briefly trained on `tiny_corpus` (sentence + EOS)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    # built and trained in float64, then stored in float32: a float32 run on another CPU (other SIMD kernels,
    # other rounding) drifts through the Adam steps far enough to change greedy decodes; float64 keeps the
    # fixture the same model on every machine
    model = LlamaForCausalLM(config).double()
    if train_steps:
        texts = tiny_corpus(train_steps * 8, seed=seed + 2)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        model.train()
        for step in range(train_steps):
            batch = [
                tokenizer(t)["input_ids"] + [tokenizer.eos_token_id] for t in texts[step * 8 : (step + 1) * 8]
            ]
            width = max(map(len, batch))
            ids = torch.tensor([b + [tokenizer.pad_token_id] * (width - len(b)) for b in batch])
            mask = (torch.arange(width)[None] < torch.tensor([len(b) for b in batch])[:, None]).long()
            labels = ids.masked_fill(mask == 0, -100)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    model.eval()
    return model.float()


@pytest.fixture(scope="session", autouse=True)
def _session_eval_reference_cache(tmp_path_factory):
    """Evaluations keep their reference samples (`alignment.eval.reference_samples`) in this session's own
    directory: a test never loads samples an earlier session drew."""
    os.environ["ALIGNMENT_EVAL_REFERENCE_CACHE"] = str(tmp_path_factory.mktemp("eval-reference"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """Directory with the tiny Llama (safetensors) + tokenizer, written once per session."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_llama(tokenizer)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def tiny_model(tiny_model_dir):
    """A fresh float32 copy per test (tests may train or wrap it)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def summed_completion_logps(
    model, prompt_ids: list[list[int]], completion_ids: list[list[int]]
) -> list[float]:
    """Reference log π(y|x): one unpadded forward pass per pair, sum of completion-token log-probs."""
    out = []
    with torch.no_grad():
        for p, c in zip(prompt_ids, completion_ids):
            ids = torch.tensor([p + c])
            logits = model(input_ids=ids).logits[0, len(p) - 1 : -1].double()
            out.append(torch.log_softmax(logits, -1).gather(-1, torch.tensor(c)[:, None]).sum().item())
    return out


@pytest.fixture(scope="session")
def completion_logps():
    """The reference log π(y|x) function (see `summed_completion_logps`)."""
    return summed_completion_logps


@pytest.fixture(scope="session")
def prompts_for():
    """`prompts_for(n, seed=0)`: deterministic short prompts of varied lengths."""
    return tiny_prompts


@pytest.fixture(scope="session")
def _vllm_engine(tiny_model_dir):
    """The process's single vLLM engine on the tiny model (in-process; ~30-70 s to start on CPU)."""
    from alignment.sampling.vllm import VLLMSampler

    return VLLMSampler(tiny_model_dir, max_model_len=256)


@pytest.fixture
def vllm_sampler(_vllm_engine, tiny_model_dir):
    """The shared engine, with the fixture checkpoint's weights pushed back after each test (tests push
    trained weights into it)."""
    from safetensors.torch import load_file

    yield _vllm_engine
    _vllm_engine.load_weights(load_file(str(tiny_model_dir / "model.safetensors")).items())


@pytest.fixture
def forbid_model_loading(monkeypatch):
    """Fail the test if anything loads a model or tokenizer (input errors must stop a command before)."""
    import transformers

    def forbidden(*args, **kwargs):
        raise AssertionError("a model/tokenizer was loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", forbidden)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", forbidden)


# --- recipe files -------------------------------------------------------------------------------------

RECIPE_MINIMAL = """
method: {name: dpo}
data: {train: {name: toy-paired}}
"""


@pytest.fixture
def write_recipe(tmp_path: Path):
    """write_recipe(text) -> path of a recipe file holding the dedented `text`."""

    def write(text: str = RECIPE_MINIMAL, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write
