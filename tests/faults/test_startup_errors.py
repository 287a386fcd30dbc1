"""Every way to fail at start-up: the real `python -m exporter`, at the default log level, exits
non-zero with ONE line on stderr that names the flag or file at fault, and no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
import trustme

from tests.faults.report import record
from tests.faults.webexporter import free_port, write_config
from tests.support.exporter_proc import REPO_ROOT, _child_env

HOST = "127.82.0.3"


@dataclass(frozen=True)
class Case:
    """`args(tmp)` builds the command line (after the config flag); the one stderr line must
    contain every string of `names(tmp)`."""

    args: Callable[[Path], list[str]]
    names: Callable[[Path], list[str]]
    code: int = 1
    config: bool = True  # pass a valid --config.file first


def _tls_files(tmp: Path) -> tuple[Path, Path]:
    leaf = trustme.CA().issue_cert(HOST)
    leaf.private_key_pem.write_to_path(str(tmp / "web.key"))
    leaf.cert_chain_pems[0].write_to_path(str(tmp / "web.crt"))
    return tmp / "web.crt", tmp / "web.key"


def _web(tmp: Path, text: str) -> list[str]:
    (tmp / "web.yml").write_text(text)
    return ["--web.config.file", str(tmp / "web.yml")]


def _tls_web(
    tmp: Path, cert: str | None = None, key: str | None = None, extra: str = ""
) -> list[str]:
    real_cert, real_key = _tls_files(tmp)
    return _web(
        tmp,
        f"tls_server_config:\n  cert_file: {cert or real_cert}\n  key_file: {key or real_key}\n"
        + extra,
    )


def _garbage_key(tmp: Path) -> list[str]:
    (tmp / "bad.key").write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n")
    return _tls_web(tmp, key=str(tmp / "bad.key"))


def _plain_password(tmp: Path) -> list[str]:
    good = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    return _web(tmp, f"basic_auth_users:\n  bob: '{good}'\n  alice: hunter2-plain\n")


def _listen(address: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["--web.listen-address", address]


CASES: dict[str, Case] = {
    "bad_flag_value": Case(lambda t: ["--log.level", "loud"], lambda t: ["--log.level", "loud"],
                           code=2),
    "unknown_flag": Case(lambda t: ["--web.listen", "x"], lambda t: ["--web.listen"], code=2),
    "config_missing": Case(lambda t: ["--config.file", str(t / "nope.yaml")],
                           lambda t: [str(t / "nope.yaml")], config=False),
    "config_is_directory": Case(lambda t: ["--config.file", str(t)], lambda t: [str(t)],
                                config=False),
    "web_config_missing": Case(lambda t: ["--web.config.file", str(t / "web-nope.yml")],
                               lambda t: ["--web.config.file", str(t / "web-nope.yml")]),
    "web_config_bad_yaml": Case(lambda t: _web(t, "tls_server_config: [\n"),
                                lambda t: ["--web.config.file", str(t / "web.yml")]),
    "web_config_plain_password": Case(_plain_password,
                                      lambda t: ["basic_auth_users.alice", "not a bcrypt hash"]),
    "tls_cert_missing": Case(lambda t: _tls_web(t, cert=str(t / "gone.crt")),
                             lambda t: ["cert_file", str(t / "gone.crt")]),
    "tls_key_garbage": Case(_garbage_key, lambda t: ["key_file", str(t / "bad.key")]),
    "tls_client_ca_missing": Case(
        lambda t: _tls_web(t, extra=f"  client_ca_file: {t / 'ca-gone.pem'}\n"
                                    "  client_auth_type: RequireAndVerifyClientCert\n"),
        lambda t: ["client_ca_file", str(t / "ca-gone.pem")]),
    "tls_client_auth_unsupported": Case(
        lambda t: _tls_web(t, extra="  client_auth_type: RequireAnyClientCert\n"),
        lambda t: ["client_auth_type", "RequireAnyClientCert"]),
    "listen_port_not_a_number": Case(_listen(f"{HOST}:http-ish"),
                                     lambda t: ["--web.listen-address", f"{HOST}:http-ish"]),
    "listen_port_out_of_range": Case(_listen(f"{HOST}:70000"),
                                     lambda t: ["--web.listen-address", "70000"]),
    "listen_bad_brackets": Case(_listen("[::1:9877"), lambda t: ["--web.listen-address"]),
    "state_dir_missing": Case(lambda t: ["--state.file", str(t / "no" / "state.json")],
                              lambda t: ["--state.file", str(t / "no"), "does not exist"]),
    "state_parent_is_file": Case(
        lambda t: (t / "plain").write_text("x") and ["--state.file", str(t / "plain" / "s.json")],
        lambda t: ["--state.file", str(t / "plain"), "not a directory"]),
    "state_path_is_directory": Case(lambda t: ["--state.file", str(t)],
                                    lambda t: ["--state.file", "is a directory"]),
}


def _run(tmp: Path, args: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "exporter", *args], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=15, env=_child_env(), stdin=subprocess.DEVNULL,
    )
    return done, time.monotonic() - started


def _assert_one_line_error(
    cell: str, done: subprocess.CompletedProcess[str], seconds: float, code: int, names: list[str]
) -> None:
    lines = done.stderr.strip().splitlines()
    ok = (
        done.returncode == code
        and len(lines) == 1
        and all(n in lines[0] for n in names)
        and "Traceback" not in done.stderr + done.stdout
    )
    record(f"startup.{cell}", f"exit {done.returncode}: {lines[0][:120] if lines else ''}",
           seconds, None, ok)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    assert done.returncode == code, (done.returncode, done.stderr[-2000:])
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{done.stderr[-3000:]}"
    for name in names:
        assert name in lines[0], f"{name!r} not named in: {lines[0]}"


@pytest.mark.parametrize("cell", sorted(CASES))
def test_startup_error_is_one_line(cell: str, tmp_path: Path) -> None:
    case = CASES[cell]
    args = case.args(tmp_path)
    if case.config:
        args = ["--config.file", str(write_config(tmp_path)), *args]
    args = ["--web.listen-address", f"{HOST}:{free_port(HOST)}", *args]  # later flags win
    done, seconds = _run(tmp_path, args)
    _assert_one_line_error(cell, done, seconds, case.code, case.names(tmp_path))
    if cell == "web_config_plain_password":
        assert "hunter2" not in done.stderr  # a misplaced password is never echoed


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((HOST, 0))
        taken.listen(1)
        address = f"{HOST}:{taken.getsockname()[1]}"
        done, seconds = _run(
            tmp_path,
            ["--config.file", str(write_config(tmp_path)), "--web.listen-address", address],
        )
    _assert_one_line_error("port_in_use", done, seconds, 1,
                           ["--web.listen-address", address, "in use"])


def test_state_dir_not_writable(tmp_path: Path) -> None:
    # Permission bits do not stop root; sysfs refuses new files even to root.
    try:
        fd, probe = tempfile.mkstemp(dir="/sys")
    except OSError:
        pass
    else:
        os.close(fd)
        Path(probe).unlink()
        pytest.skip("/sys takes new files here")
    done, seconds = _run(tmp_path, [
        "--config.file", str(write_config(tmp_path)),
        "--web.listen-address", f"{HOST}:{free_port(HOST)}",
        "--state.file", "/sys/domainwatch-state.json",
    ])
    _assert_one_line_error("state_dir_not_writable", done, seconds, 1,
                           ["--state.file", "/sys", "not writable"])
