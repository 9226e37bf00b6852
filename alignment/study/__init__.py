"""Studies: one YAML file → a grid of runs (arms × grid points × seeds) → a table and plots.

spec.py     the study file → a validated `Study` with every planned run (all mistakes named here)
runs.py     one planned run → its resolved recipe (derived values read from finished runs), finished check
runner.py   running the plan: local processes (`--jobs N`), in process under a multi-process launch,
            progress lines, Ctrl-C, printed commands for a cluster
report.py   study.csv, study.md, frontier.png, classifier_vs_generator.png from finished run directories
cli.py      `alignment study STUDY.yaml [overrides] [--jobs N | --print-commands | --collect | --run NAME]`
"""
