#!/bin/bash
# Lobster image recipe: installs the slave binary and the units into a base image and enables
# them. On EC2 it is the user-data of the builder instance that `lobster image build --cloud
# aws` launches from a base AMI (it powers the builder off; Lobster then makes the AMI with
# CreateImage). It also runs unbooted inside a root file system (`lobster image build --local
# --rootfs DIR`, through systemd-nspawn), where there is no running systemd to reload or
# power off.
set -euxo pipefail
exec > >(tee -a /var/log/lobster-install.log) 2>&1

# The binary (an https URL Lobster was given, e.g. a presigned S3 URL; or a file:// URL).
curl -fsSL --retry 5 -o /usr/local/bin/lobster-slave '{{binary_url}}'
chmod 0755 /usr/local/bin/lobster-slave
/usr/local/bin/lobster-slave --version

# The units.
{{units}}
booted=false
if [ -d /run/systemd/system ]; then booted=true; fi
if $booted; then systemctl daemon-reload; fi
systemctl enable lobster-boot.service lobster-idle.service lobster-lifetime.service

install -d -m 0755 /var/log/lobster /etc/lobster

# Clean the builder's traces so every VM boots fresh: its own machine id (an empty
# /etc/machine-id is filled in at first boot), no cloud-init state, no logs.
if command -v cloud-init >/dev/null; then cloud-init clean --logs || true; fi
truncate -s 0 /etc/machine-id
if [ -f /var/lib/dbus/machine-id ] && [ ! -L /var/lib/dbus/machine-id ]; then rm -f /var/lib/dbus/machine-id; fi
rm -f /var/log/lobster/*.log /var/log/lobster/*.log.*

if $booted; then systemctl poweroff; fi
