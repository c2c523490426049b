#!/usr/bin/env bash
# base-image.sh — makes the local Debian 12 base image that deploy/Dockerfile and Dockerfile.cuda
# build FROM, without any image registry: `debootstrap --variant=minbase bookworm` from the Debian
# mirror that apt on this host already uses, then `docker import`.
#
#   deploy/docker/base-image.sh          make microtensor-base:bookworm unless it exists (idempotent)
#   MT_BASE_IMAGE=name:tag               another image name
#   MT_DEBIAN_MIRROR=http://host/debian  another mirror (default: the one in this host's apt sources)
#   MT_BASE_REBUILD=1                    make it again even if it exists
#
# Needs root, debootstrap and a running docker daemon. The image holds a minimal Debian (dash, bash,
# apt; about 120 MB) with the same mirror (bookworm, bookworm-updates, bookworm-security) in its
# sources, its apt lists emptied, and `bash` as its command.
set -euo pipefail

image=${MT_BASE_IMAGE:-microtensor-base:bookworm}
if [ "${MT_BASE_REBUILD:-0}" != 1 ] && docker image inspect "$image" >/dev/null 2>&1; then
  echo "base-image: $image exists"
  exit 0
fi
command -v debootstrap >/dev/null || {
  echo "base-image: debootstrap is missing (apt-get install debootstrap)" >&2
  exit 1
}

# The mirrors this host's apt already reaches (its sources, whatever their format).
targets=$(apt-get indextargets --format '$(REPO_URI) $(CODENAME)' 'Created-By: Packages' 2>/dev/null | sort -u)
mirror=${MT_DEBIAN_MIRROR:-$(awk '$2 == "bookworm" { print $1; exit }' <<<"$targets")}
security=$(awk '$2 == "bookworm-security" { print $1; exit }' <<<"$targets")
if [ -z "$mirror" ]; then
  echo "base-image: no bookworm mirror in this host's apt sources: set MT_DEBIAN_MIRROR" >&2
  exit 1
fi
security=${security:-${mirror%/debian/}/debian-security/}

rootfs=$(mktemp -d /var/tmp/mt-base.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "base-image: debootstrap --variant=minbase bookworm from $mirror"
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
  tail -20 "$rootfs.log" >&2
  rm -f "$rootfs.log"
  exit 1
}
rm -f "$rootfs.log"

cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
EOF
# Images install only what they name: no recommends, no documentation, no man pages.
cat >"$rootfs/etc/apt/apt.conf.d/90microtensor" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/90microtensor" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
  "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
  "$rootfs"/usr/share/locale/*
find "$rootfs/usr/share/doc" -type f ! -name copyright -delete

tar --numeric-owner -C "$rootfs" -c . |
  docker import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' \
    --message "debootstrap --variant=minbase bookworm $mirror" - "$image" >/dev/null
echo "base-image: made $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
