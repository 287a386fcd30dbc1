"""The release artefacts: `python -m build` (sdist + wheel, into a temp dir) and `twine check`,
what the wheel carries and declares, the version in one place, and the changelog's format."""

from __future__ import annotations

import email
import os
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from email.message import Message
from pathlib import Path

import pytest

import exporter

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(sdist, wheel, build output). Isolated build, as a release would do it."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=240, check=False,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return sdist, wheel, log


def _metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(z.read(name))


def _source_modules() -> set[str]:
    return {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "exporter").rglob("*")
        if p.is_file() and p.suffix in {".py", ".json"} and "__pycache__" not in p.parts
    }


def test_twine_check_strict(dist: tuple[Path, Path, str]) -> None:
    sdist, wheel, _ = dist
    done = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("PASSED") == 2


def test_build_has_no_packaging_warnings(dist: tuple[Path, Path, str]) -> None:
    log = dist[2]
    for warning in ("is absent from the `packages` configuration", "deprecated",
                    "SetuptoolsDeprecationWarning", "license-file"):
        assert warning not in log, f"build warns: {warning}"


def test_wheel_carries_every_module_and_the_license(dist: tuple[Path, Path, str]) -> None:
    _, wheel, _ = dist
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    missing = _source_modules() - names
    assert not missing, f"not in the wheel: {sorted(missing)}"
    assert "exporter/checks/__init__.py" in names  # once left out by packages = ["exporter"]
    assert [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    assert not [n for n in names if n.startswith("tests/")]


def test_sdist_carries_sources_and_license(dist: tuple[Path, Path, str]) -> None:
    sdist, _, _ = dist
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"LICENSE", "pyproject.toml", "README.md"} <= names
    assert _source_modules() <= names


def test_metadata(dist: tuple[Path, Path, str]) -> None:
    meta = _metadata(dist[1])
    assert meta["Name"] == "domainwatch"
    assert meta["Version"] == exporter.__version__
    assert tuple(int(x) for x in meta["Metadata-Version"].split(".")) >= (2, 4)
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    classifiers = meta.get_all("Classifier") or []
    # PEP 639: with a license expression, License :: classifiers are an error.
    assert not [c for c in classifiers if c.startswith("License ::")]
    assert "Topic :: System :: Monitoring" in classifiers
    pythons = {c.rsplit(" :: ", 1)[1] for c in classifiers
               if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)}
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in pythons
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Source", "Issues", "Changelog"} <= set(urls)
    assert all(u.startswith("https://") for u in urls.values())
    assert meta["Requires-Python"] == ">=3.11"
    assert meta["Description-Content-Type"] == "text/markdown"


def test_wheel_runs_on_its_own(dist: tuple[Path, Path, str], tmp_path: Path) -> None:
    """Unpacked alone (the test venv supplies only the dependencies), the wheel starts."""
    with zipfile.ZipFile(dist[1]) as z:
        z.extractall(tmp_path)
        entry_points = z.read(next(n for n in z.namelist() if n.endswith("entry_points.txt")))
    assert "domainwatch = exporter.cli:main" in entry_points.decode()
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONSAFEPATH": "1"}
    done = subprocess.run(
        [sys.executable, "-c", "import exporter, exporter.checks, exporter.cli; "
         "print(exporter.__file__); exporter.cli.main(['--version'])"],
        capture_output=True, text=True, timeout=60, check=False, env=env, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    first, *rest = done.stdout.splitlines()
    assert Path(first).is_relative_to(tmp_path), "imported the work tree, not the wheel"
    assert f"domainwatch {exporter.__version__}" in "\n".join(rest)


def test_version_lives_in_one_place() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "exporter.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", exporter.__version__)
    defined = [p for p in (ROOT / "exporter").rglob("*.py")
               if re.search(r"^__version__\s*=", p.read_text(), re.M)]
    assert defined == [ROOT / "exporter" / "__init__.py"]


def test_changelog_keeps_a_changelog() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings[0] == "[Unreleased]"
    released = []
    for heading in headings[1:]:
        m = re.fullmatch(r"\[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})", heading)
        assert m, f"changelog heading {heading!r} is not '[X.Y.Z] - YYYY-MM-DD'"
        released.append((tuple(map(int, m[1].split("."))), m[2], m[1]))
    assert released == sorted(released, reverse=True), "newest release first"
    # The current version is either released (listed) or about to be (Unreleased).
    assert exporter.__version__ in {v for *_, v in released}
    for section in re.findall(r"^### (.+)$", text, re.M):
        assert section in {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
    for name in ["Unreleased", *(v for *_, v in released)]:
        assert re.search(rf"^\[{re.escape(name)}\]: https://", text, re.M), f"no link for {name}"
