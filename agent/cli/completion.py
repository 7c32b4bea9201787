"""``cityedge completion bash|zsh``: the shell completion script, generated from the parser.

shtab turns the argparse parser into a static script: pressing TAB runs no Python, which
matters on a Pi where starting the interpreter takes the better part of a second. Device ids
(``read``, ``write``, ``watch`` and ``plan`` arguments) are completed by a small shell function
that reads the ``[[devices]]`` ids of ``$CITYEDGE_CONFIG`` (else /etc/cityedge/gateway.toml)
and its conf.d, so they follow the configuration without regenerating the script.
install/install.sh installs the bash script as
/usr/share/bash-completion/completions/cityedge (docs/DEPLOY.md).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agent.cli.common import describe

EXAMPLES = """examples:
  cityedge completion bash > cityedge.bash   # install.sh puts it in bash-completion's directory
  cityedge completion zsh > _cityedge        # for a directory of $fpath
in the current bash only: source <(cityedge completion bash)"""

DEVICES = {"bash": "_cityedge_devices", "zsh": "_cityedge_devices_zsh"}
# the id keys of the [[devices]] tables of a TOML file (awk: on every gateway, unlike a
# Python start-up per TAB)
AWK = r"""/^[ \t]*\[\[devices\]\]/ {d = 1; next}
/^[ \t]*\[/ {d = 0}
d && /^[ \t]*id[ \t]*=/ {sub(/^[^=]*=[ \t]*"/, ""); sub(/".*/, ""); print}"""
PREAMBLE = {
    "bash": r"""
# device ids of the gateway file and its conf.d
_cityedge_device_ids() {
  local cfg="${CITYEDGE_CONFIG:-/etc/cityedge/gateway.toml}"
  awk '@AWK@' "$cfg" "$(dirname "$cfg")"/conf.d/*.toml 2>/dev/null
}
_cityedge_devices() { compgen -W "$(_cityedge_device_ids)" -- "$1"; }
""".replace("@AWK@", AWK),
    "zsh": r"""
_cityedge_devices_zsh() {
  local cfg="${CITYEDGE_CONFIG:-/etc/cityedge/gateway.toml}"
  local -a ids
  ids=(${(f)"$(awk '@AWK@' "$cfg" "${cfg:h}"/conf.d/*.toml 2>/dev/null)"})
  compadd -a ids
}
""".replace("@AWK@", AWK),
}
DEVICE_ARGS = {"read": "device", "write": "device", "watch": "devices", "plan": "device"}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "completion",
        help="print the shell completion script (bash, zsh)",
        description=describe(__doc__),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("shell", choices=sorted(DEVICES), help="the shell to complete for")
    p.set_defaults(func=run)


def script(shell: str) -> str:
    import shtab

    from agent.cli.main import build_parser

    parser = build_parser()
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        for name, sub in getattr(action, "choices", {}).items():
            for a in sub._actions:
                if a.dest == DEVICE_ARGS.get(name):
                    a.complete = {shell: DEVICES[shell]}
                elif a.dest in ("config", "file", "key_file", "config_out"):
                    a.complete = shtab.FILE
    text: str = shtab.complete(parser, shell=shell, preamble=PREAMBLE[shell])
    return text


def run(args: argparse.Namespace) -> int:
    text = script(args.shell)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0
