#!/usr/bin/env bash
# check_baseline.sh LIB SOURCE_DIR — abidiff of the built library against the committed baseline
# abi/microtensor.abi, over the types of the public header only. An incompatible change (a removed
# or changed function, a changed type or enum value) fails; a compatible addition passes with a
# note to record it with abi/update-baseline.sh.
set -uo pipefail
lib=$1 src=$2
base="$src/abi/microtensor.abi"
[ -f "$base" ] || { echo "no ABI baseline at $base: create it with abi/update-baseline.sh"; exit 1; }
report=$(abidiff --headers-dir1 "$src/abi" --headers-dir2 "$src/abi" --drop-private-types "$base" "$lib" 2>&1)
rc=$?
if (( rc & 3 )); then echo "abidiff failed to run (rc $rc):"; echo "$report"; exit 1; fi
if (( rc & 8 )); then echo "INCOMPATIBLE ABI change against abi/microtensor.abi:"; echo "$report"; exit 1; fi
if (( rc & 4 )); then
  echo "$report"
  echo "compatible ABI change (additions): record it with abi/update-baseline.sh"
fi
echo "ok: the library keeps the ABI of abi/microtensor.abi"
exit 0
