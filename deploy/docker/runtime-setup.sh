#!/bin/sh
# runtime-setup.sh — the one setup step of a runtime image, shared by deploy/Dockerfile and
# deploy/Dockerfile.cuda: install exactly the Debian packages that deploy/docker/stage.sh listed
# (the libraries the programs link, nothing else), create the unprivileged user `mt` (uid and gid
# 10001) and its data folders under /data (models/, runs/, corpora/: volumes in docker-compose.yml).
#
#   sh runtime-setup.sh /usr/local/share/microtensor/runtime-packages
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2046
apt-get install -y -qq $(cat "$1") >/dev/null
groupadd --system --gid 10001 mt
useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin mt
mkdir -p /data/models /data/runs /data/corpora
chown -R mt:mt /data
