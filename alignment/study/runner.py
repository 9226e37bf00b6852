"""Running a study's plan: local processes (`--jobs N`), in process under a multi-process launch, or as
printed commands for a cluster scheduler.

Locally every run is its own process, `python -m alignment study STUDY.yaml --run NAME`, logging to
`output_dir/logs/NAME.log`: a crash, an out-of-memory kill or Ctrl-C takes one run down, never the study's
finished ones. A run starts once the runs it reads have finished, in plan order, `jobs` at a time, each with
`OMP_NUM_THREADS` = CPU cores / jobs unless the environment sets it. Under `accelerate launch` with several
processes the study runs every run in order in this process group, as a staged run does its stages.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from alignment.distributed import launch_main_process
from alignment.study.runs import MARKER, execute_run, is_finished, result_of
from alignment.study.spec import PlannedRun, Study

POLL_SECONDS = 0.5
INTERRUPT_GRACE_SECONDS = 60
LOG_TAIL_LINES = 25


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def run_command(study: Study, run: PlannedRun, launcher: list[str]) -> list[str]:
    """The command that runs `run` alone, with the study's command-line overrides."""
    return [*launcher, "-m", "alignment", "study", str(study.path), *study.cli_overrides, "--run", run.name]


def print_commands(study: Study, launcher: str, wave: int | None) -> None:
    """One command per run, by wave: a wave's runs can run at once, after every earlier wave finished."""
    prefix = shlex.split(launcher)
    waves = sorted({r.wave for r in study.runs})
    if wave is not None:
        for run in study.runs:
            if run.wave == wave:
                print(shlex.join(run_command(study, run, prefix)))
        return
    print(
        f"# study {study.path}: {len(study.runs)} runs in {len(waves)} wave(s); the runs of a wave need every"
    )
    print(
        "# earlier wave finished. Then: alignment study "
        + shlex.join([str(study.path), *study.cli_overrides])
        + " --collect"
    )
    for w in waves:
        runs = [r for r in study.runs if r.wave == w]
        print(f"# wave {w}: {len(runs)} run(s)")
        for run in runs:
            print(shlex.join(run_command(study, run, prefix)))


class Progress:
    """The study's progress lines: which run, its place in the study, the time so far, the time left
    (the mean wall time of this session's finished runs of the same arm, else of any arm, over `jobs`)."""

    def __init__(self, study: Study, jobs: int):
        self.study = study
        self.jobs = jobs
        self.started = time.time()
        self.seconds: dict[str, list[float]] = {}  # arm -> wall times of runs finished in this session

    def place(self, run: PlannedRun) -> str:
        width = len(str(len(self.study.runs)))
        return f"[{self.study.runs.index(run) + 1:>{width}}/{len(self.study.runs)}]"

    def estimate(self, run: PlannedRun) -> float | None:
        times = self.seconds.get(run.arm.name) or [t for ts in self.seconds.values() for t in ts]
        return sum(times) / len(times) if times else None

    def left(self, pending: list[PlannedRun], running: dict[PlannedRun, float]) -> str:
        work = 0.0
        for run in pending:
            estimate = self.estimate(run)
            if estimate is None:
                return "time left: known after the first run"
            work += estimate
        for run, since in running.items():
            estimate = self.estimate(run)
            if estimate is None:
                return "time left: known after the first run"
            work += max(0.0, estimate - (time.time() - since))
        return f"~{duration(work / self.jobs)} left"

    def line(self, run: PlannedRun, what: str, pending, running) -> None:
        elapsed = duration(time.time() - self.started)
        print(
            f"{self.place(run)} {run.name} {what} · {elapsed} so far · {self.left(pending, running)}",
            flush=True,
        )

    def finished(self, run: PlannedRun, seconds: float) -> None:
        self.seconds.setdefault(run.arm.name, []).append(seconds)


def headline(run: PlannedRun) -> str:
    result = result_of(run)
    parts = [
        f"{k} {result[k]:.3f}"
        for k in ("win_rate", "kl", "heldout_accuracy")
        if isinstance(result.get(k), float)
    ]
    return f" ({', '.join(parts)})" if parts else ""


def child_environment(jobs: int) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return env


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join("    " + line for line in text[-lines:])


def run_locally(study: Study, jobs: int, keep_going: bool) -> int:
    """Every run not finished, `jobs` processes at a time; 0 when all finished, 1 when one failed, 130 on
    Ctrl-C (or SIGTERM), after the running runs were stopped. Finished runs are never touched."""
    finished = {run for run in study.runs if is_finished(study, run)}
    pending = deque(run for run in study.runs if run not in finished)
    print(
        f"study {study.path}: {len(study.runs)} runs, {len(finished)} finished already, {len(pending)} to run"
        + (f", {jobs} at a time" if jobs > 1 else "")
        + f"; logs in {study.output_dir / 'logs'}",
        flush=True,
    )
    for run in study.runs:
        if run in finished:
            print(f"{Progress(study, jobs).place(run)} {run.name} finished already: kept")
    logs = study.output_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    progress = Progress(study, jobs)
    running: dict[PlannedRun, tuple[subprocess.Popen, float]] = {}
    failed: set[PlannedRun] = set()
    env = child_environment(jobs)
    # explicit handlers: a study started in the background inherits SIGINT ignored, and Ctrl-C must still stop it
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while pending or running:
            for run, (process, since) in list(running.items()):
                code = process.poll()
                if code is None:
                    continue
                del running[run]
                seconds = time.time() - since
                times = {r: s for r, (_, s) in running.items()}
                if code == 0 and (run.output_dir / MARKER).exists():
                    finished.add(run)
                    progress.finished(run, seconds)
                    progress.line(
                        run, f"finished in {duration(seconds)}{headline(run)}", list(pending), times
                    )
                else:
                    failed.add(run)
                    log = logs / f"{run.name}.log"
                    progress.line(
                        run,
                        f"FAILED (exit {code}) after {duration(seconds)}; log {log}:",
                        list(pending),
                        times,
                    )
                    print(tail(log), flush=True)
                    if not keep_going:
                        pending.clear()
            blocked = [r for r in pending if any(s in failed for s in study.sources(r).values())]
            for run in blocked:
                pending.remove(run)
                failed.add(run)
                print(f"{progress.place(run)} {run.name} not run: a run it reads failed", flush=True)
            while len(running) < jobs:
                ready = next(
                    (r for r in pending if all(s in finished for s in study.sources(r).values())), None
                )
                if ready is None:
                    break
                pending.remove(ready)
                log = logs / f"{ready.name}.log"
                with log.open("w") as handle:
                    process = subprocess.Popen(
                        run_command(study, ready, [sys.executable]),
                        stdout=handle,
                        stderr=subprocess.STDOUT,
                        env=env,
                        preexec_fn=_default_interrupt,
                    )
                running[ready] = (process, time.time())
                times = {r: s for r, (_, s) in running.items()}
                progress.line(ready, "started", list(pending), times)
            if pending and not running:  # nothing can start: only runs waiting on failed ones remain
                break
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        stop(running)
        print(
            f"\ninterrupted: {len(finished)} of {len(study.runs)} runs finished and kept; "
            f"{len(running)} stopped ({', '.join(r.name for r in running) or 'none'}) and start again when you "
            "rerun the same command",
            file=sys.stderr,
        )
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed:
        print(
            f"{len(failed)} run(s) did not finish: {', '.join(sorted(r.name for r in failed))}",
            file=sys.stderr,
        )
        return 1
    return 0


def _default_interrupt() -> None:
    """In a run's process before it starts: SIGINT as Python expects it (so the interrupt passed on reaches
    the run even when the study itself was started with SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _raise_interrupt(signum, frame) -> None:
    del signum, frame
    raise KeyboardInterrupt


def stop(running: dict[PlannedRun, tuple[subprocess.Popen, float]]) -> None:
    """Pass the interrupt on to every running run, wait for them (they may save a checkpoint), then kill."""
    for process, _ in running.values():
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    deadline = time.time() + INTERRUPT_GRACE_SECONDS
    for process, _ in running.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_in_process(study: Study) -> int:
    """Every run in plan order in this process group (a multi-process `accelerate launch` of the study):
    the runs share the processes, one after another, as the stages of a staged run do."""
    import torch

    from alignment.distributed import end_trainer_state

    for run in study.runs:
        if launch_main_process():
            print(f"[{study.runs.index(run) + 1}/{len(study.runs)}] {run.name}", flush=True)
        code = execute_run(study, run)
        if code != 0:
            return code
        end_trainer_state()
        if torch.distributed.is_initialized():
            torch.distributed.barrier()  # the main process has written the run's study_run.json
    return 0


def launched_with_several_processes() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1
