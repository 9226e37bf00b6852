"""Prompt families and the train/eval prompt split."""

from __future__ import annotations

import pytest

from alignment.toy.corpus import FAMILIES, all_prompts, parse_prompt, sample_prompts


def test_train_eval_disjoint():
    train, ev = set(all_prompts("train")), set(all_prompts("eval"))
    assert not train & ev and len(ev) > 100 and len(train) > 4 * 100
    assert set(sample_prompts(2000, seed=1, split="eval")) <= ev


def test_seeded():
    assert sample_prompts(50, seed=0) == sample_prompts(50, seed=0)
    assert sample_prompts(50, seed=0) != sample_prompts(50, seed=1)
    assert len(set(sample_prompts(100, seed=0))) == 100  # without replacement while the pool lasts


def test_families_filter_and_parse():
    ps = sample_prompts(40, seed=0, families=["story"])
    assert all(parse_prompt(p)[0] == "story" for p in ps)
    for name, fam in FAMILIES.items():
        assert parse_prompt(fam.templates[0].format(x=fam.slots[0])) == (name, fam.slots[0].split()[-1])
    with pytest.raises(ValueError, match="unknown prompt families"):
        sample_prompts(1, seed=0, families=["poetry"])
