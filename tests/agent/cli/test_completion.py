"""``cityedge completion bash``: the generated script, run by bash itself, completes
subcommands, options and the device ids of the configuration (gateway file and conf.d)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = """\
[gateway]
id = "gw"

[[buses]]
id = "rs485-1"
endpoint = "rtu:///dev/ttyUSB0"

[[devices]]
id = "lamp-1"   # the first lamp
bus = "rs485-1"
profile = "cityedge/streetlight"

[[devices]]
  id = "lamp-2"
bus = "rs485-1"
profile = "cityedge/streetlight"
"""


def complete(script: Path, line: str, cfg: Path) -> list[str]:
    words = line.split(" ")
    test = (
        f"source {script}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        f"COMP_LINE={line!r}\nCOMP_POINT=${{#COMP_LINE}}\n"
        "_shtab_cityedge\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    res = subprocess.run(
        ["bash", "--norc", "-c", test],
        capture_output=True,
        text=True,
        check=False,
        env={"CITYEDGE_CONFIG": str(cfg), "PATH": "/usr/bin:/bin"},
    )
    assert res.returncode == 0, res.stderr
    return sorted(x.strip() for x in res.stdout.splitlines() if x.strip())


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("bash") is None:
        raise RuntimeError("bash is needed to test its completion script")
    out = tmp_path_factory.mktemp("completion") / "cityedge.bash"
    res = subprocess.run(
        [sys.executable, "-m", "agent", "completion", "bash"],
        capture_output=True,
        text=True,
        check=True,
    )
    out.write_text(res.stdout)
    assert "complete -o bashdefault -F _shtab_cityedge cityedge" in res.stdout
    return out


def test_bash_completes_commands_options_and_device_ids(script: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(CONFIG)
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "cabinet.toml").write_text(
        '[[devices]]\nid = "meter-11"\nbus = "rs485-1"\nprofile = "cityedge/water_meter"\n'
    )
    assert complete(script, "cityedge wa", cfg) == ["watch"]
    assert complete(script, "cityedge sc", cfg) == ["scan"]
    assert complete(script, "cityedge read ", cfg) == ["lamp-1", "lamp-2", "meter-11"]
    assert complete(script, "cityedge watch m", cfg) == ["meter-11"]
    assert "--emit-config" in complete(script, "cityedge scan --e", cfg)
    assert complete(script, "cityedge status --js", cfg) == ["--json"]
