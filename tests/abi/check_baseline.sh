#!/usr/bin/env bash
# check_baseline.sh LIB SOURCE_DIR — abidiff of the built library against the committed baseline
# abi/microtensor.abi, over the types of the public header only. Any change to what was there (a
# removed or changed function, a changed type, parameter or enum value) fails; additions (new
# functions; new enumerators, which libabigail counts as harmless) pass, with a note to record them
# with abi/update-baseline.sh.
# The baseline was written with --headers-dir, so only the library side is filtered here (libabigail
# 2.2 aborts when --headers-dir1 is applied to an XML corpus).
set -uo pipefail
lib=$1 src=$2
base="$src/abi/microtensor.abi"
[ -f "$base" ] || { echo "no ABI baseline at $base: create it with abi/update-baseline.sh"; exit 1; }
diff_args=(--headers-dir2 "$src/abi" --drop-private-types "$base" "$lib")
report=$(abidiff --no-added-syms "${diff_args[@]}" 2>&1)
rc=$?
if (( rc & 3 )); then echo "abidiff failed to run (rc $rc):"; echo "$report"; exit 1; fi
if (( rc != 0 )); then echo "ABI change against abi/microtensor.abi (only additions are allowed):"; echo "$report"; exit 1; fi
added=$(abidiff "${diff_args[@]}" 2>&1)
if (( $? & 4 )); then
  echo "$added"
  echo "compatible ABI additions: record them with abi/update-baseline.sh"
fi
echo "ok: the library keeps the ABI of abi/microtensor.abi"
exit 0
