"""`alignment study STUDY.yaml [key=value ...]`: run a study, or print its commands, or collect its reports.

    alignment study recipes/studies/online_vs_offline.yaml                 # every run, one at a time
    alignment study recipes/studies/methods.yaml --jobs 2 seeds=[0]        # two at a time, one seed
    alignment study STUDY.yaml --print-commands                            # one `accelerate launch` line per run
    alignment study STUDY.yaml --run offline_dpo-beta0.1-s0                # one run, in this process
    alignment study STUDY.yaml --collect                                   # reports from finished runs

Overrides of study keys (`seeds=[0]`, `output_dir=runs/x`) change the study; any other `section.key=value`
applies to every run's recipe (`training.max_steps=5`). Running the same command again continues the study:
finished runs are kept, changed ones rerun.
"""

from __future__ import annotations

import argparse
import sys
import time

from alignment.study.spec import load_study


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alignment study",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("study", help="path to the study YAML")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="study keys, or recipe keys for every run"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--print-commands", action="store_true", help="print one command per run and stop")
    mode.add_argument("--collect", action="store_true", help="build the reports from finished runs only")
    mode.add_argument("--run", metavar="NAME", help="run one run of the study in this process")
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at a time, each its own process (default 1)"
    )
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="after a failed run, go on with the runs that do not read it",
    )
    parser.add_argument(
        "--launcher",
        default="accelerate launch",
        help="command prefix of --print-commands lines (default: 'accelerate launch'; e.g. "
        "'accelerate launch --config_file recipes/accelerate/zero2.yaml')",
    )
    parser.add_argument(
        "--wave",
        type=int,
        default=None,
        help="with --print-commands: only this wave's commands, without comments (one Slurm array per wave)",
    )
    return parser


def main(argv: list[str]) -> int:
    started = time.time()  # a run's wall time includes loading the study and the libraries
    parser = build_parser()
    try:
        args = parser.parse_intermixed_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.wave is not None and not args.print_commands:
        parser.error("--wave goes with --print-commands")
    study = load_study(args.study, args.overrides)
    if args.print_commands:
        from alignment.study.runner import print_commands

        try:
            print_commands(study, args.launcher, args.wave)
            sys.stdout.flush()
        except BrokenPipeError:  # `| head`: the reader has what it wanted
            sys.stdout = None
        return 0
    if args.run:
        from alignment.study.runs import execute_run

        return execute_run(study, study.run(args.run), started)
    from alignment.distributed import launch_main_process
    from alignment.study.report import write_reports
    from alignment.study.runner import launched_with_several_processes, run_in_process, run_locally

    if args.collect:
        code = 0
    elif launched_with_several_processes():
        if args.jobs > 1:
            parser.error(
                "--jobs runs local processes; under a multi-process launch the runs share its processes"
            )
        code = run_in_process(study)
    else:
        code = run_locally(study, args.jobs, args.keep_going)
    if code == 130 or not launch_main_process():
        return code
    text, missing = write_reports(study)
    print("\n" + text)
    print(
        f"reports: {study.output_dir}/study.csv, study.md"
        + "".join(f", {p}.png" for p in study.plots if (study.output_dir / f"{p}.png").exists())
    )
    if args.collect and len(missing) == len(study.runs):
        print("error: no run of the study has finished: nothing to collect")
        return 1
    return code
