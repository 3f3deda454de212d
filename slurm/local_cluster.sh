#!/usr/bin/env bash
# A one-node Slurm (munge + slurmctld + slurmd) in a scratch folder, for trying the sbatch
# scripts on one machine and for the tests. Run as root (the daemons are started by hand: no
# systemd is needed).
#   slurm/local_cluster.sh start DIR   # prints "export SLURM_CONF=DIR/slurm.conf"
#   slurm/local_cluster.sh stop DIR
set -euo pipefail
cmd=${1:?usage: local_cluster.sh start|stop DIR}
DIR=$(mkdir -p "${2:?usage: local_cluster.sh start|stop DIR}" && cd "$2" && pwd)
CONF=$DIR/slurm.conf
case "$cmd" in
start)
  for p in slurmctld slurmd munged sbatch; do
    command -v "$p" >/dev/null || [ -x "/usr/sbin/$p" ] ||
      { echo "local_cluster.sh: $p is missing (apt-get install slurm-wlm munge)" >&2; exit 1; }
  done
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
  mkdir -p "$DIR/state" "$DIR/spool" /run/munge
  chown munge:munge /run/munge
  if ! pgrep -x munged >/dev/null; then runuser -u munge -- /usr/sbin/munged; fi
  cat > "$CONF" <<EOF
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
MailProg=/bin/true
ReturnToService=2
NodeName=$host CPUs=$cpus Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
  /usr/sbin/slurmctld -f "$CONF"
  /usr/sbin/slurmd -f "$CONF"
  for _ in $(seq 100); do  # until the node takes jobs
    if SLURM_CONF=$CONF sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
      echo "export SLURM_CONF=$CONF"
      exit 0
    fi
    sleep 0.2
  done
  echo "local_cluster.sh: the node did not come up; see $DIR/slurmctld.log and $DIR/slurmd.log" >&2
  exit 1
  ;;
stop)
  for d in slurmd slurmctld; do
    if [ -f "$DIR/$d.pid" ]; then kill "$(cat "$DIR/$d.pid")" 2>/dev/null || true; fi
  done
  ;;
*)
  echo "usage: local_cluster.sh start|stop DIR" >&2
  exit 2
  ;;
esac
