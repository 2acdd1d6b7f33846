#!/usr/bin/env bash
# Peer comparison: rsyslog forwarding over RELP beside Tongbu's forwarding, N lines each.
#
#   bench/peer/rsyslog.sh [N]          (default N = 100000)
#
# Installs nothing. It needs rsyslog with its RELP modules (Debian: apt-get install -y rsyslog
# rsyslog-relp) and the release binaries (cargo build --release -p tongbu-hub -p tongbu-agent
# -p tongbu-bench; TONGBU_BIN_DIR names another folder). Without them it says what is missing
# and exits 2.
#
# rsyslog: two rsyslogd instances on loopback, each with its own configuration and work folder.
# The sender takes plain TCP syslog (imptcp) and forwards every message with omrelp (RELP,
# window 1024) through a disk-assisted action queue (LinkedList with a queue file: spills to
# disk when memory fills, saved on shutdown); the receiver (imrelp) writes each message to a
# file. Measured from the first line pushed into the sender to the N-th line in the receiver's
# file. The lines are the same realistic records Tongbu forwards (tongbu-bench records), each
# behind a syslog header.
#
# Tongbu: tongbu-bench forward: a real agent stores the N records (submit: parsed, checked,
# signed, hash-chained, committed with fsync), then sync --once sends them over HTTPS; the hub
# verifies every signature and the chain and commits before it answers with a signed receipt
# that the agent verifies; the hub's API must show all N acknowledged.
set -euo pipefail

n=${1:-100000}
root=$(cd "$(dirname "$0")/../.." && pwd)
bins=${TONGBU_BIN_DIR:-$root/target/release}

missing=()
command -v rsyslogd >/dev/null || missing+=("rsyslogd (apt-get install -y rsyslog)")
moddir=""
for d in /usr/lib/x86_64-linux-gnu/rsyslog /usr/lib/aarch64-linux-gnu/rsyslog /usr/lib/rsyslog; do
    [ -f "$d/omrelp.so" ] && moddir=$d && break
done
[ -n "$moddir" ] || missing+=("rsyslog's RELP modules (apt-get install -y rsyslog-relp)")
for b in tongbu-bench tongbu-hub tongbu-agent; do
    [ -x "$bins/$b" ] || missing+=("$bins/$b (cargo build --release -p tongbu-hub -p tongbu-agent -p tongbu-bench)")
done
if [ "${#missing[@]}" -gt 0 ]; then
    printf 'missing: %s\n' "${missing[@]}" >&2
    exit 2
fi

work=$(mktemp -d /tmp/tongbu-peer-rsyslog.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# A loopback port nothing listens on (random ports tried through bash's /dev/tcp).
free_port() {
    local p
    for p in $(shuf -i 20000-60000 -n 50); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    echo "no free port" >&2
    return 1
}
wait_port() {
    local deadline=$((SECONDS + 30))
    until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "nothing listens on $1" >&2; return 1; }
        sleep 0.05
    done
}
now() { date +%s.%N; }

relp_port=$(free_port)
tcp_port=$(free_port)
mkdir -p "$work/recv" "$work/send/spool"

cat >"$work/recv.conf" <<CONF
global(workDirectory="$work/recv" maxMessageSize="64k")
module(load="$moddir/imrelp.so")
template(name="msgonly" type="string" string="%msg%\n")
ruleset(name="store") {
    action(type="omfile" file="$work/out.log" template="msgonly")
}
input(type="imrelp" port="$relp_port" ruleset="store")
CONF

cat >"$work/send.conf" <<CONF
global(workDirectory="$work/send" maxMessageSize="64k")
module(load="$moddir/imptcp.so")
module(load="$moddir/omrelp.so")
ruleset(name="forward") {
    action(type="omrelp" target="127.0.0.1" port="$relp_port" windowSize="1024"
           queue.type="LinkedList" queue.filename="forward" queue.spoolDirectory="$work/send/spool"
           queue.saveOnShutdown="on" queue.maxDiskSpace="2g"
           action.resumeRetryCount="-1" action.resumeInterval="1")
}
input(type="imptcp" port="$tcp_port" ruleset="forward")
CONF

echo "== $n realistic records as syslog lines"
"$bins/tongbu-bench" records --count "$n" \
    | sed "s/^/<134>Nov 27 10:00:00 county tongbu: /" >"$work/lines"

rsyslogd -n -f "$work/recv.conf" -i "$work/recv.pid" 2>"$work/recv.err" &
pids+=($!)
rsyslogd -n -f "$work/send.conf" -i "$work/send.pid" 2>"$work/send.err" &
pids+=($!)
wait_port "$relp_port"
wait_port "$tcp_port"
: >"$work/out.log"

echo "== rsyslog: imptcp -> omrelp (window 1024, disk-assisted queue) -> imrelp -> file"
start=$(now)
cat "$work/lines" >"/dev/tcp/127.0.0.1/$tcp_port"
pushed=$(now)
deadline=$((SECONDS + 600))
while [ "$(wc -l <"$work/out.log")" -lt "$n" ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "rsyslog delivered $(wc -l <"$work/out.log") of $n lines in 600 s" >&2
        cat "$work/send.err" "$work/recv.err" >&2
        exit 1
    fi
    sleep 0.02
done
done_at=$(now)
awk -v n="$n" -v s="$start" -v p="$pushed" -v d="$done_at" 'BEGIN {
    printf "  lines pushed into the sender      %10.0f /s  (%.2f s)\n", n / (p - s), p - s
    printf "  lines delivered to the receiver   %10.0f /s  (%.2f s)\n", n / (d - s), d - s
}'

echo "== tongbu: submit (durable, signed, chained) + sync --once (verified, acknowledged)"
"$bins/tongbu-bench" forward --records "$n" --bin-dir "$bins"
