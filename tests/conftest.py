from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (../shared/data is only on development machines and CI)")
    return path


@pytest.fixture
def shared():
    return shared_path


# Backend test modules define a module-scoped `source` (a ModelSource); these build on it.
@pytest.fixture(scope="module")
def calibration(source):
    from edgekit.calibration import load_calibration

    return load_calibration(None, source.meta.preprocessing)


@pytest.fixture(scope="module")
def reference(source, calibration):
    return source.reference(calibration.images)
