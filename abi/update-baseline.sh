#!/usr/bin/env bash
# update-baseline.sh [BUILD_DIR] — rewrites abi/microtensor.abi, the ABI baseline that the abi_baseline
# test holds the library to, from BUILD_DIR/lib/libmicrotensor.so (default: build). Run it only on
# purpose: after appending to the ABI (new functions, new enum values at the end), or with a major
# version bump after a breaking change (see abi/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
lib=${1:-build}/lib/libmicrotensor.so
abidw --headers-dir abi --drop-private-types --no-corpus-path --out-file abi/microtensor.abi "$lib"
echo "abi/microtensor.abi rewritten from $lib ($(grep -c '<function-decl' abi/microtensor.abi) declarations)"
