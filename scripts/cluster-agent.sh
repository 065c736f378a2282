#!/usr/bin/env bash
# Open MPI's rsh agent on the emulated cluster (scripts/cluster.sh), in place of ssh:
#   mpirun --mca plm_rsh_agent scripts/cluster-agent.sh ...
# Open MPI calls it as `AGENT HOST COMMAND WORDS...`, like `ssh HOST COMMAND WORDS...`: the words
# make one shell command line that runs on HOST (its network namespace and hostname, the cluster
# of $MOE_CLUSTER, which `scripts/cluster.sh exec` sets). MOE_CLUSTER_PRIVATE="HOST:DIR" hides DIR
# on HOST behind an empty directory (see scripts/cluster.sh).
set -euo pipefail
[[ $# -ge 2 ]] || { echo "cluster-agent: usage: $0 HOST COMMAND..." >&2; exit 2; }
host=$1
shift
exec "$(dirname "$0")/cluster.sh" exec "$host" /bin/sh -c "$*"
