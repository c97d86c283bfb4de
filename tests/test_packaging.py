"""The built wheel carries what `arena run` needs (issue 6: it lacked the CSS, the demo registry
and two dependencies)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_has_data_files_and_dependencies(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("arena-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = next(n for n in names if n.endswith("METADATA"))
        requires = [
            line.split(":", 1)[1].strip()
            for line in zf.read(meta).decode().splitlines()
            if line.startswith("Requires-Dist:") and "extra ==" not in line
        ]
    for needed in (
        "arena/demo.toml",
        "arena/static/arena.css",
        "migrations/versions/0002_leaderboard.py",
        "migrations/env.py",
    ):
        assert needed in names, needed
    declared = {r.split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in requires}
    for module in ("fastapi", "uvicorn", "gradio", "plotly", "py3langid", "sqlalchemy"):
        assert module in declared, (module, requires)
