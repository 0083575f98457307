#!/bin/sh
# Where smbd's main thread of a connection spends its time, on a plain share and on a share
# with this module, for one workload: one client runs the workload on each share in turn
# while perf samples every CPU, and the samples of the connection process's main thread are
# printed, with its CPU time. Root only; it runs its own smbd in a private namespace (port
# 445 on a loopback of its own), with the module from target/release, and leaves nothing
# running (KEEP=1 keeps its directory, perf's data included).
#
#   scripts/profile-main-thread.sh [-s REQUEST_BYTES] [-d DIR] [-n MIB] WORKLOAD
#
#   WORKLOAD   put        smbclient puts a file (REQUEST_BYTES per write, default 131072)
#              get        smbclient gets a cached file
#              cold-get   smbclient gets a file after the page cache is dropped
#              randwrite  one libsmbclient client writes 4 KiB at random offsets for 5 s
#   -d DIR     where the shares' directories go (default /var/tmp): its file system is
#              the one profiled
#   -n MIB     size of the file moved (default 1024)
#
# The samples are perf's cpu-clock on machines without a PMU (most VMs): kernel time spent
# with interrupts off is charged to where they come back on (finish_task_switch,
# _raw_spin_unlock_irqrestore). Compare the two shares of one run with each other.
set -eu
request=131072 dir=/var/tmp mib=1024
while getopts s:d:n: opt; do
	case $opt in
	s) request=$OPTARG ;;
	d) dir=$OPTARG ;;
	n) mib=$OPTARG ;;
	*) exit 2 ;;
	esac
done
shift $((OPTIND - 1))
workload=${1:?usage: $0 [-s BYTES] [-d DIR] [-n MIB] put|get|cold-get|randwrite}
[ "$(id -u)" = 0 ] || { echo "$0: run as root" >&2; exit 2; }
command -v perf >/dev/null || apt-get install -y linux-perf >/dev/null
cd "$(dirname "$0")/.."
cargo build --release --quiet
repo=$(pwd)
vfs=$(smbd -b | sed -n 's/^ *MODULESDIR: //p')/vfs
work=$(mktemp -d "$dir/profile-main-thread.XXXXXX")
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
mkdir -p "$work/plain" "$work/aio_fork" "$work/samba" "$work/vfs"
head -c "$((mib << 20))" /dev/urandom >"$work/data.bin"
if [ "$workload" = randwrite ]; then
	gcc -O2 -o "$work/smbload" benches/c/smbload.c $(pkg-config --cflags --libs smbclient)
fi

cat >"$work/smb.conf" <<EOF
[global]
	smb ports = 445
	interfaces = lo
	bind interfaces only = yes
	private dir = $work/samba
	lock directory = $work/samba
	state directory = $work/samba
	cache directory = $work/samba
	pid directory = $work/samba
	log file = $work/samba/log.%m
	smb2 max read = $request
	smb2 max write = $request
	smb2 max trans = $request
	map to guest = Bad User
	guest account = root
[plain]
	path = $work/plain
	read only = no
	guest ok = yes
[aio_fork]
	path = $work/aio_fork
	read only = no
	guest ok = yes
	vfs objects = aio_fork_rs
EOF

# One share's client, inside the namespace.
cat >"$work/client.sh" <<'EOF'
share=$1 work=$2 workload=$3
case $workload in
put) smbclient -N "//127.0.0.1/$share" -c "put $work/data.bin data.bin" ;;
get | cold-get) smbclient -N "//127.0.0.1/$share" -c "get data.bin /dev/null" ;;
randwrite)
	(sleep 1; echo go) | "$work/smbload" -c "$work/smb.conf" \
		"smb://127.0.0.1/$share/data.bin" guest guest randwrite 4096 5 1 ;;
esac
EOF

# One share's run: perf samples every CPU while the client runs (attaching to a process
# takes longer than a short transfer); the connection process, the first smbd above the
# newest one before the client (PIDs only grow in the fresh namespace), is noted for the
# report. Prints the client's rate.
cat >"$work/run-share.sh" <<'EOF'
share=$1 work=$2 workload=$3
[ "$workload" = put ] || cp "$work/data.bin" "$work/$share/data.bin"
sync
[ "$workload" = cold-get ] && echo 3 >/proc/sys/vm/drop_caches
before=$(pgrep -n -x smbd)
(
	conn=$before tries=0
	while [ "$conn" -le "$before" ] && [ $tries -lt 2000 ]; do
		sleep 0.005
		conn=$(pgrep -n -x smbd) tries=$((tries + 1))
	done
	echo "$conn" >"$work/$share.pid"
) &
perf record -a -q -F 2999 -o "$work/$share.perf" -- \
	sh "$work/client.sh" "$share" "$work" "$workload" >"$work/$share.client" 2>&1
wait
grep -h -o '[0-9.]* kb/s\|[0-9.]* KiloBytes/sec\|ops_per_s=[0-9.]*' "$work/$share.client" | head -1
EOF

# The main thread's samples: perf's "pid" column is the thread, and the main thread's id
# is the connection process's pid. Shares of the thread's own samples, largest first.
cat >"$work/report.sh" <<'EOF'
share=$1 work=$2 rate=$3
perf report -i "$work/$share.perf" --stdio -g none -n --no-children --sort pid,dso,sym \
	2>/dev/null | awk -v me="$(cat "$work/$share.pid"):smbd" '$3 == me { print }' >"$work/$share.rows"
samples=$(awk '{ n += $2 } END { print n + 0 }' "$work/$share.rows")
echo "== $share: $rate; main thread: $samples samples at 2999 Hz ($((samples * 1000 / 2999)) ms of CPU)"
awk -v n="$samples" '{ $1 = sprintf("%6.2f%%", 100 * $2 / n); $2 = ""; $3 = ""; print }' \
	"$work/$share.rows" | head -25
EOF

cat >"$work/inside.sh" <<EOF
set -e
ip link set lo up
cp -a "$vfs/." "$work/vfs/"
cp "$repo/target/release/libaio_fork.so" "$work/vfs/aio_fork_rs.so"
cp "$repo/target/release/aio_fork_helper" "$work/vfs/"
mount --bind "$work/vfs" "$vfs"
smbd -F --debug-stdout -s "$work/smb.conf" >"$work/samba/smbd.out" 2>&1 &
for i in \$(seq 50); do smbclient -N //127.0.0.1/plain -c exit >/dev/null 2>&1 && break; sleep 0.1; done
for share in plain aio_fork; do
	sh "$work/report.sh" \$share "$work" "\$(sh "$work/run-share.sh" \$share "$work" "$workload")"
done
EOF
# smbd goes with the namespace when its first process, the script, ends.
unshare --net --mount --pid --fork --mount-proc sh "$work/inside.sh"
