"""Fixtures for the toy-world tests: a throw-away dataset cache so tests never touch ~/.cache.

Torch runs on one thread here: on a shared 2-core host two intra-op threads stall on each other and sampling
from the 1M toy model gets ~10x slower (12 s vs 138 s for 256 prompts x 2 samples, measured under load).
"""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def toy_cache(tmp_path_factory):
    old = os.environ.get("ALIGNMENT_CACHE")
    root = tmp_path_factory.mktemp("alignment-cache")
    os.environ["ALIGNMENT_CACHE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("ALIGNMENT_CACHE", None)
    else:
        os.environ["ALIGNMENT_CACHE"] = old
