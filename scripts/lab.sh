#!/usr/bin/env bash
# The network-namespace lab: a small fleet on one machine, for `make demo` and the tests.
#
#   scripts/lab.sh up       build it (idempotent) and write its inventory
#   scripts/lab.sh down     remove everything `up` made: namespaces, pins, state, inventory (idempotent)
#   scripts/lab.sh status   show what exists; exit 0 when the whole lab is up
#
# Layout (N = EBFLAB_EDGES edge hosts, default 2):
#
#   <prefix>client                              <prefix>edge1 .. <prefix>edgeN
#   br0 198.51.100.1/24   (management station)
#       198.51.100.33/24  (ordinary client)
#       198.51.100.66/24  (a source the demo denies)
#   edge1 --- veth --------------------------- lab0 198.51.100.11/24
#   edge2 --- veth --------------------------- lab0 198.51.100.12/24
#
# The client-side ends of the veth pairs are bridged, so the client reaches every edge on one subnet.
# Links are created directly inside the namespaces: nothing appears on, or is attached to, the machine's
# own interfaces, and traffic stays inside the lab.
#
# The inventory (<lab dir>/inventory.ini) gives each edge its own pin root and state dir (they share the
# machine's file system) and its interface; <lab dir>/group_vars/lab.yml is playbooks/vars/lab_policy.yml.
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
}

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

write_inventory() {
    local inv="$LAB_DIR/inventory.ini" tmp host i
    tmp="$(mktemp "$LAB_DIR/.inventory.XXXXXX")"
    {
        echo "# Written by scripts/lab.sh up; removed by scripts/lab.sh down."
        echo "[clients]"
        echo "client ansible_netns=$(ns_name client) lab_addresses='[\"$SUBNET_PREFIX.1\", \"$SUBNET_PREFIX.33\", \"$SUBNET_PREFIX.66\"]'"
        echo
        echo "[edges]"
        for ((i = 1; i <= EDGES; i++)); do
            host="edge$i"
            echo "$host ansible_netns=$(ns_name "$host") lab_address=$SUBNET_PREFIX.$((10 + i))" \
                "ebpf_fleet_pin_root=$PIN_BASE/$host ebpf_fleet_state_dir=$LAB_DIR/state/$host" \
                "deploy_xdp_interfaces='[\"lab0\"]'"
        done
        echo
        echo "[lab:children]"
        echo "clients"
        echo "edges"
        echo
        echo "[lab:vars]"
        echo "ansible_connection=ebpf.fleet.netns"
        echo "ansible_python_interpreter=$PYTHON"
    } >"$tmp"
    mv -f "$tmp" "$inv"
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
    for i in "${CLIENT_ADDRS[@]}"; do
        nip client addr replace "$SUBNET_PREFIX.$i/24" dev br0
    done
    for ((i = 1; i <= EDGES; i++)); do
        host="edge$i"
        ensure_ns "$host"
        if ! link_exists client "$host"; then
            # both ends are born inside the lab's namespaces
            nip client link add "$host" type veth peer name lab0 netns "$(ns_name "$host")"
        fi
        nip client link set "$host" master br0 up
        nip "$host" addr replace "$SUBNET_PREFIX.$((10 + i))/24" dev lab0
        nip "$host" link set lab0 up
        mkdir -p "$LAB_DIR/state/$host" "$PIN_BASE/$host"
        chmod 0700 "$LAB_DIR/state/$host" "$PIN_BASE/$host"
    done
    write_inventory
    mkdir -p "$LAB_DIR/group_vars"
    cp "$ROOT/playbooks/vars/lab_policy.yml" "$LAB_DIR/group_vars/lab.yml"
    log "up: $(hosts | tr '\n' ' ')(prefix $PREFIX); inventory $LAB_DIR/inventory.ini"
}

cmd_down() {
    local name host
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
