"""A tiny word-level tokenizer (no download, no toy model): one token per word, BOS added to plain calls.

Token counts are therefore word counts (+1 for BOS on prompts, +1 for EOS on completions), which keeps the
truncation arithmetic in the tests checkable by hand.
"""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CORPUS = [
    "what color is the sky ? it is blue . it is green .",
    "where is the sun ? in the sky . in the sea .",
    "one two three four five six seven eight nine ten",
    "be kind and helpful , say hello",
]
# BOS written by the template, as many real templates do; `render_chat` drops it when the tokenizer adds one.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def build_tokenizer(chat_template: str | None = CHAT_TEMPLATE) -> PreTrainedTokenizerFast:
    words = sorted({w for line in CORPUS for w in line.split()})
    vocab = {token: i for i, token in enumerate(SPECIAL + words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(SPECIAL)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", vocab["<s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    tokenizer.chat_template = chat_template
    return tokenizer


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer()


@pytest.fixture(scope="session")
def tokenizer_without_template() -> PreTrainedTokenizerFast:
    return build_tokenizer(chat_template=None)
