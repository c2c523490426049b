#!/bin/sh
# check_golden.sh OUT_DIR GOLDEN_TEST — the `ops_reference_regen` ctest: regenerate the golden files
# with PyTorch into OUT_DIR, compare them with the committed tests/reference/golden, and run the
# engine's golden test (GOLDEN_TEST) on the fresh files. Exit 77 (skipped) when torch is absent.
set -e
out=$1
golden_test=$2
py=${MT_TORCH_PYTHON:-/usr/bin/python3}
if [ ! -x "$py" ] || ! "$py" -c 'import torch, numpy' >/dev/null 2>&1; then
  echo "check_golden.sh: PyTorch is not importable by '$py': skipped (install python3-torch)"
  exit 77
fi
rm -rf "$out"
"$py" "$(dirname "$0")/gen_ops.py" --check "$out"
"$golden_test" "$out"
