"""What the policy-training kinds (static and on-policy data) share: the reference, evaluation, summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignment.distributed import zero_stage
from alignment.lifecycle import TrainingRunKind
from alignment.recipe.schema import reference_mode


class PolicyRun(TrainingRunKind):
    """A run that trains a policy with an `Objective` against a reference, judged by the gold evaluation."""

    def __init__(self, recipe):
        from alignment.recipe.schema import method_spec

        super().__init__(recipe)
        self.spec = method_spec(recipe.method.name)
        self.objective = self.spec.objective(recipe.method.params)
        if self.objective.selector == "all" and recipe.data.source == "on_policy":
            self.objective.num_completions = recipe.sampling.n  # every sample of a prompt is a completion
        self.mode = reference_mode(recipe)
        self.evaluator = None  # built by `callbacks`, before any model loads

    @property
    def uses_adapter(self) -> bool:
        return self.mode == "adapter"

    def callbacks(self, tokenizer) -> list:
        """Builds the run's evaluator before any model loads (a bad judge, prompt set or reference stops the
        run here, not after training), and with `evaluation.every_n_steps` the periodic evaluation of the live
        policy (`alignment.eval.periodic`) that shares it."""
        from alignment.eval.periodic import periodic_evaluation
        from alignment.eval.run import RecipeEvaluator

        if not self.recipe.evaluation.enabled:
            return []
        self.evaluator = RecipeEvaluator(self.recipe, tokenizer, uses_adapter=self.uses_adapter)
        callback = periodic_evaluation(self.evaluator)
        return [callback] if callback is not None else []

    def evaluate(self, trainer, tokenizer, seconds: float) -> dict[str, Any] | None:
        """Evaluation of the trained policy on rank 0 alone, with no collective: under ZeRO-3 each rank holds
        only a shard of the weights, so rank 0 evaluates the saved (gathered) model instead."""
        del seconds
        recipe = self.recipe
        if not recipe.evaluation.enabled:
            return None
        from alignment.eval.run import load_saved_policy

        model = trainer.model
        if zero_stage(trainer) == 3:
            model = load_saved_policy(recipe, uses_adapter=self.uses_adapter).to(trainer.args.device)
        return self.evaluator.final(model)

    def print_summary(self, trainer, result: dict[str, Any] | None) -> None:
        recipe = self.recipe
        history = [h for h in trainer.state.log_history if "loss" in h]
        print(f"\n== {recipe.method.name}: {trainer.state.global_step} steps, output in {recipe.output_dir}")
        if history:
            last = history[-1]
            keys = [k for k in ("loss", "rewards/accuracies", "rewards/margins", "kl", "delta") if k in last]
            print("   last log: " + ", ".join(f"{k} {last[k]:.4g}" for k in keys))
        if result is not None:
            keys = ("win_rate", "gold_reward", "reference_gold_reward", "kl", "length", "harmful_rate")
            print("   eval: " + ", ".join(f"{k} {result[k]:.4g}" for k in keys if k in result))
            print(f"   wrote {Path(recipe.output_dir) / 'eval.json'}")
