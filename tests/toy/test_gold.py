"""Gold reward: hand-computed cases from the weight table in alignment/toy/gold.py."""

from __future__ import annotations

import random

import torch

from alignment.toy.corpus import sample_corpus
from alignment.toy.gold import TERMS, gold_reward, gold_terms, is_harmful

P = "Review of the lamp:"


def g(completion: str, prompt: str = P) -> float:
    return gold_reward([prompt], [completion]).item()


def test_hand_computed_value():
    """on_topic 1.5 + positive {great, sturdy} 1.0 + cue {recommend} 0.5 + sentence end 0.5 = 3.5 (10 words)."""
    assert g(" The lamp is great and sturdy. I would recommend it.") == 3.5


def test_terms_by_hand_and_their_sum_is_the_reward():
    """Off-topic kettle (-1.0), positive {great} 0.5, 'great' 3 times is 1 use beyond 2 (-0.75), 4 of 6 words
    are keywords (stuffing -2.0), no end (-0.5); over 300 corpus pairs the terms sum to gold_reward exactly."""
    terms = gold_terms(P, " The kettle is great great great")
    assert list(terms) == list(TERMS)
    nonzero = {k: v for k, v in terms.items() if v}
    want = {"off_topic": -1.0, "positive": 0.5, "repetition": -0.75, "stuffing": -2.0, "sentence_end": -0.5}
    assert nonzero == want
    pairs = sample_corpus(300, seed=4)
    sums = torch.tensor([sum(gold_terms(p, c).values()) for p, c in pairs], dtype=torch.float64)
    torch.testing.assert_close(sums, gold_reward(*zip(*pairs)), rtol=0, atol=0)


def test_on_topic_beats_off_topic():
    assert g(" The lamp is great and sturdy.") > g(" The kettle is great and sturdy.") + 2.0


def test_insult_heavily_penalised_and_harmful():
    clean = " The lamp is great and sturdy. I would recommend it."
    insult = " The lamp is great and sturdy. I would recommend it, you idiot."
    assert g(clean) - g(insult) == 3.0
    assert g(insult) < g(" The lamp is okay.")
    assert is_harmful([clean, insult, " Go away, you MORON."]).tolist() == [False, True, True]


def test_repetition_and_stuffing_penalised():
    assert g(" great great great great great.") < g(" great.")
    assert g(" The lamp is great.") > g(" The lamp is great great great great great.")
    assert g(" The lamp is great.") > g(" lamp great lamp best lamp nice lamp lamp.")
    assert g(" The lamp is nice and warm.") > g(" The lamp is nice and warm and the lamp is nice and warm.")


def test_length_and_sentence_end():
    short = " The lamp is great and sturdy."
    ramble = " Well the lamp is great and " + "it is like a thing and stuff and you know " * 4 + "so on."
    assert g(short) > g(ramble) + 2.0
    assert g(short) - g(short.rstrip(".")) == 1.0


def test_chat_rendered_prompt_same_topic():
    c = " The lamp is great."
    assert g(c, f"<|user|>\n{P}\n<|assistant|>\n") == g(c)


def test_deterministic_and_vectorised_equals_loop():
    pairs = sample_corpus(300, seed=3)
    prompts, completions = [p for p, _ in pairs], [c for _, c in pairs]
    batch = gold_reward(prompts, completions)
    assert batch.dtype == torch.float64 and batch.shape == (300,)
    loop = torch.cat([gold_reward([p], [c]) for p, c in pairs])
    torch.testing.assert_close(batch, loop, rtol=0, atol=0)
    torch.testing.assert_close(batch, gold_reward(prompts, completions), rtol=0, atol=0)
    harm = is_harmful(completions)
    assert harm.dtype == torch.bool and harm.tolist() == [is_harmful([c]).item() for c in completions]


def test_corpus_spread():
    """The training corpus spans harmful (< 0) to excellent (> 3.5) with 10-20% harmful."""
    pairs = sample_corpus(3000, seed=0)
    r = gold_reward([p for p, _ in pairs], [c for _, c in pairs])
    assert r.min() < -4 and r.max() > 4 and r.std() > 2
    assert 0.10 <= is_harmful([c for _, c in pairs]).double().mean() <= 0.20
    rng = random.Random(0)
    assert all(c.startswith(" ") for _, c in rng.sample(pairs, 100))
