"""Self-labelled data (one Selfie iteration, `method: selfie_iteration`): the model samples its prompt pool,
judges its own samples with its implicit reward against `method.judge_reference`, and trains the refined DPO
loss on the pairs, with itself as the reference.

The pairs are made once, before the trainer exists, through the experience stage (sampler → implicit labeller
→ best/worst selector): every process labels its share of the pool, the main process merges the shares in
pool order and saves them in the run directory as a dataset (`self_labelled/`: every pair's texts, token ids,
judge scores and, when the run is evaluated, the judge's scores of both sides) with `self_labels.json` written
last. A resumed or repeated iteration whose inputs have the same key loads them instead of sampling again.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from alignment.errors import DataError, RecipeError
from alignment.files import write_json_atomic
from alignment.kinds.on_policy import load_prompts
from alignment.kinds.policy import PolicyRun
from alignment.lifecycle import print_dry_run

logger = logging.getLogger("alignment")

PAIRS_DIR = "self_labelled"
STATS_FILE = "self_labels.json"


def per_step_examples(recipe) -> int:
    """Examples one optimizer step takes across all processes."""
    t = recipe.training
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(t.get("per_device_train_batch_size", 8)) * int(t.get("gradient_accumulation_steps", 1)) * world


def check_pool_size(num_prompts: int, recipe, where: str) -> None:
    """A pool must fill at least one optimizer step of every process."""
    per_step = per_step_examples(recipe)
    if num_prompts < per_step:
        raise DataError(
            f"{where}: the prompt pool has {num_prompts} prompts, fewer than one optimizer step needs "
            f"({per_step} = per_device_train_batch_size × gradient_accumulation_steps × processes); "
            "use a larger pool or a smaller training.per_device_train_batch_size"
        )


def model_fingerprint(name: str) -> str:
    """A local model directory's weights by size and modification time (a retrained model changes both), or
    the name itself (an alias or hub id)."""
    from alignment.models import resolve_model_path

    path = Path(resolve_model_path(name))
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    return json.dumps([(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]) if files else name


def labelling_key(recipe) -> str:
    """What the self-labelled pairs depend on: the judged model and its judge (names and weights), the prompts,
    their tokenisation, the sampling and the judge that scores the pairs."""
    from alignment.recipe.load import to_dict

    raw = to_dict(recipe)
    params = raw["method"]
    inputs = {
        "model": raw["model"]["name_or_path"],
        "model_weights": model_fingerprint(raw["model"]["name_or_path"]),
        "revision": raw["model"]["revision"],
        "dtype": raw["model"]["dtype"],
        "judge": params["judge_reference"],
        "judge_weights": model_fingerprint(params["judge_reference"]),
        "beta": params["beta"],
        "samples_per_prompt": params["samples_per_prompt"],
        "data": raw["data"]["train"],
        "max_prompt_length": raw["data"]["max_prompt_length"],
        "chat_template": raw["data"]["chat_template"],
        "sampling": raw["sampling"],
        "reward": raw["reward"],
        "evaluation": {k: raw["evaluation"][k] for k in ("enabled", "reward")},
        "seed": raw["training"].get("seed", 0),
        "processes": int(os.environ.get("WORLD_SIZE", "1")),  # each process samples its own share
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:24]


def saved_stats(root: Path, key: str) -> dict[str, Any] | None:
    """`self_labels.json` of complete pairs made with `key`, else None."""
    stats_file = root / STATS_FILE
    if not stats_file.exists() or not (root / PAIRS_DIR).is_dir():
        return None
    stats = json.loads(stats_file.read_text())
    return stats if stats.get("key") == key else None


def save_dataset_atomic(dataset, path: Path) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    dataset.save_to_disk(str(tmp))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def empty_pairs_features(with_judge: bool):
    """The columns of a process's share when none of its prompts gave a pair (all tied)."""
    from datasets import Features, Sequence, Value

    ids = Sequence(Value("int64"))
    columns = {"pool_index": Value("int64"), "prompt": Value("string"), "chosen": Value("string")}
    columns.update(
        rejected=Value("string"), prompt_input_ids=ids, chosen_input_ids=ids, rejected_input_ids=ids
    )
    columns.update(chosen_score=Value("float64"), rejected_score=Value("float64"))
    if with_judge:
        columns.update(chosen_gold=Value("float64"), rejected_gold=Value("float64"))
    return Features(columns)


def agreement(chosen: torch.Tensor, rejected: torch.Tensor) -> float:
    """Share of pairs whose chosen sample scores higher, ties counted ½."""
    return float(((chosen > rejected).double() + 0.5 * (chosen == rejected).double()).mean())


def merge_stats(pairs, pieces: list[dict[str, Any]], recipe) -> dict[str, Any]:
    """`self_labels.json` from the merged pairs and every process's counts."""
    p = recipe.method.params
    n = len(pairs)

    def mean_length(column: str) -> float:
        return sum(map(len, pairs[column])) / n if n else float("nan")

    chosen, rejected = (
        torch.tensor(pairs[c], dtype=torch.float64) for c in ("chosen_score", "rejected_score")
    )
    stats: dict[str, Any] = {
        "iteration": p.iteration,
        "prompts": sum(x["prompts"] for x in pieces),
        "pairs": n,
        "ties_skipped": sum(x["ties_skipped"] for x in pieces),
        "samples_per_prompt": p.samples_per_prompt,
        "judge": {"model": recipe.model.name_or_path, "reference": p.judge_reference},
        "score_margin": float((chosen - rejected).mean()) if n else float("nan"),
        "sample_length": sum(x["sample_tokens"] for x in pieces) / max(1, sum(x["samples"] for x in pieces)),
        "chosen_length": mean_length("chosen_input_ids"),
        "rejected_length": mean_length("rejected_input_ids"),
        "seconds": {k: round(max(x["seconds"][k] for x in pieces), 2) for k in ("sample", "score")},
        "processes": len(pieces),
    }
    if "chosen_gold" in pairs.column_names and n:
        gold = [torch.tensor(pairs[c], dtype=torch.float64) for c in ("chosen_gold", "rejected_gold")]
        stats["judge_accuracy"] = agreement(*gold)
    return stats


def log_stats(stats: dict[str, Any]) -> None:
    accuracy = stats.get("judge_accuracy")
    logger.info(
        "Selfie iteration %d: %d pairs (%d tied prompts skipped), sampled in %.1f s and judged in %.1f s%s",
        stats["iteration"],
        stats["pairs"],
        stats["ties_skipped"],
        stats["seconds"]["sample"],
        stats["seconds"]["score"],
        f"; judge accuracy {accuracy:.3f}" if accuracy is not None else "",
    )


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
        pairs, self.label_stats = self.load_or_make_pairs(model, tokenizer)
        per_step = per_step_examples(self.recipe)
        if len(pairs) < per_step:
            raise DataError(
                f"data.train: {len(pairs)} self-labelled pairs are left after {self.label_stats['ties_skipped']} "
                f"tied prompts, fewer than one optimizer step ({per_step}); use a larger pool or a smaller batch"
            )
        trainer, _ = prepare_static_trainer(
            self.recipe, tokenizer, pairs, None, make_args, objective=self.objective, model=model
        )
        return trainer

    # -- the pairs ----------------------------------------------------------------------------------------
    def load_or_make_pairs(self, model, tokenizer):
        """The saved pairs when their key matches; else every process labels its share of the pool (prompts
        r, r + W, ...), the main process merges the shares in pool order and saves them, and all load them."""
        from accelerate import PartialState
        from datasets import concatenate_datasets, load_from_disk

        state = PartialState()  # the process group: a plain multi-process launch has none before the Trainer
        root = Path(self.recipe.output_dir)
        key = labelling_key(self.recipe)
        stats = saved_stats(root, key)
        if stats is None:
            shards = root / f"{PAIRS_DIR}.shards"
            if state.is_main_process:
                for stale in (*root.glob(f"{PAIRS_DIR}.tmp*"), shards):  # left by a killed run
                    shutil.rmtree(stale, ignore_errors=True)
            state.wait_for_everyone()
            shard, shard_stats = self.make_pairs(model, tokenizer, state.process_index, state.num_processes)
            save_dataset_atomic(shard, shards / f"rank{state.process_index}")
            write_json_atomic(shards / f"rank{state.process_index}.json", shard_stats)
            state.wait_for_everyone()
            if state.is_main_process:
                parts = range(state.num_processes)
                merged = concatenate_datasets([load_from_disk(str(shards / f"rank{r}")) for r in parts])
                merged = merged.sort("pool_index")
                pieces = [json.loads((shards / f"rank{r}.json").read_text()) for r in parts]
                stats = {**merge_stats(merged, pieces, self.recipe), "key": key}
                save_dataset_atomic(merged, root / PAIRS_DIR)
                write_json_atomic(root / STATS_FILE, stats)  # last: the pairs are complete
                shutil.rmtree(shards, ignore_errors=True)
                log_stats(stats)
            state.wait_for_everyone()
            stats = saved_stats(root, key)
        else:
            logger.info("self-labelled pairs: %d loaded from %s", stats["pairs"], root / PAIRS_DIR)
        if stats is None:
            raise DataError(
                f"data.train: no self-labelled pairs in {root / PAIRS_DIR} (see the main process's log)"
            )
        if stats["pairs"] == 0:  # every process raises it: none is left waiting for the others
            raise DataError(
                f"data.train: every prompt's {stats['samples_per_prompt']} samples tied under the judge; no pair "
                "to train on (is the judged model its own judge reference?)"
            )
        return load_from_disk(str(root / PAIRS_DIR)), stats

    def make_pairs(self, model, tokenizer, rank: int, world: int):
        """Sample, judge and select this process's share of the pool; score its pairs with the run's judge.

        The sampler starts from the judge reference's checkpoint (an engine of the same architecture, shared by
        every iteration with the same judge and by a vLLM evaluation of π_init) and gets the judged model's
        weights pushed; the transformers backend samples with the model itself."""
        from accelerate import PartialState
        from datasets import Dataset

        from alignment.experience.labellers import ImplicitRewardLabeller
        from alignment.experience.selectors import SELECTORS
        from alignment.experience.stage import make_experience
        from alignment.models import load_causal_lm
        from alignment.sampling.factory import build_sampler, sampling_params_from_config
        from alignment.sampling.vllm import model_state_for_sync
        from alignment.trainers.online import shares_policy_weights

        recipe, p = self.recipe, self.recipe.method.params
        device = PartialState().device
        model.to(device)
        judge_reference = load_causal_lm(
            p.judge_reference, trust_remote_code=recipe.model.trust_remote_code, dtype=recipe.model.dtype
        ).to(device)
        sampler = build_sampler(recipe.sampling, model, tokenizer, p.judge_reference)
        if not shares_policy_weights(sampler, model):
            sampler.load_weights(model_state_for_sync(model))
        labeller = ImplicitRewardLabeller(
            model, judge_reference, pad_token_id=tokenizer.pad_token_id, beta=p.beta
        )
        indices = list(range(rank, len(self.prompts), world))
        pool = self.prompts["prompt"]
        prompts = [pool[i] for i in indices]
        logger.info(
            "Selfie iteration %d: sampling %d completions for each of %d prompts and judging them%s",
            p.iteration,
            p.samples_per_prompt,
            len(prompts),
            f" (process {rank} of {world})" if world > 1 else "",
        )
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
        decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731  (the samplers' rule)
        kept = [prompts[int(r)] for r in experience.rows]
        columns: dict[str, list] = {
            "pool_index": [indices[int(r)] for r in experience.rows],
            "prompt": kept,
            "chosen": [decode(c[0]) for c in experience.completion_ids],
            "rejected": [decode(c[1]) for c in experience.completion_ids],
            "prompt_input_ids": experience.prompt_ids,
            "chosen_input_ids": [c[0] for c in experience.completion_ids],
            "rejected_input_ids": [c[1] for c in experience.completion_ids],
            "chosen_score": experience.scores[:, 0].tolist(),
            "rejected_score": experience.scores[:, 1].tolist(),
        }
        if recipe.evaluation.enabled:
            columns["chosen_gold"], columns["rejected_gold"] = self.judge_scores(
                kept, columns["chosen"], columns["rejected"]
            )
        shard_stats = {
            "prompts": len(prompts),
            "ties_skipped": experience.skipped,
            "sample_tokens": int(experience.lengths.sum()),
            "samples": int(experience.lengths.numel()),
            "seconds": experience.seconds,
        }
        features = None if columns["prompt"] else empty_pairs_features(recipe.evaluation.enabled)
        return Dataset.from_dict(columns, features=features), shard_stats

    def judge_scores(self, prompts: list[str], chosen: list[str], rejected: list[str]):
        """The run's judge (`evaluation`'s, gold in the toy world) on both sides of every self-labelled pair."""
        from alignment.eval.run import judge_reward_config
        from alignment.rewards.base import build_reward

        reward = build_reward(judge_reward_config(self.recipe))
        if not prompts:
            return [], []
        return reward.score(prompts, chosen).double().cpu().tolist(), reward.score(
            prompts, rejected
        ).double().cpu().tolist()

    def print_summary(self, trainer, result: dict[str, Any] | None) -> None:
        super().print_summary(trainer, result)
        s = self.label_stats
        accuracy = f", judge accuracy {s['judge_accuracy']:.3f}" if "judge_accuracy" in s else ""
        print(f"   self-labels: {s['pairs']} pairs, {s['ties_skipped']} tied prompts skipped{accuracy}")
