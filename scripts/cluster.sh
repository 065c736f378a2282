#!/usr/bin/env bash
# An emulated cluster on one machine, for tests and for rehearsing multi-node runs: N "hosts", each
# a network namespace with its own hostname (UTS namespace), loopback, one veth into a bridge, and
# an /etc/hosts that names every host. The bridge lives in a namespace of its own, so the machine's
# own interfaces, routes and /etc/hosts are never touched. All hosts see the same file system.
#
#   scripts/cluster.sh up N [--netem 'rate 1gbit delay 0.5ms'] [--hostnames a,b,...]
#   scripts/cluster.sh exec HOST CMD...        # run CMD on HOST (its hostname, network, /etc/hosts)
#   scripts/cluster.sh hostfile SLOTS...       # a hostfile: "node01 slots=2", "node02 slots=1", ...
#   scripts/cluster.sh mpirun-args             # the --mca options mpirun needs on this cluster
#   scripts/cluster.sh shape 'rate 10gbit'     # change (or with '' remove) the link shaping
#   scripts/cluster.sh kill HOST [SIGNAL]      # signal every process of HOST (default KILL)
#   scripts/cluster.sh status                  # hosts, addresses, shaping, processes per host
#   scripts/cluster.sh down                    # remove everything (idempotent)
#
# Hosts are named node01 ... nodeNN by default, as in hostfiles/two-nodes and hostfiles/8-nodes-x-8,
# so those hostfiles run as written (`--hostnames` chooses others). Their namespaces are
# $MOE_CLUSTER-h1 ... -hN and the bridge's $MOE_CLUSTER-br (MOE_CLUSTER defaults to "moe"; give
# each concurrent cluster its own name). Addresses: 10.231.0.(10+i)/24 on every cluster (the
# clusters are isolated from each other and from the machine).
#
# mpirun runs on one of the hosts (the "login node") and starts the ranks of the other hosts through
# scripts/cluster-agent.sh, Open MPI's rsh agent here in place of ssh:
#
#   scripts/cluster.sh up 2
#   scripts/cluster.sh exec node01 mpirun $(scripts/cluster.sh mpirun-args) --hostfile hostfiles/two-nodes -np 4 ...
#   scripts/cluster.sh down
#
# Link shaping (`--netem`): the options of tc-netem(8), applied to every host's outgoing veth, so a
# one-way trip between two hosts takes the delay once and each direction is limited to the rate. A
# kernel without sch_netem (CONFIG_NET_SCH_NETEM) can still limit the rate: `rate R` alone is then
# applied with tbf; a delay is refused there, since it cannot be emulated.
#
# Needs root, iproute2 (ip, tc) and util-linux (unshare). State: /run/moe-cluster/$MOE_CLUSTER.
set -euo pipefail

CLUSTER=${MOE_CLUSTER:-moe}
[[ $CLUSTER =~ ^[a-z][a-z0-9]{0,7}$ ]] || { echo "cluster: MOE_CLUSTER '$CLUSTER' must be 1-8 lower-case letters/digits, starting with a letter" >&2; exit 2; }
STATE=/run/moe-cluster/$CLUSTER
BRNS=$CLUSTER-br
SUBNET=10.231.0
PREFIX_LEN=24

die() { echo "cluster: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

# The namespace of HOST (a hostname or a namespace name) on this cluster.
host_ns() {
    [[ -f $STATE/hosts ]] || die "no cluster '$CLUSTER' is up (scripts/cluster.sh up N)"
    local ns
    ns=$(awk -v h="$1" '$1 == h || $2 == h {print $1; exit}' "$STATE/hosts")
    [[ -n $ns ]] || die "no host '$1' on cluster '$CLUSTER' (hosts: $(awk '{printf "%s ", $2}' "$STATE/hosts"))"
    echo "$ns"
}
host_name() { awk -v n="$1" '$1 == n {print $2; exit}' "$STATE/hosts"; }

# tc commands for one interface from netem options; netem if the kernel has it, else tbf for a rate.
apply_shaping() { # apply_shaping NS DEV 'netem options'
    local ns=$1 dev=$2 opts=$3
    ip -n "$ns" link set "$dev" up
    tc -n "$ns" qdisc del dev "$dev" root 2>/dev/null || true
    [[ -z $opts ]] && return 0
    local err
    if err=$(tc -n "$ns" qdisc add dev "$dev" root netem $opts 2>&1); then return 0; fi
    if ! grep -qi "unknown" <<<"$err"; then die "tc netem $opts: $err"; fi
    # No sch_netem in this kernel: only a rate can be emulated (tbf).
    read -r -a words <<<"$opts"
    if [[ ${#words[@]} != 2 || ${words[0]} != rate ]]; then
        die "this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM), so '$opts' cannot be emulated; only 'rate R' (via tbf) works here"
    fi
    local rate=${words[1]} bits
    bits=$(rate_bits "$rate") || die "cannot read the rate '$rate' (e.g. 1gbit, 500mbit)"
    # Bucket: 2 ms at the rate, at least 64 KiB (veth hands over GSO packets of up to 64 KiB).
    local burst=$((bits / 8 / 500))
    ((burst < 65536)) && burst=65536
    tc -n "$ns" qdisc add dev "$dev" root tbf rate "$rate" burst "$burst" latency 100ms \
        || die "tc tbf rate $rate failed"
}

rate_bits() { # 1gbit -> 1000000000
    local r=${1,,}
    case $r in
        *gbit) echo $(( ${r%gbit} * 1000000000 )) ;;
        *mbit) echo $(( ${r%mbit} * 1000000 )) ;;
        *kbit) echo $(( ${r%kbit} * 1000 )) ;;
        *bit) echo $(( ${r%bit} )) ;;
        *) return 1 ;;
    esac
}

cmd_down() {
    # Every process still in one of the cluster's namespaces was started on the cluster: end it.
    local ns
    for ns in $(ip netns list | awk '{print $1}' | grep -E "^$CLUSTER-(h[0-9]+|br)$" || true); do
        local pids
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [[ -n $pids ]] && kill -9 $pids 2>/dev/null || true
    done
    for ns in $(ip netns list | awk '{print $1}' | grep -E "^$CLUSTER-(h[0-9]+|br)$" || true); do
        local i
        for i in 1 2 3 4 5; do
            [[ -z $(ip netns pids "$ns" 2>/dev/null) ]] && break
            sleep 0.2
        done
        ip netns del "$ns" 2>/dev/null || true
        rm -rf "/etc/netns/$ns"
    done
    rm -rf "$STATE"
    if ip netns list | awk '{print $1}' | grep -qE "^$CLUSTER-(h[0-9]+|br)$"; then
        die "could not remove every namespace of cluster '$CLUSTER': $(ip netns list | grep -E "^$CLUSTER-" | tr '\n' ' ')"
    fi
}

cmd_up() {
    local n=${1:-}
    [[ $n =~ ^[0-9]+$ && $n -ge 1 && $n -le 64 ]] || die "up N: N must be 1..64 (got '${n}')"
    shift
    local netem="" hostnames=""
    while (($#)); do
        case $1 in
            --netem) netem=${2?--netem needs an argument}; shift 2 ;;
            --hostnames) hostnames=${2?--hostnames needs a list}; shift 2 ;;
            *) die "up: unknown option '$1'" ;;
        esac
    done
    local -a names
    if [[ -n $hostnames ]]; then
        IFS=, read -r -a names <<<"$hostnames"
        ((${#names[@]} == n)) || die "--hostnames gives ${#names[@]} names for $n hosts"
    else
        local i
        for ((i = 1; i <= n; i++)); do names+=("$(printf 'node%02d' "$i")"); done
    fi
    [[ $EUID == 0 ]] || die "needs root (network namespaces)"
    if [[ -d $STATE ]] || ns_exists "$BRNS"; then
        die "cluster '$CLUSTER' is already up (scripts/cluster.sh down first, or MOE_CLUSTER=other)"
    fi
    # A failure half-way leaves nothing behind.
    trap 'rc=$?; if ((rc != 0)); then cmd_down 2>/dev/null || true; fi' EXIT
    trap 'exit 130' INT TERM
    mkdir -p "$STATE"
    : >"$STATE/hosts"
    ip netns add "$BRNS"
    ip -n "$BRNS" link set lo up
    ip -n "$BRNS" link add br0 type bridge
    ip -n "$BRNS" link set br0 up
    local hosts_file="127.0.0.1 localhost"$'\n'
    local i
    for ((i = 1; i <= n; i++)); do
        hosts_file+="$SUBNET.$((10 + i)) ${names[i - 1]}"$'\n'
    done
    for ((i = 1; i <= n; i++)); do
        local ns=$CLUSTER-h$i name=${names[i - 1]} addr=$SUBNET.$((10 + i))
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        ip -n "$BRNS" link add "h$i" type veth peer name eth0 netns "$ns"
        ip -n "$BRNS" link set "h$i" master br0
        ip -n "$BRNS" link set "h$i" up
        ip -n "$ns" addr add "$addr/$PREFIX_LEN" dev eth0
        apply_shaping "$ns" eth0 "$netem"
        mkdir -p "/etc/netns/$ns"
        printf '%s' "$hosts_file" >"/etc/netns/$ns/hosts"
        echo "$ns $name $addr" >>"$STATE/hosts"
    done
    echo "$netem" >"$STATE/netem"
    trap - EXIT
    echo "cluster '$CLUSTER': $n host(s) $(awk '{printf "%s(%s) ", $2, $3}' "$STATE/hosts")${netem:+, links: $netem}"
}

cmd_shape() {
    local netem=${1-}
    [[ -f $STATE/hosts ]] || die "no cluster '$CLUSTER' is up"
    local ns
    for ns in $(awk '{print $1}' "$STATE/hosts"); do apply_shaping "$ns" eth0 "$netem"; done
    echo "$netem" >"$STATE/netem"
}

# Runs CMD inside HOST's namespaces: network (with /etc/netns/NS/hosts as /etc/hosts), a UTS
# namespace with the host's name, and (through ip netns exec) a mount namespace of its own.
# MOE_CLUSTER_PRIVATE="HOST:DIR ..." mounts an empty tmpfs over DIR on HOST only: a directory that
# is not shared with the other hosts (node-local scratch), for tests.
cmd_exec() {
    (($# >= 2)) || die "exec HOST CMD..."
    local ns name
    ns=$(host_ns "$1")
    name=$(host_name "$ns")
    shift
    local private=""
    local item
    for item in ${MOE_CLUSTER_PRIVATE:-}; do
        if [[ ${item%%:*} == "$name" || ${item%%:*} == "$ns" ]]; then private+=" ${item#*:}"; fi
    done
    export MOE_CLUSTER=$CLUSTER
    # shellcheck disable=SC2016
    exec ip netns exec "$ns" unshare --uts --mount --propagation private sh -c '
        hostname "$1" || exit 1
        for d in $2; do mkdir -p "$d" && mount -t tmpfs -o size=64m moe-private "$d" || exit 1; done
        shift 2
        exec "$@"' cluster-exec "$name" "$private" "$@"
}

cmd_hostfile() {
    [[ -f $STATE/hosts ]] || die "no cluster '$CLUSTER' is up"
    (($# >= 1)) || die "hostfile SLOTS... (slots for host 1, host 2, ...)"
    local -a names
    mapfile -t names < <(awk '{print $2}' "$STATE/hosts")
    (($# <= ${#names[@]})) || die "hostfile: $# slot counts for ${#names[@]} hosts"
    local i=0 s
    for s in "$@"; do
        [[ $s =~ ^[1-9][0-9]*$ ]] || die "hostfile: slots must be positive integers (got '$s')"
        echo "${names[i]} slots=$s"
        i=$((i + 1))
    done
}

cmd_mpirun_args() {
    local agent
    agent=$(cd "$(dirname "$0")" && pwd)/cluster-agent.sh
    echo "--mca plm_rsh_agent $agent --mca btl tcp,self --mca btl_tcp_if_include $SUBNET.0/$PREFIX_LEN --mca oob_tcp_if_include $SUBNET.0/$PREFIX_LEN"
}

cmd_kill() {
    local ns sig=${2:-KILL} pids
    ns=$(host_ns "${1?kill HOST [SIGNAL]}")
    pids=$(ip netns pids "$ns")
    [[ -z $pids ]] && return 0
    kill -s "$sig" $pids 2>/dev/null || true
}

cmd_status() {
    [[ -f $STATE/hosts ]] || { echo "cluster '$CLUSTER': down"; return 0; }
    echo "cluster '$CLUSTER', links: $(cat "$STATE/netem" 2>/dev/null || true)"
    local ns name addr
    while read -r ns name addr; do
        echo "  $name $addr ($ns): $(ip netns pids "$ns" | wc -l) process(es)"
    done <"$STATE/hosts"
}

cmd=${1:-}
shift || true
case $cmd in
    up) cmd_up "$@" ;;
    down) cmd_down ;;
    exec) cmd_exec "$@" ;;
    hostfile) cmd_hostfile "$@" ;;
    mpirun-args) cmd_mpirun_args ;;
    shape) cmd_shape "$@" ;;
    kill) cmd_kill "$@" ;;
    status) cmd_status ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
esac
