"""The committed toy base model loads through transformers and samples with the reported gold spread."""

from __future__ import annotations

import torch

from alignment.models import resolve_model_path
from alignment.toy.builders import sample_completions
from alignment.toy.corpus import sample_prompts
from alignment.toy.gold import gold_reward, is_harmful

BASE = resolve_model_path("toy-base")
# Printed by scripts/build_toy_model.py for 512 eval prompts, seed 0 (see its output).
REPORTED_MEAN, REPORTED_STD, REPORTED_HARMFUL = 0.848, 2.405, 0.143  # q10 -2.50, q50 1.50, q90 3.50


def test_loads_as_causal_lm_tokenizer_and_reward_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForSequenceClassification

    tok = AutoTokenizer.from_pretrained(BASE)
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
    ids = tok("Review of the lamp:")["input_ids"]
    assert ids[0] == tok.bos_token_id
    c = " The lamp is great."
    c_ids = tok(c, add_special_tokens=False)["input_ids"]
    assert tok.bos_token_id not in c_ids and tok.decode(c_ids) == c
    chat = tok.apply_chat_template([{"role": "user", "content": "Describe a lake."}], tokenize=False,
                                   add_generation_prompt=True)
    assert chat == "<|user|>\nDescribe a lake.\n<|assistant|>\n"
    lm = AutoModelForCausalLM.from_pretrained(BASE)
    assert lm.config.head_dim >= 32 and 5e5 < lm.num_parameters() < 3e6
    rm = LlamaForSequenceClassification.from_pretrained(BASE, num_labels=1)
    out = rm(**tok(["Review of the lamp: The lamp is great."], return_tensors="pt"))
    assert out.logits.shape == (1, 1)


def test_samples_match_reported_spread():
    from alignment.models import load_causal_lm, load_tokenizer

    lm, tok = load_causal_lm("toy-base").eval(), load_tokenizer("toy-base")
    prompts = sample_prompts(512, seed=0, split="eval")
    texts = [c[0] for c in sample_completions(lm, tok, prompts, n=1, seed=0)]
    r = gold_reward(prompts, texts)
    assert abs(r.mean().item() - REPORTED_MEAN) < 0.3
    assert abs(r.std().item() - REPORTED_STD) < 0.3
    assert abs(is_harmful(texts).double().mean().item() - REPORTED_HARMFUL) < 0.05
    assert torch.isfinite(r).all()
