"""`MethodSpec` and the `METHODS` registry: what the recipe loader, the CLI and the run kinds know of a method.

Kept apart from the package's `__init__`, which imports every method file so they register: the method
files import this module, not the package, so no import goes round in a circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from alignment.registry import Registry

MethodKind = Literal["policy", "reward_model", "in_context", "self_labelled", "iterative"]
DataSource = Literal["static", "on_policy"]
#: on-policy runs read only the unique prompts, so any format will do
ON_POLICY_FORMATS = ("prompts", "paired", "unpaired", "negatives")


@dataclass(frozen=True)
class MethodSpec:
    """What the recipe loader, the CLI and the trainers need to know about a method."""

    name: str  # registry key = file name (methods/bco.py registers "bco")
    params: type  # its <Name>Params dataclass; the recipe's `method:` keys (other than name) fill it
    formats: tuple[str, ...]  # data formats it reads from static data, preferred first ("paired", ...)
    description: str  # one line, shown by `alignment --help`
    objective: type | None = None  # its Objective subclass (alignment.methods.objective); built from params
    kind: MethodKind = "policy"  # policy: trains a policy with `objective`; reward_model: trains a classifier;
    # in_context: trains nothing (URIAL: the base model behind an in-context prefix, evaluated);
    # self_labelled: labels its prompts with the model's own judgment, then trains `objective` on them;
    # iterative: a sequence of complete runs of other methods, one per stage (Selfie)
    # data sources it can train on (`data.source`), the default first: static = a fixed dataset, on_policy =
    # samples of the current policy labelled and selected every step (the same loss either way)
    sources: tuple[DataSource, ...] = ("static",)

    def formats_for(self, source: DataSource) -> tuple[str, ...]:
        """The data formats a run reads: on-policy runs take only the unique prompts of any format."""
        return ON_POLICY_FORMATS if source == "on_policy" else self.formats


METHODS: Registry[MethodSpec] = Registry("method")


def register(spec: MethodSpec) -> MethodSpec:
    """Register `spec` under its own name (a duplicate name is an error)."""
    return METHODS.register(spec.name, spec)
