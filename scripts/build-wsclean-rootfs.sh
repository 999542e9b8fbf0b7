#!/usr/bin/env bash
# Build (once per machine) a Debian bookworm root filesystem holding WSClean, and print its path.
#
# The directory is what Singularity/Apptainer call a "sandbox image": `singularity exec DIR wsclean ...`
# runs it. The tests enter it through tests/bin/singularity (a bubblewrap stand-in) to exercise
# mpimager's container runtime for real.
#
# Usage: scripts/build-wsclean-rootfs.sh [CACHE_DIR]
#   CACHE_DIR defaults to $MPIMAGER_ROOTFS_CACHE, else /var/cache/mpimager when writable,
#   else ${XDG_CACHE_HOME:-$HOME/.cache}/mpimager. Never inside the repository.
# The rootfs lands in CACHE_DIR/wsclean-rootfs-<Debian wsclean version>/. The build happens in a
# temporary sibling directory that is renamed into place only when complete, under an flock, so
# concurrent callers build once and a killed build leaves nothing that looks finished. When the
# directory exists the script only prints its path (well under a second).
# Needs: mmdebstrap (root, or unprivileged user namespaces), network access to deb.debian.org.
set -euo pipefail

packages="wsclean,casacore-data,openmpi-bin"
suite="bookworm"

cache="${1:-${MPIMAGER_ROOTFS_CACHE:-}}"
if [ -z "$cache" ]; then
  if mkdir -p /var/cache/mpimager 2>/dev/null && [ -w /var/cache/mpimager ]; then
    cache=/var/cache/mpimager
  else
    cache="${XDG_CACHE_HOME:-$HOME/.cache}/mpimager"
  fi
fi
mkdir -p "$cache"
cache="$(cd "$cache" && pwd -P)"

# The version the build would get: bookworm's candidate in the host's apt lists.
candidate() {
  apt-cache policy wsclean 2>/dev/null | awk '/Candidate:/ {print $2; exit}'
}
# The version actually installed in a rootfs.
installed_in() {
  dpkg-query --admindir="$1/var/lib/dpkg" -W -f='${Version}' wsclean 2>/dev/null
}

version="$(candidate)"
if [ -n "$version" ] && [ "$version" != "(none)" ] && [ -x "$cache/wsclean-rootfs-$version/usr/bin/wsclean" ]; then
  echo "$cache/wsclean-rootfs-$version"
  exit 0
fi

if ! command -v mmdebstrap >/dev/null; then
  echo "build-wsclean-rootfs.sh: mmdebstrap not found (apt-get install mmdebstrap)" >&2
  exit 1
fi

exec 9>"$cache/wsclean-rootfs.lock"
flock 9
# Someone else may have finished the build while we waited for the lock.
if [ -n "$version" ] && [ "$version" != "(none)" ] && [ -x "$cache/wsclean-rootfs-$version/usr/bin/wsclean" ]; then
  echo "$cache/wsclean-rootfs-$version"
  exit 0
fi

work="$(mktemp -d "$cache/.wsclean-rootfs-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "build-wsclean-rootfs.sh: mmdebstrap --variant=apt --include=$packages $suite (about 30 s)" >&2
mmdebstrap --quiet --variant=apt --include="$packages" "$suite" "$work/rootfs.tar" </dev/null >&2
mkdir "$work/rootfs"
# /dev comes from the runtime (bwrap --dev, singularity's own /dev): no device nodes needed.
tar -C "$work/rootfs" --exclude='./dev/*' -xf "$work/rootfs.tar"
rm -f "$work/rootfs.tar"

built="$(installed_in "$work/rootfs")"
if [ -z "$built" ] || [ ! -x "$work/rootfs/usr/bin/wsclean" ]; then
  echo "build-wsclean-rootfs.sh: the built rootfs has no wsclean ($work)" >&2
  exit 1
fi
final="$cache/wsclean-rootfs-$built"
if [ -e "$final" ]; then
  # The host's apt lists were stale or missing: an identical build is already there.
  echo "$final"
  exit 0
fi
mv -T "$work/rootfs" "$final"
echo "$final"
