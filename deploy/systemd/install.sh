#!/bin/sh
# Installs Slipway's release binaries and systemd units on a bare server (run as root from a
# checkout after `cargo build --release --bin slipway-worker --bin slipway-starter`):
#   deploy/systemd/install.sh [WORKERS]      # default 2 worker instances
# Then edit /etc/slipway/slipway.env and `systemctl restart slipway-starter 'slipway-worker@*'`.
set -eu
WORKERS="${1:-2}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/release"

id slipway >/dev/null 2>&1 || useradd --system --home-dir /opt/slipway --shell /usr/sbin/nologin slipway
install -d -m 0755 /opt/slipway /opt/slipway/migrations /opt/slipway/docs
cp -r "$ROOT/migrations/client-stack" /opt/slipway/migrations/
cp "$ROOT/docs/operating.md" /opt/slipway/docs/
install -m 0755 "$TARGET/slipway-worker" "$TARGET/slipway-starter" /usr/local/bin/
install -d -m 0750 -g slipway /etc/slipway
if [ ! -f /etc/slipway/slipway.env ]; then
  # systemd reads KEY=VALUE lines only: drop comments, inline ones included.
  sed -e 's/[[:space:]]\{2,\}#.*$//' -e '/^[[:space:]]*#/d' -e '/^[[:space:]]*$/d' "$ROOT/.env.example" \
    > /etc/slipway/slipway.env
  chmod 0640 /etc/slipway/slipway.env && chgrp slipway /etc/slipway/slipway.env
  echo "wrote /etc/slipway/slipway.env from .env.example: fill in the REQUIRED values"
fi
install -m 0644 "$ROOT/deploy/systemd/slipway-starter.service" "$ROOT/deploy/systemd/slipway-worker@.service" \
  /etc/systemd/system/
systemctl daemon-reload
systemctl enable slipway-starter
i=1
while [ "$i" -le "$WORKERS" ]; do systemctl enable "slipway-worker@$i"; i=$((i + 1)); done
echo "enabled slipway-starter and $WORKERS worker instance(s); start them once slipway.env is complete:"
echo "  systemctl start slipway-starter 'slipway-worker@*'"
