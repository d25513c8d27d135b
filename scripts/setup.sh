#!/usr/bin/env bash
# Prepare a fresh Debian 12 machine (as root) for building and testing ebpf.fleet.
# Idempotent: a second run with nothing missing changes nothing and takes a second.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
SANITY_VENV="${SANITY_VENV:-$ROOT/.venv-sanity}"
IMPORTER_VENV="${IMPORTER_VENV:-$ROOT/.venv-importer}"
REQUIREMENTS="$ROOT/requirements/controller.txt"

# Debian packages: the BPF toolchain (and clang-format for make style), the kernel-facing tools, bcc and the
# system Python's bindings that modules reach through Ansible's respawn;
# openssh-server and sudo for the lab's SSH variant (EBFLAB_SSH=1, docs/lab.md),
# which runs one sshd per lab namespace, never one on the machine itself;
# qemu and mmdebstrap for the molecule scenario's VM (scripts/vm_image.sh, docs/molecule.md).
DEB_PACKAGES=(
    clang llvm libbpf-dev linux-libc-dev libbpf1 bpftool gcc-multilib
    iproute2 ethtool nftables xdp-tools tcpdump iputils-ping
    python3-bpfcc linux-headers-amd64 python3-pyroute2 python3-jmespath
    python3 python3-venv python3-dev rsync make git shellcheck clang-format
    openssh-server sudo
    qemu-system-x86 qemu-utils mmdebstrap
)
POLICY_RC=/usr/sbin/policy-rc.d
POLICY_RC_OURS=0

log() { printf '[setup] %s\n' "$*"; }

missing_packages() {
    local pkg
    for pkg in "${DEB_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || echo "$pkg"
    done
}

install_debian_packages() {
    local missing
    missing="$(missing_packages | tr '\n' ' ')"
    if [ -z "${missing// /}" ]; then
        log "Debian packages present"
        return
    fi
    log "installing Debian packages: $missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    block_service_starts
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
    unblock_service_starts
}

# A package's maintainer scripts start its daemon (openssh-server: sshd on 0.0.0.0:22, the machine's uplink).
# While apt runs, a policy-rc.d that exits 101 forbids every start; one the machine already has is left alone.
block_service_starts() {
    if [ -e "$POLICY_RC" ]; then
        return
    fi
    printf '#!/bin/sh\n# ebpf.fleet scripts/setup.sh: no service starts while it installs packages\nexit 101\n' >"$POLICY_RC"
    chmod 0755 "$POLICY_RC"
    POLICY_RC_OURS=1
    trap unblock_service_starts EXIT
}

unblock_service_starts() {
    if [ "$POLICY_RC_OURS" = 1 ]; then
        rm -f -- "$POLICY_RC"
        POLICY_RC_OURS=0
    fi
}

# The lab starts its own sshd in each namespace (scripts/lab.sh); the package's system-wide one must never run:
# stop it when it runs, keep its init script from starting it at boot, and check that no sshd listens here.
keep_system_sshd_off() {
    local pid listeners
    if [ ! -e /etc/init.d/ssh ]; then
        return
    fi
    pid="$(cat /run/sshd.pid 2>/dev/null || true)"
    if [ -n "$pid" ] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = /usr/sbin/sshd ]; then
        log "stopping the system-wide sshd (pid $pid): the lab runs its own in its namespaces"
        kill "$pid"
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    if ls /etc/rc[2345].d/S[0-9][0-9]ssh >/dev/null 2>&1; then
        log "disabling the system-wide sshd at boot (update-rc.d ssh disable)"
        update-rc.d ssh disable >/dev/null 2>&1
    fi
    # the init script (and systemd's ssh.service) will not start sshd while this file exists
    if [ ! -e /etc/ssh/sshd_not_to_be_run ]; then
        log "writing /etc/ssh/sshd_not_to_be_run: the system-wide sshd stays off"
        echo "ebpf.fleet scripts/setup.sh: sshd runs only inside the lab's namespaces (scripts/lab.sh)" \
            >/etc/ssh/sshd_not_to_be_run
    fi
    listeners="$(ss -Hltnp 2>/dev/null | grep -F '"sshd"' || true)"
    if [ -n "$listeners" ]; then
        printf '[setup] error: expected no sshd listening in the host network namespace, found:\n%s\n' "$listeners" >&2
        exit 1
    fi
}

# bcc compiles against the running kernel's headers. Debian ships headers for
# its own kernel series, split in two folders: linux-headers-X-amd64 (generated
# files, the "build" tree) and linux-headers-X-common (the "source" tree).
# Link them when the running kernel has none.
link_kernel_headers() {
    local moddir
    moddir="/lib/modules/$(uname -r)"
    if [ -e "$moddir/source/include/linux/kconfig.h" ] && [ -e "$moddir/build/include/generated" ]; then
        return
    fi
    local build common
    build="$(find /usr/src -maxdepth 1 -name 'linux-headers-*-amd64' -type d | sort -V | tail -n 1)"
    common="${build%-amd64}-common"
    if [ -z "$build" ] || [ ! -d "$common" ]; then
        log "no Debian kernel headers found; bcc compilation will be unavailable"
        return
    fi
    log "linking $build (build) and $common (source) as kernel headers for $(uname -r)"
    mkdir -p "$moddir"
    ln -sfn "$build" "$moddir/build"
    ln -sfn "$common" "$moddir/source"
}

mount_bpffs() {
    if ! mountpoint -q /sys/fs/bpf; then
        log "mounting bpffs at /sys/fs/bpf"
        mount -t bpf bpf /sys/fs/bpf
    fi
}

# A virtualenv installed from one pinned requirements file, rebuilt only when that file changes:
#   venv_from_requirements <venv> <requirements> <what it is, for the log>
venv_from_requirements() {
    local venv="$1" requirements="$2" what="$3"
    local stamp="$venv/.requirements.sha256"
    local want
    want="$(sha256sum "$requirements" | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        log "$what $venv up to date"
        return
    fi
    log "creating $what $venv from $requirements"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements" 2> >(grep -v "Location 'file" >&2)
    echo "$want" > "$stamp"
}

create_venv() {
    venv_from_requirements "$VENV" "$REQUIREMENTS" virtualenv
}

# ansible-test sanity runs in a venv of its own with the requirements that
# ansible-test pins for itself (its --venv mode would download pip from a
# host outside the package registries).
create_sanity_venv() {
    local reqdir stamp want
    reqdir="$("$VENV/bin/python" -c 'import ansible_test, os; print(os.path.join(os.path.dirname(ansible_test.__file__), "_data", "requirements"))')"
    stamp="$SANITY_VENV/.requirements.sha256"
    want="$(cat "$REQUIREMENTS" "$reqdir"/sanity.*.txt | sha256sum | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        log "sanity virtualenv $SANITY_VENV up to date"
        return
    fi
    log "creating sanity virtualenv $SANITY_VENV"
    /usr/bin/python3 -m venv "$SANITY_VENV"
    local core
    core="$(grep -E '^ansible-core==' "$REQUIREMENTS")"
    local args=()
    for f in "$reqdir"/sanity.*.txt; do args+=(-r "$f"); done
    "$SANITY_VENV/bin/pip" install -q --disable-pip-version-check "$core" "${args[@]}" 2> >(grep -v "Location 'file" >&2)
    echo "$want" > "$stamp"
}

# galaxy-importer (make galaxy-check) pins dependencies that clash with the controller's (attrs): a venv of its own
# from requirements/galaxy-importer.txt, rebuilt only when that file changes.
create_importer_venv() {
    venv_from_requirements "$IMPORTER_VENV" "$ROOT/requirements/galaxy-importer.txt" "galaxy-importer virtualenv"
}

install_pip_bootstrap() {
    local version cache
    version="$(grep -oP "pip='\K[0-9.]+" "$("$SANITY_VENV/bin/python" -c 'import ansible_test, os; print(os.path.join(os.path.dirname(ansible_test.__file__), "_internal", "python_requirements.py"))')")"
    cache="$HOME/.ansible/test/cache/get_pip_${version//./_}.py"
    if ! cmp -s "$ROOT/scripts/ansible_test_get_pip.py" "$cache"; then
        log "installing ansible-test's pip bootstrap stand-in at $cache"
        mkdir -p "$(dirname "$cache")"
        cp "$ROOT/scripts/ansible_test_get_pip.py" "$cache"
    fi
}

install_debian_packages
keep_system_sshd_off
link_kernel_headers
mount_bpffs
create_venv
create_sanity_venv
create_importer_venv
install_pip_bootstrap
log "done"
