#!/bin/sh
# Provisions the xnic test rig: Rust, the project's own setup, xnic's Debian package built
# from this tree and installed, and the daemon running on the lab as its systemd service.
set -eu

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends ca-certificates curl build-essential git pkg-config

if ! command -v cargo >/dev/null 2>&1 && [ ! -x /root/.cargo/bin/cargo ]; then
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi
export PATH="/root/.cargo/bin:$PATH"

cd /xnic
# The same setup every xtask command runs: pinned nightly, bpf-linker, Debian packages.
cargo xtask setup
# Installed as operators install it: the Debian package (binary, xnic@.service, man pages,
# completions), with its recommended tools.
cargo xtask package
apt-get install -y -qq ./target/package/xnic_*.deb
# The lab's guest image, the same step `cargo xtask test` runs (cached in /var/cache/xnic).
xnic lab image
# Guests in this VM are guests in a guest: KVM when the host offers nested virtualization
# (and it works: guests that hang after the BIOS mean it does not), TCG otherwise.
if [ -c /dev/kvm ] && grep -qE 'vmx|svm' /proc/cpuinfo; then
    echo "nested KVM found: try \`XNIC_GUEST_ACCEL=kvm xnic lab up --vms qemu\`; TCG is the default"
fi

# The lab, described by the built-in configuration.
mkdir -p /etc/xnic
xnic lab config > /etc/xnic/lab.toml

cat > /etc/systemd/system/xnic-lab.service <<'UNIT'
[Unit]
Description=xnic network-namespace lab
After=network.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/xnic lab up --config /etc/xnic/lab.toml
ExecStop=/usr/bin/xnic lab down --config /etc/xnic/lab.toml

[Install]
WantedBy=multi-user.target
UNIT

# The packaged xnic@.service, ordered after the lab that makes its interfaces.
mkdir -p /etc/systemd/system/xnic@lab.service.d
cat > /etc/systemd/system/xnic@lab.service.d/lab.conf <<'UNIT'
[Unit]
After=xnic-lab.service
Requires=xnic-lab.service
UNIT

systemctl daemon-reload
systemctl enable --now xnic-lab.service xnic@lab.service
sleep 2
xnic status
xnic lab traffic --config /etc/xnic/lab.toml
xnic stats
echo "real guests: sudo xnic lab demo --vms qemu --duration 60 (after stopping xnic-lab.service)"

