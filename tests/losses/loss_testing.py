"""Shared by the loss tests: float64 tensors and a tolerance that can fail."""

from __future__ import annotations

import torch

ATOL = 1e-9
F64 = torch.float64


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def close(got: torch.Tensor, want: torch.Tensor) -> None:
    torch.testing.assert_close(got, want.to(got.dtype), rtol=0, atol=ATOL)
