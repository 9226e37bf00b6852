"""Shared by the objective tests: step contexts for unpaired (KTO/BCO) batches and a recording all-reduce."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alignment.methods.objective import Collective, StepContext, local_collective

F64 = torch.float64


def unpaired_context(
    labels: Sequence[bool], *, training: bool = True, all_reduce_sum: Collective = local_collective, **columns
) -> StepContext:
    """A StepContext whose batch holds `label` (B,) bool and any extra (B,) float64 columns."""
    batch = {
        "label": torch.tensor(list(labels)),
        **{k: torch.tensor(v, dtype=F64) for k, v in columns.items()},
    }
    return StepContext(batch=batch, training=training, all_reduce_sum=all_reduce_sum)


class RecordingAllReduce:
    """An all-reduce over this process and others whose summed contributions are `others` (zeros by
    default); it keeps every tensor it was given, to check what the objective reduces."""

    def __init__(self, others: Sequence[float] | None = None):
        self.others = others
        self.inputs: list[torch.Tensor] = []

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        self.inputs.append(tensor)
        return tensor if self.others is None else tensor + torch.tensor(self.others, dtype=tensor.dtype)
