#!/usr/bin/env bash
# Install (or upgrade) the CityEdge agent on a gateway: Raspberry Pi OS / Debian bookworm.
#
#   sudo install/install.sh                           # online: from this source tree
#   sudo install/install.sh --wheelhouse /media/usb/wheelhouse   # offline (see docs/DEPLOY.md)
#   install/install.sh --root /tmp/stage              # stage into a directory (no systemctl)
#
# What it does (every step is idempotent: running it again upgrades in place):
#   1. a virtualenv in PREFIX/venv (default /opt/cityedge/venv) with the agent installed;
#      the Cython filter module is compiled when a C compiler and Python headers are present,
#      otherwise the pure-Python twin is used (same results, slower) and a warning is printed;
#   2. /usr/local/bin/cityedge -> PREFIX/venv/bin/cityedge for technicians, and its bash
#      completion in /usr/share/bash-completion/completions/cityedge;
#   3. the systemd unit in /etc/systemd/system/cityedge.service (replaced on upgrade: local
#      changes belong in `systemctl edit cityedge` drop-ins);
#   4. /etc/cityedge/gateway.toml from examples/gateway.toml, ONLY if there is none yet, plus
#      conf.d/, profiles/ and credentials/ (0700, root) with an empty mqtt_password placeholder;
#   5. the system account and group `cityedge` (sysusers.d; with --root only the file, applied
#      at the image's first boot): the unit runs as it, and members of the group reach the
#      control socket in /run/cityedge without sudo;
#   6. with systemd running (and no --root): daemon-reload, enable, and restart if it was running.
set -euo pipefail

PREFIX=/opt/cityedge
ROOT=""
WHEELHOUSE=""
PYTHON=${PYTHON:-python3}
ENABLE=1
NO_DEPS=0
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
  cat <<EOF
usage: install.sh [--prefix DIR] [--root DIR] [--wheelhouse DIR] [--python PY] [--no-enable]

  --prefix DIR      install location of the virtualenv (default /opt/cityedge)
  --root DIR        stage everything under DIR instead of / (implies --no-enable; for tests
                    and image builds: the venv's scripts point into DIR)
  --wheelhouse DIR  offline install: pip --no-index --find-links DIR (build it with
                    'pip wheel SRC -w DIR' on a machine of the same architecture)
  --python PY       interpreter for the virtualenv (default python3, must be >= 3.11)
  --no-enable       do not run systemctl (daemon-reload / enable / restart)
  --no-deps         install only the cityedge package (dependencies provided otherwise)
EOF
}

die() { echo "install.sh: error: $*" >&2; exit 1; }
warn() { echo "install.sh: warning: $*" >&2; }
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=${2:?--prefix needs a directory}; shift 2 ;;
    --root) ROOT=${2:?--root needs a directory}; ENABLE=0; shift 2 ;;
    --wheelhouse) WHEELHOUSE=${2:?--wheelhouse needs a directory}; shift 2 ;;
    --python) PYTHON=${2:?--python needs an interpreter}; shift 2 ;;
    --no-enable) ENABLE=0; shift ;;
    --no-deps) NO_DEPS=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option '$1'" ;;
  esac
done

case "$PREFIX" in /*) ;; *) die "--prefix must be absolute (got '$PREFIX')" ;; esac
if [ -n "$ROOT" ]; then
  mkdir -p "$ROOT"
  ROOT=$(cd "$ROOT" && pwd)
elif [ "$(id -u)" != 0 ]; then
  die "run as root (sudo $0 $*), or stage into a directory with --root DIR"
fi
if [ -n "$WHEELHOUSE" ]; then
  [ -d "$WHEELHOUSE" ] || die "wheelhouse '$WHEELHOUSE' is not a directory"
  WHEELHOUSE=$(cd "$WHEELHOUSE" && pwd)
  ls "$WHEELHOUSE"/cityedge-*.whl >/dev/null 2>&1 \
    || die "no cityedge-*.whl in $WHEELHOUSE (build it with: pip wheel . -w $WHEELHOUSE)"
else
  [ -f "$SRC/pyproject.toml" ] || die "no source tree at $SRC (or use --wheelhouse DIR)"
fi

command -v "$PYTHON" >/dev/null || die "$PYTHON not found: apt install python3"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$PYTHON is older than 3.11 (Raspberry Pi OS bookworm ships 3.11)"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
  || die "the venv module is missing: apt install python3-venv"

VENV=$ROOT$PREFIX/venv
ETC=$ROOT/etc/cityedge
UNIT_DIR=$ROOT/etc/systemd/system

# --- 1. virtualenv + package -----------------------------------------------------------------
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
  say "reusing virtualenv $VENV"
else
  say "creating virtualenv $VENV"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input -q)
DEPS=()
[ "$NO_DEPS" = 1 ] && DEPS=(--no-deps)

if [ -n "$WHEELHOUSE" ]; then
  say "installing from wheelhouse $WHEELHOUSE (offline)"
  "${PIP[@]}" install --no-index --find-links "$WHEELHOUSE" --upgrade "${DEPS[@]}" cityedge
else
  if ! command -v cc >/dev/null && ! command -v gcc >/dev/null; then
    warn "no C compiler: the filters run as pure Python (apt install build-essential python3-dev)"
  elif ! "$PYTHON" -c 'import sysconfig, os, sys
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
    warn "Python headers missing: the filters run as pure Python (apt install python3-dev)"
  fi
  say "installing from source $SRC"
  "${PIP[@]}" install --upgrade "${DEPS[@]}" "$SRC"
fi
IMPL=$("$VENV/bin/python" -I -c 'import ext; print(ext.IMPLEMENTATION)' 2>/dev/null || echo unknown)
if [ "$IMPL" = cython ]; then
  say "filters: compiled Cython module"
else
  warn "filters: $IMPL implementation (the Cython module was not built; results are identical)"
fi

# The service's -OO bytecode (PYTHONPYCACHEPREFIX in the unit) was compiled from the old
# package: drop it, the next start compiles the new one. DynamicUser= keeps it in private/.
rm -rf "$ROOT/var/cache/cityedge/pycache" "$ROOT/var/cache/private/cityedge/pycache"

# --- 2. command for technicians --------------------------------------------------------------
mkdir -p "$ROOT/usr/local/bin"
ln -sfn "$PREFIX/venv/bin/cityedge" "$ROOT/usr/local/bin/cityedge"
mkdir -p "$ROOT$PREFIX/share"
[ -f "$SRC/docs/DEPLOY.md" ] && install -m 0644 "$SRC/docs/DEPLOY.md" "$ROOT$PREFIX/share/DEPLOY.md"
install -m 0644 "$SRC/examples/gateway.toml" "$ROOT$PREFIX/share/gateway.toml.example"
# bash completion of commands, options and device ids (bash-completion loads it on demand)
COMPLETIONS=$ROOT/usr/share/bash-completion/completions
mkdir -p "$COMPLETIONS"
if "$VENV/bin/cityedge" completion bash > "$COMPLETIONS/cityedge.tmp" 2>/dev/null; then
  mv -f "$COMPLETIONS/cityedge.tmp" "$COMPLETIONS/cityedge"
  say "bash completion: /usr/share/bash-completion/completions/cityedge"
else
  rm -f "$COMPLETIONS/cityedge.tmp"
  warn "no bash completion installed: 'cityedge completion bash' failed (dependencies missing?)"
fi

# --- 3. systemd unit -------------------------------------------------------------------------
mkdir -p "$UNIT_DIR"
sed -e "s|/opt/cityedge/venv/bin/cityedge|$PREFIX/venv/bin/cityedge|" \
    -e "s|/opt/cityedge/share/|$PREFIX/share/|" \
    "$SRC/systemd/cityedge.service" > "$UNIT_DIR/cityedge.service.tmp"
chmod 0644 "$UNIT_DIR/cityedge.service.tmp"
mv -f "$UNIT_DIR/cityedge.service.tmp" "$UNIT_DIR/cityedge.service"
say "unit installed: /etc/systemd/system/cityedge.service"
# the commissioning page (off until `systemctl enable --now cityedge-ui.socket`)
for u in cityedge-ui.service cityedge-ui.socket; do
  sed -e "s|/opt/cityedge/venv/bin/cityedge|$PREFIX/venv/bin/cityedge|" \
      -e "s|/opt/cityedge/share/|$PREFIX/share/|" "$SRC/systemd/$u" > "$UNIT_DIR/$u.tmp"
  chmod 0644 "$UNIT_DIR/$u.tmp"
  mv -f "$UNIT_DIR/$u.tmp" "$UNIT_DIR/$u"
done

# --- 4. configuration skeleton (never overwritten) -------------------------------------------
install -d -m 0755 "$ETC" "$ETC/conf.d" "$ETC/profiles"
install -d -m 0700 "$ETC/credentials"
if [ -e "$ETC/gateway.toml" ]; then
  say "keeping existing /etc/cityedge/gateway.toml"
else
  install -m 0644 "$SRC/examples/gateway.toml" "$ETC/gateway.toml"
  say "config skeleton written: /etc/cityedge/gateway.toml (edit it, then: cityedge check)"
fi
if [ ! -e "$ETC/credentials/mqtt_password" ]; then
  # LoadCredential= fails the start if its file is missing: an empty placeholder keeps the
  # unit startable for outputs without a password.
  install -m 0600 /dev/null "$ETC/credentials/mqtt_password"
  say "put the MQTT password in /etc/cityedge/credentials/mqtt_password (mode 0600)"
fi

# --- 5. system account ------------------------------------------------------------------------
SYSUSERS=$ROOT/usr/lib/sysusers.d
mkdir -p "$SYSUSERS"
install -m 0644 "$SRC/systemd/cityedge.sysusers" "$SYSUSERS/cityedge.conf"
if [ -n "$ROOT" ]; then
  say "account: $SYSUSERS/cityedge.conf (created at first boot by systemd-sysusers)"
elif getent passwd cityedge >/dev/null; then
  say "account: cityedge exists"
elif command -v systemd-sysusers >/dev/null; then
  systemd-sysusers "$SYSUSERS/cityedge.conf"
  say "account: cityedge created (systemd-sysusers)"
else
  useradd --system --user-group --no-create-home --home-dir / --shell /usr/sbin/nologin \
    --comment "CityEdge gateway agent" cityedge
  say "account: cityedge created (useradd)"
fi
say "technicians in group cityedge use status/read/write without sudo: usermod -aG cityedge NAME"

# --- 6. systemd --------------------------------------------------------------------------------
if [ "$ENABLE" = 1 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  systemctl daemon-reload
  systemctl enable cityedge.service >/dev/null
  if systemctl is-active --quiet cityedge.service; then
    say "restarting the running agent on the new version"
    systemctl restart cityedge.service
  else
    say "enabled; start it with: systemctl start cityedge"
  fi
else
  say "systemd not touched (not running, --root or --no-enable)"
fi
say "done: $("$VENV/bin/python" -I -c 'import agent; print("cityedge", agent.__version__)')"
