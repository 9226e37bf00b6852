"""Selfie / SPA (`method: selfie`, alias `spa`): the seed DPO, then one self-labelled iteration per pool.

    output_dir/recipe.yaml            the Selfie recipe
    output_dir/iter_0/                DPO of π_init on the labelled seed (data.train), reference π_init
    output_dir/iter_i/  (i = 1…T)     `selfie_iteration` from π_{i−1} on data.pools[i−1], reference π_{i−1}
    output_dir/selfie_summary.{json,md,png}
    output_dir/eval.json              the final stage's evaluation (a copy, with `final_stage`)

Every stage is a complete run through the one lifecycle, with its own resolved `recipe.yaml` (re-runnable on
its own), model, eval.json and checkpoints. Each iteration's evaluation reference is π_init, so every
stage's win rate and KL are against the same model.

Running the same command again continues where it stopped (`SelfieRun.plan`): a stage whose directory holds
a finished run of the identical stage recipe is kept, one killed after training is only evaluated, an
interrupted one resumes from its last complete checkpoint (or runs again in place, reusing its saved
self-labelled pairs), and a stage whose recipe changed is redone with every stage after it (their start
model changed). `training.max_steps`, like every training key, applies to every stage. All data
(the seed and every pool) is loaded and the pools are checked disjoint before any model loads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import yaml

from alignment.errors import DataError, RecipeError
from alignment.eval.table import markdown_table
from alignment.files import write_json_atomic, write_text_atomic
from alignment.kinds.self_labelled import SelfLabelledRun
from alignment.kinds.static import StaticRun
from alignment.lifecycle import (
    StagedRun,
    check_models,
    execute_loaded,
    load_recipe_tokenizer,
    print_dry_run,
)
from alignment.recipe.load import comparable_recipe, recipe_from_dict, save_recipe, to_dict
from alignment.recipe.schema import Recipe

logger = logging.getLogger("alignment")

SUMMARY = "selfie_summary"
RESUME_KEY = "resume_from_checkpoint"


def stage_dir(recipe: Recipe, i: int) -> str:
    return str(Path(recipe.output_dir) / f"iter_{i}")


def stage_recipes(recipe: Recipe) -> list[Recipe]:
    """The resolved recipe of every stage: `dpo` on the seed, then `selfie_iteration` on each pool."""
    from alignment.methods.selfie import iteration_params

    params = recipe.method.params
    base = to_dict(recipe)
    base["data"]["pools"] = []
    initial = recipe.model.name_or_path
    resume = recipe.training.get(RESUME_KEY)
    if resume not in (None, False) and str(resume).lower() not in ("true", "last", "false"):
        raise RecipeError(
            f"training.{RESUME_KEY}",
            f"got {resume!r}: a Selfie run resumes by itself (run the same command again), stage by stage; "
            "one checkpoint path cannot name a stage (remove the key, or resume one stage with its iter_i recipe)",
        )

    def stage(i: int, method: dict[str, Any], **changes: Any) -> Recipe:
        raw = json.loads(json.dumps(base))  # a deep copy of plain data
        raw["method"] = method
        raw["output_dir"] = stage_dir(recipe, i)
        raw["training"].pop(RESUME_KEY, None)
        for section, values in changes.items():
            raw[section].update(values)
        try:
            return recipe_from_dict(raw)
        except RecipeError as err:
            raise RecipeError(err.path, f"{err.message} (in Selfie stage iter_{i})") from None

    seed = stage(
        0,
        {"name": "dpo", "beta": params.beta},
        training={"num_train_epochs": params.seed_num_train_epochs},
    )
    stages = [seed]
    for i, pool in enumerate(to_dict(recipe)["data"]["pools"], start=1):
        judge = initial if params.judge_reference == "initial" or i == 1 else stage_dir(recipe, i - 2)
        method = {"name": "selfie_iteration", **dataclasses.asdict(iteration_params(params, i, judge))}
        stages.append(
            stage(
                i,
                method,
                model={"name_or_path": stage_dir(recipe, i - 1), "revision": None},
                data={"train": pool, "eval": None},
                evaluation={"reference": recipe.evaluation.reference or initial},
            )
        )
    return stages


def saved_recipe_matches(stage: Recipe) -> bool:
    saved = Path(stage.output_dir) / "recipe.yaml"
    if not saved.exists():
        return False
    return comparable_recipe(yaml.safe_load(saved.read_text()) or {}) == comparable_recipe(to_dict(stage))


def trained(stage: Recipe) -> bool:
    """The stage's training finished and its model was saved (`trainer_state.json` is written after it)."""
    return (Path(stage.output_dir) / "trainer_state.json").exists()


def finished(stage: Recipe) -> bool:
    """The stage directory holds a finished (trained and evaluated) run of this exact stage recipe."""
    evaluated = not stage.evaluation.enabled or (Path(stage.output_dir) / "eval.json").exists()
    return trained(stage) and evaluated and saved_recipe_matches(stage)


def evaluate_saved(kind, tokenizer, state) -> None:
    """The evaluation of a stage whose training finished but whose evaluation did not (killed in between)."""
    kind.callbacks(tokenizer)  # builds the stage's evaluator
    if kind.evaluator is None or not state.is_main_process:
        return
    from alignment.eval.run import load_saved_policy

    result = kind.evaluator.final(load_saved_policy(kind.recipe, uses_adapter=False).to(state.device))
    logger.info(
        "Selfie: %s evaluated: win rate %.3f", kind.recipe.output_dir, result.get("win_rate", float("nan"))
    )


def prompts_of(kind) -> list[str]:
    data = getattr(kind, "prompts", None)
    if data is None:  # the seed stage: its training pairs
        data = kind.train
    return list(data["prompt"])


def check_disjoint(kinds: list) -> None:
    """No prompt may be in the seed and a pool, or in two pools (spec pitfall 6: fresh prompts each time)."""
    names = ["data.train"] + [f"data.pools[{i}]" for i in range(len(kinds) - 1)]
    sets = [set(prompts_of(kind)) for kind in kinds]
    for j in range(len(sets)):
        for i in range(j):
            shared = sets[i] & sets[j]
            if shared:
                raise DataError(
                    f"{names[j]} shares {len(shared)} prompt(s) with {names[i]} (e.g. {min(shared)[:60]!r}); "
                    "Selfie iterates over fresh prompts: split them so that no prompt is in two of these sets"
                )


class SelfieRun(StagedRun):
    """Stage 0 and the iterations, each through the lifecycle; resumable stage by stage."""

    def __init__(self, recipe: Recipe):
        super().__init__(recipe)
        self.stages = stage_recipes(recipe)

    def execute(self, *, dry_run: bool = False) -> int:
        check_models(self.recipe, dry_run=dry_run)
        tokenizer = load_recipe_tokenizer(self.recipe)
        kinds = [StaticRun(self.stages[0])] + [SelfLabelledRun(stage) for stage in self.stages[1:]]
        future = {stage.output_dir for stage in self.stages}
        for kind in kinds:
            if isinstance(kind, SelfLabelledRun):  # a judge that an earlier stage trains is checked then
                kind.check_judge = kind.recipe.method.params.judge_reference not in future
            kind.load_data(tokenizer)
        check_disjoint(kinds)
        if dry_run:
            self.print_dry_run(kinds)
            return 0
        from accelerate import PartialState

        from alignment.distributed import end_trainer_state, setup_distributed

        setup_distributed()
        state = PartialState()
        plan = self.plan()
        state.wait_for_everyone()  # every process read the directories before any is cleared
        if state.is_main_process:
            save_recipe(self.recipe, self.recipe.output_dir)
            for stage, action in zip(self.stages, plan, strict=True):
                if action == "redo":
                    logger.warning(
                        "Selfie: %s holds another run of this stage; clearing it", stage.output_dir
                    )
                    shutil.rmtree(stage.output_dir)
        state.wait_for_everyone()
        for i, action in enumerate(plan):
            stage, kind = self.stages[i], kinds[i]
            kinds[i] = None  # a finished stage's models and evaluator are released with it
            if action == "keep":
                logger.info("Selfie: iter_%d already finished in %s; kept", i, stage.output_dir)
            elif action == "evaluate":
                logger.info("Selfie: iter_%d trained but not evaluated; evaluating %s", i, stage.output_dir)
                evaluate_saved(kind, tokenizer, state)
            else:
                if action == "resume":
                    kind.recipe = _with_training(stage, {RESUME_KEY: "last"})
                    logger.info("Selfie: resuming iter_%d in %s", i, stage.output_dir)
                logger.info("Selfie: stage iter_%d of %d", i, len(self.stages) - 1)
                execute_loaded(kind, tokenizer)
            del kind
            state.wait_for_everyone()  # the main process evaluated; the next stage starts from its model
            end_trainer_state()
        if state.is_main_process:
            print_table(write_summary(self.recipe, self.stages))
        return 0

    def plan(self) -> list[str]:
        """What to do with each stage directory, given what it holds:

        * keep — a finished run of this exact stage recipe;
        * evaluate — the same recipe, trained and saved, killed before `eval.json`;
        * resume — the same recipe with a complete checkpoint;
        * run — nothing, or the same recipe without a complete checkpoint (run in place: saved self-labelled
          pairs with a matching key are reused);
        * redo — a different recipe's run: cleared, then run.
        Once a stage is trained again, every later stage is redone (its start model changed)."""
        from alignment.trainers.base import last_complete_checkpoint

        actions, cascade = [], False
        for stage in self.stages:
            root = Path(stage.output_dir)
            same = not cascade and saved_recipe_matches(stage)
            if same and finished(stage):
                actions.append("keep")
            elif same and trained(stage):
                actions.append("evaluate")
            elif same:
                actions.append("resume" if last_complete_checkpoint(root) else "run")
                cascade = True
            else:
                actions.append("redo" if root.exists() else "run")
                cascade = True
        return actions

    def print_dry_run(self, kinds) -> None:
        stats: dict[str, Any] = {}
        for i, (stage, kind) in enumerate(zip(self.stages, kinds, strict=True)):
            params = stage.method.params
            if i == 0:
                what = f"dpo on {len(kind.train)} seed pairs, beta {params.beta}, {stage.training['num_train_epochs']} epochs"
            else:
                what = (
                    f"selfie_iteration on {len(kind.prompts)} prompts from {stage.model.name_or_path}, "
                    f"judge reference {params.judge_reference}, DND lambda {params.dnd_lambda}, "
                    f"refinement {'on' if params.refinement else 'off'}"
                )
            stats[f"iter_{i}"] = what
        print_dry_run(self.recipe, "Selfie stages", stats, kinds[0].report.summary())


def _with_training(stage: Recipe, values: dict[str, Any]) -> Recipe:
    return dataclasses.replace(stage, training={**stage.training, **values})


# --- summary -----------------------------------------------------------------------------------------------

EVAL_KEYS = ("win_rate", "gold_reward", "kl", "length")


def stage_row(stage: Recipe, i: int) -> dict[str, Any]:
    """One stage's figures: its evaluation, its self-labels and what refinement did in training."""
    root = Path(stage.output_dir)
    row: dict[str, Any] = {"iteration": i, "dir": str(root)}
    if (root / "eval.json").exists():
        result = json.loads((root / "eval.json").read_text())
        row.update({k: result[k] for k in EVAL_KEYS if k in result})
    labels = root / "self_labels.json"
    if labels.exists():
        stats = json.loads(labels.read_text())
        row.update(
            {
                "pairs": stats["pairs"],
                "ties_skipped": stats["ties_skipped"],
                "judge_accuracy": stats.get("judge_accuracy"),
                "label_margin": stats["score_margin"],
                "chosen_length": stats["chosen_length"],
                "rejected_length": stats["rejected_length"],
            }
        )
    state = root / "trainer_state.json"
    if state.exists():
        trainer_state = json.loads(state.read_text())
        logs = [h for h in trainer_state["log_history"] if "loss" in h]
        row["steps"] = trainer_state["global_step"]

        def mean(key: str) -> float | None:
            values = [h[key] for h in logs if key in h]
            return sum(values) / len(values) if values else None

        row.update(
            {
                "smoothed": mean("selfie/smoothed"),
                "tau": logs[-1].get("selfie/tau") if logs else None,
                "train_margin": mean("rewards/margins"),
            }
        )
    return {k: v for k, v in row.items() if v is not None}


def write_summary(recipe: Recipe, stages: list[Recipe]) -> list[dict[str, Any]]:
    """output_dir/selfie_summary.json, .md (the table) and .png (win rate and judge accuracy by iteration),
    and output_dir/eval.json: the final stage's evaluation (with `final_stage`), as every run's directory
    holds the evaluation of its final policy (what studies and results tables read)."""
    rows = [stage_row(stage, i) for i, stage in enumerate(stages)]
    root = Path(recipe.output_dir)
    final = Path(stages[-1].output_dir) / "eval.json"
    if final.exists():
        payload = json.loads(final.read_text())
        write_json_atomic(root / "eval.json", {"final_stage": final.parent.name, **payload})
    write_json_atomic(root / f"{SUMMARY}.json", {"method": recipe.method.name, "iterations": rows})
    write_text_atomic(root / f"{SUMMARY}.md", markdown_table(rows, COLUMNS))
    plot_summary(rows, root / f"{SUMMARY}.png")
    return rows


COLUMNS = (
    ("iteration", "iter", "{}"),
    ("win_rate", "win rate", "{:.3f}"),
    ("gold_reward", "gold", "{:.3f}"),
    ("kl", "KL", "{:.2f}"),
    ("length", "length", "{:.1f}"),
    ("pairs", "pairs", "{}"),
    ("judge_accuracy", "judge acc.", "{:.3f}"),
    ("smoothed", "smoothed", "{:.3f}"),
    ("tau", "τ (last)", "{:.3f}"),
    ("train_margin", "margin", "{:.3f}"),
)


def print_table(rows: list[dict[str, Any]]) -> None:
    print("\n== Selfie: iter_0 = DPO on the seed; iter_i = self-labelled iteration i")
    print(markdown_table(rows, COLUMNS))


def plot_summary(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for key, label in (("win_rate", "gold win rate vs π_init"), ("judge_accuracy", "self-label accuracy")):
        points = [(r["iteration"], r[key]) for r in rows if key in r]
        if points:
            ax.plot(*zip(*points), marker="o", label=label)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("iteration (0 = DPO on the seed)")
    ax.set_xticks([r["iteration"] for r in rows])
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
