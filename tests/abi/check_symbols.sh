#!/usr/bin/env bash
# check_symbols.sh LIB HEADER — the library exports exactly the MT_API functions of the header (no
# more, no fewer), every one of them named mt_*, and it does not link the CUDA driver stub libcuda.
set -euo pipefail
lib=$1 header=$2
exported=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | sed 's/@.*//' | sort -u)
declared=$(tr '\n' ' ' < "$header" | grep -oE 'MT_API[^;{(]*[^a-zA-Z0-9_](mt_[a-z0-9_]+)\(' |
           grep -oE 'mt_[a-z0-9_]+\($' | tr -d '(' | sort -u)
status=0
if bad=$(echo "$exported" | grep -v '^mt_'); then
  echo "exported symbols outside the mt_ namespace:"; echo "$bad"; status=1
fi
extra=$(comm -23 <(echo "$exported") <(echo "$declared"))
missing=$(comm -13 <(echo "$exported") <(echo "$declared"))
[ -z "$extra" ] || { echo "exported but not declared in $header:"; echo "$extra"; status=1; }
[ -z "$missing" ] || { echo "declared in $header but not exported (unimplemented?):"; echo "$missing"; status=1; }
if readelf -d "$lib" | grep 'NEEDED.*libcuda\.so' >/dev/null; then
  echo "$lib links the CUDA driver library libcuda (only the runtime may be linked)"; status=1
fi
n=$(echo "$declared" | wc -l)
[ $status -eq 0 ] && echo "ok: $n functions declared, the same $n exported, all mt_*"
exit $status
