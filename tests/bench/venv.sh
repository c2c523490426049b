#!/usr/bin/env bash
# venv.sh — the benchmarks' Python environment: current PyTorch 2.x from PyPI (its own MKL/oneDNN
# kernels: the anchor a user would compare with), safetensors, and CTranslate2 (the decoding anchor),
# in a venv at $MT_BENCH_VENV (default ~/.cache/microtensor/bench-venv). A benchmark dependency, not a
# test one: `mt-bench train|decode` use it when it exists and fall back to Debian's PyTorch 1.13.
# Idempotent; about 3 GB of wheels the first time (PyPI's torch wheel pulls the CUDA libraries).
set -euo pipefail
venv=${MT_BENCH_VENV:-$HOME/.cache/microtensor/bench-venv}
py=${MT_BENCH_BASE_PYTHON:-python3}
packages=(torch safetensors numpy ctranslate2)
if [ ! -x "$venv/bin/python" ]; then
  echo "venv.sh: creating $venv"
  "$py" -m venv "$venv"
fi
if "$venv/bin/python" -c 'import torch, safetensors, numpy, ctranslate2' 2>/dev/null; then
  echo "venv.sh: $venv is ready"
else
  echo "venv.sh: installing ${packages[*]} into $venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${packages[@]}" </dev/null
fi
"$venv/bin/python" -c 'import torch, ctranslate2; print("venv.sh: torch", torch.__version__, "/ ctranslate2", ctranslate2.__version__)'
