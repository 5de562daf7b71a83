"""Fixtures for the cross-language tests: Python stubs generated from proto/, and a running
`kizuna up` (all-in-one, SQLite in a temporary folder, free ports)."""

import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto"


@pytest.fixture(scope="session")
def stubs():
    """Generates Python modules for every .proto into a temporary folder and imports from it."""
    from grpc_tools import protoc
    import grpc_tools

    out = Path(tempfile.mkdtemp(prefix="kizuna-py-"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    code = protoc.main(
        ["grpc_tools.protoc", f"-I{PROTO}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}", *files]
    )
    assert code == 0, "protoc failed on proto/"
    sys.path.insert(0, str(out))
    return out


@pytest.fixture(scope="session")
def suite():
    """Starts `kizuna up` on free ports and yields its addresses and admin token."""
    binary = os.environ.get("KIZUNA_BIN", str(ROOT / "target" / "debug" / "kizuna"))
    data = tempfile.mkdtemp(prefix="kizuna-data-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIZUNA__")}
    env["KIZUNA__TELEMETRY__LOG_LEVEL"] = "warn"
    process = subprocess.Popen(
        [binary, "up", "--data-dir", data, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=sys.stderr,
        text=True,
        env=env,
    )
    ports, token = {}, None
    for line in process.stdout:
        match = re.match(r"\s+(gateway|leads|deals|accounts)\s+([\d.]+):(\d+)", line)
        if match:
            ports[match.group(1)] = f"{match.group(2)}:{match.group(3)}"
        if line.strip().startswith("export KIZUNA_TOKEN="):
            token = line.strip().split("=", 1)[1]
        if line.startswith("Ctrl-C stops everything"):
            break
    assert token and len(ports) == 4, f"kizuna up did not report its ports and token: {ports}"
    yield {"ports": ports, "token": token, "process": process}
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, "kizuna up exits cleanly on SIGTERM"
