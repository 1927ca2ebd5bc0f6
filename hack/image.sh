#!/usr/bin/env bash
# Builds Roster's image with podman from the project's Dockerfile, here where no registry can
# be pulled from: the runtime stage's base is a Debian 12 made with debootstrap and imported
# into podman (once; kept as localhost/roster-base/debian:12), and the binary is one built on
# this host (the Dockerfile's `prebuilt` stage; its Rust build stage is skipped by buildah).
# A site builds the same Dockerfile with plain `docker build .` from registry base images.
#
# Usage: hack/image.sh --binary target/release/roster --tag localhost/roster:0.1.0
#        hack/image.sh --check     exit 0 when podman can run containers here, else say why
#
# What this sandbox needs of podman, and why: `--runtime runc` (crun refuses the host's hybrid
# cgroup layout), explicit --ulimit values (rlimits cannot be raised here), host networking for
# the build's apt (no CNI bridge). Root only: the base is made with debootstrap.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE="$ROOT/.dev/image"
BASE="localhost/roster-base/debian:12"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES=(podman buildah debootstrap runc uidmap slirp4netns fuse-overlayfs)
# The flags every podman call here needs (see above).
PODMAN=(podman --runtime runc)
ULIMITS=(--ulimit nofile=20000:20000 --ulimit nproc=32768:32768)

say() { echo "image: $*" >&2; }

binary="" tag="" check=0
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        --check) check=1; shift ;;
        *) say "unknown argument $1"; exit 2 ;;
    esac
done

# podman (and debootstrap for the base) from Debian's packages when missing.
ensure_podman() {
    if command -v podman >/dev/null && command -v debootstrap >/dev/null && command -v runc >/dev/null; then
        return 0
    fi
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        say "podman, debootstrap and runc are needed (apt-get install ${PACKAGES[*]})"
        return 1
    fi
    say "installing ${PACKAGES[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" \
        >"$STATE/apt.log" 2>&1 || { say "apt-get failed (see $STATE/apt.log)"; return 1; }
}

mkdir -p "$STATE"
ensure_podman || exit 1
if ! "${PODMAN[@]}" info >/dev/null 2>"$STATE/podman-info.log"; then
    say "podman cannot run here (see $STATE/podman-info.log)"
    exit 1
fi
[ "$check" = 1 ] && exit 0
[ -n "$binary" ] && [ -n "$tag" ] || { say "usage: $0 --binary FILE --tag NAME:TAG"; exit 2; }
[ -x "$binary" ] || { say "$binary is not an executable"; exit 2; }

# The base: Debian 12 minbase, trimmed like bookworm-slim (no apt lists, docs, man pages or
# locales, and dpkg told to leave them out of later installs).
if ! "${PODMAN[@]}" image exists "$BASE"; then
    rootfs="$STATE/rootfs"
    rm -rf "$rootfs"
    say "debootstrap bookworm from $MIRROR (once)"
    debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$STATE/debootstrap.log" 2>&1 \
        || { say "debootstrap failed (see $STATE/debootstrap.log)"; exit 1; }
    mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/locale/*' \
        'path-exclude /usr/share/info/*' >"$rootfs/etc/dpkg/dpkg.cfg.d/slim"
    rm -rf "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
        "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
        "$rootfs"/usr/share/locale/*
    find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
    tar -C "$rootfs" -c . | "${PODMAN[@]}" import - "$BASE" >/dev/null
    rm -rf "$rootfs"
fi

# The build context: the Dockerfile and the binary only.
ctx=$(mktemp -d "$STATE/context.XXXXXX")
mkdir -p "$ctx/bin"
cp "$ROOT/Dockerfile" "$ctx/Dockerfile"
cp "$binary" "$ctx/bin/roster"
say "building $tag from $binary"
"${PODMAN[@]}" build --network host "${ULIMITS[@]}" \
    --build-arg RUNTIME_BASE="$BASE" --build-arg BINARY_FROM=prebuilt \
    -t "$tag" -f "$ctx/Dockerfile" "$ctx" >"$STATE/build.log" 2>&1 \
    || { tail -20 "$STATE/build.log" >&2; say "podman build failed (see $STATE/build.log)"; exit 1; }
rm -rf "$ctx"
size=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$tag")
say "$tag: $((size / 1000000)) MB; layers:"
"${PODMAN[@]}" history --format '{{.Size}}\t{{.CreatedBy}}' "$tag" | cut -c1-110 >&2
