"""Online DPO: Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback", arXiv:2402.04792;
the online arm of Tang et al. 2024 (arXiv:2405.08448, §2: online and offline differ ONLY in where the pair
comes from).

Each step samples k completions per prompt from the current policy, a reward (the proxy reward model) scores
them, and the best and the worst sample become (chosen, rejected). The loss is DPO's, through the very same
`DPOObjective.loss` the offline method uses; only `build_examples` (prompts instead of pairs) and the pair
selection below are online-specific. The sampling/scoring loop is `alignment.trainers.online`.

An online method's objective answers two questions the trainer asks of the experience stage:
* `labeller` — which labeller scores the samples: "reward" (the recipe's `reward:`); Selfie/SPA would add
  "implicit" (β·log π/π_init of the samples), CTRL "calibrated";
* `select(scores)` — which of the k samples become the example's C completions: best/worst pairs here; a
  policy-gradient loss (CTRL) would keep all k with their rewards as an example column.
"""

from __future__ import annotations

import torch

from alignment.methods import MethodSpec, register
from alignment.methods.dpo import DPOObjective, DPOParams
from alignment.methods.objective import BuildContext

ONLINE_FORMATS = ("prompts", "paired", "unpaired", "negatives")  # any format reduces to its unique prompts


def best_worst_pairs(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(P, k) scores -> rows (B,), completion index (B, 2) = (argmax, argmin), number of tied prompts skipped.

    A prompt whose k scores are all equal carries no preference and is skipped (counted). Exact argmax /
    argmin ties among k > 2 samples go to the lowest index.
    """
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise ValueError(f"need (P, k >= 2) scores, got shape {tuple(scores.shape)}")
    best, worst = scores.argmax(dim=1), scores.argmin(dim=1)
    informative = scores.amax(dim=1) > scores.amin(dim=1)
    rows = informative.nonzero().squeeze(1)
    index = torch.stack([best[rows], worst[rows]], dim=1)
    return rows, index, int((~informative).sum())


class OnlineObjectiveMixin:
    """Prompts in, the online hooks (`labeller`, `select`) on top of an offline objective's loss."""

    labeller: str = "reward"

    def build_examples(self, dataset, ctx: BuildContext):
        """Prompt rows: only the rendered `prompt` text survives; the sampler tokenizes it itself."""
        del ctx
        return dataset.remove_columns([c for c in dataset.column_names if c != "prompt"])

    def select(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        return best_worst_pairs(scores)


class OnlineDPOObjective(OnlineObjectiveMixin, DPOObjective):
    """DPOObjective's loss, unchanged, on (best, worst) on-policy pairs."""


register(
    MethodSpec(
        name="online_dpo",
        params=DPOParams,
        formats=ONLINE_FORMATS,
        kind="online",
        description="Online DPO: best/worst of k policy samples per prompt, labelled by a reward model.",
        objective=OnlineDPOObjective,
    )
)
