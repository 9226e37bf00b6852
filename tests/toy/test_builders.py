"""Toy dataset builders on the committed base model (small n; each builds in seconds)."""

from __future__ import annotations

import time

import pytest
import torch

from alignment.errors import DataError
from alignment.toy.builders import TOY_BUILDERS, bradley_terry_prefers_first, cache_root
from alignment.toy.corpus import parse_prompt
from alignment.toy.gold import gold_reward, is_harmful


def test_registry_names():
    assert sorted(TOY_BUILDERS) == sorted(
        ["toy-paired", "toy-unpaired", "toy-unpaired-divergent", "toy-negatives", "toy-selfie", "toy-prompts"]
    )


def test_paired_columns_noiseless_labels_and_cache():
    ds = TOY_BUILDERS["toy-paired"](split="train", seed=0, n=64, temperature=0.0)
    assert ds.column_names == ["prompt", "chosen", "rejected"] and len(ds) == 64
    assert all(isinstance(ds[0][c], str) for c in ds.column_names)
    assert (gold_reward(ds["prompt"], ds["chosen"]) >= gold_reward(ds["prompt"], ds["rejected"])).all()
    assert any(cache_root().iterdir())
    t = time.perf_counter()
    again = TOY_BUILDERS["toy-paired"](split="train", seed=0, n=64, temperature=0.0)
    assert time.perf_counter() - t < 2.0 and again.to_dict() == ds.to_dict()


def test_paired_samples_per_prompt_gives_every_pair_of_each_draw_in_consecutive_rows():
    """k = 4: each drawn prompt contributes its 6 pairs in a row, over exactly 4 distinct samples (duplicate
    texts aside); n = 15 cuts the third draw to 3 pairs; labels stay noiseless; k = 1 is refused."""
    ds = TOY_BUILDERS["toy-paired"](split="train", seed=3, n=15, samples_per_prompt=4)
    assert len(ds) == 15
    for start in (0, 6):
        rows = ds.select(range(start, start + 6))
        assert len(set(rows["prompt"])) == 1
        assert len(set(rows["chosen"]) | set(rows["rejected"])) <= 4
    assert len(set(ds.select(range(12, 15))["prompt"])) == 1
    assert (gold_reward(ds["prompt"], ds["chosen"]) >= gold_reward(ds["prompt"], ds["rejected"])).all()
    with pytest.raises(DataError, match="samples_per_prompt must be >= 2"):
        TOY_BUILDERS["toy-paired"](n=4, samples_per_prompt=1)


def test_paired_high_temperature_is_a_coin():
    ds = TOY_BUILDERS["toy-paired"](split="train", seed=1, n=300, temperature=1e6)
    rc, rr = gold_reward(ds["prompt"], ds["chosen"]), gold_reward(ds["prompt"], ds["rejected"])
    differ = rc != rr
    assert differ.sum() > 150
    assert abs((rc > rr)[differ].double().mean().item() - 0.5) < 0.1


def test_bradley_terry_probabilities():
    ra, rb = torch.zeros(20000, dtype=torch.float64), torch.full((20000,), -1.0, dtype=torch.float64)
    rate = bradley_terry_prefers_first(ra, rb, 1.0, seed=0).double().mean().item()
    assert abs(rate - torch.sigmoid(torch.tensor(1.0)).item()) < 0.01
    tie = bradley_terry_prefers_first(ra, ra.clone(), 0.0, seed=0).double().mean().item()
    assert abs(tie - 0.5) < 0.02


def test_unpaired_columns_and_threshold():
    ds = TOY_BUILDERS["toy-unpaired"](split="train", seed=0, n=128)
    assert ds.column_names == ["prompt", "completion", "label"] and len(ds) == 128
    assert isinstance(ds[0]["label"], bool) and 0.35 < sum(ds["label"]) / 128 < 0.65
    r = gold_reward(ds["prompt"], ds["completion"])
    lab = torch.tensor(ds["label"])
    assert r[lab].min() >= r[~lab].max() or r[lab].mean() > r[~lab].mean() + 1.0
    ds = TOY_BUILDERS["toy-unpaired"](split="eval", seed=0, n=32, threshold=100.0)
    assert not any(ds["label"])


def test_unpaired_divergent_family_mix():
    ds = TOY_BUILDERS["toy-unpaired-divergent"](split="train", seed=0, n=128, overlap=0.1)
    assert ds.column_names == ["prompt", "completion", "label"] and len(ds) == 128
    good_fams = [
        parse_prompt(p)[0] in ("review", "advice") for p, lab in zip(ds["prompt"], ds["label"]) if lab
    ]
    bad_fams = [
        parse_prompt(p)[0] in ("review", "advice") for p, lab in zip(ds["prompt"], ds["label"]) if not lab
    ]
    assert len(good_fams) == len(bad_fams) == 64
    assert sum(good_fams) / 64 > 0.85 and sum(bad_fams) / 64 < 0.15


def test_negatives_all_harmful():
    ds = TOY_BUILDERS["toy-negatives"](split="train", seed=0, n=48)
    assert ds.column_names == ["prompt", "rejected"] and len(ds) == 48
    assert is_harmful(ds["rejected"]).all()


def test_selfie_splits_disjoint():
    args = dict(seed=0, n_seed=16, pool_sizes=[40, 30])
    seed = TOY_BUILDERS["toy-selfie"](split="seed", **args)
    p0 = TOY_BUILDERS["toy-selfie"](split="pool0", **args)
    p1 = TOY_BUILDERS["toy-selfie"](split="pool1", **args)
    full = TOY_BUILDERS["toy-selfie"](split="full", **args)
    assert seed.column_names == full.column_names == ["prompt", "chosen", "rejected"] and len(seed) == 16
    assert p0.column_names == p1.column_names == ["prompt"] and (len(p0), len(p1)) == (40, 30)
    a, b, c = set(seed["prompt"]), set(p0["prompt"]), set(p1["prompt"])
    assert len(a) == 16 and len(b) == 40 and len(c) == 30 and not (a & b or a & c or b & c)
    assert set(full["prompt"]) == a | b | c and len(full) == 86
    # "full" labels the seed's prompts exactly as "seed" does: one labelling of one set of samples
    seed_rows = {r["prompt"]: r for r in seed}
    assert all(r == seed_rows[r["prompt"]] for r in full if r["prompt"] in seed_rows)
    with pytest.raises(DataError, match="splits"):
        TOY_BUILDERS["toy-selfie"](split="pool2", **args)


def test_prompts_split_disjoint_and_bad_split():
    tr = TOY_BUILDERS["toy-prompts"](split="train", seed=0, n=100)
    ev = TOY_BUILDERS["toy-prompts"](split="eval", seed=0, n=100)
    assert tr.column_names == ["prompt"] and len(tr) == 100 and not set(tr["prompt"]) & set(ev["prompt"])
    with pytest.raises(DataError, match="splits"):
        TOY_BUILDERS["toy-prompts"](split="test")


@pytest.mark.parametrize(
    "name, kwargs, fmt",
    [
        ("toy-paired", {"n": 16}, "paired"),
        ("toy-unpaired", {"n": 16}, "unpaired"),
        ("toy-unpaired-divergent", {"n": 16}, "unpaired"),
        ("toy-negatives", {"n": 8}, "negatives"),
        ("toy-selfie", {"split": "seed", "n_seed": 8, "pool_sizes": [8]}, "paired"),
        ("toy-selfie", {"split": "pool0", "n_seed": 8, "pool_sizes": [8]}, "prompts"),
        ("toy-prompts", {"n": 8}, "prompts"),
    ],
)
def test_every_builder_passes_the_data_layer_validation(name, kwargs, fmt):
    """Builders are ordinary datasets to the data layer: detected as their format and valid row by row."""
    from alignment.data.formats import detect_format, validate_dataset

    ds = TOY_BUILDERS[name](**kwargs)
    assert detect_format(ds.column_names) == fmt
    validate_dataset(ds, fmt, source=name)


def test_cache_survives_another_process_saving_the_same_build_first(tmp_path, monkeypatch):
    """Two ranks of one launch build the same toy dataset; the one that renames second finds the directory
    taken (ENOTEMPTY) and must use the identical dataset already there, not crash."""
    import os

    from datasets import Dataset

    from alignment.toy import builders

    monkeypatch.setenv("ALIGNMENT_CACHE", str(tmp_path))
    real_replace = os.replace

    def other_rank_wins(src, dst):
        Dataset.from_dict({"a": [1, 2]}).save_to_disk(str(dst))  # lands between our check and our rename
        return real_replace(src, dst)

    monkeypatch.setattr(builders.os, "replace", other_rank_wins)
    ds = builders._cached("race", {"model": "no-such-model"}, lambda: {"a": [1, 2]})
    assert ds["a"] == [1, 2]
    assert not list((tmp_path / "toy-datasets").glob("*.tmp*"))  # our own copy was removed
