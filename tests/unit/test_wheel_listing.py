"""The wheel listing check of scripts/wheel-smoke catches what a broken build would ship.

CI builds the real wheel and runs the check on it; here the check itself is pinned on small
wheels made from the tracked sources: complete, then missing a migration, then carrying caches
and tests.
"""

from __future__ import annotations

import importlib.util
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

import sayiir

ROOT = Path(__file__).resolve().parents[2]


def _listing() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "wheel_listing", ROOT / "scripts" / "wheel_smoke" / "listing.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


listing = _listing()
DIST_INFO = f"sayiir-{sayiir.__version__}.dist-info/"
METADATA = (
    f"Metadata-Version: 2.4\nName: sayiir\nVersion: {sayiir.__version__}\n"
    "Provides-Extra: postgres\nProvides-Extra: pydantic\nProvides-Extra: otel\n"
    "Provides-Extra: ui\n"
)
ENTRY_POINTS = (
    "[console_scripts]\nsayiir = sayiir.cli.app:main\n\n"
    "[pytest11]\nsayiir = sayiir.testing.pytest_plugin\n"
)


def _wheel(
    path: Path, drop: str = "", extra: tuple[str, ...] = (), entry_points: str = ENTRY_POINTS
) -> Path:
    wheel = path / f"sayiir-{sayiir.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name in sorted(listing.tracked("src/sayiir")):
            if not (drop and name.endswith(drop)):
                zf.write(ROOT / name, name.removeprefix("src/"))
        for name in extra:
            zf.writestr(name, b"")
        zf.writestr(DIST_INFO + "METADATA", METADATA)
        zf.writestr(DIST_INFO + "entry_points.txt", entry_points)
    return wheel


def _sdist(path: Path) -> Path:
    sdist = path / f"sayiir-{sayiir.__version__}.tar.gz"
    top = f"sayiir-{sayiir.__version__}/"
    wanted = listing.tracked("src/sayiir") | listing.tracked("tests") | set(listing.SDIST_REQUIRED)
    with tarfile.open(sdist, "w:gz") as tf:
        for name in sorted(wanted):
            tf.add(ROOT / name, top + name)
    return sdist


@pytest.fixture
def sdist(tmp_path: Path) -> Path:
    return _sdist(tmp_path)


def test_a_complete_wheel_passes(tmp_path: Path, sdist: Path) -> None:
    assert listing.main([str(_wheel(tmp_path)), str(sdist)]) == 0


def test_a_missing_migration_fails(
    tmp_path: Path, sdist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    newest = max(n for n in listing.tracked("src/sayiir") if "/migrations/" in n and ".sql" in n)
    wheel = _wheel(tmp_path, drop=newest)
    assert listing.main([str(wheel), str(sdist)]) == 1
    assert f"missing {newest.removeprefix('src/')}" in capsys.readouterr().err


def test_caches_and_tests_in_the_wheel_fail(
    tmp_path: Path, sdist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wheel = _wheel(tmp_path, extra=("sayiir/__pycache__/flow.cpython-311.pyc", "tests/t.py"))
    assert listing.main([str(wheel), str(sdist)]) == 1
    err = capsys.readouterr().err
    assert "forbidden file sayiir/__pycache__/flow.cpython-311.pyc" in err
    assert "forbidden file tests/t.py" in err


def test_a_wheel_without_the_pytest_plugin_entry_point_fails(
    tmp_path: Path, sdist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wheel = _wheel(tmp_path, entry_points="[console_scripts]\nsayiir = sayiir.cli.app:main\n")
    assert listing.main([str(wheel), str(sdist)]) == 1
    assert "the pytest plugin is not declared" in capsys.readouterr().err
