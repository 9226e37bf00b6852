"""Subprocess launches of `python -m alignment` / `accelerate launch` shared by the multi-process tests."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAUNCH_TIMEOUT = 600  # a hang (a collective on one rank) fails the test instead of blocking CI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_logged(cmd: list[str], out: Path, env: dict[str, str], cwd: Path) -> None:
    """Run `cmd` with its output in `out`.log; a failure shows the log's last 40 lines."""
    log = out.with_suffix(".log")
    with log.open("w") as f:
        proc = subprocess.run(
            cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=LAUNCH_TIMEOUT
        )
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise AssertionError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{tail}")
