#!/usr/bin/env bash
# Builds the aimesh OCI image without Docker and without a registry: the
# runtime stage of ./Dockerfile, made from Debian's package mirror only.
#   - mmdebstrap makes a Debian bookworm root file system of the essential
#     set (no apt) plus the runtime packages the Dockerfile's runtime stage
#     installs, read from the Dockerfile itself (the one list both use);
#     man pages, docs (copyright files kept), locales and apt lists left out;
#   - aimesh-agent and meshctl (stripped, as the Dockerfile's Release build
#     has no debug information) go to /usr/local/bin, the data plane's BPF
#     objects to /usr/lib/aimesh/bpf, as in the Dockerfile;
#   - umoci turns it into a one-layer OCI image with the Dockerfile's labels,
#     user and entrypoint.
# Output: an OCI image layout directory (OUT, tag = the project version) and
# OUT.tar, the same layout as an oci-archive (`skopeo copy
# oci-archive:OUT.tar docker://...`, `podman load -i OUT.tar`).
#   scripts/build-image.sh [--build-dir DIR] [--out DIR]
# Defaults: --build-dir build, --out BUILD_DIR/image. Run as root (mmdebstrap
# root mode, umoci keeps file owners). Env MIRROR: the Debian mirror
# (default http://deb.debian.org/debian; security updates from
# http://deb.debian.org/debian-security unless MIRROR is set); DEB_CACHE:
# where downloaded packages are kept between builds (BUILD_DIR/image-debs).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
B=build OUT=
while [ $# -gt 0 ]; do
  case $1 in
    --build-dir) B=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--build-dir DIR] [--out DIR]" >&2; exit 2 ;;
  esac
done
case $B in /*) ;; *) B=$ROOT/$B ;; esac
OUT=${OUT:-$B/image}
case $OUT in /*) ;; *) OUT=$ROOT/$OUT ;; esac
[ "$(id -u)" -eq 0 ] || { echo "build-image: run as root (mmdebstrap, umoci)" >&2; exit 1; }
for t in mmdebstrap umoci strip; do
  command -v $t >/dev/null || { echo "build-image: $t missing (scripts/install-deps.sh)" >&2; exit 1; }
done
for f in aimesh-agent meshctl; do
  [ -x "$B/$f" ] || { echo "build-image: $B/$f missing: cmake --build $B --target aimesh-agent meshctl" >&2; exit 1; }
done

VERSION=$(sed -n 's/^project(aimesh VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
[ -n "$VERSION" ] || { echo "build-image: no project VERSION in CMakeLists.txt" >&2; exit 1; }
SUITE=$(sed -n 's/^ARG DEBIAN_RELEASE=//p' Dockerfile)

# The runtime packages: the `apt-get install` of the Dockerfile's last stage,
# from the line after "apt-get install" to the line starting with "&&".
runtime_packages() {
  awk '/^FROM /{stage++; inrun=0}
       /^[[:space:]]*#/ {next}
       {last=stage}
       stage && /apt-get install/ {inrun=1; next}
       inrun && /^[[:space:]]*&&/ {inrun=0}
       inrun {for (i = 1; i <= NF; i++) if ($i != "\\" && $i !~ /^-/) pkgs[stage] = pkgs[stage] " " $i}
       END {print pkgs[last]}' Dockerfile
}
PKGS=$(runtime_packages | xargs)
[ -n "$PKGS" ] || { echo "build-image: found no runtime packages in Dockerfile" >&2; exit 1; }
# The labels: the Dockerfile's LABEL lines, ${VERSION} substituted. Not
# base.name: this image is not built on debian:bookworm-slim but from the
# same Debian packages.
LABELS=$(awk '/^LABEL /{on=1; sub(/^LABEL /, "")} on {print; if ($0 !~ /\\$/) on=0}' Dockerfile |
  sed -e 's/\\$//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' -e "s/\${VERSION}/$VERSION/" |
  grep -v '^org.opencontainers.image.base.name=' | sed -e 's/="\(.*\)"$/=\1/')

# Reproducible timestamps (mmdebstrap, and the image's "created"): the last commit.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
MIRROR_ARGS=()
if [ -n "${MIRROR:-}" ]; then
  MIRROR_ARGS=("deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main")
else
  MIRROR_ARGS=("deb http://deb.debian.org/debian $SUITE main" "deb http://deb.debian.org/debian $SUITE-updates main"
    "deb http://deb.debian.org/debian-security $SUITE-security main")
fi

WORK=$(mktemp -d /tmp/aimesh-image.XXXXXX)
chmod 755 "$WORK"  # apt downloads as _apt into the root file system
trap 'rm -rf "$WORK"' EXIT
TAG=$VERSION
rm -rf "$OUT" "$OUT.tar"
mkdir -p "$(dirname "$OUT")"
echo "== OCI layout $OUT:$TAG (umoci)"
umoci init --layout "$OUT"
umoci new --image "$OUT:$TAG"
umoci unpack --image "$OUT:$TAG" "$WORK/bundle" >/dev/null
rmdir "$WORK/bundle/rootfs"

# The merged-usr hook (mmdebstrap's own) makes /bin, /lib, ... links into
# /usr before anything is installed and installs usr-is-merged, as
# debian:bookworm-slim has; without it apt satisfies the essential
# init-system-helpers with usrmerge, which drags in perl (25 MB).
echo "== Debian $SUITE essential + $PKGS (mmdebstrap)"
# Downloaded .deb files are kept in DEBS (the man page's sync-in/sync-out
# recipe): a rebuild fetches only the package lists and what changed.
DEBS=${DEB_CACHE:-$B/image-debs}
mkdir -p "$DEBS"
# Debian's own PATH: mmdebstrap's helpers (mmtarfilter, once per package)
# are meant for Debian's python3, not one a version manager puts first.
PATH=/usr/sbin:/usr/bin:/sbin:/bin \
mmdebstrap --mode=root --variant=essential --format=directory --skip=essential/unlink \
  --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
  --setup-hook="sync-in $DEBS /var/cache/apt/archives/" \
  --customize-hook="sync-out /var/cache/apt/archives $DEBS" \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --include="$PKGS" \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/cache/debconf/*-old "$1"/var/log/*.log' \
  --customize-hook='echo aimesh > "$1/etc/hostname"; : > "$1/etc/resolv.conf"' \
  "$SUITE" "$WORK/bundle/rootfs" "${MIRROR_ARGS[@]}"

R=$WORK/bundle/rootfs
echo "== aimesh-agent, meshctl and the BPF objects from $B"
install -d -m 0755 "$R/usr/local/bin" "$R/usr/lib/aimesh/bpf"
install -m 0755 -s "$B/aimesh-agent" "$B/meshctl" "$R/usr/local/bin/"
for src in bpf/*.bpf.c; do
  install -m 0644 "$B/bpf/$(basename "$src" .c).o" "$R/usr/lib/aimesh/bpf/"
done
# Every shared library the two programs need is in the image.
for f in aimesh-agent meshctl; do
  if chroot "$R" /usr/bin/ldd "/usr/local/bin/$f" 2>&1 | grep -E 'not found|not a dynamic'; then
    echo "build-image: $f: libraries missing from the image (Dockerfile runtime packages)" >&2
    exit 1
  fi
done
chroot "$R" /usr/local/bin/aimesh-agent --help >/dev/null
chroot "$R" /usr/local/bin/meshctl --help >/dev/null

echo "== layer and config"
CREATED=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
umoci repack --image "$OUT:$TAG" --history.created "$CREATED" \
  --history.created_by "scripts/build-image.sh: mmdebstrap $SUITE essential + $PKGS; aimesh-agent, meshctl, BPF objects" \
  "$WORK/bundle"
LABEL_ARGS=()
while IFS= read -r l; do [ -n "$l" ] && LABEL_ARGS+=(--config.label "$l"); done <<<"$LABELS"
umoci config --image "$OUT:$TAG" --no-history --created "$CREATED" \
  --config.user 0 --config.entrypoint aimesh-agent --clear=config.cmd \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  "${LABEL_ARGS[@]}"
umoci gc --layout "$OUT"
tar -C "$OUT" --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner -cf "$OUT.tar" .

compressed=$(du -cb "$OUT"/blobs/sha256/* | tail -1 | cut -f1)
unpacked=$(du -sb "$R" | cut -f1)
printf 'image %s:%s (oci-archive %s)\n' "$OUT" "$TAG" "$OUT.tar"
awk -v c="$compressed" -v u="$unpacked" \
  'BEGIN {printf "compressed size: %d bytes (%.1f MiB); unpacked: %d bytes (%.1f MiB)\n", c, c/1048576, u, u/1048576}'
