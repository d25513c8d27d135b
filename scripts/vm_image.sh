#!/usr/bin/env bash
# Build (or reuse) the Debian 12 VM image of the molecule scenarios (extensions/molecule/, docs/molecule.md).
#   bash scripts/vm_image.sh          prints the image folder (the last line of its output)
# The folder, /var/cache/ebpf-fleet-vm/<recipe hash>/, holds:
#   rootfs.img    ext4 root file system (root=/dev/vda), made by `mke2fs -d` from an mmdebstrap tree: no loop mounts
#   vmlinuz, initrd.img   the distribution kernel and its initramfs, for qemu -kernel/-initrd
#   id_ed25519(.pub)      the SSH key authorised for root
#   recipe.sha256         the recipe hash (this script and its package list)
# The hash covers this script, so a changed recipe builds a new folder; an unchanged one is reused at once.
# The mirror and any apt proxy are the host's own: read from its apt sources and `apt-config dump`, never written here.
# Run as root (mmdebstrap in root mode, file ownership kept by mke2fs -d). VM_IMAGE_CACHE moves the cache.
set -euo pipefail

SELF="$(readlink -f "${BASH_SOURCE[0]}")"
CACHE="${VM_IMAGE_CACHE:-/var/cache/ebpf-fleet-vm}"
SUITE=bookworm
IMAGE_SIZE=3G

# What the VM runs: the distribution kernel, systemd as PID 1 (real units, timers and reboots), sshd and Python for
# Ansible, dbus (shutdown and ansible.builtin.reboot ask logind), python3-apt for the package module (with no network inside, it must not try to install it), and what
# roles/bpf_host/vars/Debian.yml installs (base + bpftool, and bcc with the kernel's headers for the fleet
# scenario's compiler=bcc host) so its package task finds everything in place; xdp-tools (xdp-loader, xdp-filter)
# for the libxdp dispatcher checks; ping for the checks inside a VM. No clang: the scenarios compile on the controller.
VM_PACKAGES=(
    linux-image-amd64 systemd-sysv udev dbus openssh-server python3 python3-apt
    libbpf1 python3-pyroute2 python3-jmespath iproute2 ethtool bpftool
    python3-bpfcc linux-headers-amd64 xdp-tools iputils-ping
)
# Kernel modules the VM never loads (it has virtio devices only), left out to keep the image small.
PRUNE_MODULES=(
    drivers/gpu drivers/media drivers/infiniband drivers/staging drivers/net/wireless drivers/net/ethernet
    drivers/bluetooth drivers/isdn drivers/iio drivers/scsi drivers/usb drivers/hid drivers/input drivers/mtd
    drivers/md drivers/platform drivers/hwmon drivers/edac drivers/thunderbolt drivers/nvme drivers/firewire
    drivers/ata drivers/mmc drivers/target drivers/video sound net/wireless net/mac80211 net/bluetooth fs/ocfs2
    fs/btrfs fs/xfs fs/nfs fs/nfsd fs/ceph fs/smb fs/gfs2 fs/f2fs
)

log() { printf '[vm_image] %s\n' "$*" >&2; }

recipe_hash() {
    { cat "$SELF"; printf '%s\n' "${VM_PACKAGES[@]}" "${PRUNE_MODULES[@]}"; } | sha256sum | cut -c1-16
}

# The host's apt sources files (deb822 .sources or one-line .list): mmdebstrap pastes each into the image's
# sources, so the image uses the same mirror as the host (no host name in this script).
host_sources() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -s "$f" ] && grep -qvE '^\s*(#|$)' "$f" && echo "$f"
    done
    return 0
}

# The host's apt proxy settings, as mmdebstrap --aptopt arguments (nothing when the host uses none).
host_proxy_aptopts() {
    apt-config dump 2>/dev/null | grep -iE '^Acquire::[a-z]+::Proxy(::[^ ]+)? ' | while read -r line; do
        printf -- '--aptopt=%s;\n' "$line"
    done
}

build() {
    local out="$1" work="$2"
    local tree="$work/tree"
    local -a sources aptopts
    mapfile -t sources < <(host_sources)
    [ "${#sources[@]}" -gt 0 ] || { log "error: no apt sources found in /etc/apt"; exit 1; }
    mapfile -t aptopts < <(host_proxy_aptopts)
    log "mmdebstrap $SUITE (sources: ${sources[*]}; ${#aptopts[@]} proxy option(s) from apt-config)"
    ssh-keygen -q -t ed25519 -N '' -C ebpf-fleet-vm -f "$work/id_ed25519"
    mkdir -p "$tree"
    # - initramfs-tools builds a small initrd (virtio and ext4 only: MODULES=list) instead of the generic one
    # - no documentation, man pages or translations
    # - udev names the NICs by their PCI slot (create.yml puts them there): mgmt0 (networkd, DHCP from qemu's
    #   user-mode network) and data0, whose address and the host name come from the kernel command line
    #   (ip=, systemd.hostname=; systemd-network-generator writes the .network), so one image serves every VM
    # - the timers and services a test VM does not need are masked (apt's daily runs, e2scrub, fstrim)
    # shellcheck disable=SC2016 # the hooks are shell code that mmdebstrap runs with the tree as $1
    nice -n 10 mmdebstrap --variant=apt --mode=root --format=directory --quiet \
        --include="$(IFS=,; echo "${VM_PACKAGES[*]}")" \
        "${aptopts[@]}" \
        --dpkgopt=path-exclude=/usr/share/doc/* --dpkgopt=path-include=/usr/share/doc/*/copyright \
        --dpkgopt=path-exclude=/usr/share/man/* --dpkgopt=path-exclude=/usr/share/locale/* \
        --dpkgopt=path-exclude=/usr/share/info/* \
        --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d"
            printf "MODULES=list\nCOMPRESS=gzip\n" >"$1/etc/initramfs-tools/conf.d/ebpf-fleet-vm.conf"
            mkdir -p "$1/etc/initramfs-tools" && printf "virtio_pci\nvirtio_blk\next4\n" >"$1/etc/initramfs-tools/modules"' \
        --customize-hook="bash '$SELF' --customize \"\$1\" '$work'" \
        "$SUITE" "$tree" "${sources[@]}"
    cp "$tree"/boot/vmlinuz-* "$work/vmlinuz"
    cp "$tree"/boot/initrd.img-* "$work/initrd.img"
    rm -f "$tree"/boot/initrd.img-*
    log "mke2fs -t ext4 -d ($(du -sh "$tree" | cut -f1) of files) $IMAGE_SIZE"
    nice -n 10 mke2fs -q -t ext4 -L ebpf-fleet-root -E root_owner=0:0 -d "$tree" "$work/rootfs.img" "$IMAGE_SIZE"
    rm -rf "$tree"
    recipe_hash >"$work/recipe.sha256"
    mv "$work" "$out"
}

# Runs inside mmdebstrap's customize hook: $1 the tree, $2 the work folder (the SSH key).
customize() {
    local root="$1" work="$2" kver
    echo ebpf-fleet-vm >"$root/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 ebpf-fleet-vm\n' >"$root/etc/hosts"
    printf '/dev/vda / ext4 defaults,noatime 0 1\n' >"$root/etc/fstab"
    install -d -m 0700 "$root/root/.ssh" "$root/root/.ansible" "$root/root/.ansible/tmp"
    install -m 0600 "$work/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
    printf 'UseDNS no\nGSSAPIAuthentication no\nPermitRootLogin prohibit-password\n' \
        >"$root/etc/ssh/sshd_config.d/ebpf-fleet-vm.conf"
    mkdir -p "$root/etc/systemd/network"
    printf '[Match]\nPath=pci-0000:00:05.0\n[Link]\nName=mgmt0\n' >"$root/etc/systemd/network/10-mgmt0.link"
    printf '[Match]\nPath=pci-0000:00:06.0\n[Link]\nName=data0\n' >"$root/etc/systemd/network/10-data0.link"
    printf '[Match]\nName=mgmt0\n[Network]\nDHCP=ipv4\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n' \
        >"$root/etc/systemd/network/20-mgmt0.network"
    chroot "$root" systemctl enable -q systemd-networkd.service systemd-network-generator.service
    chroot "$root" systemctl mask -q apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
        e2scrub_reap.service systemd-networkd-wait-online.service
    # serial console only, no waiting for a boot menu
    chroot "$root" systemctl enable -q serial-getty@ttyS0.service
    kver="$(basename "$(ls -d "$root"/usr/lib/modules/*)")"
    for dir in "${PRUNE_MODULES[@]}"; do rm -rf "$root/usr/lib/modules/$kver/kernel/$dir"; done
    chroot "$root" depmod -a "$kver"
    chroot "$root" update-initramfs -u -k "$kver" >/dev/null
    rm -rf "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
}

main() {
    local hash out start
    hash="$(recipe_hash)"
    out="$CACHE/$hash"
    if [ -f "$out/rootfs.img" ] && [ -f "$out/recipe.sha256" ]; then
        log "reusing $out"
        echo "$out"
        return
    fi
    [ "$(id -u)" = 0 ] || { log "error: run as root (mmdebstrap --mode=root, mke2fs -d keeps ownership)"; exit 1; }
    start=$(date +%s)
    mkdir -p "$CACHE"
    WORK="$(mktemp -d "$CACHE/.build-$hash.XXXXXX")"
    trap 'rm -rf "$WORK"' EXIT
    build "$out" "$WORK"
    trap - EXIT
    log "built $out in $(($(date +%s) - start)) s ($(du -sh --apparent-size "$out/rootfs.img" | cut -f1) image," \
        "$(du -sh "$out/rootfs.img" | cut -f1) on disk)"
    echo "$out"
}

if [ "${1:-}" = --customize ]; then
    customize "$2" "$3"
else
    main "$@"
fi
