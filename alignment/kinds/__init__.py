"""Run kinds: what each kind of run adds to the one lifecycle (`alignment.lifecycle`).

| kind | data | trainer |
|---|---|---|
| `static` | a tokenized preference dataset (DPO, IPO, KTO, BCO, D²O) | `PreferenceTrainer` |
| `on_policy` | prompts; samples labelled and selected every step (online DPO/IPO) | `OnlineTrainer` |
| `reward_model` | pairs → comparison groups | `RewardModelTrainer` |
| `in_context` | none: a prompt file's in-context prefix (URIAL) | none; evaluation only |
| `self_labelled` | a prompt pool, sampled and judged by the model itself once (a Selfie iteration) | `PreferenceTrainer` |
| `iterative` | a seed dataset and prompt pools: one complete run per stage (Selfie) | each stage's own |

`kind_for(recipe)` picks one from the method and `data.source`; `alignment.run` only dispatches to it.
"""

from __future__ import annotations

from alignment.lifecycle import RunKind, StagedRun


def kind_for(recipe) -> RunKind | StagedRun:
    """The run kind of a validated recipe."""
    from alignment.recipe.schema import method_spec

    kind = method_spec(recipe.method.name).kind
    if kind == "in_context":
        from alignment.kinds.in_context import InContextRun

        return InContextRun(recipe)
    if kind == "iterative":
        from alignment.kinds.iterative import SelfieRun

        return SelfieRun(recipe)
    if kind == "self_labelled":
        from alignment.kinds.self_labelled import SelfLabelledRun

        return SelfLabelledRun(recipe)
    if kind == "reward_model":
        from alignment.kinds.reward_model import RewardModelRun

        return RewardModelRun(recipe)
    if recipe.data.source == "on_policy":
        from alignment.kinds.on_policy import OnPolicyRun

        return OnPolicyRun(recipe)
    from alignment.kinds.static import StaticRun

    return StaticRun(recipe)
