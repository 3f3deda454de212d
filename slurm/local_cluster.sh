#!/usr/bin/env bash
# A local Slurm (munge + slurmctld + slurmd) in a scratch folder, for trying the sbatch scripts on
# one machine and for the tests. Run as root (the daemons are started by hand: no systemd).
#
#   slurm/local_cluster.sh start DIR              one node: this machine; prints
#                                                 "export SLURM_CONF=DIR/slurm.conf"
#   slurm/local_cluster.sh start DIR --hosts NAME one node per host of the test hosts NAME
#                                                 (scripts/netns_cluster.sh up N NAME): a slurmd
#                                                 inside each host's namespace under its name
#                                                 (slurmd -N), slurmctld inside NAME-h1. The
#                                                 daemons are reached on the hosts' addresses
#                                                 only, so client commands run inside a host:
#                                                 scripts/netns_cluster.sh exec NAME-h1 "sbatch ..."
#   slurm/local_cluster.sh stop DIR
#
# Each slurmd has its own spool, TmpFS, log and pid file (DIR/spool-<node>, DIR/tmp-<node>,
# DIR/slurmd-<node>.log): a host's ranks see their host's name and address, so Open MPI keeps
# shared memory inside a host and TCP between hosts, as on real nodes. munged runs once, outside
# the namespaces: its socket is a file, reached from every namespace (as a shared munge key would
# be on a real cluster).
set -euo pipefail
STARTED=0  # whether a daemon of DIR may be running (then a failure stops them first)
die() {
  if [ "$STARTED" = 1 ]; then stop; fi
  echo "local_cluster.sh: $*" >&2
  exit 2
}
usage="usage: local_cluster.sh start DIR [--hosts NAME] | stop DIR"
cmd=${1:-}
[ -n "${2:-}" ] || die "$usage"
DIR=$(mkdir -p "$2" && cd "$2" && pwd)
CONF=$DIR/slurm.conf
HERE=$(cd "$(dirname "$0")" && pwd)
NETNS=$HERE/../scripts/netns_cluster.sh

start() {  # [NAME]: the test hosts' cluster, or none for this machine alone
  local name=${1:-}
  for p in slurmctld slurmd munged sbatch; do
    command -v "$p" >/dev/null || [ -x "/usr/sbin/$p" ] ||
      die "$p is missing (apt-get install slurm-wlm munge)"
  done
  local nodes=() addrs=() controller h
  if [ -n "$name" ]; then
    mapfile -t nodes < <("$NETNS" list "$name")
    [ ${#nodes[@]} -gt 0 ] || die "the test hosts $name are not up (scripts/netns_cluster.sh up N $name)"
    local addr
    for h in "${nodes[@]}"; do
      addr=$(ip -n "$h" -4 -o addr show dev eth0 | awk '{split($4, a, "/"); print a[1]}')
      [ -n "$addr" ] || die "$h has no IPv4 address on eth0"
      addrs+=("$addr")
    done
    controller="${nodes[0]}(${addrs[0]})"
  else
    nodes=("$(hostname -s)")
    addrs=("")
    controller=${nodes[0]}
  fi
  local cpus mem
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
  mkdir -p "$DIR/state" /run/munge
  chown munge:munge /run/munge
  if ! pgrep -x munged >/dev/null; then runuser -u munge -- /usr/sbin/munged; fi
  local i node_lines=""
  for i in "${!nodes[@]}"; do
    mkdir -p "$DIR/spool-${nodes[$i]}" "$DIR/tmp-${nodes[$i]}"
    node_lines+="NodeName=${nodes[$i]}${addrs[$i]:+ NodeAddr=${addrs[$i]}} CPUs=$cpus Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$mem State=UNKNOWN"$'\n'
  done
  local all
  all=$(IFS=,; echo "${nodes[*]}")
  # TmpFS per node: Slurm's PMIx plugin makes a folder there named by job and step only, which
  # the nodes' steps would both make in a /tmp they share
  cat > "$CONF" <<EOF
ClusterName=local
SlurmctldHost=$controller
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool-%n
TmpFS=$DIR/tmp-%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
MailProg=/bin/true
ReturnToService=2
${node_lines}PartitionName=debug Nodes=$all Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
  local run=()  # how a client command reaches the controller
  STARTED=1
  if [ -n "$name" ]; then
    local conf  # (quoted for the command line the host's shell runs)
    printf -v conf %q "$CONF"
    "$NETNS" exec "${nodes[0]}" "/usr/sbin/slurmctld -f $conf" ||
      die "slurmctld did not start in ${nodes[0]}; see $DIR/slurmctld.log"
    # `ip netns exec` mounts a sysfs of the namespace's own on /sys, without the machine's cgroup
    # hierarchies, which slurmd's cgroup plugin reads as it starts: the same ones are mounted
    # again there (a host's jobs are this machine's processes)
    local cgroups
    cgroups=$(awk '$2 ~ "^/sys/fs/cgroup(/|$)" {printf "mkdir -p %s && mount -t %s -o %s %s %s && ", $2, $3, $4, $1, $2}' /proc/self/mounts)
    for h in "${nodes[@]}"; do
      "$NETNS" exec "$h" "$cgroups/usr/sbin/slurmd -f $conf -N $h" ||
        die "the slurmd of $h did not start; see $DIR/slurmd-$h.log"
    done
    run=("$NETNS" exec "${nodes[0]}")
  else
    /usr/sbin/slurmctld -f "$CONF"
    /usr/sbin/slurmd -f "$CONF"
    run=(sh -c)
  fi
  local up=0
  for _ in $(seq 150); do  # until every node takes jobs
    up=$(SLURM_CONF=$CONF "${run[@]}" "sinfo -h -N -o %t 2>/dev/null" | grep -cE '^(idle|mix|alloc)$' || true)
    if [ "$up" = "${#nodes[@]}" ]; then
      echo "export SLURM_CONF=$CONF"
      return 0
    fi
    sleep 0.2
  done
  die "$(( ${#nodes[@]} - up )) of ${#nodes[@]} node(s) did not come up; see $DIR/slurmctld.log and $DIR/slurmd-*.log"
}

stop() {  # the daemons whose pid files DIR holds (checked to be Slurm's: a pid may be reused)
  local f pid pids=()
  for f in "$DIR"/slurmd-*.pid "$DIR"/slurmd.pid "$DIR"/slurmctld.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if [[ $pid =~ ^[0-9]+$ ]] && grep -qxE 'slurmd|slurmctld' "/proc/$pid/comm" 2>/dev/null; then
      kill "$pid" 2>/dev/null && pids+=("$pid")
    fi
    rm -f "$f"
  done
  for _ in $(seq 50); do  # until they are gone (5 s)
    local alive=0
    for pid in "${pids[@]}"; do  # (a zombie is gone: its parent may never reap it)
      grep -q '^State:[[:space:]]*[^Z]' "/proc/$pid/status" 2>/dev/null && alive=1
    done
    [ "$alive" = 0 ] && return 0
    sleep 0.1
  done
}

case "$cmd" in
  start)
    case "${3:-}" in
      "") [ $# -eq 2 ] || die "$usage"; start ;;
      --hosts) [ $# -eq 4 ] && [ -n "$4" ] || die "$usage"; start "$4" ;;
      *) die "$usage" ;;
    esac
    ;;
  stop) [ $# -eq 2 ] || die "$usage"; stop ;;
  *) die "$usage" ;;
esac
