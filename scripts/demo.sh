#!/usr/bin/env bash
# The demo command of the README: installs what is missing, synthesises 6 raw ASKAP-like beams
# and images them under mpirun with 3 ranks (FixMS, then WSClean Stokes I and QU passes).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/install.sh"
. "$here/scripts/env.sh"
exec python3 -m mpimager demo "$@"
