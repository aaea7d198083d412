"""Check what the built sdist and wheel contain (run by scripts/wheel-smoke).

    python scripts/wheel_smoke/listing.py dist/sayiir-X-py3-none-any.whl dist/sayiir-X.tar.gz

The wheel must hold exactly the package: every file tracked under ``src/sayiir`` (modules, every
``.sql`` query and schema file, every numbered migration, ``py.typed``, ``sayiir.testing`` with its
pytest plugin and the plugin's ``testdb.sql``, the console's templates and static assets) and
nothing else (no tests, benchmarks, caches, databases). Its metadata must carry
the version of ``src/sayiir/_version.py``, the ``sayiir`` console script, the ``pytest11`` entry
point of the plugin and the extras. The sdist must hold the package sources, the tests, the example
and the project files, and no caches, venvs, benchmarks or build output. Prints a summary; exits 1
with every problem listed.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tarfile
import zipfile
from collections import Counter
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "src/sayiir"
EXTRAS = ("postgres", "pydantic", "otel", "ui")
# Never in the wheel, anywhere in a path.
WHEEL_FORBIDDEN = ("__pycache__", ".pyc", "tests/", "benchmarks/", "conftest.py", ".db")
# Never in the sdist.
SDIST_FORBIDDEN = (
    "__pycache__",
    ".pyc",
    ".venv",
    "benchmarks/",
    "site/",
    "dist/",
    ".db",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
)
SDIST_REQUIRED = ("pyproject.toml", "README.md", "CHANGELOG.md", "examples/quickstart.py")


def version() -> str:
    tree = ast.parse((ROOT / PACKAGE / "_version.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "__version__":
            return str(ast.literal_eval(node.value))
    raise SystemExit("src/sayiir/_version.py has no __version__")


def tracked(prefix: str) -> set[str]:
    """Files under ``prefix`` that git tracks (or, outside git, that exist and are not caches)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "--", prefix],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        files = {line for line in out.splitlines() if line}
        if files:
            return files
    except (OSError, subprocess.CalledProcessError):
        pass
    return {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / prefix).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def check_wheel(path: Path, problems: list[str]) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        dist_info = f"sayiir-{version()}.dist-info/"
        package = {n for n in names if not n.startswith(dist_info)}
        _check_package_files(names, package, problems)
        if dist_info + "METADATA" not in names:
            problems.append(f"wheel: no {dist_info}METADATA (version {version()} expected)")
        else:
            _check_metadata(zf, dist_info, problems)
    kinds = Counter(Path(n).suffix or Path(n).name for n in package)
    summary = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    migrations = sorted(n for n in package if "/migrations/" in n and n.endswith(".sql"))
    return [
        f"wheel {path.name}: {path.stat().st_size / 1024:.0f} KiB, {len(package)} package files"
        f" ({summary})",
        f"  migrations: {', '.join(m.split('/backends/')[1] for m in migrations)}",
    ]


def _check_package_files(names: list[str], package: set[str], problems: list[str]) -> None:
    """Exactly the tracked files of src/sayiir, and the ones named below for certain."""
    expected = {f[len("src/") :] for f in tracked(PACKAGE)}
    for name in sorted(expected - package):
        problems.append(f"wheel: missing {name}")
    for name in sorted(package - expected):
        problems.append(f"wheel: unexpected file {name} (not a tracked file of src/sayiir)")
    for name in names:
        if any(bad in name for bad in WHEEL_FORBIDDEN):
            problems.append(f"wheel: forbidden file {name}")
    must = ["sayiir/py.typed"]
    for backend in ("sqlite", "postgres"):
        base = f"sayiir/backends/{backend}/"
        must += [base + f for f in ("queries.sql", "schema.sql", "migrations/0001_initial.sql")]
    # sayiir.testing and its pytest plugin (the entry point names the module); the plugin's
    # PostgreSQL template databases are made with the queries of testdb.sql.
    must += [f"sayiir/testing/{m}.py" for m in ("__init__", "pytest_plugin")]
    must.append("sayiir/backends/postgres/testdb.sql")
    # the web console's templates and static assets (also covered by "every tracked file")
    must += [f"sayiir/ui/templates/{t}.html" for t in ("base", "runs", "run")]
    must += [f"sayiir/ui/static/{a}" for a in ("console.css", "console.js", "htmx-2.0.11.min.js")]
    problems.extend(f"wheel: missing {name}" for name in must if name not in package)


def _check_metadata(zf: zipfile.ZipFile, dist_info: str, problems: list[str]) -> None:
    meta = Parser().parsestr(zf.read(dist_info + "METADATA").decode())
    if meta["Version"] != version():
        problems.append(f"wheel: METADATA version {meta['Version']}, _version.py: {version()}")
    provided = set(meta.get_all("Provides-Extra") or [])
    for extra in EXTRAS:
        if extra not in provided:
            problems.append(f"wheel: extra [{extra}] is not declared")
    entry_points = zf.read(dist_info + "entry_points.txt").decode()
    if "sayiir = sayiir.cli.app:main" not in entry_points:
        problems.append("wheel: the `sayiir` console script is not declared")
    if not re.search(
        r"^\[pytest11\]\s*^sayiir = sayiir\.testing\.pytest_plugin$", entry_points, re.M
    ):
        problems.append(
            "wheel: the pytest plugin is not declared ([pytest11] sayiir = "
            "sayiir.testing.pytest_plugin)"
        )


def check_sdist(path: Path, problems: list[str]) -> list[str]:
    with tarfile.open(path) as tf:
        top = f"sayiir-{version()}/"
        names = [m.name for m in tf.getmembers() if m.isfile()]
    outside = [n for n in names if not n.startswith(top)]
    problems.extend(f"sdist: file outside {top}: {n}" for n in outside)
    inside = {n[len(top) :] for n in names if n.startswith(top)}
    wanted = tracked(PACKAGE) | tracked("tests") | set(SDIST_REQUIRED)
    for name in sorted(wanted - inside):
        problems.append(f"sdist: missing {name}")
    for name in sorted(inside):
        if any(bad in name for bad in SDIST_FORBIDDEN):
            problems.append(f"sdist: forbidden file {name}")
    return [f"sdist {path.name}: {path.stat().st_size / 1024:.0f} KiB, {len(inside)} files"]


def main(argv: list[str]) -> int:
    wheels = [Path(a) for a in argv if a.endswith(".whl")]
    sdists = [Path(a) for a in argv if a.endswith(".tar.gz")]
    if len(wheels) != 1 or len(sdists) != 1:
        print("usage: listing.py WHEEL SDIST", file=sys.stderr)
        return 2
    problems: list[str] = []
    lines = check_wheel(wheels[0], problems) + check_sdist(sdists[0], problems)
    for line in lines:
        print(line)
    problems = list(dict.fromkeys(problems))  # a file can break two rules
    if problems:
        print(f"listing: {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print("listing: wheel and sdist contents are as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
