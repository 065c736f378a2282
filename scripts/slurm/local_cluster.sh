#!/usr/bin/env bash
# A throw-away one-node Slurm cluster for tests and local experiments.
#
#   scripts/slurm/local_cluster.sh up DIR     # write DIR/slurm.conf, start munged, slurmctld, slurmd
#   scripts/slurm/local_cluster.sh down DIR   # stop exactly the daemons recorded in DIR/*.pid
#   export SLURM_CONF=DIR/slurm.conf         # then sbatch/squeue/sacct/scontrol talk to it
#
# Everything lives under DIR: config, state, spool, logs, pid files, and its own munge key and
# socket, and the daemons listen on free ports picked at start-up, so the cluster neither needs
# nor disturbs /etc/slurm, /etc/munge, /run/munge or another local cluster (scripts/slurm/lib.sh
# writes the munged and slurm.conf parts, shared with scripts/test_slurm_multinode.sh).
# Needs root (SlurmUser=root) and the Debian packages slurm-wlm and munge.
set -euo pipefail
# shellcheck source=scripts/slurm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

die() { echo "local_cluster: $*" >&2; exit 1; }

free_port() {
    # A TCP port nobody listens on, in 20000-59999.
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        if ! ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then echo "$p"; return 0; fi
    done
    die "no free port found"
}

pid_alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

wait_for() { # wait_for SECONDS command...
    local t=$1; shift
    local end=$((SECONDS + t))
    while ((SECONDS < end)); do "$@" && return 0; sleep 0.5; done
    return 1
}

cmd_up() {
    local dir=$1
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    local host cpus mem cport dport
    host=$(hostname -s)
    cpus=$(nproc)
    # RealMemory in MB, a little under what the machine has so slurmd does not drain the node.
    mem=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
    cport=$(free_port); dport=$(free_port)
    while [[ "$dport" == "$cport" ]]; do dport=$(free_port); done
    # Munge: a private key and socket for this cluster; then its slurm.conf (scripts/slurm/lib.sh).
    munged_start "$dir" || die "munged did not start (see $dir/log/munged.log)"
    echo "$MUNGED_PID" >"$dir/munged.pid"
    slurm_conf_write "$dir" moedisttest "$host(127.0.0.1)" "$cport" "$dport" \
        "NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN"

    slurmctld -D -i -f "$dir/slurm.conf" >"$dir/log/slurmctld.out" 2>&1 &
    echo $! >"$dir/slurmctld.pid"
    slurmd -D -f "$dir/slurm.conf" >"$dir/log/slurmd.out" 2>&1 &
    echo $! >"$dir/slurmd.pid"

    export SLURM_CONF="$dir/slurm.conf"
    if ! wait_for 60 node_idle "$host"; then
        sinfo -N -l >&2 || true
        tail -20 "$dir/log/slurmctld.log" "$dir"/log/slurmd-*.log >&2 || true
        die "node $host did not become idle"
    fi
    echo "local_cluster: up (SLURM_CONF=$dir/slurm.conf, slurmctld pid $(cat "$dir/slurmctld.pid"), slurmd pid $(cat "$dir/slurmd.pid"), munged pid $(cat "$dir/munged.pid"))"
}

node_idle() {
    local state
    state=$(sinfo -h -N -n "$1" -o '%t' 2>/dev/null | head -1) || return 1
    [[ "$state" == idle ]]
}

cmd_down() {
    local dir=$1 name pid
    # slurmd first (it kills its job steps' slurmstepd on shutdown), then slurmctld, then munged.
    for name in slurmd slurmctld munged; do
        [[ -f "$dir/$name.pid" ]] || continue
        pid=$(cat "$dir/$name.pid")
        if pid_alive "$pid"; then
            kill -TERM "$pid" 2>/dev/null || true
            wait_for 20 bash -c "! kill -0 $pid 2>/dev/null" || kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$dir/$name.pid"
    done
}

case "${1:-}" in
    up) [[ $# -eq 2 ]] || die "usage: $0 up DIR"; cmd_up "$2" ;;
    down) [[ $# -eq 2 ]] || die "usage: $0 down DIR"; cmd_down "$2" ;;
    *) die "usage: $0 up|down DIR" ;;
esac
