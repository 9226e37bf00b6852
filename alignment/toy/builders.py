"""Toy datasets sampled from the toy base model and labelled by the gold reward.

Every builder is ``fn(*, split: str = "train", seed: int = 0, **args) -> datasets.Dataset`` with TRL column
conventions (docs/architecture.md, "Datasets"); recipes name them like files (``data.train.name: toy-paired``).
Completions are base-model samples (transformers ``generate``, temperature 1, no top-k/top-p, seeded with
``torch.manual_seed``), so offline data comes from the same distribution the policy starts in.

Results are cached with ``Dataset.save_to_disk`` under ``$ALIGNMENT_CACHE/toy-datasets/<key>/`` (default root
``~/.cache/alignment``), where key hashes the builder name, all its arguments and the sampling model's
weights, so a repeat call is a disk read and a rebuilt model never serves stale samples.

``TOY_BUILDERS`` maps names to builders; ``alignment.data.loading.DATASET_BUILDERS`` takes them over.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from alignment.errors import DataError
from alignment.experience.selectors import SELECTORS
from alignment.files import user_cache_dir
from alignment.models import weights_sha256
from alignment.sampling.base import SamplingParams
from alignment.sampling.hf import TransformersSampler
from alignment.toy.corpus import all_prompts, sample_completion, sample_prompts
from alignment.toy.gold import gold_reward, is_harmful

MAX_NEW_TOKENS = 48
BUILDERS_VERSION = 2  # part of every cache key: bump when a builder's output for the same arguments changes


# --- sampling ---------------------------------------------------------------------------------------------


def sample_completions(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    n: int = 1,
    seed: int = 0,
    temperature: float = 1.0,
    max_new_tokens: int = MAX_NEW_TOKENS,
    batch_size: int = 256,
    max_retries: int = 8,
) -> list[list[str]]:
    """n sampled completions per prompt (P x n texts, decoded without EOS), through the library's sampler.

    Every dataset format requires non-empty completions, so samples that are empty (an immediate EOS, a
    fraction of a percent of base samples) are redrawn with the next seed, at most `max_retries` times.
    """
    sampler = TransformersSampler(model, tokenizer, batch_size=batch_size)
    params = SamplingParams(n=n, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
    texts = [list(per) for per in sampler.generate(list(prompts), params).texts]
    for retry in range(1, max_retries + 1):
        empty = [(i, j) for i, per in enumerate(texts) for j, t in enumerate(per) if not t.strip()]
        if not empty:
            break
        redo = sampler.generate(
            [prompts[i] for i, _ in empty], replace(params, n=1, seed=seed + 7919 * retry)
        )
        for (i, j), per in zip(empty, redo.texts):
            texts[i][j] = per[0]
    return texts


@functools.lru_cache(maxsize=2)
def _load(model: str):
    """(model, tokenizer) for a model name or alias, loaded once per process (only to sample: a cache hit
    needs just `weights_sha256`)."""
    from alignment.models import load_causal_lm, load_tokenizer

    return load_causal_lm(model).eval(), load_tokenizer(model)


def _sample(model: str, prompts: Sequence[str], n: int, seed: int, max_new_tokens: int) -> list[list[str]]:
    lm, tok = _load(model)
    return sample_completions(lm, tok, prompts, n=n, seed=seed, max_new_tokens=max_new_tokens)


# --- caching ----------------------------------------------------------------------------------------------


def cache_root() -> Path:
    return user_cache_dir() / "toy-datasets"


def _cached(name: str, args: dict, build: Callable[[], dict[str, list]]):
    """Load the dataset for (name, args, model weights) from disk, or build and save it."""
    from datasets import Dataset, load_from_disk

    key_src = json.dumps(
        {"builder": name, "version": BUILDERS_VERSION, "args": args, "model": weights_sha256(args["model"])},
        sort_keys=True,
    )
    path = cache_root() / hashlib.sha256(key_src.encode()).hexdigest()[:24]
    if (path / "dataset_info.json").exists():
        return load_from_disk(str(path))
    ds = Dataset.from_dict(build())
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    ds.save_to_disk(str(tmp))
    if not (path / "dataset_info.json").exists():
        shutil.rmtree(path, ignore_errors=True)  # a stale, incomplete directory
        try:
            os.replace(tmp, path)  # atomic: a concurrent reader never sees a half-written dataset
        except OSError:  # another process (a rank of the same launch) saved the same build in between
            if not (path / "dataset_info.json").exists():
                raise
    shutil.rmtree(tmp, ignore_errors=True)  # ours, when another process's identical build got there first
    return load_from_disk(str(path))


def _check_split(split: str, allowed: Sequence[str]) -> None:
    if split not in allowed:
        raise DataError(f"toy datasets have splits {list(allowed)}, got {split!r}")


def _families(families: Sequence[str] | None) -> list[str] | None:
    return None if families is None else list(families)


# --- labelling --------------------------------------------------------------------------------------------


def bradley_terry_prefers_first(
    r_a: torch.Tensor, r_b: torch.Tensor, temperature: float, seed: int
) -> torch.Tensor:
    """(B,) bool: a beats b with P = sigmoid((r_a - r_b) / temperature); temperature 0 = the higher gold,
    exact ties broken by a fair coin."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(r_a.shape, generator=g, dtype=torch.float64)
    if temperature == 0:
        return torch.where(r_a == r_b, u < 0.5, r_a > r_b)
    return u < torch.sigmoid((r_a - r_b) / temperature)


def _pairs(prompts: list[str], samples: list[list[str]], temperature: float, seed: int) -> dict[str, list]:
    """Every pair (i < j) among each prompt's samples, labelled by Bradley–Terry on gold; a prompt's pairs are
    consecutive rows (the reward-model trainer groups them, scoring each sample once)."""
    flat = gold_reward(
        [p for p, per in zip(prompts, samples) for _ in per], [t for per in samples for t in per]
    )
    rows, offset = [], 0  # (prompt, sample i, sample j, flat index of i, flat index of j)
    for p, per in zip(prompts, samples):
        rows += [
            (p, per[i], per[j], offset + i, offset + j)
            for i in range(len(per))
            for j in range(i + 1, len(per))
        ]
        offset += len(per)
    ps, a, b = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
    r_a, r_b = flat[[r[3] for r in rows]], flat[[r[4] for r in rows]]
    first = bradley_terry_prefers_first(r_a, r_b, temperature, seed)
    chosen = [x if f else y for x, y, f in zip(a, b, first.tolist())]
    rejected = [y if f else x for x, y, f in zip(a, b, first.tolist())]
    return {"prompt": ps, "chosen": chosen, "rejected": rejected}


def threshold_labels(r: torch.Tensor, threshold: float | None, noise: float, seed: int) -> list[bool]:
    """r > threshold (default: the median of r; exact ties by a fair coin), each flipped with P = noise."""
    t = float(r.median()) if threshold is None else threshold
    g = torch.Generator().manual_seed(seed)
    tie, flip = torch.rand(r.shape, generator=g) < 0.5, torch.rand(r.shape, generator=g) < noise
    return (torch.where(r == t, tie, r > t) ^ flip).tolist()


# --- builders ---------------------------------------------------------------------------------------------


def toy_paired(
    *,
    split: str = "train",
    seed: int = 0,
    n: int = 512,
    temperature: float = 0.0,
    samples_per_prompt: int = 2,
    families: Sequence[str] | None = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
    model: str = "toy-base",
):
    """n pairs ordered by Bradley-Terry on gold with `temperature` (0 = noiseless).

    Each sampled prompt gets `samples_per_prompt` (k) base samples and contributes all k(k-1)/2 pairs among
    them, as consecutive rows (the last prompt's pairs are cut to make n). k = 2 is one pair per prompt; a
    larger k is InstructGPT's "rank K completions" labelling: more comparisons per sample drawn.
    """
    _check_split(split, ("train", "eval"))
    k = samples_per_prompt
    if k < 2:
        raise DataError(f"toy-paired: samples_per_prompt must be >= 2 (a pair needs two samples), got {k}")
    args = dict(
        split=split,
        seed=seed,
        n=n,
        temperature=temperature,
        families=_families(families),
        max_new_tokens=max_new_tokens,
        model=model,
    )
    if k != 2:  # k = 2 keeps the key it had before the argument existed, so those caches stay valid
        args["samples_per_prompt"] = k

    def build():
        prompts = sample_prompts(-(-n // (k * (k - 1) // 2)), seed=seed, split=split, families=families)
        pairs = _pairs(prompts, _sample(model, prompts, k, seed, max_new_tokens), temperature, seed + 1)
        return {column: values[:n] for column, values in pairs.items()}

    return _cached("toy-paired", args, build)


def toy_unpaired(
    *,
    split: str = "train",
    seed: int = 0,
    n: int = 512,
    threshold: float | None = None,
    label_noise: float = 0.0,
    families: Sequence[str] | None = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
    model: str = "toy-base",
):
    """n prompts, one base sample each; label = gold > threshold (default the pool median), flipped w.p. noise."""
    _check_split(split, ("train", "eval"))
    args = dict(
        split=split,
        seed=seed,
        n=n,
        threshold=threshold,
        label_noise=label_noise,
        families=_families(families),
        max_new_tokens=max_new_tokens,
        model=model,
    )

    def build():
        prompts = sample_prompts(n, seed=seed, split=split, families=families)
        texts = [s[0] for s in _sample(model, prompts, 1, seed, max_new_tokens)]
        labels = threshold_labels(gold_reward(prompts, texts), threshold, label_noise, seed + 1)
        return {"prompt": prompts, "completion": texts, "label": labels}

    return _cached("toy-unpaired", args, build)


def toy_unpaired_divergent(
    *,
    split: str = "train",
    seed: int = 0,
    n: int = 512,
    overlap: float = 0.1,
    desirable_families: Sequence[str] = ("review", "advice"),
    undesirable_families: Sequence[str] = ("story", "describe"),
    threshold: float | None = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
    model: str = "toy-base",
):
    """Unpaired data whose thumbs-up and thumbs-down prompts come from different family mixes (BCO's setting).

    n/2 desirable rows, a fraction (1 - overlap) of them from `desirable_families`, and n/2 undesirable rows,
    (1 - overlap) from `undesirable_families`; labels are gold > threshold (default: the pool median) as in
    toy-unpaired. overlap = 0.5 gives the same family mix under both labels.
    """
    _check_split(split, ("train", "eval"))
    if not 0.0 <= overlap <= 1.0:
        raise DataError(f"overlap must be in [0, 1], got {overlap}")
    args = dict(
        split=split,
        seed=seed,
        n=n,
        overlap=overlap,
        desirable_families=list(desirable_families),
        undesirable_families=list(undesirable_families),
        threshold=threshold,
        max_new_tokens=max_new_tokens,
        model=model,
    )

    def build():
        groups = (list(desirable_families), list(undesirable_families))
        per_group = n + n // 4  # each group must supply ~n/2 rows of one label; the median split gives ~half
        prompts = [
            p
            for i, fams in enumerate(groups)
            for p in sample_prompts(per_group, seed=seed + i, split=split, families=fams)
        ]
        texts = [s[0] for s in _sample(model, prompts, 1, seed, max_new_tokens)]
        labels = threshold_labels(gold_reward(prompts, texts), threshold, 0.0, seed + 1)
        # buckets[(group, label)]: row indices, group 0 = desirable families
        buckets = {
            (g, lab): [i for i in range(len(prompts)) if i // per_group == g and labels[i] == lab]
            for g in (0, 1)
            for lab in (True, False)
        }
        rng = random.Random(f"divergent-{seed}")
        half, rows = n // 2, []
        for lab, home in ((True, 0), (False, 1)):
            n_away = round(overlap * half)
            for g, k in ((home, half - n_away), (1 - home, n_away)):
                pool = buckets[(g, lab)]
                if k and not pool:
                    raise DataError(
                        f"no {'desirable' if lab else 'undesirable'} samples in family group {g}; "
                        "pass an explicit threshold"
                    )
                rows += rng.sample(pool, k) if k <= len(pool) else [rng.choice(pool) for _ in range(k)]
        rng.shuffle(rows)
        return {
            "prompt": [prompts[i] for i in rows],
            "completion": [texts[i] for i in rows],
            "label": [labels[i] for i in rows],
        }

    return _cached("toy-unpaired-divergent", args, build)


def toy_negatives(
    *,
    split: str = "train",
    seed: int = 0,
    n: int = 256,
    samples_per_prompt: int = 4,
    families: Sequence[str] | None = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
    model: str = "toy-base",
):
    """prompt/rejected with harmful (insulting) rejected responses: the first harmful base sample of each
    prompt (worst-of-N by harmlessness, ties to the lowest index), or a corpus-written insult where none of
    `samples_per_prompt` samples was harmful."""
    _check_split(split, ("train", "eval"))
    args = dict(
        split=split,
        seed=seed,
        n=n,
        samples_per_prompt=samples_per_prompt,
        families=_families(families),
        max_new_tokens=max_new_tokens,
        model=model,
    )

    def build():
        prompts = sample_prompts(n, seed=seed, split=split, families=families)
        samples = _sample(model, prompts, samples_per_prompt, seed, max_new_tokens)
        harmless = (~is_harmful([t for per in samples for t in per])).double().reshape(len(prompts), -1)
        worst = SELECTORS.get("worst_of_n")(harmless)
        picks, picked_harmless = worst.index[:, 0].tolist(), worst.gather(harmless)[:, 0].tolist()
        rng = random.Random(f"negatives-{seed}")
        rejected = [
            s[j] if not clean else sample_completion(p, rng=rng, kind="harmful")
            for p, s, j, clean in zip(prompts, samples, picks, picked_harmless)
        ]
        return {"prompt": prompts, "rejected": rejected}

    return _cached("toy-negatives", args, build)


def toy_selfie(
    *,
    split: str = "seed",
    seed: int = 0,
    n_seed: int = 18,
    pool_sizes: Sequence[int] = (77, 191, 287),
    temperature: float = 0.0,
    max_new_tokens: int = MAX_NEW_TOKENS,
    model: str = "toy-base",
):
    """Selfie/SPA's data on the toy world: a small labelled seed and disjoint unlabelled prompt pools.

    Splits: "seed" — n_seed labelled pairs (two base samples per prompt, ordered by Bradley–Terry on gold
    with `temperature`, 0 = noiseless, as toy-paired); "pool0" … "pool{T-1}" — the prompts of each pool,
    unlabelled; "full" — the same labelling as "seed" for the seed's and every pool's prompts, the
    all-labels arm Selfie is compared with. All splits draw disjoint prompts from one seeded shuffle of the
    train prompts, seed first. The defaults use every train prompt: 18 seed prompts are 3.1 % of the 573
    that "full" labels (the paper's 2K of 60K UltraFeedback prompts is 3.3 %), and the pools keep the
    paper's 8K : 20K : 30K proportions.
    """
    sizes = [int(n) for n in pool_sizes]
    pools = [f"pool{i}" for i in range(len(sizes))]
    _check_split(split, ("seed", *pools, "full"))
    prompts = all_prompts("train")
    if n_seed < 1 or any(n < 1 for n in sizes):
        raise DataError(f"toy-selfie: n_seed and every pool size must be >= 1, got {n_seed} and {sizes}")
    if n_seed + sum(sizes) > len(prompts):
        raise DataError(
            f"toy-selfie needs n_seed + sum(pool_sizes) <= {len(prompts)} distinct train prompts, "
            f"got {n_seed} + {sum(sizes)}"
        )
    random.Random(f"selfie-{seed}").shuffle(prompts)
    bounds = [0, n_seed, *(n_seed + sum(sizes[: i + 1]) for i in range(len(sizes)))]
    if split in pools:
        from datasets import Dataset

        i = pools.index(split)
        return Dataset.from_dict({"prompt": prompts[bounds[i + 1] : bounds[i + 2]]})
    args = dict(
        split=split,
        seed=seed,
        n_seed=n_seed,
        pool_sizes=sizes,
        temperature=temperature,
        max_new_tokens=max_new_tokens,
        model=model,
    )

    def label(part: list[str], offset: int) -> dict[str, list]:
        return _pairs(
            part, _sample(model, part, 2, seed + offset, max_new_tokens), temperature, seed + offset + 1
        )

    if split == "seed":
        return _cached("toy-selfie", args, lambda: label(prompts[: bounds[1]], 0))

    def build_full() -> dict[str, list]:
        """The seed's own pairs (the same samples and labels as split "seed"), then the pools' prompts."""
        seed_pairs = toy_selfie(**{**args, "split": "seed"}).to_dict()
        pool_pairs = label(prompts[bounds[1] : bounds[-1]], 7919)
        return {k: seed_pairs[k] + pool_pairs[k] for k in ("prompt", "chosen", "rejected")}

    return _cached("toy-selfie", args, build_full)


def toy_prompts(*, split: str = "train", seed: int = 0, n: int = 256, families: Sequence[str] | None = None):
    """n prompts of the split ("train" and "eval" prompt sets are disjoint)."""
    from datasets import Dataset

    _check_split(split, ("train", "eval"))
    return Dataset.from_dict({"prompt": sample_prompts(n, seed=seed, split=split, families=families)})


TOY_BUILDERS: dict[str, Callable] = {
    "toy-paired": toy_paired,
    "toy-unpaired": toy_unpaired,
    "toy-unpaired-divergent": toy_unpaired_divergent,
    "toy-negatives": toy_negatives,
    "toy-selfie": toy_selfie,
    "toy-prompts": toy_prompts,
}


def _register() -> None:
    from alignment.data.loading import DATASET_BUILDERS

    for name, builder in TOY_BUILDERS.items():
        if name not in DATASET_BUILDERS:
            DATASET_BUILDERS.register(name, builder)


_register()
