#!/usr/bin/env bash
# The test command of the README (CI runs it through .ci/run). It tests what users install:
#   suite   the sdist and, from it, the wheel are built; the wheel goes into a fresh venv (no system
#           site-packages) with its [test,report,docs] extras, and the whole suite runs from the unpacked sdist
#           (its mpimager/ removed: only the install can be imported) as the unprivileged user
#           $MPIMAGER_TEST_USER; the tests that need root (the local Slurm cluster: slurmd, munged) skip
#           there with their reason and then run as root against the same install (-m "slurm or multinode or root");
#   floors  the declared lowest versions (scripts/floors.py) in another fresh venv: a fast subset;
#   pipmpi  a fresh venv with the MPICH from pip (the `mpich` wheel) instead of Debian's Open MPI: MPI tests.
# MPIMAGER_TEST_JOBS (default "suite floors pipmpi") chooses the jobs; arguments go to the suite's pytest
# (`bash scripts/test.sh -x tests/test_config.py`). pip's downloads and built wheels are cached outside the
# clone, in $MPIMAGER_CACHE/pip (default /var/cache/mpimager/pip). Run as root (it installs what is missing).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MPIMAGER_EDITABLE=no bash "$here/scripts/install.sh"   # system packages; the package itself goes into venvs
. "$here/scripts/env.sh"
cd "$here"
# slow builds, cached outside the clone by version (a no-op when cached)
echo "test.sh: WSClean container rootfs: $(bash scripts/build-wsclean-rootfs.sh)"
echo "test.sh: wsclean-mp: $(bash scripts/build-wsclean-mp.sh)"

jobs="${MPIMAGER_TEST_JOBS:-suite floors pipmpi}"
user="${MPIMAGER_TEST_USER:-mpimager-test}"
export PIP_CACHE_DIR="${MPIMAGER_CACHE:-/var/cache/mpimager}/pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# not under /tmp: the multi-node cluster's nodes each mount a private /tmp, and they run the venv's python
work="${MPIMAGER_TEST_WORK:-/var/tmp/mpimager-test}"
rm -rf "$work" && mkdir -p "$work" "$PIP_CACHE_DIR"
PY="${PYTHON:-python3}"             # builds the sdist and the wheel
# the venvs' interpreter: Debian's, which the unprivileged user can run (root's own pythons may live in /root)
VENV_PY="${MPIMAGER_VENV_PYTHON:-/usr/bin/python3}"
# tests that prove the floors and an MPI from pip: quick ones over config, planning, FixMS, reduce and a run
FAST=(tests/test_config.py tests/test_plan.py tests/test_wsclean_options.py tests/test_reduce_beams.py
      tests/test_reduce_options.py tests/test_fixms_step.py tests/test_api.py)
# (test_mpiqueue.py passes Open MPI's own mpirun options: it runs with Debian's Open MPI in the suite)
MPI_TESTS=(tests/test_api.py "tests/test_cli_commands.py::test_the_demo_runs_from_the_packaged_config"
           "tests/test_run_mpi.py::test_a_config_error_ends_every_rank_at_once_with_one_message"
           "tests/test_run_mpi.py::test_a_corrupt_ms_fails_its_jobs_while_the_others_complete")

t0=$SECONDS
echo "test.sh: building the sdist and the wheel"
"$PY" -m build --outdir "$work/dist" "$here" >"$work/build.log" 2>&1 || { tail -20 "$work/build.log"; exit 1; }
sdist="$(ls "$work"/dist/mpimager-*.tar.gz)" wheel="$(ls "$work"/dist/mpimager-*.whl)"
tar -xzf "$sdist" -C "$work" && src="$(ls -d "$work"/mpimager-*/)" && rm -rf "$src/mpimager"

venv() {  # venv DIR REQUIREMENTS...: a fresh venv (no system site-packages) with REQUIREMENTS
  local dir="$1"; shift
  local t=$SECONDS
  "$VENV_PY" -m venv "$dir"
  "$dir/bin/python" -m pip install -q "$@" 2>&1 | grep -v "^WARNING: Location" || true
  (cd / && "$dir/bin/python" -c "import mpimager") || { echo "test.sh: $dir: mpimager does not import"; exit 1; }
  echo "test.sh: venv $dir: installed in $((SECONDS - t)) s, $(du -sh "$dir" | cut -f1)"
}

in_src() {  # in_src VENV PYTEST_ARGS...: pytest of the venv, run from the unpacked sdist
  local dir="$1"; shift
  (cd "$src" && PATH="$dir/bin:$PATH" "$dir/bin/python" -m pytest -ra -p no:cacheprovider "$@")
}

status=0
if [[ " $jobs " == *" suite "* ]]; then
  venv "$work/venv" "$wheel[test,report,docs]"
  id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
  chown -R "$user" "$work"
  echo "test.sh: the suite as $user, against $(cd / && "$work/venv/bin/python" -c 'import mpimager; print(mpimager.__file__)')"
  # the rootfs root built above, read-only for the user (the build script would otherwise build its own)
  runuser -u "$user" -- env HOME="$(getent passwd "$user" | cut -d: -f6)" PATH="$work/venv/bin:$PATH" \
    MPIMAGER_ROOTFS_CACHE="$(dirname "$(bash scripts/build-wsclean-rootfs.sh)")" \
    bash -c 'cd "$0" && exec "$1/bin/python" -m pytest -ra -p no:cacheprovider "${@:2}"' "$src" "$work/venv" "$@" \
    || status=$?
  echo "test.sh: the tests that need root, as root, against the same install"
  in_src "$work/venv" -m "slurm or multinode or root" "$@" || status=$?
  echo "test.sh: ruff (ruff.toml) over the sources, mypy over the installed package"
  "$work/venv/bin/python" -m pip install -q "mypy==2.4.1" "ruff==0.17.6" 2>&1 | grep -v "^WARNING: Location" || true
  "$work/venv/bin/ruff" check --config "$here/ruff.toml" "$here/mpimager" "$here/tests" "$here/bench" "$here/scripts" \
    || status=$?
  (cd "$work" && "$work/venv/bin/python" -m mypy --ignore-missing-imports --follow-imports=silent \
     -p mpimager) || status=$?
fi
if [[ " $jobs " == *" floors "* ]]; then
  echo "test.sh: the declared lowest versions"
  "$PY" scripts/floors.py test report >"$work/floors.txt"  # name==floor: the resolver must keep to them
  venv "$work/floors" -r "$work/floors.txt" "$wheel[test,report]"
  "$work/floors/bin/python" -m pip check
  in_src "$work/floors" -q "${FAST[@]}" || status=$?
fi
if [[ " $jobs " == *" pipmpi "* ]]; then
  echo "test.sh: an MPI from pip (mpich) instead of Debian's Open MPI"
  venv "$work/pipmpi" mpich "$wheel[test]"
  "$work/pipmpi/bin/python" -c 'from mpi4py import MPI; print("test.sh:", MPI.Get_library_version().splitlines()[0])'
  in_src "$work/pipmpi" -q "${MPI_TESTS[@]}" || status=$?
fi
echo "test.sh: $((SECONDS - t0)) s after the system set-up; exit $status"
exit $status
