#!/usr/bin/env bash
# Stop the single-node SLURM cluster that slurm-up.sh started (daemons found by their pid files).
#
# Idempotent and safe to trap: stops only processes named in the pid files under $SLURM_CI_DIR
# (default /tmp/scaling-sweep-slurm), removes /etc/slurm/slurm.conf only when it is our symlink,
# and keeps $SLURM_CI_DIR/log for a post-mortem (the next slurm-up.sh wipes it).
set -uo pipefail

DIR=${SLURM_CI_DIR:-/tmp/scaling-sweep-slurm}
CONF=$DIR/etc/slurm.conf
log() { [ "${SLURM_CI_QUIET:-0}" = 1 ] || echo "slurm-down: $*" >&2; }

# Jobs still running would outlive slurmd (proctrack/linuxproc does not kill them on exit).
if [ -f "$CONF" ] && [ -f "$DIR/run/slurmctld.pid" ]; then
    if SLURM_CONF=$CONF timeout 5 scancel --quiet --user=root >/dev/null 2>&1; then
        for _ in $(seq 100); do
            [ -z "$(SLURM_CONF=$CONF timeout 5 squeue -h -o %i 2>/dev/null)" ] && break
            sleep 0.1
        done
    fi
fi

stopped=()
# Stop the daemons named by these pid files together (each takes ~2 s), then return.
stop_group() {
    local pidfile pid pids=()
    for pidfile in "$@"; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile" 2>/dev/null || true)
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
            stopped+=("$(basename "$pidfile" .pid)")
        fi
        rm -f "$pidfile"
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    done
    return 0
}
# Compute daemons first, then accounting, then what accounting needs.
stop_group "$DIR/run/slurmd.pid" "$DIR/run/slurmctld.pid"
stop_group "$DIR/run/slurmdbd.pid"
stop_group "$DIR/run/mysql/mysqld.pid" "$DIR/munge/munged.pid"

if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$CONF" ]; then
    rm -f /etc/slurm/slurm.conf
fi

if [ ${#stopped[@]} -gt 0 ]; then
    log "stopped ${stopped[*]}; logs kept in $DIR/log"
else
    log "nothing running under $DIR"
fi
exit 0
