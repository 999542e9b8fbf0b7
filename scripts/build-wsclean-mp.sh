#!/usr/bin/env bash
# Build WSClean's MPI binary `wsclean-mp` from the Debian source package of the installed
# `wsclean` (Debian leaves it out of the binary package only because MPI is not a build dependency).
#
# The result is cached outside the repo, keyed by the Debian version of wsclean:
#   ${MPIMAGER_CACHE:-/var/cache/mpimager}/wsclean-mp-<version>/bin/wsclean-mp
# Prints that path on stdout (and nothing else). A cached build makes this a fast no-op.
# Two concurrent calls do not both build: the second waits on a lock, then finds the cache.
# The build runs in a temporary directory next to the cache and is moved into place with one rename.
#
# Needs: Debian bookworm, root, the Debian archive reachable. About 4.5 minutes on 2 cores.
# Environment: MPIMAGER_CACHE (cache root), BUILD_JOBS (make -j, default: nproc).
set -euo pipefail

log() { echo "build-wsclean-mp: $*" >&2; }
die() { log "error: $*"; exit 1; }

version="$(dpkg-query -W -f='${Version}' wsclean 2>/dev/null || true)"
[ -n "$version" ] || die "the Debian package wsclean is not installed: run 'apt-get install wsclean' first"
upstream="${version%-*}"
upstream="${upstream#*:}"

cache_root="${MPIMAGER_CACHE:-/var/cache/mpimager}"
dest="$cache_root/wsclean-mp-$version"
binary="$dest/bin/wsclean-mp"

if [ -x "$binary" ]; then
  echo "$binary"
  exit 0
fi

needs_root="building needs root (apt-get build-dep); run as root or build once as root to fill $cache_root"
mkdir -p "$cache_root" 2>/dev/null || die "cannot make $cache_root (set MPIMAGER_CACHE); $needs_root"

# One builder at a time per version; the others wait, then find the cache filled (root or not).
lock="$cache_root/wsclean-mp-$version.lock"
touch "$lock" 2>/dev/null || die "cannot write $lock; $needs_root"
exec 9>"$lock"
if ! flock -n 9; then
  log "another build of wsclean-mp $version is running; waiting for it"
  flock 9
fi
if [ -x "$binary" ]; then
  echo "$binary"
  exit 0
fi
[ "$(id -u)" = 0 ] || die "$needs_root"

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-o DPkg::Lock::Timeout=600)  # wait for another apt run instead of failing

# A deb-src entry for bookworm main, unless apt already has a Sources index configured.
if [ -z "$(apt-get indextargets --format '$(IDENTIFIER)' 'Identifier: Sources' 2>/dev/null)" ]; then
  src_list=/etc/apt/sources.list.d/mpimager-deb-src.sources
  log "adding $src_list (deb-src bookworm main)"
  cat >"$src_list" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  apt-get update -qq "${apt_opts[@]}" || die "apt-get update failed after adding $src_list"
elif ! apt-get source --print-uris -qq "wsclean=$version" >/dev/null 2>&1; then
  apt-get update -qq "${apt_opts[@]}" || die "apt-get update failed"
fi

log "installing build dependencies of wsclean $version and libopenmpi-dev"
apt-get build-dep -y -qq "${apt_opts[@]}" "wsclean=$version" >/dev/null \
  || die "apt-get build-dep wsclean=$version failed (is version $version in the configured deb-src suites?)"
apt-get install -y -qq --no-install-recommends "${apt_opts[@]}" libopenmpi-dev openmpi-bin dpkg-dev cmake make >/dev/null \
  || die "apt-get install libopenmpi-dev failed"

work="$(mktemp -d "$cache_root/.build-wsclean-mp-$version.XXXXXX")"
trap 'rm -rf "$work"' EXIT

log "fetching the source of wsclean $version into $work"
(cd "$work" && apt-get source -qq "wsclean=$version" >"$work/source.log" 2>&1) \
  || { tail -20 "$work/source.log" >&2; die "apt-get source wsclean=$version failed"; }
src="$(find "$work" -mindepth 1 -maxdepth 1 -type d -name "wsclean-*" | head -1)"
[ -n "$src" ] || die "apt-get source left no wsclean-* directory in $work"

jobs="${BUILD_JOBS:-$(nproc)}"
log "building wsclean-mp (cmake Release, PORTABLE, make -j$jobs); log in $work/build.log"
mkdir "$work/build"
(
  cd "$work/build"
  cmake "$src" -DCMAKE_BUILD_TYPE=Release -DPORTABLE=yes
  make -j"$jobs" wsclean-mp
) >"$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; die "building wsclean-mp failed (see the lines above)"; }

built="$(find "$work/build" -type f -name wsclean-mp -perm -u+x | head -1)"
[ -n "$built" ] || die "make finished but left no wsclean-mp binary in $work/build"
if ldd "$built" | grep -q "not found"; then
  ldd "$built" >&2
  die "the built wsclean-mp misses shared libraries (listed above)"
fi

mkdir -p "$work/out/bin"
install -m 0755 "$built" "$work/out/bin/wsclean-mp"
echo "wsclean $version (Debian source package), cmake -DCMAKE_BUILD_TYPE=Release -DPORTABLE=yes" >"$work/out/BUILD-INFO"
mv -T "$work/out" "$dest"
log "built $binary"
echo "$binary"
