"""2-process ZeRO-2 launches of the other run kinds: recipes/reward_model.yaml, then recipes/online_dpo.yaml
labelled by the reward model that first launch trained.

Both crashed at start before the run lifecycle was one sequence: only the static-data path told
TrainingArguments to use the process group set up for DeepSpeed, so the other kinds saw a world of one and
DeepSpeed's batch check failed (`train_batch_size ... 4 != 4 * 1 * 2`). Each launch is the shipped recipe
with a small step budget (3 optimizer steps); the tests check the runs finished on both ranks, trained
(weights moved), and wrote every output a single-process run writes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from launching import REPO, free_port, run_logged

pytestmark = [pytest.mark.deepspeed, pytest.mark.integration]

COMMON = ["training.max_steps=3", "training.logging_steps=1", "training.disable_tqdm=true"]
REWARD_MODEL = [
    "data.train.args={n: 96, samples_per_prompt: 4}",
    "data.eval.args={n: 16}",
    "training.per_device_train_batch_size=2",
    "training.warmup_steps=0",
]
ONLINE = [
    "data.train.args={n: 24}",
    "training.per_device_train_batch_size=4",
    "sampling.max_new_tokens=16",
    "evaluation.num_prompts=4",
    "evaluation.max_new_tokens=16",
]


def _launch(recipe: str, out: Path, root: Path, *overrides: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")}
    env.update(ALIGNMENT_CACHE=str(root / "cache"), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO / "recipes" / "accelerate" / "zero2.yaml"), "--num_processes", "2",
        "--main_process_port", str(free_port()),
        "-m", "alignment", str(REPO / "recipes" / recipe), *COMMON, *overrides, f"output_dir={out}",
    ]  # fmt: skip
    run_logged(cmd, out, env, root)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("deepspeed-kinds")
    _launch("reward_model.yaml", root / "reward_model", root, *REWARD_MODEL)
    reward = f"reward.name_or_path={root / 'reward_model'}"
    _launch("online_dpo.yaml", root / "online_dpo", root, *ONLINE, reward)
    return {"reward_model": root / "reward_model", "online_dpo": root / "online_dpo"}


def _steps(out: Path) -> list[int]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [h["step"] for h in history if "loss" in h]


def _moved(out: Path, load) -> float:
    initial, trained = load("toy-base").state_dict(), load(str(out)).state_dict()
    shared = [k for k in trained if k in initial]
    assert shared and all(torch.isfinite(trained[k]).all() for k in shared)
    return max((trained[k] - initial[k]).abs().max().item() for k in shared)


def test_reward_model_trains_under_zero2(runs):
    from alignment.models import load_reward_model

    out = runs["reward_model"]
    assert _steps(out) == [1, 2, 3]
    result = json.loads((out / "eval.json").read_text())
    # 16 eval pairs drawn, one of two identical samples dropped (it states no preference)
    assert result["num_heldout"] == 15 and 0 <= result["heldout_accuracy"] <= 1
    assert _moved(out, load_reward_model) > 1e-4


def test_online_dpo_trains_under_zero2(runs):
    from alignment.models import load_causal_lm

    out = runs["online_dpo"]
    assert _steps(out) == [1, 2, 3]
    stats = json.loads((out / "online_stats.json").read_text())
    # both ranks' pairs count: 3 steps x 2 processes x 4 prompts, less the tied ones
    assert stats["steps"] == 3 and 12 <= stats["pairs_total"] + stats["ties_total"] == 24
    result = json.loads((out / "eval.json").read_text())
    assert result["num_prompts"] == 4 and result["reward"] == "gold"  # judged by gold, never the proxy
    assert _moved(out, load_causal_lm) > 1e-4


def test_selfie_runs_every_stage_under_zero2(tmp_path):
    """recipes/selfie.yaml on small toy pools: the seed DPO and two self-labelled iterations, each a ZeRO-2
    run of 2 optimizer steps; rank 0 labels each pool once and the other rank reads its pairs."""
    from alignment.models import load_causal_lm

    toy = "args: {n_seed: 8, pool_sizes: [16, 16]}"
    pools = ", ".join(f"{{name: toy-selfie, split: pool{i}, {toy}}}" for i in (0, 1))
    out = tmp_path / "selfie"
    _launch(
        "selfie.yaml", out, tmp_path,
        f"data.train={{name: toy-selfie, split: seed, {toy}}}", f"data.pools=[{pools}]",
        "training.max_steps=2", "training.per_device_train_batch_size=4",
        "evaluation.num_prompts=4", "evaluation.max_new_tokens=16",
    )  # fmt: skip
    rows = json.loads((out / "selfie_summary.json").read_text())["iterations"]
    assert [r["iteration"] for r in rows] == [0, 1, 2] and all(r["steps"] == 2 for r in rows)
    for i in (1, 2):
        assert _steps(out / f"iter_{i}") == [1, 2]
        labels = json.loads((out / f"iter_{i}" / "self_labels.json").read_text())
        assert labels["pairs"] + labels["ties_skipped"] == 16 and 0 <= labels["judge_accuracy"] <= 1
    assert _moved(out / "iter_2", load_causal_lm) > 1e-4
