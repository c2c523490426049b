#!/bin/sh
# stage.sh — lays out what a runtime image carries, from a build folder, into OUT:
#
#   OUT/usr/local/bin/         the programs (mt-server, mt-client, mt-train, mt-translate, mt-eval,
#                              mt-quantize), debug info stripped
#   OUT/usr/local/lib/         libmicrotensor.so and its soname links, stripped; and every shared
#                              library the programs link that no Debian package owns (the CUDA
#                              runtime, cuBLAS, cuBLASLt and NCCL of the toolkit, for a CUDA build)
#   OUT/runtime-packages       the Debian packages that own the other libraries they link: the
#                              runtime stage installs exactly these
#   OUT/runtime-setup.sh       the runtime stage's setup step (deploy/docker/runtime-setup.sh)
#
#   deploy/docker/stage.sh BUILD_DIR OUT
#   deploy/docker/stage.sh --programs      the programs' CMake targets, for `cmake --build --target`
#
# Used by the build stage of deploy/Dockerfile, and on the host by deploy/docker/cuda-context.sh.
# The driver library (libcuda.so.1) is never carried: the NVIDIA container runtime mounts the host's.
set -eu

programs="mt-server mt-client mt-train mt-translate mt-eval mt-quantize"
if [ "${1:-}" = --programs ]; then
  echo "$programs"
  exit 0
fi
build=$1
out=$2

mkdir -p "$out/usr/local/bin" "$out/usr/local/lib"
for p in $programs; do
  [ -x "$build/bin/$p" ] || { echo "stage: $build/bin/$p is missing" >&2; exit 1; }
  cp "$build/bin/$p" "$out/usr/local/bin/"
done
cp -P "$build"/lib/libmicrotensor.so* "$out/usr/local/lib/"
for f in "$out"/usr/local/bin/* "$out"/usr/local/lib/libmicrotensor.so.*.*; do
  [ -L "$f" ] || strip --strip-debug "$f"
done

# Every library the programs and the library link, as ldd resolves it on this machine.
libs=$(for f in $(for p in $programs; do echo "$build/bin/$p"; done) "$build"/lib/libmicrotensor.so; do
  ldd "$f" | awk -v f="$f" '
    /not found/ && $1 != "libcuda.so.1" { print "MISSING " $1 " (" f ")" }
    $2 == "=>" && $3 ~ /^\// { print $3 }'
done | sort -u)
if echo "$libs" | grep -q '^MISSING'; then
  echo "stage: libraries not found:" >&2
  echo "$libs" | grep '^MISSING' >&2
  exit 1
fi

: >"$out/runtime-packages.tmp"
for lib in $libs; do
  case "$lib" in "$build"/*) continue ;; esac
  real=$(readlink -f "$lib")
  # dpkg knows a file under the path it installed it as; /lib is a link to /usr/lib on Debian 12.
  pkg=$({ dpkg -S "$lib" || dpkg -S "$real" || dpkg -S "${real#/usr}"; } 2>/dev/null | head -1 | sed 's/[,:].*//')
  if [ -n "$pkg" ]; then
    echo "$pkg" >>"$out/runtime-packages.tmp"
  else
    # Not from a Debian package (the CUDA toolkit): carry the file under its soname.
    cp "$real" "$out/usr/local/lib/$(basename "$lib")"
  fi
done
sort -u "$out/runtime-packages.tmp" >"$out/runtime-packages"
rm -f "$out/runtime-packages.tmp"
cp "$(dirname "$0")/runtime-setup.sh" "$out/runtime-setup.sh"
echo "stage: $(echo $programs | wc -w) programs, libmicrotensor; packages: $(tr '\n' ' ' <"$out/runtime-packages")"
extra=""
for f in "$out"/usr/local/lib/*; do
  case "${f##*/}" in libmicrotensor*) ;; *) extra="$extra ${f##*/}" ;; esac
done
[ -z "$extra" ] || echo "stage: carried libraries:$extra"
