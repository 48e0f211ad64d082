#!/usr/bin/env bash
# A single-node SLURM on this machine, with one fake GPU, for tests (tests/test_slurm.py) and by hand:
#
#   .ci/slurm.sh up   [DIR]   install Debian's slurmctld slurmd slurm-client munge if missing, start
#                             munged (unless one runs), slurmctld and slurmd in the background, wait
#                             until the node is idle; print `export SLURM_CONF=DIR/slurm.conf`
#   .ci/slurm.sh down [DIR]   stop exactly the daemons that `up` started (their pids are in DIR)
#   .ci/slurm.sh install      only install the packages (as `up` does when they are missing)
#
# DIR (default $SLURM_LOCAL_DIR or /tmp/slurm-local) holds slurm.conf, gres.conf, state, spool, logs
# and pids. /etc/slurm/slurm.conf becomes a link to DIR/slurm.conf while the cluster is up (`up` refuses
# to replace a slurm.conf that is not a link): Snakemake's jobstep plugin removes SLURM_CONF, like
# every SLURM_* variable outside a short list, from the environment of the `srun` it runs inside
# each job, and srun then finds no configuration at all.
# Two partitions on the one node: `cpu` (default) and `gpu`, the names of workflow/profiles/slurm/
# partitions.yaml. The node has $SLURM_LOCAL_GPUS (default 2) fake GPUs: gres.conf needs a character
# device per GPU, so DIR/dev/gpuN are made as copies of /dev/null (mknod c 1 3). A job given GPUs sees
# CUDA_VISIBLE_DEVICES=0 (or 0,1). A TaskProlog appends "<jobid> <step> <CUDA_VISIBLE_DEVICES or ->" of every
# task to DIR/task_env.log, i.e. what each job's own environment held.
# Facts behind the settings: ../shared/notes/slurm-local.md (no accounting database: sacct fails, so
# Snakemake's plugin needs --slurm-status-command squeue). MinJobAge=3600: finished jobs stay in
# `scontrol show job` and `squeue -t all` for an hour (300 s, the default, is too short for a test
# that checks them all at its end; the plugin needs it >= 3 x its first status delay).
set -euo pipefail

cmd=${1:-}
DIR=${2:-${SLURM_LOCAL_DIR:-/tmp/slurm-local}}
HOST=$(hostname -s)
GPUS=${SLURM_LOCAL_GPUS:-2}
export SLURM_CONF=$DIR/slurm.conf

log() { echo "slurm.sh: $*" >&2; }

alive() {  # alive PIDFILE NAME: the pid in PIDFILE runs and is NAME (not a recycled pid)
    local pid
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ -d /proc/$pid ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2"* ]]
}

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || [[ -x /usr/sbin/munged ]] || missing+=(munge)
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null || { log "no apt-get: install ${missing[*]} by hand"; exit 3; }
    log "installing ${missing[*]}"
    apt-get update -qq
    # Starting the services from the packages' scripts is refused (no systemd): harmless.
    mkdir -p "$DIR"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >"$DIR/apt.log" 2>&1 || { tail -20 "$DIR/apt.log" >&2; exit 3; }
}

start_munge() {
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        log "munged already runs: using it (down will leave it alone)"
        return
    fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        mungekey --create --keyfile /etc/munge/munge.key 2>/dev/null || \
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged  # daemonizes; writes its pid
    for _ in $(seq 50); do
        [[ -s /run/munge/munged.pid ]] && break
        sleep 0.1
    done
    cp /run/munge/munged.pid "$DIR/munged.pid"
}

write_config() {
    local mem
    mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.85)}' /proc/meminfo)  # below what slurmd measures
    cat >"$DIR/slurm.conf" <<EOF
ClusterName=local
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
TaskProlog=$DIR/task_prolog.sh
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=3600
GresTypes=gpu
NodeName=$HOST CPUs=$(nproc) RealMemory=$mem Gres=gpu:$GPUS State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST MaxTime=INFINITE State=UP
EOF
    mkdir -p "$DIR/dev"
    for ((i = 0; i < GPUS; i++)); do
        [[ -c $DIR/dev/gpu$i ]] || mknod "$DIR/dev/gpu$i" c 1 3  # /dev/null's numbers
    done
    echo "NodeName=$HOST Name=gpu File=$DIR/dev/gpu[0-$((GPUS - 1))]" >"$DIR/gres.conf"
    cat >"$DIR/task_prolog.sh" <<EOF
#!/bin/sh
echo "\$SLURM_JOB_ID \${SLURM_STEP_ID:-?} \${CUDA_VISIBLE_DEVICES:--}" >> $DIR/task_env.log
EOF
    chmod +x "$DIR/task_prolog.sh"
}

ETC_CONF=/etc/slurm/slurm.conf

link_etc() {  # a regular file there is a real installation's: leave it; a link is this script's
    if [[ -e $ETC_CONF && ! -L $ETC_CONF ]]; then
        log "$ETC_CONF exists and is not a link made by this script: not replacing it"
        exit 3
    fi
    mkdir -p /etc/slurm
    ln -sfn "$DIR/slurm.conf" "$ETC_CONF"
}

up() {
    [[ $(id -u) == 0 ]] || { log "needs root"; exit 3; }
    mkdir -p "$DIR"
    if alive "$DIR/slurmctld.pid" slurmctld && alive "$DIR/slurmd.pid" slurmd; then
        log "already up in $DIR"
        echo "export SLURM_CONF=$SLURM_CONF"
        return
    fi
    install_packages
    rm -rf "$DIR/state" "$DIR/spool" "$DIR/run" "$DIR/log" "$DIR/task_env.log"
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/run" "$DIR/log"
    write_config
    link_etc
    start_munge
    # setsid: own session, so a terminal's Ctrl-C does not reach them; stdio to files, so a caller
    # that captures this script's output does not wait for the daemons.
    setsid slurmctld -D -i -f "$SLURM_CONF" </dev/null >"$DIR/log/slurmctld.out" 2>&1 &
    echo $! >"$DIR/slurmctld.pid"
    setsid slurmd -D -f "$SLURM_CONF" </dev/null >"$DIR/log/slurmd.out" 2>&1 &
    echo $! >"$DIR/slurmd.pid"
    local state=""
    for i in $(seq 120); do
        state=$(sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -1 || true)
        [[ $state == idle* ]] && break
        if [[ $state == drain* && $i -gt 10 ]]; then  # e.g. a GRES count slurmd saw late
            scontrol update nodename="$HOST" state=resume 2>/dev/null || true
        fi
        alive "$DIR/slurmctld.pid" slurmctld || { log "slurmctld died:"; tail -20 "$DIR/log/slurmctld.log" >&2; down; exit 1; }
        alive "$DIR/slurmd.pid" slurmd || { log "slurmd died:"; tail -20 "$DIR/log/slurmd.log" >&2; down; exit 1; }
        sleep 0.5
    done
    if [[ $state != idle* ]]; then
        log "node not idle after 60 s (state: ${state:-none})"
        sinfo -N -l >&2 || true
        down
        exit 1
    fi
    log "up: node $HOST idle, partitions cpu (default) and gpu, $GPUS fake GPUs; state in $DIR"
    echo "export SLURM_CONF=$SLURM_CONF"
}

stop() {  # stop PIDFILE NAME
    local pid
    if alive "$1" "$2"; then
        pid=$(<"$1")
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            [[ -d /proc/$pid ]] || break
            sleep 0.1
        done
        [[ -d /proc/$pid ]] && kill -KILL "$pid" 2>/dev/null || true
        log "stopped $2 ($pid)"
    fi
    rm -f "$1"
}

down() {
    stop "$DIR/slurmd.pid" slurmd
    stop "$DIR/slurmctld.pid" slurmctld
    stop "$DIR/munged.pid" munged
    if [[ $(readlink "$ETC_CONF" 2>/dev/null) == "$DIR/slurm.conf" ]]; then
        rm -f "$ETC_CONF"
    fi
}

case $cmd in
    up) up ;;
    down) down ;;
    install) install_packages ;;
    *) echo "usage: $0 up|down|install [DIR]" >&2; exit 2 ;;
esac
