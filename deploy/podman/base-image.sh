#!/usr/bin/env bash
# The image's base for `make deploy-test`: Debian bookworm from debootstrap (minbase + python3, its venv module,
# CA certificates), imported into podman. CI machines reach the Debian package registry, not a container registry.
# Cached: the tag carries a hash of this script, so an unchanged recipe is reused and a changed one built anew.
# Needs root (debootstrap), podman, and CONTAINERS_CONF / CONTAINERS_STORAGE_CONF as deploy-test.sh sets them.
# Prints the image reference on stdout; progress goes to stderr.
set -euo pipefail
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
tag="localhost/fedkit-base:$suite-$(sha256sum "$0" | cut -c1-12)"
if podman image exists "$tag"; then
    echo "base image $tag: cached" >&2
    echo "$tag"
    exit 0
fi
rootfs=$(mktemp -d /var/tmp/fedkit-base.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "base image $tag: debootstrap $suite from $mirror" >&2
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$suite" "$rootfs" "$mirror" >&2 &
trap 'kill -TERM $! 2>/dev/null; wait $!; exit 143' INT TERM  # stop debootstrap too, then the EXIT trap cleans up
wait $!
# Not needed at run time: downloaded packages and lists, manuals, translations, docs (licences kept).
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* "$rootfs"/usr/share/info/*
find "$rootfs"/usr/share/doc -type f ! -name copyright -delete
tar -C "$rootfs" -c . | podman import \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV LANG=C.UTF-8" - "$tag" >&2
for old in $(podman images --format '{{.Repository}}:{{.Tag}}' localhost/fedkit-base); do
    [ "$old" = "$tag" ] || podman rmi "$old" >&2 || true
done
echo "$tag"
