#!/usr/bin/env bash
# install_test.sh BUILD_DIR SOURCE_DIR — installs the build into a temporary prefix, then builds and
# runs tests/abi/consumer against it twice: with pkg-config (shared, and --static) and with
# find_package(MicroTensor).
set -euo pipefail
build=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
libdir=$(ls -d "$tmp"/prefix/lib*/ | head -1)
export PKG_CONFIG_PATH="$libdir/pkgconfig"
export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

cc -std=c11 -Wall -Werror -o "$tmp/consumer-pc" "$src/tests/abi/consumer/main.c" $(pkg-config --cflags --libs microtensor) -lm
"$tmp/consumer-pc"
cc -std=c11 -Wall -Werror -o "$tmp/consumer-static" "$src/tests/abi/consumer/main.c" \
   $(pkg-config --cflags microtensor) "$libdir/libmicrotensor.a" $(pkg-config --static --libs-only-other --libs-only-l microtensor | sed 's/-lmicrotensor//') -lm
"$tmp/consumer-static"
ldd "$tmp/consumer-static" | grep libmicrotensor >/dev/null && { echo "static consumer still links the shared library"; exit 1; }

cmake -S "$src/tests/abi/consumer" -B "$tmp/cm" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/cm" >/dev/null
"$tmp/cm/consumer"
echo "ok: pkg-config (shared, static) and find_package consumers built and ran"
