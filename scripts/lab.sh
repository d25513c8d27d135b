#!/usr/bin/env bash
# The network-namespace lab: a small fleet on one machine, for `make demo`, `make lab` and the tests.
#
#   scripts/lab.sh up       build it (idempotent) and write its inventory
#   scripts/lab.sh down     remove everything `up` made: namespaces, servers, pins, state, inventory (idempotent)
#   scripts/lab.sh status   show what exists; exit 0 when the whole lab is up
#
# Layout (N = EBFLAB_EDGES edge hosts, default 2), one subnet 198.51.100.0/24 on a bridge:
#
#   <prefix>client   br0 198.51.100.1 (management station), .33 (ordinary client), .66 (a source the filter denies);
#                    route to the VIP 203.0.113.10 via the load balancer
#   <prefix>edge1..N lab0 198.51.100.11.. (groups edges, xdp_filter)
#   <prefix>lb1      lab0 198.51.100.20   (groups lbs, xdp_lb): the XDP load balancer of VIP 203.0.113.10:80
#   <prefix>backend1 lab0 198.51.100.21   (groups backends, lb_backend, tc_egress): a web server on port 80
#   <prefix>backend2 lab0 198.51.100.22     that answers its own name (scripts/lab_server.py)
#
# Every host's lab0 is one end of a veth pair whose other end is a port of the client's bridge, so the client
# reaches every host; the load balancer's frames go back out of lab0 (XDP_TX) to the bridge and on to the
# backend, which answers the client directly (DSR). Links are created inside the namespaces: nothing appears
# on, or is attached to, the machine's own interfaces, and traffic stays inside the lab.
#
# The inventory (<lab dir>/inventory.ini) gives each host its own pin root, state dir and the other paths the
# roles write (they share the machine's file system); <lab dir>/group_vars/ is a copy of the example inventory's
# group_vars (examples/inventory/group_vars, one file per function).
#
# Environment (so tests can run a lab beside a user's):
#   EBFLAB_PREFIX    namespace name prefix (default "ebflab-"; letters, digits, '-', '_')
#   EBFLAB_DIR       inventory and per-host state dirs (default <repo>/build/lab)
#   EBFLAB_PIN_ROOT  bpffs folder holding each host's pin root (default /sys/fs/bpf/ebflab)
#   EBFLAB_EDGES     number of edge hosts, 1..9 (default 2)
#   EBFLAB_PYTHON    the modules' interpreter on the lab hosts (default <repo>/.venv/bin/python when it exists,
#                    else python3: it needs the collection's requirements, requirements/controller.txt)
#
# It also runs from an installed collection (<collections path>/ansible_collections/ebpf/fleet/scripts/lab.sh):
# set EBFLAB_DIR to a folder of yours there (docs/lab.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${EBFLAB_PREFIX:-ebflab-}"
LAB_DIR="${EBFLAB_DIR:-$ROOT/build/lab}"
PIN_BASE="${EBFLAB_PIN_ROOT:-/sys/fs/bpf/ebflab}"
EDGES="${EBFLAB_EDGES:-2}"
if [[ -n "${EBFLAB_PYTHON:-}" ]]; then
    PYTHON="$EBFLAB_PYTHON"
elif [[ -x "$ROOT/.venv/bin/python" ]]; then
    PYTHON="$ROOT/.venv/bin/python"
else
    PYTHON="$(command -v python3 || echo python3)"
fi
MARKER=".ebflab"
SUBNET_PREFIX="198.51.100"
CLIENT_ADDRS=(1 33 66)
LB_ADDR="$SUBNET_PREFIX.20"
VIP="203.0.113.10"
BACKENDS=2

log() { printf '[lab] %s\n' "$*"; }
die() { printf '[lab] error: %s\n' "$*" >&2; exit 1; }

check_config() {
    [[ "$PREFIX" =~ ^[A-Za-z0-9_-]{1,40}$ ]] || die "EBFLAB_PREFIX='$PREFIX': expected 1-40 letters, digits, '-' or '_'"
    [[ "$EDGES" =~ ^[1-9]$ ]] || die "EBFLAB_EDGES='$EDGES': expected a number 1..9"
    [[ "$PIN_BASE" == /sys/fs/bpf/?* && "$PIN_BASE" != *..* ]] ||
        die "EBFLAB_PIN_ROOT='$PIN_BASE': expected a folder under /sys/fs/bpf/"
    [[ "$LAB_DIR" == /?* && "$LAB_DIR" != *..* && "$LAB_DIR" != "/" ]] ||
        die "EBFLAB_DIR='$LAB_DIR': expected an absolute path"
}

hosts() {
    local i
    echo client
    for ((i = 1; i <= EDGES; i++)); do echo "edge$i"; done
    echo lb1
    for ((i = 1; i <= BACKENDS; i++)); do echo "backend$i"; done
}

# lab0 address and MAC of a host other than the client
host_addr() {
    case "$1" in
        edge*) echo "$SUBNET_PREFIX.$((10 + ${1#edge}))" ;;
        lb1) echo "$LB_ADDR" ;;
        backend*) echo "$SUBNET_PREFIX.$((20 + ${1#backend}))" ;;
    esac
}
host_mac() { printf '02:00:00:00:00:%02x\n' "${1##*.}"; }

ns_name() { echo "${PREFIX}$1"; }
ns_exists() { [[ -e "/run/netns/$(ns_name "$1")" ]]; }
nip() { ip -n "$(ns_name "$1")" "${@:2}"; }
link_exists() { nip "$1" link show dev "$2" >/dev/null 2>&1; }

ensure_bpffs() {
    if ! mountpoint -q /sys/fs/bpf || [[ "$(stat -f -c %T /sys/fs/bpf)" != "bpf_fs" ]]; then
        log "mounting bpffs at /sys/fs/bpf"
        mount -t bpf bpf /sys/fs/bpf
    fi
}

ensure_ns() {
    if ! ns_exists "$1"; then
        ip netns add "$(ns_name "$1")"
        log "namespace $(ns_name "$1")"
    fi
    nip "$1" link set lo up
    # IPv4 only: no IPv6 neighbour discovery in the counters, only the traffic the demo sends
    nsenter --net="/run/netns/$(ns_name "$1")" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
        net.ipv6.conf.default.disable_ipv6=1 >/dev/null
}

# The per-host variables every lab host needs: they share the machine's file system, not their network.
host_paths() {
    local host="$1" dir="$LAB_DIR/state/$1"
    echo "ebpf_fleet_pin_root=$PIN_BASE/$host ebpf_fleet_state_dir=$dir/records" \
        "lb_backend_sysctl_file=$dir/etc/sysctl.d/60-ebpf-fleet-lb-backend.conf" \
        "bpf_host_fstab_file=$dir/etc/fstab bpf_host_default_file=$dir/etc/default/ebpf-fleet" \
        "bpf_host_unit_dir=$dir/etc/systemd/system bpf_host_command_path=$dir/usr/local/sbin/ebpf-fleet-host" \
        "bpf_host_lib_dir=$dir/usr/local/lib/ebpf-fleet bpf_host_metrics_dir=$dir/var/lib/prometheus/node-exporter"
}

write_inventory() {
    local inv="$LAB_DIR/inventory.ini" tmp host i
    tmp="$(mktemp "$LAB_DIR/.inventory.XXXXXX")"
    {
        echo "# Written by scripts/lab.sh up; removed by scripts/lab.sh down."
        echo "[clients]"
        echo "client ansible_host=$(ns_name client) ansible_netns=$(ns_name client) lab_addresses='[\"$SUBNET_PREFIX.1\", \"$SUBNET_PREFIX.33\", \"$SUBNET_PREFIX.66\"]'"
        echo
        echo "[edges]"
        for ((i = 1; i <= EDGES; i++)); do
            host="edge$i"
            echo "$host ansible_host=$(ns_name "$host") ansible_netns=$(ns_name "$host") lab_address=$(host_addr "$host") $(host_paths "$host")"
        done
        echo
        echo "[lbs]"
        echo "lb1 ansible_host=$(ns_name lb1) ansible_netns=$(ns_name lb1) lab_address=$LB_ADDR $(host_paths lb1)"
        echo
        echo "[backends]"
        for ((i = 1; i <= BACKENDS; i++)); do
            host="backend$i"
            echo "$host ansible_host=$(ns_name "$host") ansible_netns=$(ns_name "$host") lab_address=$(host_addr "$host")" \
                "xdp_lb_backend_address=$(host_addr "$host") xdp_lb_backend_mac=$(host_mac "$(host_addr "$host")")" \
                "$(host_paths "$host")"
        done
        echo
        echo "# the functions: playbooks/deploy_xdp.yml deploys to each host what its groups ask for"
        echo "[xdp_filter:children]"
        echo "edges"
        echo
        echo "[xdp_lb:children]"
        echo "lbs"
        echo
        echo "[lb_backend:children]"
        echo "backends"
        echo
        echo "[tc_egress:children]"
        echo "backends"
        echo
        echo "[lab:children]"
        echo "clients"
        echo "edges"
        echo "lbs"
        echo "backends"
        echo
        echo "[lab:vars]"
        echo "ansible_connection=ebpf.fleet.netns"
        echo "ansible_python_interpreter=$PYTHON"
        echo "lab_vip=$VIP"
    } >"$tmp"
    mv -f "$tmp" "$inv"
}

# The web server of a backend (scripts/lab_server.py: answers each connection with the host's name).
start_server() {
    local host="$1" pidfile="$LAB_DIR/state/$1/server.pid"
    if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        return
    fi
    nsenter --net="/run/netns/$(ns_name "$host")" setsid "$PYTHON" "$ROOT/scripts/lab_server.py" "$host" 80 \
        </dev/null >"$LAB_DIR/state/$host/server.log" 2>&1 &
    echo $! >"$pidfile"
}

# One lab host: lab0 in its namespace, the other end a port of the client's bridge.
plug() {
    local host="$1" addr mac
    addr="$(host_addr "$host")"
    mac="$(host_mac "$addr")"
    ensure_ns "$host"
    if ! link_exists client "$host"; then
        # both ends are born inside the lab's namespaces
        nip client link add "$host" type veth peer name lab0 netns "$(ns_name "$host")"
    fi
    nip client link set "$host" master br0 up
    nip "$host" link set lab0 address "$mac"
    nip "$host" addr replace "$addr/24" dev lab0
    nip "$host" link set lab0 up
    # the folders a host has before any role runs (sysctl.d, default, the unit folder, /usr/local/lib and sbin)
    mkdir -p "$LAB_DIR/state/$host/records" "$PIN_BASE/$host" "$LAB_DIR/state/$host/etc/"{sysctl.d,default,systemd/system} \
        "$LAB_DIR/state/$host/usr/local/"{lib,sbin}
    touch "$LAB_DIR/state/$host/etc/fstab"
    chmod 0700 "$LAB_DIR/state/$host" "$LAB_DIR/state/$host/records" "$PIN_BASE/$host"
}

cmd_up() {
    local i host
    ensure_bpffs
    mkdir -p "$LAB_DIR/state"
    touch "$LAB_DIR/$MARKER"
    ensure_ns client
    if ! link_exists client br0; then
        nip client link add br0 type bridge
    fi
    nip client link set br0 up
    # the client's TCP checksums are finished in software: a frame the load balancer sends on (XDP_TX) keeps
    # no offload state, so a partial checksum would reach the backend as a bad one
    nsenter --net="/run/netns/$(ns_name client)" ethtool -K br0 tx off >/dev/null
    for i in "${CLIENT_ADDRS[@]}"; do
        nip client addr replace "$SUBNET_PREFIX.$i/24" dev br0
    done
    while read -r host; do
        [[ "$host" == client ]] || plug "$host"
    done < <(hosts)
    nip client route replace "$VIP/32" via "$LB_ADDR"
    # the load balancer's frames come back out of its lab0 (XDP_TX): the bridge's end must run XDP to get them
    clang -O2 -target bpf -I"/usr/include/$(uname -m)-linux-gnu" -c "$ROOT/scripts/lab_port_pass.c" -o "$LAB_DIR/lab_port_pass.o"
    ip -force -n "$(ns_name client)" link set dev lb1 xdpdrv obj "$LAB_DIR/lab_port_pass.o" sec xdp  # up again: replaces it
    for ((i = 1; i <= BACKENDS; i++)); do
        start_server "backend$i"
    done
    write_inventory
    rm -rf "$LAB_DIR/group_vars"
    mkdir -p "$LAB_DIR/group_vars"
    cp "$ROOT"/examples/inventory/group_vars/*.yml "$LAB_DIR/group_vars/"
    {
        echo "---"
        echo "# Written by scripts/lab.sh up: what only the lab needs (typed values, hence YAML and not the INI inventory)."
        echo "# The lab's hosts share this machine's packages, which make setup installed (the bpf_host tests install them)."
        echo "bpf_host_install_packages: false"
    } >"$LAB_DIR/group_vars/lab.yml"
    log "up: $(hosts | tr '\n' ' ')(prefix $PREFIX); inventory $LAB_DIR/inventory.ini"
}

cmd_down() {
    local name host pidfile
    for pidfile in "$LAB_DIR"/state/*/server.pid; do
        [[ -f "$pidfile" ]] || continue
        kill "$(cat "$pidfile")" 2>/dev/null || true
        rm -f -- "$pidfile"
    done
    # namespaces first: deleting them removes the veths, which detaches the XDP programs
    while read -r name _; do
        [[ -n "$name" && "$name" == "$PREFIX"* ]] || continue
        ip netns del "$name"
        log "deleted namespace $name"
    done < <(ip netns list 2>/dev/null)
    if [[ -d "$PIN_BASE" ]]; then
        while read -r host; do
            if [[ -e "$PIN_BASE/$host" ]]; then
                rm -rf -- "${PIN_BASE:?}/$host"
                log "removed pins $PIN_BASE/$host"
            fi
        done < <(hosts)
        rmdir -- "$PIN_BASE" 2>/dev/null || true
    fi
    if [[ -e "$LAB_DIR/$MARKER" ]]; then
        rm -rf -- "${LAB_DIR:?}"
        log "removed $LAB_DIR"
    elif [[ -e "$LAB_DIR" ]]; then
        log "left $LAB_DIR alone: it has no $MARKER marker (not made by lab.sh up)"
    fi
    log "down"
}

cmd_status() {
    local host ok=0 xdp
    while read -r host; do
        if ! ns_exists "$host"; then
            printf '%-8s %-24s missing\n' "$host" "$(ns_name "$host")"
            ok=1
            continue
        fi
        if [[ "$host" == client ]]; then
            printf '%-8s %-24s %s\n' "$host" "$(ns_name "$host")" \
                "$(nip "$host" -br addr show dev br0 2>/dev/null | awk '{$1=$2=""; print "br0" $0}')"
        else
            xdp="$(nip "$host" -d link show dev lab0 2>/dev/null | grep -o 'prog/xdp id [0-9]*' || true)"
            printf '%-8s %-24s %s %s pins=%s\n' "$host" "$(ns_name "$host")" \
                "$(nip "$host" -br addr show dev lab0 2>/dev/null | awk '{print "lab0", $3}')" \
                "${xdp:-no-xdp}" "$(find "$PIN_BASE/$host" -mindepth 1 2>/dev/null | wc -l)"
        fi
    done < <(hosts)
    if [[ -e "$LAB_DIR/inventory.ini" ]]; then
        echo "inventory: $LAB_DIR/inventory.ini"
    else
        echo "inventory: none"
        ok=1
    fi
    return "$ok"
}

main() {
    check_config
    case "${1:-}" in
        up) cmd_up ;;
        down) cmd_down ;;
        status) cmd_status ;;
        *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
    esac
}

main "$@"
