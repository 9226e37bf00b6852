"""Datasets: formats and validation (formats.py), loading (loading.py), chat templates and tokenization
(tokenize.py). Import the submodules directly; this package imports nothing heavy."""
