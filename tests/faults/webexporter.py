"""The exporter as a real subprocess on a 127.82.x address, over HTTP or HTTPS (+ basic auth).

    with WebExporter.start(tmp_path, "127.82.0.1") as ex:             # plain HTTP
        status, headers, body = ex.request("GET", "/metrics")
    with WebExporter.start(tmp_path, "127.82.0.2", web=WebSetup.make(tmp_path, "127.82.0.2",
                           users={"prom": "pw"})) as ex:               # HTTPS + basic auth
        ex.scrape_seconds()

The exporter checks one domain against dead RDAP and DNS servers (127.82.0.9, nothing listens),
so it is busy failing checks in the background while the web side is under attack.
"""

from __future__ import annotations

import base64
import http.client
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import trustme

from tests.support.exporter_proc import REPO_ROOT, _child_env

DEAD = "127.82.0.9"


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def write_config(tmp: Path, domains: tuple[str, ...] = ("one.test",), extra: str = "") -> Path:
    (tmp / "bootstrap.json").write_text(
        '{"version": "1.0", "publication": "2026-11-01T00:00:00Z",'
        f' "services": [[["test"], ["https://{DEAD}:9/"]]]}}'
    )
    listed = "\n".join(f"  - {d}" for d in domains)
    config = tmp / "config.yaml"
    config.write_text(
        f"rdap:\n  bootstrap: {tmp / 'bootstrap.json'}\n  allow_private_addresses: true\n"
        f"  timeout: 1s\n  interval: 1h\n"
        f"dns:\n  root_servers: ['{DEAD}:9']\n  timeout: 0.2s\n  interval: 1h\n"
        f"{extra}domains:\n{listed}\n"
    )
    return config


@dataclass
class WebSetup:
    """A --web.config.file: TLS (a CA and a leaf for `host`) unless https=False, and users."""

    ca: trustme.CA
    web_config: Path
    users: dict[str, str] = field(default_factory=dict)  # user -> plain password
    https: bool = True

    @classmethod
    def make(
        cls, tmp: Path, host: str, users: dict[str, str] | None = None, cost: int = 4,
        https: bool = True,
    ) -> WebSetup:
        ca = trustme.CA()
        text = ""
        if https:
            leaf = ca.issue_cert(host)
            leaf.private_key_pem.write_to_path(str(tmp / "web.key"))
            leaf.cert_chain_pems[0].write_to_path(str(tmp / "web.crt"))
            text = (
                f"tls_server_config:\n  cert_file: {tmp / 'web.crt'}\n"
                f"  key_file: {tmp / 'web.key'}\n"
            )
        if users:
            text += "basic_auth_users:\n"
            for user, password in users.items():
                hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()
                text += f"  {user}: '{hashed}'\n"
        (tmp / "web.yml").write_text(text)
        return cls(ca=ca, web_config=tmp / "web.yml", users=dict(users or {}), https=https)

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx


class WebExporter:
    def __init__(self, proc: subprocess.Popen[bytes], host: str, port: int, log: Path,
                 web: WebSetup | None) -> None:
        self.proc = proc
        self.host = host
        self.port = port
        self.log = log
        self.web = web
        self.auth: str | None = None
        if web and web.users:
            user, password = next(iter(web.users.items()))
            self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    @classmethod
    def start(cls, tmp: Path, host: str, web: WebSetup | None = None,
              config: Path | None = None, timeout: float = 15.0) -> WebExporter:
        tmp.mkdir(parents=True, exist_ok=True)
        config = config or write_config(tmp)
        port = free_port(host)
        cmd = [sys.executable, "-m", "exporter", "--config.file", str(config),
               "--web.listen-address", f"{host}:{port}", "--log.level", "debug"]
        if web:
            cmd += ["--web.config.file", str(web.web_config)]
        log = tmp / "exporter.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=_child_env())
        ex = cls(proc, host, port, log, web)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"exporter exited {proc.returncode}\n{ex.log_tail()}")
            try:
                if ex.request("GET", "/-/healthy", timeout=1)[0] == 200:
                    return ex
            except OSError:
                pass
            if time.monotonic() > deadline:
                ex.stop()
                raise AssertionError(f"exporter not healthy in {timeout}s\n{ex.log_tail()}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def connection(self, timeout: float = 5.0) -> http.client.HTTPConnection:
        if self.web and self.web.https:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=self.web.client_context()
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(
        self, method: str, path: str, *, auth: str | None = "default", timeout: float = 5.0,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = self.connection(timeout)
        try:
            sent = dict(headers or {})
            auth = self.auth if auth == "default" else auth
            if auth:
                sent["Authorization"] = auth
            conn.request(method, path, body=b"" if method in ("POST", "PUT") else None,
                         headers=sent)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def scrape_seconds(self, timeout: float = 5.0) -> float:
        """Time for one complete GET /metrics on a fresh connection (TLS handshake included)."""
        started = time.monotonic()
        status, _, body = self.request("GET", "/metrics", timeout=timeout)
        elapsed = time.monotonic() - started
        assert status == 200 and b"domainwatch_build_info" in body, (status, body[:200])
        return elapsed

    def threads(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        raise AssertionError("no Threads line")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> int | None:
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        return proc.returncode

    def __enter__(self) -> WebExporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
