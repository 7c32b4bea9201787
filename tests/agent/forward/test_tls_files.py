"""A TLS file an output cannot use is named in the error the publisher logs (issue 19: the log
used to repeat FileNotFoundError without a path, for ever)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config.outputs import MqttOutput
from agent.forward.mqtt.connect import TlsFileError, build_tls_context


def output(**tls: str) -> MqttOutput:
    return MqttOutput.model_validate(
        {"type": "mqtt", "id": "up", "brokers": [{"url": "mqtts://broker:8883"}], "tls": tls}
    )


def test_a_missing_ca_is_named(tmp_path: Path) -> None:
    with pytest.raises(TlsFileError) as info:
        build_tls_context(output(ca_file=str(tmp_path / "ca.pem")))
    assert str(info.value).startswith(f"tls.ca_file {tmp_path / 'ca.pem'}: No such file")


def test_a_certificate_that_is_not_one_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "gw.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(TlsFileError) as info:
        build_tls_context(output(cert_file=str(bad), key_file=str(bad)))
    assert f"tls.cert_file/key_file {bad}, {bad}:" in str(info.value)
