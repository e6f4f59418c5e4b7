#!/usr/bin/env bash
# Bring up a single-node SLURM cluster with accounting on this machine, for the SLURM tests.
#
# munge, MariaDB (127.0.0.1), slurmdbd, slurmctld and slurmd, all run as root from Debian's
# packages (installed when missing), with every config, socket, spool, database and log file
# under $SLURM_CI_DIR (default /tmp/scaling-sweep-slurm). The client commands (sbatch, squeue,
# sacct, submitit) find the cluster through /etc/slurm/slurm.conf, a symlink to the config
# written here; an existing real /etc/slurm/slurm.conf is never replaced.
#
# Idempotent: when the cluster already answers, it says so and exits 0. A half-started one
# is stopped (slurm-down.sh) and started again. Needs root; 5-20 s once installed (+~35 s to install).
#
#   SLURM_CI_DIR       where everything lives                  (/tmp/scaling-sweep-slurm)
#   SLURM_CI_INSTALL   0 to fail instead of apt-get installing (1)
#   SLURM_CI_DB_PORT   MariaDB port on 127.0.0.1              (33061)
set -euo pipefail

DIR=${SLURM_CI_DIR:-/tmp/scaling-sweep-slurm}
DB_PORT=${SLURM_CI_DB_PORT:-33061}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONF=$DIR/etc/slurm.conf
CLUSTER=scalingsweep
NODE=$(hostname -s)
T0=$SECONDS

log() { echo "slurm-up: $*" >&2; }
die() {
    log "FAILED: $*"
    log "logs are in $DIR/log:"
    for f in "$DIR"/log/*.log; do
        [ -f "$f" ] || continue
        echo "----- $f (last 15 lines)" >&2
        tail -n 15 "$f" >&2
    done
    # Leave nothing half-started behind (the logs stay).
    SLURM_CI_QUIET=1 bash "$HERE/slurm-down.sh" || true
    exit 1
}

# Poll `$@` for up to $1 seconds (10 tries a second); true once it succeeds.
wait_for() {
    local secs=$1
    shift
    local i
    for ((i = 0; i < secs * 10; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    return 1
}

daemons_alive() {
    local f
    for f in "$DIR"/run/{slurmd,slurmctld,slurmdbd,mysql/mysqld}.pid "$DIR"/munge/munged.pid; do
        [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null || return 1
    done
}

cluster_answers() {
    daemons_alive && [ -f "$CONF" ] &&
        SLURM_CONF=$CONF timeout 5 sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)' &&
        SLURM_CONF=$CONF timeout 5 sacctmgr -n -P show cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"
}

[ "$(id -u)" = 0 ] || { log "must run as root (daemons run as root, MariaDB as mysql, munged as munge)"; exit 1; }

if [ -e /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" != "$CONF" ]; then
    log "/etc/slurm/slurm.conf exists and is not ours ($CONF); refusing to replace a real cluster's config"
    exit 1
fi

if cluster_answers && [ "$(readlink /etc/slurm/slurm.conf)" = "$CONF" ]; then
    log "already up (state in $DIR)"
    exit 0
fi

# --- packages -------------------------------------------------------------------------------
need=()
for pair in slurmctld:slurm-wlm slurmd:slurm-wlm munged:munge slurmdbd:slurmdbd mariadbd:mariadb-server; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    [ "${SLURM_CI_INSTALL:-1}" = 1 ] || { log "missing packages: ${need[*]} (SLURM_CI_INSTALL=0)"; exit 1; }
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # A temporary policy-rc.d keeps the packages' init scripts from starting system-wide daemons.
    own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1
    fi
    apt_log=${TMPDIR:-/tmp}/slurm-ci-apt.log
    ok=1
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
        slurm-wlm slurmdbd munge mariadb-server mariadb-client; } >"$apt_log" 2>&1 || ok=0
    [ $own_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
    [ $ok = 1 ] || { tail -n 20 "$apt_log" >&2; log "apt-get install failed (full log: $apt_log)"; exit 1; }
fi

# --- fresh state directory ------------------------------------------------------------------
SLURM_CI_QUIET=1 bash "$HERE/slurm-down.sh" || true
# Wipe only a directory this script made (it leaves a marker), never an arbitrary SLURM_CI_DIR.
if [ -e "$DIR" ] && [ ! -e "$DIR/.slurm-ci" ] && [ -n "$(ls -A "$DIR")" ]; then
    log "$DIR exists, is not empty and was not made by slurm-up.sh; set SLURM_CI_DIR to another path"
    exit 1
fi
rm -rf "$DIR"
mkdir -p "$DIR" && touch "$DIR/.slurm-ci"
mkdir -p "$DIR"/{etc,log,run/mysql,spool/ctld,spool/d,munge/key,db}
chmod 755 "$DIR"
# munged wants its key private but its socket reachable by every user.
chown -R munge:munge "$DIR/munge" && chmod 755 "$DIR/munge" && chmod 700 "$DIR/munge/key"
chown mysql:mysql "$DIR/db" "$DIR/run/mysql"
touch "$DIR/log/mariadb.log" && chown mysql:mysql "$DIR/log/mariadb.log"
touch "$DIR/log/munged.log" && chown munge:munge "$DIR/log/munged.log" && chmod 640 "$DIR/log/munged.log"

# --- munge ----------------------------------------------------------------------------------
MUNGE_SOCKET=$DIR/munge/munge.socket
runuser -u munge -- mungekey --create --keyfile="$DIR/munge/key/munge.key" >/dev/null 2>&1 ||
    die "mungekey could not create $DIR/munge/key/munge.key"
# --force: munged otherwise refuses a socket or log under world-writable /tmp.
runuser -u munge -- munged --force --key-file="$DIR/munge/key/munge.key" \
    --socket="$MUNGE_SOCKET" --pid-file="$DIR/munge/munged.pid" \
    --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/key/munged.seed" ||
    die "munged did not start"
wait_for 10 test -S "$MUNGE_SOCKET" || die "munged socket $MUNGE_SOCKET did not appear"

# --- MariaDB --------------------------------------------------------------------------------
DB_SOCK=$DIR/run/mysql/mysqld.sock
mariadb-install-db --no-defaults --user=mysql --datadir="$DIR/db" --auth-root-authentication-method=socket \
    --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed"
# Small and unsafe-on-power-loss settings: this database lives for one CI run.
mariadbd --no-defaults --user=mysql --datadir="$DIR/db" --socket="$DB_SOCK" \
    --pid-file="$DIR/run/mysql/mysqld.pid" --bind-address=127.0.0.1 --port="$DB_PORT" \
    --log-error="$DIR/log/mariadb.log" --skip-log-bin --innodb-buffer-pool-size=128M \
    --innodb-log-file-size=64M --innodb-lock-wait-timeout=900 --innodb-flush-log-at-trx-commit=0 \
    --skip-name-resolve >/dev/null 2>&1 &
db_pid=$!
db_answers() { kill -0 "$db_pid" && mariadb --no-defaults -S "$DB_SOCK" -u root -e 'select 1'; }
wait_for 30 db_answers || die "MariaDB did not answer on $DB_SOCK"
DB_PASS=ci-$RANDOM$RANDOM
mariadb --no-defaults -S "$DB_SOCK" -u root <<SQL || die "could not create the slurm database"
CREATE DATABASE slurm_acct_db;
CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL

# --- configs --------------------------------------------------------------------------------
cat >"$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
chmod 600 "$DIR/etc/slurmdbd.conf"

# The node line comes from slurmd -C so sockets/cores/threads match and the node is not drained.
NODE_HW=$(slurmd -C | head -n 1 | sed -e 's/^NodeName=[^ ]* //')
cat >"$CONF" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
JobRequeue=1
# Fast test turnaround: no minimum age before a finished job leaves squeue, short kill wait.
MinJobAge=30
KillWait=10
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
# For slurmdbd connections the munge socket is named here, not by AuthInfo.
AccountingStoragePass=$MUNGE_SOCKET
JobAcctGatherType=jobacct_gather/none
MaxArraySize=1001
NodeName=$NODE NodeAddr=127.0.0.1 $NODE_HW State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

# --- daemons --------------------------------------------------------------------------------
export SLURM_CONF=$CONF
slurmdbd || die "slurmdbd did not start"
wait_for 30 timeout 5 sacctmgr -n show cluster || die "slurmdbd did not answer"
sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster failed"
slurmctld -i || die "slurmctld did not start"
slurmd || die "slurmd did not start"
wait_for 30 bash -c "timeout 5 sinfo -h -o %T | grep -qE '^(idle|mixed|allocated)'" || die "node $NODE never became idle"
sacctmgr -i add account ci Description=ci Organization=ci >/dev/null || die "sacctmgr add account failed"
sacctmgr -i add user root Account=ci DefaultAccount=ci >/dev/null || die "sacctmgr add user failed"

mkdir -p /etc/slurm
ln -sfn "$CONF" /etc/slurm/slurm.conf
cluster_answers || die "cluster does not answer after start"
log "up in $((SECONDS - T0)) s: cluster $CLUSTER, node $NODE, config $CONF, logs $DIR/log"
