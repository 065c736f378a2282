# Shared by scripts/slurm/local_cluster.sh (one node) and scripts/test_slurm_multinode.sh (emulated
# nodes): the Debian packages, a private munged, and the slurm.conf both write. Source it (bash).
# Every daemon's state, spool, log and pid file lives under one directory, so a test cluster neither
# needs nor disturbs /etc/slurm, /etc/munge, /run/munge or another test cluster.

# slurm_install_missing: installs slurm-wlm and munge with apt when a daemon or sbatch is missing.
slurm_install_missing() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null; then
        return 0
    fi
    echo "installing slurm-wlm and munge" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null; }
}

# munged_start DIR: a munged with its own key and socket under DIR/munge, logging to DIR/log. Sets
# MUNGED_PID; returns 1 when the socket does not appear within 20 s.
munged_start() {
    local dir=$1
    mkdir -p "$dir/munge" "$dir/log"
    chmod 711 "$dir/munge"      # the socket must be reachable by slurmstepd's job processes
    if [[ ! -s "$dir/munge/munge.key" ]]; then
        dd if=/dev/urandom of="$dir/munge/munge.key" bs=1 count=1024 status=none
    fi
    chmod 400 "$dir/munge/munge.key"
    munged --foreground --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/munge/munged.pid.own" --log-file="$dir/log/munged.log" \
        --seed-file="$dir/munge/munged.seed" >"$dir/log/munged.out" 2>&1 &
    MUNGED_PID=$!
    local _
    for _ in $(seq 1 80); do [[ -S $dir/munge/munge.socket ]] && return 0; sleep 0.25; done
    return 1
}

# slurm_conf_write DIR NAME CONTROLLER CTLD_PORT SLURMD_PORT NODELIST: writes DIR/slurm.conf for a
# test cluster named NAME. CONTROLLER is "host(address)"; NODELIST holds one "NodeName=... " line per
# node; the partition `debug` has them all. %n in the slurmd paths keeps one slurmd per node apart.
# No cgroups (proctrack/linuxproc, task/none): it works in containers without systemd.
slurm_conf_write() {
    local dir=$1 name=$2 controller=$3 cport=$4 dport=$5 nodelist=$6
    local nodes
    nodes=$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' <<<"$nodelist" | paste -sd, -)
    mkdir -p "$dir"/{state,spool,log}
    cat >"$dir/slurm.conf" <<CONF
# A test cluster under $dir (written by scripts/slurm/lib.sh)
ClusterName=$name
SlurmctldHost=$controller
SlurmctldPort=$cport
SlurmdPort=$dport
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/slurmd-%n
SlurmctldPidFile=$dir/slurmctld.pid.own
SlurmdPidFile=$dir/slurmd-%n.pid.own
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1
MinJobAge=600
KillWait=10
InactiveLimit=0
MessageTimeout=20
SlurmctldTimeout=60
SlurmdTimeout=120
$nodelist
PartitionName=debug Nodes=$nodes Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
}
