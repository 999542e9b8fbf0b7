#!/usr/bin/env bash
# Install everything mpimager and its tests need on a Debian bookworm machine (run as root).
# Idempotent and quick when everything is already there.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

APT_PACKAGES=(
  wsclean casacore-data            # the imager under test, and its measures data
  openmpi-bin libopenmpi-dev       # mpirun, and the MPI library mpi4py loads
  bubblewrap mmdebstrap            # the WSClean container rootfs and the singularity stand-in (tests)
  chromium                         # renders the run report in the tests
  python3-venv                     # scripts/test.sh installs the wheel into fresh venvs of Debian's python
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install.sh: apt-get install ${missing[*]}"
  apt-get update -qq -o DPkg::Lock::Timeout=600
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 \
    "${missing[@]}" >/dev/null
fi
bash "$here/scripts/install-slurm.sh"   # Slurm, munge and PMIx for the tests' local cluster

PY="${PYTHON:-python3}"
# asked from / so that the answer is the installed package, not ./mpimager of the current directory
installed="$(cd / && "$PY" -c 'import mpimager, os; print(os.path.dirname(os.path.dirname(mpimager.__file__)))' \
             2>/dev/null || true)"
# MPIMAGER_EDITABLE=no (scripts/test.sh, which tests the built wheel in venvs of its own) leaves it alone
if [ "${MPIMAGER_EDITABLE:-yes}" = no ]; then
  :
elif [ "$installed" != "$here" ] || ! (cd / && "$PY" -c "import pytest, pytest_timeout, matplotlib, reproject" 2>/dev/null); then
  echo "install.sh: pip install -e $here[test,report]"
  "$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore -e "$here[test,report]"
fi
# scripts/test.sh builds the sdist and the wheel it tests
(cd / && "$PY" -c "import build" 2>/dev/null) || "$PY" -m pip install -q --disable-pip-version-check \
  --root-user-action=ignore build
