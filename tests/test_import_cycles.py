"""tools/import_cycles.py: no import cycle in edgekit/, function-level imports included."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "import_cycles.py"


def _run(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), str(root)], capture_output=True, text=True)


def test_edgekit_has_no_import_cycle():
    out = _run(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_cycle_through_a_function_level_relative_import_is_found(tmp_path):
    pkg = tmp_path / "edgekit"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .b import f\n")  # a package's own submodule: fine
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import g\n")
    out = _run(tmp_path)
    assert out.returncode == 1
    assert "import cycle: edgekit.a -> edgekit.sub.b -> edgekit.a" in out.stdout
    (pkg / "sub" / "b.py").write_text("def f():\n    import json\n")
    assert _run(tmp_path).returncode == 0
