#!/usr/bin/env bash
# The main job: installs what is missing, builds the module, and serves a demo share that
# uses it, on 127.0.0.1 port ${DEMO_PORT:-4445}. smbd runs in a private mount namespace in
# which the built module is bind-mounted over Samba's vfs/aio_fork.so: the host's Samba
# files stay untouched. `scripts/demo.sh stop` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO_DIR=${DEMO_DIR:-/var/lib/aio_fork-demo}
DEMO_PORT=${DEMO_PORT:-4445}
DEMO_USER=${DEMO_USER:-aiofork}
DEMO_PASSWORD=${DEMO_PASSWORD:-aiofork-demo}
PIDFILE=$DEMO_DIR/smbd.pid

stop() {
	if [[ -f $PIDFILE ]] && kill "$(cat "$PIDFILE")" 2>/dev/null; then
		echo "demo: stopped smbd $(cat "$PIDFILE")"
	fi
	rm -f "$PIDFILE"
}

if [[ ${1:-} == stop ]]; then
	stop
	exit 0
fi

scripts/install-deps.sh
cargo build --release
module=$PWD/target/release/libaio_fork.so
helper=$PWD/target/release/aio_fork_helper
modulesdir=$(smbd -b | sed -n 's/^ *MODULESDIR: *//p')

stop
mkdir -p "$DEMO_DIR"/{private,lock,state,cache,pid,ncalrpc,share}
# smbd loads modules by name from MODULESDIR/vfs only: the demo's smbd sees a copy of that
# directory with the built module as aio_fork.so and its helper program beside it.
rm -rf "$DEMO_DIR/vfs"
cp -a "$modulesdir/vfs" "$DEMO_DIR/vfs"
install -m 0644 "$module" "$DEMO_DIR/vfs/aio_fork.so"
install -m 0755 "$helper" "$DEMO_DIR/vfs/aio_fork_helper"
id "$DEMO_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$DEMO_USER"
chown "$DEMO_USER" "$DEMO_DIR/share"
conf=$DEMO_DIR/smb.conf
cat >"$conf" <<CONF
[global]
	private dir = $DEMO_DIR/private
	lock directory = $DEMO_DIR/lock
	state directory = $DEMO_DIR/state
	cache directory = $DEMO_DIR/cache
	pid directory = $DEMO_DIR/pid
	ncalrpc dir = $DEMO_DIR/ncalrpc
	passdb backend = tdbsam:$DEMO_DIR/private/passdb.tdb
	smb ports = $DEMO_PORT
	interfaces = 127.0.0.1
	bind interfaces only = yes
	load printers = no
	disable spoolss = yes
	log file = $DEMO_DIR/log.smbd
	max log size = 10000
	log level = 1 aio_fork:2

[demo]
	path = $DEMO_DIR/share
	read only = no
	vfs objects = aio_fork
	aio_fork:max helpers = 8
	aio_fork:min helpers = 1
	aio_fork:idle timeout = 30
CONF
printf '%s\n%s\n' "$DEMO_PASSWORD" "$DEMO_PASSWORD" | smbpasswd -c "$conf" -s -a "$DEMO_USER" >/dev/null

# setsid: the demo server outlives this script; unshare without --fork execs, so the pid
# recorded is smbd's own.
setsid unshare --mount --propagation private sh -c \
	"mount --bind '$DEMO_DIR/vfs' '$modulesdir/vfs' && exec smbd -s '$conf' -F --no-process-group" \
	>"$DEMO_DIR/smbd.out" 2>&1 </dev/null &
echo $! >"$PIDFILE"

for _ in $(seq 100); do
	(exec 3<>"/dev/tcp/127.0.0.1/$DEMO_PORT") 2>/dev/null && break
	sleep 0.1
done

# Prove it: a 9 MiB round trip (the C module fails anything over 128 KiB).
tmp=$(mktemp -d)
head -c $((9 * 1024 * 1024 + 3)) /dev/urandom >"$tmp/in"
smbclient -p "$DEMO_PORT" "//127.0.0.1/demo" -U "$DEMO_USER%$DEMO_PASSWORD" \
	-c "lcd $tmp; put in check.bin; get check.bin out; del check.bin" >/dev/null
cmp "$tmp/in" "$tmp/out"
rm -rf "$tmp"
# The connection process logs its stats line as it ends, a moment after smbclient exits.
stats=
for _ in $(seq 100); do
	stats=$(grep -A1 "aio_fork stats" "$DEMO_DIR/log.smbd" | tail -1) || true
	[[ $stats == *pwrite_bytes=9437187* ]] && break
	sleep 0.1
done
if [[ $stats != *pwrite_bytes=9437187* ]]; then
	echo "demo: the helpers did not serve the put (stats: ${stats:-none}); see $DEMO_DIR/log.smbd" >&2
	exit 1
fi
echo "demo: 9 MiB put/get through the module's helpers: identical bytes"
echo "$stats" | sed 's/^ */demo: /'
cat <<MSG
demo: serving //127.0.0.1/demo on port $DEMO_PORT with vfs objects = aio_fork (pid $(cat "$PIDFILE"))
  connect: smbclient -p $DEMO_PORT //127.0.0.1/demo -U $DEMO_USER%$DEMO_PASSWORD
  log:     $DEMO_DIR/log.smbd      config: $conf
  stop:    scripts/demo.sh stop
MSG
