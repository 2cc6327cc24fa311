#!/bin/bash
# The floor of a userspace TAP/UDP VXLAN data plane on this machine, next to
# the kernel's VXLAN: thread wake-up latencies (wakeup.c), context switches
# between threads and between processes (switch.c), what an interrupt costs
# a busy task (interrupt.c), then ping RTT
# container -> container across two namespace hosts through
#   kernel             Linux VXLAN devices
#   reference          forwarder.c on each host (the least per-packet work), any CPU
#   reference-one-cpu  the same, both forwarders pinned to CPU 0
# alternating variants each round. Prints JSON lines. Needs root, gcc, iproute2, iputils ping.
# Usage: bash bench/floor/run.sh [ROUNDS=3] [PINGS=100] [INTERVAL=0.02]
set -euo pipefail
rounds=${1:-3}
pings=${2:-100}
interval=${3:-0.02} # seconds between pings: how long the path idles before each
[[ $rounds =~ ^[1-9][0-9]*$ && $pings =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS and PINGS must be positive integers" >&2; exit 2; }
[[ $interval =~ ^[0-9]*\.?[0-9]+$ ]] || { echo "INTERVAL must be seconds, e.g. 0.02 (got '$interval')" >&2; exit 2; }
dir=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
prefix="wf$(($$ % 1000))"
namespaces=()
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for n in "${namespaces[@]}"; do ip netns delete "$n" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
gcc -O2 -pthread -o "$tmp/wakeup" "$dir/wakeup.c"
gcc -O2 -pthread -o "$tmp/switch" "$dir/switch.c"
gcc -O2 -pthread -o "$tmp/interrupt" "$dir/interrupt.c"
gcc -O2 -o "$tmp/forwarder" "$dir/forwarder.c"

if [ "$(nproc)" -ge 2 ]; then
  "$tmp/wakeup" 0 0 1 20000 200   # same CPU: the woken real-time thread preempts the waker
  "$tmp/wakeup" 0 1 1 20000 200   # other CPU, idle between samples (as between pings)
  "$tmp/wakeup" 0 1 1 100 500     # other CPU, busy enough not to idle
fi
"$tmp/switch"
"$tmp/interrupt"

ns() {
  ip netns add "$1"
  namespaces+=("$1")
  ip -n "$1" link set lo up
}
# A pair of hosts a/b (underlay veth 192.0.2.1-2) with a container each on
# bridge br0 (198.18.0.2-3, MTU 1450, static neighbours: no ARP involved).
pair() {
  local v=$1 i=2
  for n in a b ca cb; do ns "$prefix-$v$n"; done
  ip -n "$prefix-${v}a" link add eth0 type veth peer name eth0 netns "$prefix-${v}b"
  ip -n "$prefix-${v}a" addr add 192.0.2.1/24 dev eth0
  ip -n "$prefix-${v}b" addr add 192.0.2.2/24 dev eth0
  for h in a b; do
    local host="$prefix-$v$h" c="$prefix-${v}c$h"
    ip -n "$host" link set eth0 up
    ip -n "$host" link add br0 type bridge
    ip -n "$host" link set br0 up
    ip -n "$host" link add vc type veth peer name eth0 netns "$c"
    ip -n "$host" link set vc master br0 up
    ip -n "$c" link set eth0 address "02:42:c6:12:00:0$i" mtu 1450
    ip -n "$c" addr add "198.18.0.$i/24" dev eth0
    ip -n "$c" link set eth0 up
    i=$((i + 1))
  done
  ip -n "$prefix-${v}ca" neigh add 198.18.0.3 lladdr 02:42:c6:12:00:03 dev eth0
  ip -n "$prefix-${v}cb" neigh add 198.18.0.2 lladdr 02:42:c6:12:00:02 dev eth0
}
attach() { # host, device, remote container MAC
  ip -n "$1" link set "$2" master br0 up
  bridge -n "$1" fdb replace "$3" dev "$2" master static
}

pair k
for h in a b; do
  local_ip=192.0.2.1 remote_ip=192.0.2.2 remote_mac=02:42:c6:12:00:03
  [ "$h" = b ] && local_ip=192.0.2.2 remote_ip=192.0.2.1 remote_mac=02:42:c6:12:00:02
  ip -n "$prefix-k$h" link add vx0 type vxlan id 4242 dstport 4789 local "$local_ip" nolearning
  attach "$prefix-k$h" vx0 "$remote_mac"
  bridge -n "$prefix-k$h" fdb append "$remote_mac" dev vx0 dst "$remote_ip"
done
for v in r p; do
  pair "$v"
  cpu=-1
  [ "$v" = p ] && cpu=0
  for h in a b; do
    local_ip=192.0.2.1 remote_ip=192.0.2.2 remote_mac=02:42:c6:12:00:03
    [ "$h" = b ] && local_ip=192.0.2.2 remote_ip=192.0.2.1 remote_mac=02:42:c6:12:00:02
    ip netns exec "$prefix-$v$h" "$tmp/forwarder" tap0 "$local_ip" "$remote_ip" "$cpu" >/dev/null &
    pids+=($!)
    for _ in $(seq 50); do ip -n "$prefix-$v$h" link show tap0 >/dev/null 2>&1 && break; sleep 0.1; done
    attach "$prefix-$v$h" tap0 "$remote_mac"
  done
done

declare -A name=([k]=kernel [r]=reference [p]=reference-one-cpu)
for v in k r p; do ip netns exec "$prefix-${v}ca" ping -n -q -c 5 -i 0.02 198.18.0.3 >/dev/null; done
for round in $(seq "$rounds"); do
  for v in k r p; do
    ip netns exec "$prefix-${v}ca" ping -n -c "$pings" -i "$interval" 198.18.0.3 |
      sed -n 's/.*time=\([0-9.]*\) ms/\1/p' | sort -n |
      awk -v variant="${name[$v]}" -v round="$round" -v load="$(cut -d' ' -f1 /proc/loadavg)" \
        '{a[NR]=$1} END{printf "{\"bench\":\"floor\",\"measure\":\"rtt\",\"variant\":\"%s\",\"round\":%d,\"pings\":%d,\"p50Ms\":%.3f,\"p90Ms\":%.3f,\"p99Ms\":%.3f,\"loadAverage1m\":%s}\n", variant, round, NR, a[int(NR*0.5)+1], a[int(NR*0.9)+1], a[int(NR*0.99)+1], load}'
  done
done
