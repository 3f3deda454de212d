#!/usr/bin/env bash
# Test hosts on one machine (root; iproute2): each host a network namespace of its own, joined by
# veth pairs to a bridge that lives in a namespace of its own, with addresses in 198.18.0.0/15
# (reserved for network benchmarks). Nothing touches the machine's own interfaces.
#
#   scripts/netns_cluster.sh up N [NAME]    N hosts NAME-h1 .. NAME-hN (NAME: tsr by default);
#                                           prints a hostfile (one "host slots=..." line each)
#   scripts/netns_cluster.sh down [NAME]    removes every namespace of NAME (and so its links)
#   scripts/netns_cluster.sh exec HOST CMD  CMD (one shell command) inside HOST's namespace,
#                                           with HOST as its host name (unshare --uts)
#   scripts/netns_cluster.sh mpirun NAME MPIRUN-ARGS...
#                                           mpirun inside NAME-h1, starting the other hosts'
#                                           daemons through `exec`, over TCP on the hosts' links;
#                                           a daemon cut off from mpirun for 8 s (TCP keepalive)
#                                           ends its host's ranks; waiting ranks yield the cores
#                                           (the hosts share this machine's: a rank spinning in
#                                           a collective would starve the one computing)
#   scripts/netns_cluster.sh list [NAME]    the hosts of NAME that are up
#   scripts/netns_cluster.sh impair NAME HOST:DELAY:LOSS...
#                                           a delay (us, ms, s) and a loss rate (%) on each named
#                                           host's link, each way (host to host: both links'),
#                                           e.g. impair tsr 2:5ms:0 3:0ms:5; the bridge is
#                                           replaced by scripts/netns_switch.py (this VM's kernel
#                                           has no netem), the hosts' offloads turned off
#   scripts/netns_cluster.sh repair NAME    the bridge back, no delay or loss
#
# Host i has address 198.18.K.i/24 (K: a subnet of its own per NAME, from its hash) on eth0; the
# bridge's end of its link is hI in NAME-br (shape it there, or on eth0 inside the host, with tc).
# Ranks on one host share memory as on a real node; ranks on different hosts see different host
# names, so Open MPI carries their traffic over TCP.
set -euo pipefail

die() {
  echo "netns_cluster.sh: $*" >&2
  exit 2
}

subnet_of() {  # NAME -> the third octet of its /24 (1..250)
  echo $(( $(printf '%s' "$1" | cksum | cut -d' ' -f1) % 250 + 1 ))
}

namespaces() {  # every network namespace's name (the whole list read: no SIGPIPE under pipefail)
  ip netns list | awk '{print $1}'
}

ns_exists() {  # NS
  namespaces | awk -v ns="$1" '$1 == ns {found = 1} END {exit !found}'
}

hosts_of() {  # NAME -> its host namespaces, in order
  namespaces | awk -v name="$1" 'index($1, name "-h") == 1 && substr($1, length(name) + 3) ~ /^[0-9]+$/' |
    sort -V
}

check_name() {  # NAME: letters and digits, starting with a letter (namespace and host names)
  [[ $1 =~ ^[a-z][a-z0-9]{0,15}$ ]] || die "a cluster name is 1-16 lower-case letters and digits, starting with a letter, not '$1'"
}

up() {
  local n=$1 name=$2
  [[ $n =~ ^[0-9]+$ ]] && (( n >= 1 && n <= 200 )) || die "up wants a host count from 1 to 200, not '$n'"
  trap 'down "$name"' ERR  # a half-made cluster is removed
  [ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
  [ -z "$(hosts_of "$name")" ] && ! ns_exists "$name-br" ||
    die "$name is already up (scripts/netns_cluster.sh down $name first)"
  local k br=$name-br
  k=$(subnet_of "$name")
  ip netns add "$br"
  ip -n "$br" link set lo up
  ip -n "$br" link add br0 type bridge
  ip -n "$br" link set br0 up
  local i
  for i in $(seq 1 "$n"); do
    local host=$name-h$i
    ip netns add "$host"
    ip -n "$host" link set lo up
    # both ends are made inside the bridge's namespace, then one is moved into the host's
    ip -n "$br" link add "h$i" type veth peer name eth0 netns "$host"
    ip -n "$br" link set "h$i" master br0 up
    ip -n "$host" addr add "198.18.$k.$i/24" dev eth0
    ip -n "$host" link set eth0 up
  done
  for i in $(seq 1 "$n"); do  # every host knows the others' names
    local lines=""
    local j
    for j in $(seq 1 "$n"); do lines+="198.18.$k.$j $name-h$j"$'\n'; done
    mkdir -p "/etc/netns/$name-h$i"
    printf '127.0.0.1 localhost\n%s' "$lines" >"/etc/netns/$name-h$i/hosts"
  done
  local slots
  slots=$(nproc)
  for i in $(seq 1 "$n"); do echo "$name-h$i slots=$slots"; done
}

down() {
  local name=$1 ns pid
  for ns in $(hosts_of "$name") $(ns_exists "$name-br" && echo "$name-br"); do
    for pid in $(ip netns pids "$ns"); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns"
  done
  rm -rf /etc/netns/"$name"-h*  # (also what a reboot left: the namespaces gone, the files not)
}

impair() {  # NAME HOST:DELAY:LOSS...
  local name=$1
  shift
  local hosts br=$name-br
  hosts=$(hosts_of "$name")
  [ -n "$hosts" ] || die "$name is not up (scripts/netns_cluster.sh up N $name)"
  command -v ethtool >/dev/null || die "impair needs ethtool (apt-get install ethtool)"
  local n arg
  n=$(echo "$hosts" | wc -l)
  for arg in "$@"; do
    [[ $arg =~ ^([1-9][0-9]*):[0-9]+(\.[0-9]+)?(us|ms|s):([0-9]|[1-9][0-9])(\.[0-9]+)?$ ]] &&
      (( BASH_REMATCH[1] <= n )) ||
      die "impair wants HOST:DELAY:LOSS with a host 1-$n, a delay in us, ms or s and a loss under 100 (2:5ms:0), not '$arg'"
  done
  repair "$name"
  local i ports=() spec
  for i in $(seq 1 "$n"); do
    spec="h$i"
    for arg in "$@"; do
      [ "${arg%%:*}" = "$i" ] && spec="h$i:${arg#*:}"
    done
    ports+=(--port "$spec")
    # a frame is forwarded as read: whole checksums, one MTU each
    ip netns exec "$name-h$i" ethtool -K eth0 tx off tso off gso off gro off >/dev/null 2>&1 || true
    ip netns exec "$br" ethtool -K "h$i" tx off tso off gso off gro off >/dev/null 2>&1 || true
    ip -n "$br" link set "h$i" nomaster
  done
  local said
  said=$(mktemp)
  ip netns exec "$br" setsid python3 "$(cd "$(dirname "$0")" && pwd)/netns_switch.py" \
    "${ports[@]}" </dev/null >"$said" 2>&1 &
  for i in $(seq 1 100); do  # (it says "ready" once its ports are bound)
    grep -q '^ready$' "$said" && break
    sleep 0.1
  done
  if ! grep -q '^ready$' "$said"; then
    local why
    why=$(tail -1 "$said")
    rm -f "$said"
    repair "$name"
    die "the switch of $name did not start: $why"
  fi
  rm -f "$said"
}

repair() {  # NAME
  local name=$1 br=$1-br pid i
  ns_exists "$br" || die "$name is not up"
  for pid in $(ip netns pids "$br"); do kill -9 "$pid" 2>/dev/null || true; done
  for i in $(seq 1 "$(hosts_of "$name" | wc -l)"); do ip -n "$br" link set "h$i" master br0; done
}

exec_in() {
  local host=$1
  shift
  ns_exists "$host" || die "no host $host (scripts/netns_cluster.sh up first)"
  # (Open MPI's launcher passes the daemon's command line as one string, as ssh would; the
  # daemons inherit mpirun's environment, which ssh would not pass: -x still matters elsewhere)
  exec ip netns exec "$host" unshare --uts sh -c 'hostname "$1" && exec sh -c "$0"' "$*" "$host"
}

mpirun_in() {
  local name=$1
  shift
  local first
  first=$(hosts_of "$name" | head -1)
  [ -n "$first" ] || die "$name is not up (scripts/netns_cluster.sh up N $name)"
  local k
  k=$(subnet_of "$name")
  local agent
  agent="$(cd "$(dirname "$0")" && pwd)/$(basename "$0") exec"
  exec ip netns exec "$first" unshare --uts sh -c 'hostname "$0" && exec "$@"' "$first" \
    mpirun --mca plm_rsh_agent "$agent" --mca oob_tcp_if_include "198.18.$k.0/24" \
    --mca btl_tcp_if_include "198.18.$k.0/24" --mca btl self,vader,tcp \
    --mca oob_tcp_keepalive_time 5 --mca oob_tcp_keepalive_intvl 1 \
    --mca oob_tcp_keepalive_probes 3 --mca mpi_yield_when_idle 1 "$@"
}

cmd=${1:-}
case "$cmd" in
  up) check_name "${3:-tsr}"; up "${2:-}" "${3:-tsr}" ;;
  down) check_name "${2:-tsr}"; down "${2:-tsr}" ;;
  exec) [ $# -ge 3 ] || die "exec wants a host and a command"; shift; exec_in "$@" ;;
  mpirun) [ $# -ge 3 ] || die "mpirun wants a cluster name and mpirun's arguments"; shift
    check_name "$1"; mpirun_in "$@" ;;
  list) check_name "${2:-tsr}"; hosts_of "${2:-tsr}" ;;
  impair) [ $# -ge 3 ] || die "impair wants a cluster name and HOST:DELAY:LOSS..."; shift
    check_name "$1"; impair "$@" ;;
  repair) [ $# -eq 2 ] || die "repair wants a cluster name"; check_name "$2"; repair "$2" ;;
  *) die "usage: netns_cluster.sh up N [NAME] | down [NAME] | exec HOST CMD | mpirun NAME ARGS... | list [NAME] | impair NAME HOST:DELAY:LOSS... | repair NAME" ;;
esac
