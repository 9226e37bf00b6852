"""Online IPO: the method of Tang et al. 2024 (arXiv:2405.08448, §2 and §4.1 step 6): each step samples 2
completions per prompt from the current policy, labels them with the proxy preference model and takes an
IPO step (Azar et al. 2024, eq. 17) — the same `IPOObjective.loss` the offline `ipo` method runs.

Spec pitfall 1: keep `length_normalize` identical between the online and offline arms (TRL's offline IPO
averages log-ratios per token, its online IPO sums them). Both methods here read the same `IPOParams` with
the same default (true), so a comparison only differs in where the pairs come from.
"""

from __future__ import annotations

from alignment.methods import MethodSpec, register
from alignment.methods.ipo import IPOObjective, IPOParams
from alignment.methods.online_dpo import ONLINE_FORMATS, OnlineObjectiveMixin


class OnlineIPOObjective(OnlineObjectiveMixin, IPOObjective):
    """IPOObjective's loss, unchanged, on (best, worst) on-policy pairs."""


register(
    MethodSpec(
        name="online_ipo",
        params=IPOParams,
        formats=ONLINE_FORMATS,
        kind="online",
        description="Online IPO (Tang et al. 2024): best/worst of k policy samples, IPO loss.",
        objective=OnlineIPOObjective,
    )
)
