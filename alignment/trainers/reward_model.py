"""Reward-model training: paired data -> a one-logit sequence classifier under the Bradley–Terry loss.

Features and assumptions:
* Tokenization is `RewardModelScorer`'s, not the policy trainers' split prompt/completion ids: each
  completion becomes ``tokenizer(prompt + completion + eos_token)["input_ids"]`` (BPE merges across the
  prompt/completion boundary exactly as at scoring time), right-padded; the reward is the logit at the last
  non-pad token. Pairs whose chosen or rejected sequence exceeds ``data.max_length`` are dropped (as TRL's
  RewardTrainer does), never cut: a cut sequence would lose the EOS the scorer always appends.
* Comparison groups (InstructGPT §3.5 / appendix C.2): consecutive rows with the same prompt are merged into
  one batch element holding each distinct completion once, up to ``method.max_group_size`` completions, and
  every pair in the group is a comparison between two of its scores. K completions ranked by a labeller
  arrive as their K(K−1)/2 pairs (``toy-paired`` with ``samples_per_prompt``) and cost K forward passes, not
  K(K−1); and a sample's pairs land in one gradient step instead of K−1 shuffled ones, which InstructGPT
  found stops the reward model overfitting (on the toy data it matches independent pairs' accuracy with
  fewer forward passes: README, "Reward model"). The loss is the mean over a group's pairs, averaged over the
  groups (each prompt weighs the same). Data with one pair per prompt gives groups of one pair: TRL's
  RewardTrainer exactly. ``per_device_train_batch_size`` counts groups.
* Held-out pairs: ``data.eval`` when given, else the pairs of a seeded 10% of ``data.train``'s distinct
  prompts (no held-out prompt is trained on; the training rows keep their order). After training they are
  scored through `RewardModelScorer.from_pretrained(output_dir)`, the code path users run, and the result goes
  to ``output_dir/eval.json`` (keys documented on `write_evaluation`). The recipe's `evaluation:` section
  (gold evaluation of a sampling policy) does not apply to a reward model and is ignored.
* Logged metrics (train, and ``eval_`` prefixed when ``training.eval_strategy`` is set): ``loss``;
  ``rewards/chosen``, ``rewards/rejected`` (mean scores); ``rewards/margins`` (mean r_w − r_l);
  ``rewards/accuracies`` (fraction of pairs with r_w > r_l).
* The Trainer divides the loss by the accumulation steps.
* ``training.resume_from_checkpoint`` (a checkpoint directory, or ``last``) resumes weights, optimizer,
  scheduler and data order, as for the preference trainers.
"""

from __future__ import annotations

import inspect
import logging
import math
from pathlib import Path
from typing import Any

import torch

from alignment.errors import DataError
from alignment.files import write_json_atomic
from alignment.losses.reward import bradley_terry_loss
from alignment.policy.batching import right_pad
from alignment.recipe.schema import Recipe
from alignment.trainers.base import MetricsTrainer

logger = logging.getLogger("alignment")

HELDOUT_FRACTION = 0.1  # of data.train, when no data.eval is given
COLUMNS = ("chosen", "rejected")


# --------------------------------------------------------------------------------------------- data


def load_pairs(recipe: Recipe, tokenizer, spec_key: str = "train"):
    """Dataset spec -> validated paired data with plain-text prompt/chosen/rejected (chat rendered)."""
    from alignment.data.formats import prepare_for_method
    from alignment.data.loading import load_dataset_spec, row_labeller
    from alignment.data.tokenize import render_chat

    spec = getattr(recipe.data, spec_key)
    raw = load_dataset_spec(spec, seed=int(recipe.training.get("seed", 0)), key=f"data.{spec_key}")
    pairs, fmt = prepare_for_method(
        raw, ("paired",), source=f"data.{spec_key} ({spec.name})", row_label=row_labeller(spec)
    )
    return render_chat(
        pairs, fmt, tokenizer, chat_template=recipe.data.chat_template, num_proc=recipe.data.num_proc
    )


def tokenize_pairs(pairs, tokenizer, *, max_length: int, num_proc: int = 1):
    """Adds ``chosen_input_ids``/``rejected_input_ids`` (scorer tokenization); drops over-long pairs.

    Returns ``(dataset, dropped)``.
    """
    from alignment.rewards.model import require_eos, reward_input_ids

    require_eos(tokenizer)  # before the dataset map, which would wrap the error

    def tokenize(batch: dict) -> dict:
        return {f"{c}_input_ids": reward_input_ids(tokenizer, batch["prompt"], batch[c]) for c in COLUMNS}

    ds = pairs.map(tokenize, batched=True, num_proc=num_proc if num_proc > 1 else None, desc="Tokenizing")
    ds = ds.filter(
        lambda b: [
            max(len(c), len(r)) <= max_length for c, r in zip(b["chosen_input_ids"], b["rejected_input_ids"])
        ],
        batched=True,
        desc=f"Dropping pairs over {max_length} tokens",
    )
    dropped = len(pairs) - len(ds)
    if dropped:
        logger.warning(
            "dropped %d of %d pairs longer than data.max_length=%d", dropped, len(pairs), max_length
        )
    if len(ds) == 0:
        raise DataError(f"no pair fits data.max_length={max_length}")
    return ds, dropped


def split_heldout(recipe: Recipe, tokenizer):
    """(train pairs, held-out pairs, the DatasetSpec the held-out pairs came from).

    Without ``data.eval`` the held-out pairs are those of a seeded `HELDOUT_FRACTION` of the distinct
    prompts: a held-out prompt with training pairs would measure memory, not generalisation. Training rows
    keep their order, which `group_comparisons` relies on.
    """
    import random

    train = load_pairs(recipe, tokenizer)
    if recipe.data.eval is not None:
        return train, load_pairs(recipe, tokenizer, "eval"), recipe.data.eval
    prompts = sorted(set(train["prompt"]))
    if len(prompts) < 2:
        raise DataError(
            f"data.train: need pairs on at least 2 distinct prompts to hold some out, got {len(prompts)} "
            "(or set data.eval)"
        )
    random.Random(int(recipe.training.get("seed", 0))).shuffle(prompts)
    held = set(prompts[: math.ceil(HELDOUT_FRACTION * len(prompts))])
    is_held = [p in held for p in train["prompt"]]
    return (
        train.select([i for i, h in enumerate(is_held) if not h]),
        train.select([i for i, h in enumerate(is_held) if h]),
        recipe.data.train,
    )


def group_comparisons(pairs, max_group_size: int):
    """Tokenized pairs -> comparison groups: columns ``input_ids`` (the group's distinct sequences) and
    ``pairs`` ([chosen, rejected] indices into them).

    Consecutive rows with the same prompt share a group while it holds at most `max_group_size` distinct
    sequences; a pair that would overflow it starts the next group. Only consecutive rows merge, so a
    shuffled dataset simply gives one pair per group.
    """
    from datasets import Dataset

    groups: dict[str, list] = {"input_ids": [], "pairs": []}
    prompt_of_group, index = None, {}
    for prompt, chosen, rejected in zip(
        pairs["prompt"], pairs["chosen_input_ids"], pairs["rejected_input_ids"]
    ):
        keys = (tuple(chosen), tuple(rejected))
        new = set(keys) - index.keys()
        if prompt != prompt_of_group or len(index) + len(new) > max_group_size:
            prompt_of_group, index = prompt, {}
            groups["input_ids"].append([])
            groups["pairs"].append([])
        for key in keys:
            if key not in index:
                index[key] = len(index)
                groups["input_ids"][-1].append(list(key))
        groups["pairs"][-1].append([index[keys[0]], index[keys[1]]])
    return Dataset.from_dict(groups)


class ComparisonCollator:
    """Comparison groups -> ``input_ids``/``attention_mask`` (N, T), every group's sequences in turn,
    right-padded with `pad_token_id` (the scorer's layout); ``pair_index`` (P, 2) rows of those N for each
    pair's chosen and rejected; ``pair_group`` (P,) the group each pair belongs to."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, groups: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        seqs, pair_index, pair_group = [], [], []
        for g, group in enumerate(groups):
            offset = len(seqs)
            pair_index += [[offset + chosen, offset + rejected] for chosen, rejected in group["pairs"]]
            pair_group += [g] * len(group["pairs"])
            seqs += group["input_ids"]
        input_ids, attention_mask = right_pad(seqs, self.pad_token_id)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "pair_index": torch.tensor(pair_index, dtype=torch.long),
            "pair_group": torch.tensor(pair_group, dtype=torch.long),
        }


# --------------------------------------------------------------------------------------------- trainer


class RewardModelTrainer(MetricsTrainer):
    """`transformers.Trainer` whose step is the Bradley–Terry loss over comparison groups, one forward pass
    scoring every distinct sequence of the micro-batch."""

    def __init__(self, *args: Any, center_rewards_coefficient: float | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.center_rewards_coefficient = center_rewards_coefficient or 0.0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        scores = model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False
        ).logits[:, 0]  # (N,)
        pair_index, pair_group = inputs["pair_index"], inputs["pair_group"]
        chosen, rejected = scores[pair_index[:, 0]], scores[pair_index[:, 1]]  # (P,), (P,)
        losses = bradley_terry_loss(
            chosen, rejected, center_rewards_coefficient=self.center_rewards_coefficient
        )
        num_groups = int(pair_group.max()) + 1
        pairs_per_group = torch.bincount(pair_group, minlength=num_groups).to(losses.dtype)
        loss = (losses.new_zeros(num_groups).index_add(0, pair_group, losses) / pairs_per_group).mean()
        metrics = {
            "rewards/chosen": chosen.mean(),
            "rewards/rejected": rejected.mean(),
            "rewards/margins": (chosen - rejected).mean(),
            "rewards/accuracies": (chosen > rejected).float().mean(),
        }
        self._store_metrics(metrics, "train" if model.training else "eval")
        return (loss, metrics) if return_outputs else loss


# --------------------------------------------------------------------------------------------- evaluation


def label_temperature(spec) -> float | None:
    """The Bradley–Terry temperature a toy builder labelled `spec`'s pairs with; None for other data."""
    from alignment.toy.builders import TOY_BUILDERS

    builder = TOY_BUILDERS.get(spec.name)
    if builder is None or "temperature" not in inspect.signature(builder).parameters:
        return None
    default = inspect.signature(builder).parameters["temperature"].default
    return float(spec.args.get("temperature", default))


def pair_agreement(margin: torch.Tensor) -> torch.Tensor:
    """Per pair, 1 where ``margin`` (a score of chosen minus rejected) is > 0, ½ where it is exactly 0, else 0.

    A tie orders the pair no better than a fair coin, so every accuracy here (the model's, the gold's and the
    ceiling's) counts it as ½: counted as 0 in one and ½ in another, the model's gap to the ceiling would be
    off by half the fraction of tied pairs.
    """
    return torch.where(margin == 0, 0.5, (margin > 0).double())


def label_ceiling(gold_margin: torch.Tensor, temperature: float) -> float:
    """Bayes-optimal accuracy: mean of max(p, 1 − p), p = σ(Δgold / T) the probability the label is as given.

    T = 0 labels by the higher gold reward, exact ties by a fair coin (so p is 1, 0 or 1/2).
    """
    if temperature == 0:
        p = pair_agreement(gold_margin)
    else:
        p = torch.sigmoid(gold_margin / temperature)
    return float(torch.maximum(p, 1 - p).mean())


def accuracy_by_gold_term(prompts, chosen, rejected, agrees_with_gold, decided) -> dict[str, dict]:
    """For each toy gold term: over the held-out pairs the gold decides (no tie) where that term differs
    between the two completions, how often the model orders the pair as the gold does (``accuracy``; a pair's
    ``agrees_with_gold`` is 1, ½ for a model tie, or 0) and how many such pairs there are (``pairs``). A term the model has not learned shows up well below the rest,
    e.g. matching the prompt's topic (on_topic/off_topic) against merely naming some topic."""
    from alignment.toy.gold import TERMS, gold_terms

    terms_w = [gold_terms(p, c) for p, c in zip(prompts, chosen)]
    terms_l = [gold_terms(p, r) for p, r in zip(prompts, rejected)]
    result = {}
    for term in TERMS:
        rows = [i for i, (tw, tl) in enumerate(zip(terms_w, terms_l)) if tw[term] != tl[term] and decided[i]]
        if rows:
            result[term] = {"accuracy": float(agrees_with_gold[rows].double().mean()), "pairs": len(rows)}
    return result


def write_evaluation(recipe: Recipe, heldout, heldout_spec, summary: dict[str, Any]) -> dict[str, Any]:
    """Scores held-out pairs with the saved model and writes ``output_dir/eval.json``:

    * ``heldout_accuracy``: fraction of held-out pairs where the model scores chosen above rejected (ties
      count ½, as in the ceiling);
    * ``num_heldout``; ``heldout_margin``: mean r_w − r_l over them;
    * ``ceiling``: Bayes-optimal accuracy given the labelling process (`label_ceiling`), toy builders with a
      Bradley–Terry temperature only, else null; ``label_temperature`` is that T;
    * ``gold_accuracy``: how often the toy gold reward orders the pair as labelled (ties count 1/2): the
      ceiling's empirical counterpart (the gold ordering is the Bayes classifier); null for non-toy data;
    * ``accuracy_by_term`` (toy data): `accuracy_by_gold_term`, which part of the judge the model has learned;
    * whatever `summary` holds (train pairs, steps, last training loss, wall time).
    """
    from alignment.rewards.model import RewardModelScorer

    scorer = RewardModelScorer.from_pretrained(recipe.output_dir)
    prompts = heldout["prompt"]
    chosen = scorer.score(prompts, heldout["chosen"])
    rejected = scorer.score(prompts, heldout["rejected"])
    result: dict[str, Any] = {
        "heldout_accuracy": float(pair_agreement(chosen - rejected).mean()),
        "num_heldout": len(prompts),
        "heldout_margin": float((chosen - rejected).mean()),
        "ceiling": None,
        "gold_accuracy": None,
        "label_temperature": None,
    }
    temperature = label_temperature(heldout_spec)
    if temperature is not None:
        from alignment.toy.gold import gold_reward

        margin = gold_reward(prompts, heldout["chosen"]) - gold_reward(prompts, heldout["rejected"])
        result.update(
            ceiling=label_ceiling(margin, temperature),
            gold_accuracy=float(pair_agreement(margin).mean()),
            label_temperature=temperature,
            accuracy_by_term=accuracy_by_gold_term(
                prompts,
                heldout["chosen"],
                heldout["rejected"],
                agrees_with_gold=pair_agreement((chosen - rejected) * torch.sign(margin)),
                decided=margin != 0,
            ),
        )
    result.update(summary)
    write_json_atomic(Path(recipe.output_dir) / "eval.json", result)
    return result
