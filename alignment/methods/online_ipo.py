"""Online IPO: the method of Tang et al. 2024 (arXiv:2405.08448, §2 and §4.1 step 6): each step samples 2
completions per prompt from the current policy, labels them with the proxy preference model and takes an
IPO step (Azar et al. 2024, eq. 17).

`online_ipo` is a name for `ipo` with `data.source: on_policy`: the same `IPOParams` and `IPOObjective`.
Spec pitfall 1 (keep `length_normalize` identical between the online and offline arms; TRL's offline IPO
averages log-ratios per token, its online IPO sums them) holds by construction: both arms read one
`IPOParams` with one default (true).
"""

from __future__ import annotations

from alignment.methods.ipo import IPOObjective, IPOParams
from alignment.methods.spec import ON_POLICY_FORMATS, MethodSpec, register

register(
    MethodSpec(
        name="online_ipo",
        params=IPOParams,
        formats=ON_POLICY_FORMATS,
        sources=("on_policy",),
        description="Online IPO (= ipo with data.source: on_policy; Tang et al. 2024): best/worst of k "
        "policy samples, IPO loss.",
        objective=IPOObjective,
    )
)
