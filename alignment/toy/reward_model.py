"""`toy-rm`: the toy world's proxy reward model, a cached artefact like the toy datasets.

The online recipes (online DPO/IPO, RLOO, CTRL) label samples with a reward model trained on gold-ranked
toy pairs. It is built on first use from `assets/toy_rm.yaml` (the run `recipes/reward_model.yaml` documents)
by an ordinary single-process run of this tool, into `$ALIGNMENT_CACHE/toy-models/toy-rm-<key>/`, where key
hashes the recipe's settings, toy-base's weights and `VERSION`: a change to any of them builds a new one, and
an unchanged world reuses it. The build runs in a child process (a clean single-process run, whatever launch
the caller is in) on one thread (so every machine builds the same weights: more threads change CPU
reductions in the last bits), into a temporary directory renamed when it finished, under a file lock, so
concurrent runs or ranks build it once and never read a half-built model.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from alignment.errors import EXIT_FAILED, AlignmentError
from alignment.files import sha256_file, user_cache_dir

logger = logging.getLogger("alignment")

ALIAS = "toy-rm"
ASSETS = Path(__file__).resolve().parent / "assets"
RECIPE = ASSETS / "toy_rm.yaml"
BASE_WEIGHTS = ASSETS / "base" / "model.safetensors"  # toy-base, the recipe's model
VERSION = (
    3  # bump when what this recipe produces changes (2: pairs without a preference dropped; 3: one thread)
)
BUILD_MINUTES = 5  # on one thread, with the toy datasets not yet cached
#: environment of a distributed launch, kept from the child so that it runs as a plain single process
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                    "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_", "TORCHELASTIC_")  # fmt: skip


class ToyBuildFailed(AlignmentError):
    """Building a toy artefact failed (its own run's output says why; exit status 1)."""

    exit_code = EXIT_FAILED


def build_key() -> str:
    """Hash of the recipe's settings (parsed: comments do not count), toy-base's weights and `VERSION`."""
    import yaml

    recipe = yaml.safe_load(RECIPE.read_text())
    source = json.dumps(
        {"recipe": recipe, "base": sha256_file(BASE_WEIGHTS), "version": VERSION}, sort_keys=True
    )
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def toy_rm_dir() -> Path:
    """Where `toy-rm` lives (built or not)."""
    return user_cache_dir() / "toy-models" / f"{ALIAS}-{build_key()}"


def is_built(path: Path) -> bool:
    return (path / "model.safetensors").exists() and (path / "eval.json").exists()


def ensure_toy_rm() -> Path:
    """`toy-rm`'s directory, building it first when it is not there yet (about `BUILD_MINUTES` minutes)."""
    path = toy_rm_dir()
    if is_built(path):
        return path
    with _lock(path.with_name(path.name + ".lock")):
        if is_built(path):  # another process built it while this one waited
            return path
        _build(path)
    return path


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(path: Path) -> None:
    tmp = path.with_name(path.name + f".building-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    logger.warning(
        "%s: building the toy proxy reward model once (about %d min) into %s; later runs reuse it",
        ALIAS, BUILD_MINUTES, path,
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCH_VARIABLES)}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # the same model on any machine: CPU reductions
    # over more threads change the last bits, and training carries them on
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "alignment", str(RECIPE), f"output_dir={tmp}"], env=env)
    if done.returncode != 0 or not is_built(tmp):
        raise ToyBuildFailed(
            f"{ALIAS}: building the toy reward model failed (exit {done.returncode}; its output is above, the "
            f"partial run is in {tmp}); to build it by hand: alignment {RECIPE} output_dir={path}"
        )
    os.replace(tmp, path)
    logger.info("%s: built in %.0f s (%s)", ALIAS, time.time() - started, path)
