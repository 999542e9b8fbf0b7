#!/usr/bin/env bash
# Install Slurm (slurmctld, slurmd, client tools), munge and the PMIx support `srun --mpi=pmix`
# needs, from Debian bookworm, for the tests' one-node local cluster (tests/fixtures.slurm.py).
# Idempotent and quick when everything is installed. Starts no daemon: the tests do that.
# Run as root.
set -euo pipefail

log() { echo "install-slurm: $*" >&2; }

# slurm-wlm: slurmctld + slurmd + client; slurm-wlm-basic-plugins holds mpi_pmix, which loads libpmix2.
APT_PACKAGES=(slurm-wlm slurm-wlm-basic-plugins munge libpmix2)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { log "error: installing ${missing[*]} needs root"; exit 1; }
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq -o DPkg::Lock::Timeout=600
  apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
fi

# munged needs a key; the package normally creates one, but make sure (mungekey is munge >= 0.5.14).
if [ ! -s /etc/munge/munge.key ]; then
  log "creating /etc/munge/munge.key"
  mkdir -p /etc/munge
  if command -v mungekey >/dev/null; then
    mungekey --create --keyfile=/etc/munge/munge.key
  else
    create-munge-key -f
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
fi

# `srun --mpi=list` only needs a parsable slurm.conf: give it a throwaway one.
check_dir="$(mktemp -d)"
trap 'rm -rf "$check_dir"' EXIT
host="$(hostname)"
printf 'ClusterName=check\nSlurmctldHost=%s\nNodeName=%s CPUs=1\nPartitionName=p Nodes=%s Default=YES\n' \
  "$host" "$host" "$host" >"$check_dir/slurm.conf"
if ! SLURM_CONF="$check_dir/slurm.conf" srun --mpi=list 2>&1 | grep -qw pmix; then
  log "error: 'srun --mpi=list' does not list pmix after installing ${APT_PACKAGES[*]}"
  exit 1
fi
