"""What the benchmark scripts share: one measurement job in a fresh Python process, answering one JSON line.

A fresh process per job gives each contender its own imports, allocator, RSS and (for vLLM) engine, so no job
measures what an earlier one left behind. The job prints ``RESULT {json}`` on stdout (`answer`); the driver
(`run_job`) reads it back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

PREFIX = "RESULT "


def answer(result: dict) -> None:
    """The job's side: its result, as the line `run_job` looks for."""
    print(PREFIX + json.dumps(result), flush=True)


def run_job(command: list[str], threads: int, **env: str) -> tuple[dict | None, str]:
    """Run `command` (a script's own job mode) with `threads` torch/OpenMP threads and `env` added; returns its
    result (None when it printed none: it failed) and its stderr's last line (what went wrong)."""
    environment = dict(
        os.environ, OMP_NUM_THREADS=str(threads), TQDM_DISABLE="1", TOKENIZERS_PARALLELISM="false"
    )
    environment.update(env)
    proc = subprocess.run([sys.executable, *command], env=environment, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(PREFIX):
            return json.loads(line[len(PREFIX) :]), ""
    sys.stderr.write(proc.stderr[-4000:])
    return None, (proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"])[0]
