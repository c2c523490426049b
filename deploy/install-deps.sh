#!/usr/bin/env bash
# install-deps.sh — installs every build and test dependency of MicroTensor on Debian 12.
#
# Idempotent and quiet: when everything is present it only checks and returns in about a second.
# apt for the build (and Debian's python3-torch/numpy for the reference tests); pip, into Debian's
# /usr/bin/python3, for the test-only packages sacrebleu, safetensors, tokenizers where PyPI is
# reachable (their tests skip with a message otherwise). The CUDA toolkit is not installed here: the
# build uses it when nvcc is on PATH.
#
# MT_INSTALL_DOCKER=1 also installs what the container test (deploy/compose-test.sh) needs: Debian's
# docker.io (dockerd, containerd, runc, tini), debootstrap for the local base image, and a compose v2
# plugin. Debian 12 has only compose v1 (python); compose v2 is Debian 13's `docker-compose` package,
# one Go binary that needs only libc6 >= 2.34, so it is downloaded from the same Debian mirror with a
# private apt state (the host's apt sources are not touched) and installed with dpkg.
set -euo pipefail

APT_PACKAGES=(
  build-essential cmake pkg-config git ca-certificates
  libdnnl-dev libopenblas0 libblis4 libjansson-dev libutf8proc-dev libzstd-dev zstd libssl-dev openssl
  libevent-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
  libcmocka-dev abigail-tools socat clang libclang-rt-14-dev
  libgloo-dev gnuplot-nox iproute2
  python3 python3-pip python3-numpy python3-torch
)
PIP_PACKAGES=(sacrebleu safetensors tokenizers)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# apt_install PKG...: installs the packages not installed yet (one apt-get update first, if any).
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  echo "install-deps: apt: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq </dev/null
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
}
apt_install "${APT_PACKAGES[@]}"

if [ "${MT_INSTALL_DOCKER:-0}" = 1 ]; then
  apt_install docker.io debootstrap iptables iproute2
  case "$(docker compose version --short 2>/dev/null)" in
  v[2-9].* | [2-9].* | v[1-9][0-9].* | [1-9][0-9].*) ;;
  *)
    echo "install-deps: compose v2 (Debian 13's docker-compose)"
    tmp=$(mktemp -d)
    mirror=$(apt-get indextargets --format '$(REPO_URI) $(CODENAME)' 'Created-By: Packages' 2>/dev/null |
             awk '$2 == "bookworm" { print $1; exit }')
    [ -n "$mirror" ] || { echo "install-deps: no bookworm mirror in apt's sources for compose v2" >&2; exit 1; }
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" >"$tmp/sources.list"
    mkdir -p "$tmp/lists/partial"
    apt_private=(-o Dir::Etc::SourceList="$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
                 -o Dir::State::Lists="$tmp/lists" -o Dir::State::status=/dev/null
                 -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o APT::Sandbox::User=root)
    $SUDO apt-get "${apt_private[@]}" update -qq </dev/null
    (cd "$tmp" && $SUDO apt-get "${apt_private[@]}" download -qq docker-compose </dev/null)
    $SUDO dpkg -i "$tmp"/docker-compose_*.deb >/dev/null
    rm -rf "$tmp"
    docker compose version --short | grep -q '^v\?[2-9]' || {
      echo "install-deps: docker compose is not v2 after the install" >&2
      exit 1
    }
    ;;
  esac
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
