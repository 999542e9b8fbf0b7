#!/usr/bin/env bash
# The test command of the README: installs what is missing, then runs the whole test suite.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/install.sh"
. "$here/scripts/env.sh"
cd "$here"
# slow builds, cached outside the clone by version (a no-op when cached)
echo "test.sh: WSClean container rootfs: $(bash scripts/build-wsclean-rootfs.sh)"
echo "test.sh: wsclean-mp: $(bash scripts/build-wsclean-mp.sh)"
exec python3 -m pytest -ra "$@"
