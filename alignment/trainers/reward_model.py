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
import time
from pathlib import Path
from typing import Any

import torch

from alignment.errors import DataError
from alignment.files import write_json_atomic
from alignment.losses.reward import bradley_terry_loss
from alignment.policy.batching import right_pad
from alignment.recipe.load import dump_recipe, save_recipe
from alignment.recipe.schema import Recipe, to_training_arguments
from alignment.trainers.base import MetricsTrainer

logger = logging.getLogger("alignment")

HELDOUT_FRACTION = 0.1  # of data.train, when no data.eval is given
COLUMNS = ("chosen", "rejected")


# --------------------------------------------------------------------------------------------- data


def load_pairs(recipe: Recipe, tokenizer, spec_key: str = "train"):
    """Dataset spec -> validated paired data with plain-text prompt/chosen/rejected (chat rendered)."""
    from alignment.data.formats import prepare_for_method
    from alignment.data.loading import load_dataset_spec
    from alignment.data.tokenize import render_chat

    spec = getattr(recipe.data, spec_key)
    raw = load_dataset_spec(spec, seed=int(recipe.training.get("seed", 0)), key=f"data.{spec_key}")
    pairs, fmt = prepare_for_method(raw, ("paired",), source=f"data.{spec_key} ({spec.name})")
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


def label_ceiling(gold_margin: torch.Tensor, temperature: float) -> float:
    """Bayes-optimal accuracy: mean of max(p, 1 − p), p = σ(Δgold / T) the probability the label is as given.

    T = 0 labels by the higher gold reward, exact ties by a fair coin (so p is 1, 0 or 1/2).
    """
    if temperature == 0:
        p = torch.where(gold_margin == 0, 0.5, (gold_margin > 0).double())
    else:
        p = torch.sigmoid(gold_margin / temperature)
    return float(torch.maximum(p, 1 - p).mean())


def accuracy_by_gold_term(prompts, chosen, rejected, agrees_with_gold, decided) -> dict[str, dict]:
    """For each toy gold term: over the held-out pairs the gold decides (no tie) where that term differs
    between the two completions, how often the model orders the pair as the gold does (``accuracy``) and how
    many such pairs there are (``pairs``). A term the model has not learned shows up well below the rest,
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

    * ``heldout_accuracy``: fraction of held-out pairs where the model scores chosen above rejected;
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
        "heldout_accuracy": float((chosen > rejected).double().mean()),
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
        agree = torch.where(margin == 0, 0.5, (margin > 0).double())
        result.update(
            ceiling=label_ceiling(margin, temperature),
            gold_accuracy=float(agree.mean()),
            label_temperature=temperature,
            accuracy_by_term=accuracy_by_gold_term(
                prompts,
                heldout["chosen"],
                heldout["rejected"],
                agrees_with_gold=torch.sign(chosen - rejected) == torch.sign(margin),
                decided=margin != 0,
            ),
        )
    result.update(summary)
    write_json_atomic(Path(recipe.output_dir) / "eval.json", result)
    return result


# --------------------------------------------------------------------------------------------- run


def print_dry_run(recipe: Recipe, train, heldout, train_groups, dropped: dict[str, int]) -> None:
    from alignment.data.tokenize import length_stats

    print("# resolved recipe\n" + dump_recipe(recipe))
    print(f"# reward-model data: {len(train)} training pairs, {len(heldout)} held-out pairs")
    print(f"  {group_summary(train_groups)}")
    for name, ds in (("train", train), ("heldout", heldout)):
        for c in COLUMNS:
            lengths = torch.tensor([len(ids) for ids in ds[f"{c}_input_ids"]]).numpy()
            print(f"  {name} {c}_tokens: {length_stats(lengths)}")
    print(f"# dropped over data.max_length={recipe.data.max_length}: {dropped}")
    print("dry run: recipe and data are valid; nothing was trained.")


def group_summary(groups) -> str:
    """One line: how many comparison groups, and the forward passes they save against one pair per group."""
    sequences = sum(len(ids) for ids in groups["input_ids"])
    pairs = sum(len(p) for p in groups["pairs"])
    return (
        f"{pairs} pairs in {len(groups)} comparison groups, {sequences} distinct sequences "
        f"({sequences / max(1, 2 * pairs):.2f} of the forward passes of one pair per group)"
    )


def run_reward_model(recipe: Recipe, *, dry_run: bool = False) -> int:
    from transformers import set_seed

    from alignment.models import load_reward_model, load_tokenizer

    tokenizer = load_tokenizer(
        recipe.model.name_or_path,
        revision=recipe.model.revision,
        trust_remote_code=recipe.model.trust_remote_code,
    )
    train_pairs, heldout_pairs, heldout_spec = split_heldout(recipe, tokenizer)
    length = {"max_length": recipe.data.max_length, "num_proc": recipe.data.num_proc}
    train, dropped_train = tokenize_pairs(train_pairs, tokenizer, **length)
    heldout, dropped_heldout = tokenize_pairs(heldout_pairs, tokenizer, **length)
    max_group_size = recipe.method.params.max_group_size
    train_groups = group_comparisons(train, max_group_size)
    if dry_run:
        dropped = {"train": dropped_train, "heldout": dropped_heldout}
        print_dry_run(recipe, train, heldout, train_groups, dropped)
        return 0
    logger.info("reward-model training data: %s", group_summary(train_groups))
    from alignment.run import resume_argument, setup_distributed

    resume = resume_argument(recipe)  # a bad checkpoint path fails before the model loads
    setup_distributed()
    save_recipe(recipe, recipe.output_dir)
    started = time.time()
    seed = int(recipe.training.get("seed", 0))
    set_seed(seed)  # the score head is freshly initialised
    model = load_reward_model(
        recipe.model.name_or_path,
        revision=recipe.model.revision,
        trust_remote_code=recipe.model.trust_remote_code,
    )
    model.config.pad_token_id = tokenizer.pad_token_id  # the scorer pads with the tokenizer's pad token
    trainer = RewardModelTrainer(
        model=model,
        args=to_training_arguments(recipe),
        train_dataset=train_groups,
        eval_dataset=group_comparisons(heldout, max_group_size),
        data_collator=ComparisonCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        center_rewards_coefficient=recipe.method.params.center_rewards_coefficient,
    )
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(recipe.output_dir)
    if not trainer.is_world_process_zero():
        return 0
    tokenizer.save_pretrained(recipe.output_dir)
    train_seconds = time.time() - started
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    summary = {
        "num_train": len(train),
        "num_train_groups": len(train_groups),
        "dropped_over_max_length": dropped_train + dropped_heldout,
        "steps": trainer.state.global_step,
        "train_loss_last": losses[-1] if losses else None,
        "train_seconds": round(train_seconds, 1),
        "seed": seed,
    }
    result = write_evaluation(recipe, heldout, heldout_spec, summary)
    print_summary(recipe, result)
    return 0


def print_summary(recipe: Recipe, result: dict[str, Any]) -> None:
    def fmt(value: Any) -> str:
        return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

    print(
        f"\n== reward_model: {result['steps']} steps on {result['num_train']} pairs, output in {recipe.output_dir}"
    )
    if result["train_loss_last"] is not None:
        print(f"   last train loss {result['train_loss_last']:.4f}, {result['train_seconds']} s")
    print(
        f"   held-out accuracy {fmt(result['heldout_accuracy'])} on {result['num_heldout']} pairs; "
        f"label-noise ceiling {fmt(result['ceiling'])}; gold accuracy {fmt(result['gold_accuracy'])}"
    )
    if result["ceiling"] is not None and not math.isnan(result["ceiling"]):
        print(f"   gap to ceiling {result['ceiling'] - result['heldout_accuracy']:+.4f}")
    by_term = result.get("accuracy_by_term") or {}
    if by_term:
        cells = ", ".join(f"{t} {v['accuracy']:.2f} ({v['pairs']})" for t, v in by_term.items())
        print(f"   accuracy on pairs where a gold term differs (pairs): {cells}")
    print(f"   wrote {Path(recipe.output_dir) / 'eval.json'}")
