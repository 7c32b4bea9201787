#!/usr/bin/env bash
# Remove the CityEdge agent: the unit, the virtualenv and the /usr/local/bin link.
# Configuration (/etc/cityedge) and the outbox (/var/lib/cityedge) are kept unless --purge.
#
#   sudo install/uninstall.sh            # keep config, credentials and unsent readings
#   sudo install/uninstall.sh --purge    # remove everything
#   install/uninstall.sh --root /tmp/stage
set -euo pipefail

PREFIX=/opt/cityedge
ROOT=""
PURGE=0
SYSTEMCTL=1

die() { echo "uninstall.sh: error: $*" >&2; exit 1; }
say() { echo "uninstall.sh: $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=${2:?--prefix needs a directory}; shift 2 ;;
    --root) ROOT=${2:?--root needs a directory}; SYSTEMCTL=0; shift 2 ;;
    --purge) PURGE=1; shift ;;
    -h|--help) echo "usage: uninstall.sh [--prefix DIR] [--root DIR] [--purge]"; exit 0 ;;
    *) die "unknown option '$1'" ;;
  esac
done
case "$PREFIX" in /?*) ;; *) die "--prefix must be an absolute directory other than /" ;; esac
if [ -n "$ROOT" ]; then
  [ -d "$ROOT" ] || die "--root $ROOT does not exist"
  ROOT=$(cd "$ROOT" && pwd)
elif [ "$(id -u)" != 0 ]; then
  die "run as root (sudo $0 $*)"
fi

UNIT=$ROOT/etc/systemd/system/cityedge.service
if [ "$SYSTEMCTL" = 1 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  systemctl disable --now cityedge-ui.socket cityedge-ui.service 2>/dev/null || true
  systemctl disable --now cityedge.service 2>/dev/null || true
fi
rm -f "$UNIT"
rm -rf "$ROOT/etc/systemd/system/cityedge.service.d"
for u in cityedge-ui.service cityedge-ui.socket; do
  rm -rf "$ROOT/etc/systemd/system/$u" "$ROOT/etc/systemd/system/$u.d"
done
if [ "$SYSTEMCTL" = 1 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  systemctl daemon-reload
fi
say "unit removed"

link=$ROOT/usr/local/bin/cityedge
if [ -L "$link" ]; then rm -f "$link"; fi
rm -f "$ROOT/usr/share/bash-completion/completions/cityedge"
rm -rf "$ROOT$PREFIX/venv" "$ROOT$PREFIX/share"
rmdir "$ROOT$PREFIX" 2>/dev/null || true
say "virtualenv removed: $PREFIX/venv"
# the service's bytecode cache: derived from the venv, useless without it
rm -rf "$ROOT/var/cache/cityedge" "$ROOT/var/cache/private/cityedge"

if [ "$PURGE" = 1 ]; then
  # DynamicUser= keeps the state in /var/lib/private/cityedge behind a /var/lib symlink.
  rm -rf "$ROOT/etc/cityedge" "$ROOT/var/lib/cityedge" "$ROOT/var/lib/private/cityedge"
  # the account stays (files elsewhere may still belong to it), its sysusers.d entry goes
  rm -f "$ROOT/usr/lib/sysusers.d/cityedge.conf"
  say "purged /etc/cityedge and /var/lib/cityedge (config, credentials, outbox)"
else
  say "kept /etc/cityedge and /var/lib/cityedge (use --purge to remove them)"
fi
