"""The Ray executor's robustness: a wrong --address fails fast with one line, Ray's own
errors become one line, and each run records the sweep's command line, not Ray's worker's."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import tiny

from gradlab.errors import GradlabError
from gradlab.runlog import create_run_folder
from gradlab.sweeps.plan import load_sweep
from gradlab.sweeps.ray_address import CLIENT_PORT, Endpoint, check_address, parse_address
from gradlab.sweeps.ray_executor import train_task
from gradlab.sweeps.run import run_sweep
from gradlab.sweeps.worker import run_one

COMMAND = ["/somewhere/bin/gradlab", "sweep", "sweep.yaml", "--executor", "ray"]


@pytest.fixture
def closed_port() -> int:
    """A local port that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def open_port():
    """A local port with a listening socket."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture(autouse=True)
def no_ray_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def write_sweep(folder: Path) -> Path:
    (folder / "base.yaml").write_text(yaml.safe_dump(tiny(optim={"max_steps": 4})))
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": "base.yaml"}))
    return path


# --------------------------------------------------------------------------- --address


def test_a_closed_port_fails_fast_with_one_line(closed_port: int):
    for address in (f"127.0.0.1:{closed_port}", f"ray://127.0.0.1:{closed_port}"):
        started = time.monotonic()
        with pytest.raises(GradlabError) as error:
            check_address(address)
        assert time.monotonic() - started < 10
        message = str(error.value)
        assert "\n" not in message
        assert message.startswith(f"--address {address}: cannot connect to a Ray cluster there")
        assert "ray start --head" in message


def test_a_listening_port_passes(open_port: int):
    check_address(f"127.0.0.1:{open_port}")
    check_address(f"localhost:{open_port}")
    check_address(f"ray://127.0.0.1:{open_port}/")


def test_no_answer_is_reported_after_the_timeout(monkeypatch):
    def silent(address, timeout):
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", silent)
    with pytest.raises(
        GradlabError, match=r"^--address 10\.1\.2\.3:6379: .*no answer within 0\.5 s"
    ):
        check_address("10.1.2.3:6379", timeout=0.5)


def test_address_forms():
    assert parse_address("10.0.0.1:6379") == Endpoint("10.0.0.1", 6379, False, True)
    assert parse_address("ray://head") == Endpoint("head", CLIENT_PORT, True, False)
    assert parse_address("ray://head").ray_address() == f"ray://head:{CLIENT_PORT}"
    assert parse_address("ray://head:1234").ray_address() == "ray://head:1234"
    assert parse_address("[::1]:6379") == Endpoint("::1", 6379, False, True)
    assert parse_address("ray://[::1]").ray_address() == f"ray://[::1]:{CLIENT_PORT}"
    for left_to_ray in ("auto", "local", "anyscale://my-cluster"):
        assert parse_address(left_to_ray) is None
        check_address(left_to_ray)  # nothing to check here (RAY_ADDRESS is unset)
    for wrong in ("head", "head:port", "head:0", "head:70000", "::1:6379", "ray://"):
        with pytest.raises(GradlabError, match=f"^--address {wrong}: not a Ray address"):
            check_address(wrong)
    with pytest.raises(GradlabError, match="not an HTTP URL"):
        check_address("http://head:8265")


def test_auto_checks_ray_address_when_it_is_set(monkeypatch, closed_port: int):
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{closed_port}")
    with pytest.raises(GradlabError, match=r"^--address auto \(RAY_ADDRESS=127\.0\.0\.1:"):
        check_address("auto")


def test_run_ray_checks_the_address_before_anything(tmp_path: Path, closed_port: int):
    from gradlab.sweeps.ray_executor import run_ray

    with pytest.raises(GradlabError, match="cannot connect to a Ray cluster"):
        run_ray([], tmp_path, f"127.0.0.1:{closed_port}", 1, print, print)
    assert list(tmp_path.iterdir()) == []


def test_ray_init_errors_become_one_line(tmp_path: Path, monkeypatch):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'gradlab[ray]')")
    from gradlab.sweeps.ray_executor import run_ray

    if ray.is_initialized():
        pytest.skip("a Ray is already running in this process")

    def failing_init(**kwargs):
        raise ConnectionError("Could not find any running Ray instance.\nPlease specify one.")

    monkeypatch.setattr(ray, "init", failing_init)
    with pytest.raises(GradlabError) as error:
        run_ray([], tmp_path, "auto", 1, print, print)
    assert str(error.value) == (
        "--address auto: ConnectionError: Could not find any running Ray instance. Please "
        "specify one; start one with ray start --head"
    )
    with pytest.raises(GradlabError) as error:
        run_ray([], tmp_path, None, 1, print, print)
    assert str(error.value).startswith("cannot start a local Ray: ConnectionError: Could not")
    assert "\n" not in str(error.value)


# --------------------------------------------------------------------------- command


def test_run_one_records_the_command_it_is_given(tmp_path: Path):
    folder = create_run_folder(tmp_path, "tiny")
    result = run_one(tiny(optim={"max_steps": 2}), str(tmp_path), 1, str(folder), COMMAND)
    assert result["status"] == "completed"
    assert json.loads((folder / "meta.json").read_text())["command"] == COMMAND


def test_a_ray_task_records_the_drivers_command(tmp_path: Path):
    """The copy-back path, without Ray: the meta.json that comes back has the command."""
    claimed = create_run_folder(tmp_path, "tiny")
    config = tiny(optim={"max_steps": 2})
    result = train_task(config, str(tmp_path), claimed.name, str(tmp_path / "none"), None, COMMAND)
    assert result["status"] == "completed" and result["where"] != "shared"
    assert json.loads(result["files"]["meta.json"])["command"] == COMMAND


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_sweep_records_its_command_line(tmp_path: Path, monkeypatch, executor: str):
    if executor == "ray":
        ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'gradlab[ray]')")
        if ray.is_initialized():
            pytest.skip("a Ray is already running in this process")
    path = write_sweep(tmp_path)
    monkeypatch.setattr(sys, "argv", [*COMMAND[:2], str(path), "--executor", executor])
    folder = run_sweep(load_sweep(path), tmp_path / "runs", executor=executor, jobs=1)
    (run,) = json.loads((folder / "sweep.json").read_text())["runs"]
    assert run["status"] == "done"
    meta = json.loads((folder / run["folder"] / "meta.json").read_text())
    assert meta["command"] == sys.argv
