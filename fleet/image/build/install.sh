#!/bin/bash
# Lobster image recipe for EC2: the user-data of the builder instance that `lobster image
# build --cloud aws` launches from a base AMI. It installs the slave binary and the units,
# enables them, and powers the builder off; Lobster then makes the AMI with CreateImage.
# The same units are laid out for the local cloud by `lobster image build --local`.
set -euxo pipefail
exec > >(tee -a /var/log/lobster-install.log) 2>&1

# The binary (an https URL Lobster was given, e.g. a presigned S3 URL).
curl -fsSL --retry 5 -o /usr/local/bin/lobster-slave '{{binary_url}}'
chmod 0755 /usr/local/bin/lobster-slave
/usr/local/bin/lobster-slave --version

# The units.
{{units}}
systemctl daemon-reload
systemctl enable lobster-boot.service lobster-idle.service

# Stopping the instance from inside must stop it, not terminate it.
install -d -m 0755 /var/log/lobster /etc/lobster

# Clean the builder's traces so every VM boots fresh.
cloud-init clean --logs || true
rm -f /var/log/lobster/*.log

systemctl poweroff
