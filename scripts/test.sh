#!/usr/bin/env bash
# The test command of the README: installs what is missing, then runs the whole test suite.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/install.sh"
. "$here/scripts/env.sh"
cd "$here"
exec python3 -m pytest -ra "$@"
