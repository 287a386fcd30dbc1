"""Fixtures shared by the fault-matrix tests: one test CA per session for the hostile servers."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme


@pytest.fixture(scope="session")
def fault_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def fault_ca_file(fault_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CA certificate as a file (what the exporter's `rdap.ca_file` points at)."""
    path = tmp_path_factory.mktemp("fault-ca") / "ca.pem"
    fault_ca.cert_pem.write_to_path(str(path))
    return path
