"""On a real board (never in CI): K210TOOL_TEST_PORT=/dev/ttyUSB0 pytest -m hardware tests/device"""

from __future__ import annotations

import os

import pytest

from k210tool.device.deploy import deploy, run_script
from k210tool.device.transport import open_transport

PORT = os.environ.get("K210TOOL_TEST_PORT", "")
pytestmark = [pytest.mark.hardware, pytest.mark.skipif(not PORT, reason="set K210TOOL_TEST_PORT")]


def test_deploy_and_run_on_a_real_board(tmp_path):
    probe = tmp_path / "k210tool_probe.txt"
    probe.write_bytes(bytes(range(256)) * 8)
    with open_transport(PORT) as t:
        result = deploy(t, [(probe, "/flash/k210tool_probe.txt")], reboot=False)
    assert result.files[0].checksum.startswith(("sha256:", "adler32:"))
    out: list[bytes] = []
    with open_transport(PORT) as t:
        res = run_script(t, "import os\nprint(os.stat('/flash/k210tool_probe.txt')[6])\n"
                            "os.remove('/flash/k210tool_probe.txt')\n", on_output=out.append)
    assert res.ok and b"2048" in b"".join(out)
