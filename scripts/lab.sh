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
#   <prefix>edge1..N lab0 198.51.100.11..19, then .110.. from edge10 on (groups edges, xdp_filter)
#   <prefix>lb1      lab0 198.51.100.20   (groups lbs, xdp_lb): the XDP load balancer of VIP 203.0.113.10:80
#   <prefix>backend1 lab0 198.51.100.21   (groups backends, lb_backend, tc_egress): a web server on port 80
#   <prefix>backend2 lab0 198.51.100.22     that answers its own name (scripts/lab_server.py)
#   <prefix>ctl      lab0 198.51.100.2    only with EBFLAB_SSH=1: the controller, not in the inventory
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
#   EBFLAB_EDGES     number of edge hosts, 1..99 (default 2; edge10 and up get 198.51.100.1NN: the fleet benchmark)
#   EBFLAB_PYTHON    the modules' interpreter on the lab hosts (default <repo>/.venv/bin/python when it exists,
#                    else python3: it needs the collection's requirements, requirements/controller.txt)
#   EBFLAB_SSH       1: the SSH lab below; default 0: every host reached through the ebpf.fleet.netns connection
#
# The SSH lab (EBFLAB_SSH=1, docs/lab.md): edges, lb1 and the backends each run an sshd (Debian's openssh-server,
# scripts/setup.sh installs it) listening only on its lab address, port 22; the inventory reaches them with
# ansible_connection=ssh from the controller namespace <prefix>ctl, so the management session's packets cross the
# hosts' XDP and TC hooks like on a real fleet. Keys, known_hosts, the sshd configs and an ssh client config are
# written under <lab dir>/ssh/. Run playbooks inside the controller namespace (only the network namespace changes):
#
#   nsenter --net=/run/netns/<prefix>ctl ansible-playbook -i <lab dir>/inventory.ini playbooks/deploy_xdp.yml
#   nsenter --net=/run/netns/<prefix>ctl ssh -F <lab dir>/ssh/config edge1
#
# `down` kills every process still inside a lab namespace (SSH sessions, helpers they started) before deleting it.
#
# It also runs from an installed collection (<collections path>/ansible_collections/ebpf/fleet/scripts/lab.sh):
# set EBFLAB_DIR to a folder of yours there (docs/lab.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${EBFLAB_PREFIX:-ebflab-}"
LAB_DIR="${EBFLAB_DIR:-$ROOT/build/lab}"
PIN_BASE="${EBFLAB_PIN_ROOT:-/sys/fs/bpf/ebflab}"
EDGES="${EBFLAB_EDGES:-2}"
SSH_LAB="${EBFLAB_SSH:-0}"
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
CTL_ADDR="$SUBNET_PREFIX.2"
SSH_DIR="$LAB_DIR/ssh"
SSHD=/usr/sbin/sshd
VIP="203.0.113.10"
BACKENDS=2

log() { printf '[lab] %s\n' "$*"; }
die() { printf '[lab] error: %s\n' "$*" >&2; exit 1; }

check_config() {
    [[ "$PREFIX" =~ ^[A-Za-z0-9_-]{1,40}$ ]] || die "EBFLAB_PREFIX='$PREFIX': expected 1-40 letters, digits, '-' or '_'"
    [[ "$EDGES" =~ ^[1-9][0-9]?$ ]] || die "EBFLAB_EDGES='$EDGES': expected a number 1..99"
    [[ "$SSH_LAB" =~ ^[01]$ ]] || die "EBFLAB_SSH='$SSH_LAB': expected 0 or 1"
    [[ "$PIN_BASE" == /sys/fs/bpf/?* && "$PIN_BASE" != *..* ]] ||
        die "EBFLAB_PIN_ROOT='$PIN_BASE': expected a folder under /sys/fs/bpf/"
    [[ "$LAB_DIR" == /?* && "$LAB_DIR" != *..* && "$LAB_DIR" != "/" ]] ||
        die "EBFLAB_DIR='$LAB_DIR': expected an absolute path"
    if [[ "$SSH_LAB" == 1 ]]; then
        [[ "$LAB_DIR" != *[[:space:]\'\"\\]* ]] ||
            die "EBFLAB_DIR='$LAB_DIR': expected no spaces, quotes or backslashes with EBFLAB_SSH=1 (it goes into ssh options)"
        # ssh binds a control socket at <dir>/cp/<10 characters>.<16 characters>: at most 107 bytes for a socket path
        ((${#SSH_DIR} + 3 <= 79)) ||
            die "EBFLAB_DIR='$LAB_DIR': expected at most $((79 - 7)) characters with EBFLAB_SSH=1 (ssh's control socket paths)"
    fi
}

hosts() {
    local i
    echo client
    for ((i = 1; i <= EDGES; i++)); do echo "edge$i"; done
    echo lb1
    for ((i = 1; i <= BACKENDS; i++)); do echo "backend$i"; done
}

# the hosts that run an sshd in the SSH lab: every host but the client
ssh_hosts() { hosts | grep -vx client; }

# lab0 address and MAC of a host other than the client
host_addr() {
    case "$1" in
        ctl) echo "$CTL_ADDR" ;;
        edge?) echo "$SUBNET_PREFIX.$((10 + ${1#edge}))" ;;
        edge*) echo "$SUBNET_PREFIX.$((100 + ${1#edge}))" ;;
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

# How the inventory reaches a host: its namespace (ebpf.fleet.netns, the lab's default), or in the SSH lab
# (every host but the client) SSH to its lab address from the controller namespace. ansible_netns stays: it names
# the host's namespace for tools that go around SSH. Each lab has its own folder of SSH control sockets: Ansible's
# default (~/.ansible/cp, named by address and user) would be shared by two labs, whose addresses are the same.
host_connection() {
    local host="$1"
    if [[ "$SSH_LAB" == 1 && "$host" != client ]]; then
        echo "ansible_connection=ssh ansible_host=$(host_addr "$host") ansible_user=root" \
            "ansible_ssh_common_args='-F $SSH_DIR/config' ansible_control_path_dir=$SSH_DIR/cp ansible_pipelining=true ansible_ssh_timeout=5" \
            "ansible_netns=$(ns_name "$host")"
    else
        echo "ansible_host=$(ns_name "$host") ansible_netns=$(ns_name "$host")"
    fi
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
            echo "$host $(host_connection "$host") lab_address=$(host_addr "$host") $(host_paths "$host")"
        done
        echo
        echo "[lbs]"
        echo "lb1 $(host_connection lb1) lab_address=$LB_ADDR $(host_paths lb1)"
        echo
        echo "[backends]"
        for ((i = 1; i <= BACKENDS; i++)); do
            host="backend$i"
            echo "$host $(host_connection "$host") lab_address=$(host_addr "$host")" \
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
        echo "# the canary wave of the AWX workflow (examples/awx), as in the example inventory"
        echo "[canary]"
        echo "edge1"
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

# The SSH lab's files under <lab dir>/ssh: the keys (made once; `up` again keeps them), and what is derived
# from them and from the layout (rewritten by every `up`, the same bytes for the same lab):
#   id_ed25519(.pub)   the controller's key pair            authorized_keys   its public key: root on every host
#   <host>/ssh_host_ed25519_key(.pub), <host>/sshd_config   known_hosts       each host's address and host key
#   config             the ssh client config (ssh -F)        cp/               Ansible's control sockets
write_ssh_files() {
    local host addr key
    mkdir -p "$SSH_DIR/cp"
    chmod 0700 "$SSH_DIR" "$SSH_DIR/cp"
    if [[ ! -e "$SSH_DIR/id_ed25519" ]]; then
        ssh-keygen -q -t ed25519 -N '' -C "$(ns_name ctl)" -f "$SSH_DIR/id_ed25519"
    fi
    cp "$SSH_DIR/id_ed25519.pub" "$SSH_DIR/authorized_keys"
    : >"$SSH_DIR/known_hosts.tmp"
    while read -r host; do
        addr="$(host_addr "$host")"
        key="$SSH_DIR/$host/ssh_host_ed25519_key"
        mkdir -p "$SSH_DIR/$host"
        if [[ ! -e "$key" ]]; then
            ssh-keygen -q -t ed25519 -N '' -C "$(ns_name "$host")" -f "$key"
        fi
        echo "$addr $(cut -d' ' -f1,2 "$key.pub")" >>"$SSH_DIR/known_hosts.tmp"
        cat >"$SSH_DIR/$host/sshd_config" <<EOF
# Written by scripts/lab.sh up (EBFLAB_SSH=1): the sshd of $host (namespace $(ns_name "$host")), on its lab address only.
ListenAddress $addr:22
AddressFamily inet
HostKey $key
PidFile $LAB_DIR/state/$host/sshd.pid
AuthorizedKeysFile $SSH_DIR/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# the lab folder may live under a pytest tmp dir, whose modes sshd would refuse
StrictModes no
UseDNS no
X11Forwarding no
PrintMotd no
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
    done < <(ssh_hosts)
    mv -f "$SSH_DIR/known_hosts.tmp" "$SSH_DIR/known_hosts"
    {
        echo "# Written by scripts/lab.sh up (EBFLAB_SSH=1), for ssh -F $SSH_DIR/config HOST in the controller"
        echo "# namespace $(ns_name ctl). The keep-alives end a session whose packets are dropped (an XDP program"
        echo "# that locks the controller out) after about 10 s (3 probes, 3 s apart) instead of minutes."
        while read -r host; do
            printf 'Host %s\n    HostName %s\n' "$host" "$(host_addr "$host")"
        done < <(ssh_hosts)
        echo "Host *"
        echo "    User root"
        echo "    IdentityFile $SSH_DIR/id_ed25519"
        echo "    IdentitiesOnly yes"
        echo "    UserKnownHostsFile $SSH_DIR/known_hosts"
        echo "    GlobalKnownHostsFile /dev/null"
        echo "    StrictHostKeyChecking yes"
        echo "    ConnectTimeout 5"
        echo "    ServerAliveInterval 3"
        echo "    ServerAliveCountMax 3"
        echo "    LogLevel ERROR"
    } >"$SSH_DIR/config"
}

# The pid of a host's running sshd (from its PidFile), or nothing.
sshd_pid() {
    local pid
    pid="$(cat "$LAB_DIR/state/$1/sshd.pid" 2>/dev/null || true)"
    if [[ "$pid" =~ ^[0-9]+$ && "$(readlink "/proc/$pid/exe" 2>/dev/null || true)" == "$SSHD" ]]; then
        echo "$pid"
    fi
}

# A host's sshd, started once (`up` again leaves a running one alone); it daemonizes and logs to its state dir.
start_sshd() {
    local host="$1" conf="$SSH_DIR/$1/sshd_config" log="$LAB_DIR/state/$1/sshd.log" addr i
    addr="$(host_addr "$host")"
    if [[ -n "$(sshd_pid "$host")" ]]; then
        return
    fi
    # the privilege separation dir (the package's unit makes it at boot; no unit runs here)
    if [[ ! -d /run/sshd ]]; then
        mkdir -m 0755 /run/sshd
    fi
    "$SSHD" -t -f "$conf" || die "$SSHD -t -f $conf: expected a valid sshd config"
    nsenter --net="/run/netns/$(ns_name "$host")" "$SSHD" -f "$conf" -E "$log" </dev/null
    for ((i = 0; i < 50; i++)); do
        if [[ -n "$(sshd_pid "$host")" ]] &&
            nsenter --net="/run/netns/$(ns_name "$host")" ss -Hltn "src $addr:22" | grep -q .; then
            log "sshd of $host on $addr:22 (pid $(sshd_pid "$host"))"
            return
        fi
        sleep 0.1
    done
    die "sshd of $host: expected it listening on $addr:22 in $(ns_name "$host") within 5 s; $log: $(tail -n 5 "$log" 2>/dev/null)"
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
}

# The folders of an inventory host other than the client: its pin root, its state dir and what it has before
# any role runs (sysctl.d, default, the unit folder, /usr/local/lib and sbin).
host_dirs() {
    local host="$1"
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
        [[ "$host" == client ]] && continue
        plug "$host"
        host_dirs "$host"
    done < <(hosts)
    if [[ "$SSH_LAB" == 1 ]]; then
        plug ctl
    fi
    nip client route replace "$VIP/32" via "$LB_ADDR"
    # the load balancer's frames come back out of its lab0 (XDP_TX): the bridge's end must run XDP to get them
    clang -O2 -target bpf -I"/usr/include/$(uname -m)-linux-gnu" -c "$ROOT/scripts/lab_port_pass.c" -o "$LAB_DIR/lab_port_pass.o"
    ip -force -n "$(ns_name client)" link set dev lb1 xdpdrv obj "$LAB_DIR/lab_port_pass.o" sec xdp  # up again: replaces it
    for ((i = 1; i <= BACKENDS; i++)); do
        start_server "backend$i"
    done
    if [[ "$SSH_LAB" == 1 ]]; then
        write_ssh_files
        while read -r host; do
            start_sshd "$host"
        done < <(ssh_hosts)
    fi
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
    if [[ "$SSH_LAB" == 1 ]]; then
        log "ssh: sshd on $(ssh_hosts | tr '\n' ' ')from the controller namespace $(ns_name ctl) ($CTL_ADDR):" \
            "nsenter --net=/run/netns/$(ns_name ctl) ansible-playbook -i $LAB_DIR/inventory.ini ..."
    fi
}

# This script and the processes that started it: `down` run inside a lab namespace must not kill itself.
ancestors() {
    local pid="$$"
    while [[ "$pid" =~ ^[0-9]+$ && "$pid" -gt 1 ]]; do
        echo "$pid"
        pid="$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null || true)"
    done
}

# The processes inside a namespace (ip netns pids), but for this script's own line.
ns_pids() {
    ip netns pids "$1" 2>/dev/null | grep -vxF -f <(ancestors) || true
}

# Every process still inside a lab namespace (the servers, sshd and its sessions, whatever a playbook left
# running there, such as a watchdog started over SSH) gets SIGTERM, then SIGKILL after 3 s.
# Wait up to $2 tenths of a second for namespace $1 to hold no process; its leftover pids in $pids either way.
ns_empty_within() {
    local name="$1" tries="$2" i
    for ((i = 0; i < tries; i++)); do
        pids="$(ns_pids "$name" | tr '\n' ' ')"
        [[ -n "${pids// /}" ]] || return 0
        sleep 0.1
    done
    return 1
}

kill_ns_processes() {
    local name="$1" pids
    pids="$(ns_pids "$name" | tr '\n' ' ')"
    [[ -n "${pids// /}" ]] || return 0
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    ns_empty_within "$name" 30 && return 0
    log "SIGKILL to what SIGTERM left running in $name: $pids"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    ns_empty_within "$name" 20 && return 0
    log "warning: expected no process left in $name after SIGKILL, still there: $pids"
}

cmd_down() {
    local name host pidfile pid
    for pidfile in "$LAB_DIR"/state/*/server.pid; do
        [[ -f "$pidfile" ]] || continue
        kill "$(cat "$pidfile")" 2>/dev/null || true
        rm -f -- "$pidfile"
    done
    # an sshd whose namespace is gone already is found by its PidFile
    for pidfile in "$LAB_DIR"/state/*/sshd.pid; do
        [[ -f "$pidfile" ]] || continue
        host="$(basename "$(dirname "$pidfile")")"
        pid="$(sshd_pid "$host")"
        if [[ -n "$pid" ]]; then
            kill "$pid" 2>/dev/null || true
            log "stopped sshd of $host (pid $pid)"
        fi
        rm -f -- "$pidfile"
    done
    # namespaces first: deleting them removes the veths, which detaches the XDP programs
    while read -r name _; do
        [[ -n "$name" && "$name" == "$PREFIX"* ]] || continue
        kill_ns_processes "$name"
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
    local host ok=0 xdp sshd
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
            sshd=""
            if [[ "$SSH_LAB" == 1 ]] || ns_exists ctl; then
                sshd=" sshd=$(sshd_pid "$host")"
                if [[ "$sshd" == " sshd=" ]]; then
                    sshd=" sshd=down"
                    ok=1
                fi
            fi
            printf '%-8s %-24s %s %s pins=%s%s\n' "$host" "$(ns_name "$host")" \
                "$(nip "$host" -br addr show dev lab0 2>/dev/null | awk '{print "lab0", $3}')" \
                "${xdp:-no-xdp}" "$(find "$PIN_BASE/$host" -mindepth 1 2>/dev/null | wc -l)" "$sshd"
        fi
    done < <(hosts)
    # the SSH lab's controller: not an inventory host; playbooks run inside it (nsenter --net)
    if [[ "$SSH_LAB" == 1 ]] || ns_exists ctl; then
        if ns_exists ctl; then
            printf '%-8s %-24s %s controller: nsenter --net=/run/netns/%s ansible-playbook ...\n' ctl "$(ns_name ctl)" \
                "$(nip ctl -br addr show dev lab0 2>/dev/null | awk '{print "lab0", $3}')" "$(ns_name ctl)"
        else
            printf '%-8s %-24s missing\n' ctl "$(ns_name ctl)"
            ok=1
        fi
    fi
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
