#!/usr/bin/env bash
# Build the serving base image locally, from Debian packages only (no image registry needed).
#
#   deploy/build-base-image.sh [IMAGE_TAG]      default tag: ct-platform-base:bookworm
#
# debootstrap a minimal Debian bookworm root filesystem that already contains python3 (3.11)
# and python3-venv, then `docker import` it. Python comes in through debootstrap on the host
# rather than through apt-get inside a container, so the build needs no network inside
# containers at all. Skips everything when the image already exists. debootstrap needs root:
# run as root, or as a user with sudo.
#
# Environment: CT_DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail

image="${1:-ct-platform-base:bookworm}"
mirror="${CT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo "$@"
    fi
}

if docker image inspect "$image" >/dev/null 2>&1; then
    echo "base image $image already exists"
    exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    echo "installing debootstrap ..."
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends debootstrap
fi

rootfs="$(mktemp -d /var/tmp/ct-base-rootfs.XXXXXX)"
trap 'as_root rm -rf "$rootfs"' EXIT
# mktemp makes it 0700, and it becomes the image's `/`: no other user could run anything.
chmod 755 "$rootfs"

echo "debootstrap bookworm (minbase + python3) into $rootfs ..."
as_root debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" "$mirror"

# The package lists and the .deb cache are dead weight in the image.
as_root sh -c "rm -rf '$rootfs'/var/cache/apt/archives/*.deb '$rootfs'/var/lib/apt/lists/*"

echo "importing $rootfs as $image ..."
as_root tar --numeric-owner -C "$rootfs" -c . \
    | docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$image"
echo "built base image $image"
