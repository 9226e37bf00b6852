"""Analyses of trained or prompted models that are not evaluations against a reward: what alignment changed.

`shift` — the token-distribution shift between a base model and an aligned one (Lin et al. 2024, URIAL);
`plot` — its figure; `cli` — ``alignment shift BASE ALIGNED``. Import the submodules directly; this package
imports nothing heavy.
"""
