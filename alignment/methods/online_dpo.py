"""Online DPO: Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback", arXiv:2402.04792;
the online arm of Tang et al. 2024 (arXiv:2405.08448, §2: online and offline differ ONLY in where the pair
comes from).

`online_dpo` is a name for `dpo` with `data.source: on_policy`: the same `DPOParams`, the same
`DPOObjective`, on-policy data only. Each step samples k completions per prompt from the current policy, the
recipe's reward scores them and the best and the worst become (chosen, rejected): the experience stage
(`alignment.experience`) run every step by `alignment.trainers.online`, as the objective's `labeller`
("reward") and `selector` ("best_worst") name it.
"""

from __future__ import annotations

from alignment.methods.dpo import DPOObjective, DPOParams
from alignment.methods.spec import ON_POLICY_FORMATS, MethodSpec, register

register(
    MethodSpec(
        name="online_dpo",
        params=DPOParams,
        formats=ON_POLICY_FORMATS,
        sources=("on_policy",),
        description="Online DPO (= dpo with data.source: on_policy): best/worst of k policy samples per "
        "prompt, labelled by a reward.",
        objective=DPOObjective,
    )
)
