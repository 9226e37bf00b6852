"""Self-labelled data (one Selfie iteration, `method: selfie_iteration`): the model samples its prompt pool,
judges its own samples with its implicit reward against `method.judge_reference`, and trains the refined DPO
loss on the pairs, with itself as the reference.

The pairs are made once, on the main process, before the trainer exists, through the experience stage
(sampler → implicit labeller → best/worst selector), and saved in the run directory as a dataset
(`self_labelled/`, with every pair's texts, token ids, judge scores and, when the run is evaluated, the
judge's gold scores) with `self_labels.json` written last: a resumed or repeated iteration with the same
inputs loads them instead of sampling again, and the other processes always load them.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from alignment.distributed import main_process_first
from alignment.errors import DataError, RecipeError
from alignment.files import write_json_atomic
from alignment.kinds.on_policy import load_prompts
from alignment.kinds.policy import PolicyRun
from alignment.lifecycle import print_dry_run

logger = logging.getLogger("alignment")

PAIRS_DIR = "self_labelled"
STATS_FILE = "self_labels.json"


def check_pool_size(num_prompts: int, recipe, where: str) -> None:
    """A pool must fill at least one optimizer step of every process."""
    t = recipe.training
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_step = (
        int(t.get("per_device_train_batch_size", 8)) * int(t.get("gradient_accumulation_steps", 1)) * world
    )
    if num_prompts < per_step:
        raise DataError(
            f"{where}: the prompt pool has {num_prompts} prompts, fewer than one optimizer step needs "
            f"({per_step} = per_device_train_batch_size × gradient_accumulation_steps × {world} processes); "
            "use a larger pool or a smaller training.per_device_train_batch_size"
        )


def labelling_key(recipe) -> str:
    """What the self-labelled pairs depend on: the judged model, the judge, the prompts and the sampling."""
    from alignment.recipe.load import to_dict

    raw = to_dict(recipe)
    params = dict(raw["method"])
    inputs = {
        "model": raw["model"]["name_or_path"],
        "revision": raw["model"]["revision"],
        "judge": params["judge_reference"],
        "beta": params["beta"],
        "samples_per_prompt": params["samples_per_prompt"],
        "data": raw["data"]["train"],
        "max_prompt_length": raw["data"]["max_prompt_length"],
        "sampling": raw["sampling"],
        "judge_reward": raw["evaluation"]["reward"] if raw["evaluation"]["enabled"] else None,
        "evaluated": raw["evaluation"]["enabled"],
        "seed": raw["training"].get("seed", 0),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:24]


def agreement(chosen: torch.Tensor, rejected: torch.Tensor) -> float:
    """Share of pairs whose chosen sample scores higher, ties counted ½."""
    return float(((chosen > rejected).double() + 0.5 * (chosen == rejected).double()).mean())


class SelfLabelledRun(PolicyRun):
    """One Selfie iteration: self-labelled pairs of the pool, then `SelfieObjective` against the start model."""

    #: check `method.judge_reference` in `load_data`; off for a Selfie stage whose judge an earlier stage makes
    check_judge = True

    def load_data(self, tokenizer) -> None:
        recipe = self.recipe
        if recipe.data.eval is not None:
            raise RecipeError("data.eval", "a self-labelled run makes its own pairs; use `evaluation:`")
        self.prompts, self.format, self.report, self.lengths = load_prompts(
            recipe, tokenizer, self.spec.formats
        )
        check_pool_size(len(self.prompts), recipe, "data.train")
        if self.check_judge:
            from alignment.models import check_model_name

            check_model_name(
                recipe.method.params.judge_reference,
                "method.judge_reference",
                trust_remote_code=recipe.model.trust_remote_code,
            )

    def print_dry_run(self) -> None:
        import numpy as np

        from alignment.data.tokenize import length_stats

        p, s = self.recipe.method.params, self.recipe.sampling
        stats = {
            "prompts": len(self.prompts),
            "prompt_tokens": length_stats(np.asarray(self.lengths)),
            "samples": f"{p.samples_per_prompt} per prompt ({s.backend}, temperature={s.temperature}, "
            f"max_new_tokens={s.max_new_tokens})",
            "judge": f"log π({self.recipe.model.name_or_path}) − log π({p.judge_reference}), best vs worst",
            "refinement": f"alpha={p.alpha} after {p.refinement_warmup:.0%} of the steps, "
            f"tau=q{p.tau_quantile} of the last {p.tau_window}, DND lambda={p.dnd_lambda}"
            if p.refinement
            else "off (plain DPO)",
            "reference": self.mode,
        }
        print_dry_run(self.recipe, f"prompt pool: format {self.format}", stats, self.report.summary())

    def build_trainer(self, tokenizer, make_args):
        from alignment.kinds.static import prepare_static_trainer
        from alignment.policy.build import build_policy

        model = build_policy(self.recipe)  # before `make_args`: under ZeRO-3 the judge needs whole weights
        with main_process_first():
            pairs, self.label_stats = self.load_or_make_pairs(model, tokenizer)
        trainer, _ = prepare_static_trainer(
            self.recipe, tokenizer, pairs, None, make_args, objective=self.objective, model=model
        )
        return trainer

    # -- the pairs ----------------------------------------------------------------------------------------
    def load_or_make_pairs(self, model, tokenizer):
        from datasets import load_from_disk

        root = Path(self.recipe.output_dir)
        key = labelling_key(self.recipe)
        stats_file = root / STATS_FILE
        if stats_file.exists():
            stats = json.loads(stats_file.read_text())
            if stats.get("key") == key and (root / PAIRS_DIR).is_dir():
                logger.info("self-labelled pairs: %d loaded from %s", stats["pairs"], root / PAIRS_DIR)
                return load_from_disk(str(root / PAIRS_DIR)), stats
        pairs, stats = self.make_pairs(model, tokenizer)
        stats["key"] = key
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f"{PAIRS_DIR}.tmp{os.getpid()}"
        pairs.save_to_disk(str(tmp))
        shutil.rmtree(root / PAIRS_DIR, ignore_errors=True)
        os.replace(tmp, root / PAIRS_DIR)
        write_json_atomic(stats_file, stats)  # last: the pairs are complete
        return load_from_disk(str(root / PAIRS_DIR)), stats

    def make_pairs(self, model, tokenizer):
        """Sample, judge and select on the pool (main process), then score the pairs with the run's judge."""
        from accelerate import PartialState
        from datasets import Dataset

        from alignment.experience.labellers import ImplicitRewardLabeller
        from alignment.experience.selectors import SELECTORS
        from alignment.experience.stage import make_experience
        from alignment.models import load_causal_lm
        from alignment.sampling.factory import build_sampler, sampling_params_from_config

        recipe, p = self.recipe, self.recipe.method.params
        device = PartialState().device
        model.to(device)
        judge_reference = load_causal_lm(
            p.judge_reference, trust_remote_code=recipe.model.trust_remote_code, dtype=recipe.model.dtype
        ).to(device)
        sampler = build_sampler(recipe.sampling, model, tokenizer, recipe.model.name_or_path)
        labeller = ImplicitRewardLabeller(
            model, judge_reference, pad_token_id=tokenizer.pad_token_id, beta=p.beta
        )
        prompts = list(self.prompts["prompt"])
        logger.info(
            "Selfie iteration %d: sampling %d completions for each of %d prompts and judging them",
            p.iteration,
            p.samples_per_prompt,
            len(prompts),
        )
        started = time.perf_counter()
        experience = make_experience(
            prompts,
            sampler=sampler,
            labeller=labeller,
            select=SELECTORS.get("best_worst"),
            tokenizer=tokenizer,
            params=sampling_params_from_config(recipe.sampling, n=p.samples_per_prompt),
        )
        del judge_reference, sampler, labeller
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if experience.num_examples == 0:
            raise DataError(
                f"data.train: every prompt's {p.samples_per_prompt} samples tied under the judge; no pair to "
                "train on (the model equals its judge reference?)"
            )
        decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731  (the samplers' rule)
        kept = [prompts[int(r)] for r in experience.rows]
        columns: dict[str, list] = {
            "prompt": kept,
            "chosen": [decode(c[0]) for c in experience.completion_ids],
            "rejected": [decode(c[1]) for c in experience.completion_ids],
            "prompt_input_ids": experience.prompt_ids,
            "chosen_input_ids": [c[0] for c in experience.completion_ids],
            "rejected_input_ids": [c[1] for c in experience.completion_ids],
            "chosen_score": experience.scores[:, 0].tolist(),
            "rejected_score": experience.scores[:, 1].tolist(),
        }
        lengths = experience.lengths.double()
        stats: dict[str, Any] = {
            "iteration": p.iteration,
            "prompts": len(prompts),
            "pairs": experience.num_examples,
            "ties_skipped": experience.skipped,
            "judge": {"model": recipe.model.name_or_path, "reference": p.judge_reference},
            "score_margin": float((experience.scores[:, 0] - experience.scores[:, 1]).mean()),
            "sample_length": float(lengths.mean()),
            "chosen_length": float(
                sum(len(c[0]) for c in experience.completion_ids) / experience.num_examples
            ),
            "rejected_length": float(
                sum(len(c[1]) for c in experience.completion_ids) / experience.num_examples
            ),
            "seconds": {k: round(v, 2) for k, v in experience.seconds.items()},
        }
        if recipe.evaluation.enabled:
            columns["chosen_gold"], columns["rejected_gold"], stats["judge_accuracy"] = self.gold_agreement(
                kept, columns["chosen"], columns["rejected"]
            )
        logger.info(
            "Selfie iteration %d: %d pairs (%d tied prompts skipped) in %.1f s%s",
            p.iteration,
            stats["pairs"],
            stats["ties_skipped"],
            time.perf_counter() - started,
            f"; judge accuracy {stats['judge_accuracy']:.3f}" if "judge_accuracy" in stats else "",
        )
        return Dataset.from_dict(columns), stats

    def gold_agreement(self, prompts: list[str], chosen: list[str], rejected: list[str]):
        """The run's judge (`evaluation`'s, gold in the toy world) on both sides of every self-labelled pair:
        how often the self-label agrees with it."""
        from alignment.eval.run import judge_reward_config
        from alignment.rewards.base import build_reward

        reward = build_reward(judge_reward_config(self.recipe))
        good = reward.score(prompts, chosen).double().cpu()
        bad = reward.score(prompts, rejected).double().cpu()
        return good.tolist(), bad.tolist(), agreement(good, bad)

    def print_summary(self, trainer, result: dict[str, Any] | None) -> None:
        super().print_summary(trainer, result)
        s = self.label_stats
        accuracy = f", judge accuracy {s['judge_accuracy']:.3f}" if "judge_accuracy" in s else ""
        print(f"   self-labels: {s['pairs']} pairs, {s['ties_skipped']} tied prompts skipped{accuracy}")
