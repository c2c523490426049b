#!/usr/bin/env bash
# install-deps.sh — installs every build and test dependency of MicroTensor on Debian 12.
#
# Idempotent and quiet: when everything is present it only checks and returns in about a second.
# apt for the build (and Debian's python3-torch/numpy for the reference tests); pip, into Debian's
# /usr/bin/python3, for the test-only packages sacrebleu, safetensors, tokenizers where PyPI is
# reachable (their tests skip with a message otherwise). The CUDA toolkit is not installed here: the
# build uses it when nvcc is on PATH.
set -euo pipefail

APT_PACKAGES=(
  build-essential cmake pkg-config git ca-certificates
  libdnnl-dev libopenblas0 libblis4 libjansson-dev libutf8proc-dev libzstd-dev zstd libssl-dev openssl
  libevent-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
  libcmocka-dev abigail-tools socat clang libclang-rt-14-dev
  python3 python3-pip python3-numpy python3-torch
)
PIP_PACKAGES=(sacrebleu safetensors tokenizers)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: apt: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq </dev/null
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
fi

PY=/usr/bin/python3
need_pip=()
for m in "${PIP_PACKAGES[@]}"; do
  "$PY" -c "import $m" 2>/dev/null || need_pip+=("$m")
done
if [ ${#need_pip[@]} -gt 0 ]; then
  echo "install-deps: pip: ${need_pip[*]}"
  if ! $SUDO "$PY" -m pip install -q --disable-pip-version-check --break-system-packages \
        --root-user-action=ignore "${need_pip[@]}" </dev/null; then
    echo "install-deps: PyPI not reachable; tests that need ${need_pip[*]} will skip" >&2
  fi
fi
exit 0
