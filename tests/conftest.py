"""Shared test fixtures.

Everything the suite needs ships in ``tests/fixtures/`` (see its README): the golden arrays made
by the authors' released code, the tiny UNet, the pipeline and metric cases, and a few pairs of
each test set. A clone is enough to run the tests.

Opt-in, for the full test sets: ``DDFM_SHARED=/path/to/shared`` (a folder holding ``data/`` and
``eval_cases/``, such as ``../shared`` beside the checkout) points ``data_root`` and
``eval_cases`` at it, so the data tests run over every pair. The variable is read here and
nowhere else; the golden fixtures always come from the repository.
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
GOLDEN = FIXTURES / "golden"
_FULL = os.environ.get("DDFM_SHARED")
DATA_PARENT = Path(_FULL).resolve() if _FULL else FIXTURES
DATA = DATA_PARENT / "data"
EVAL_CASES = DATA_PARENT / "eval_cases"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test, skipped unless --runslow")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --runslow to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def _require(path: Path) -> Path:
    if not path.exists():
        where = "DDFM_SHARED=" + _FULL if _FULL else "tests/fixtures (see its README)"
        pytest.fail(f"missing fixture {path}: expected under {where}")
    return path


def load_npz(name: str) -> dict:
    """Load ``golden/<name>`` once per session (cached)."""
    if name not in _NPZ_CACHE:
        with np.load(_require(GOLDEN / name)) as f:
            _NPZ_CACHE[name] = {k: f[k] for k in f.files}
    return _NPZ_CACHE[name]


_NPZ_CACHE: dict = {}


def toolkit_crop(case: str) -> tuple:
    """(fused, infrared, visible) of one of the toolkit crops under tests/fixtures/toolkits/crops
    (the cases of octave_reference.json), read as MATLAB reads them."""
    from metrics.toolkits import read_as_matlab

    return tuple(read_as_matlab(_require(FIXTURES / "toolkits" / "crops" / f"{case}_{role}.png"))
                 for role in ("fused", "ir", "vi"))


@pytest.fixture(scope="session")
def golden() -> Path:
    return _require(GOLDEN)


@pytest.fixture(scope="session")
def data_root() -> Path:
    return _require(DATA)


@pytest.fixture(scope="session")
def eval_cases() -> Path:
    return _require(EVAL_CASES)


@pytest.fixture(scope="session")
def schedules():
    return load_npz("schedules.npz")


@pytest.fixture(scope="session")
def em_steps():
    return load_npz("em_steps.npz")


@pytest.fixture(scope="session")
def color():
    return load_npz("color.npz")


@pytest.fixture(scope="session")
def tiny_forward():
    return load_npz("unet_tiny_forward.npz")


@pytest.fixture(scope="session")
def small_trace():
    return load_npz("pipeline/small_10steps/trace.npz")


@pytest.fixture(scope="session")
def manifest():
    return json.loads(_require(GOLDEN / "unet256_manifest.json").read_text())


@pytest.fixture(scope="session")
def expected_metrics():
    return json.loads(_require(GOLDEN / "metrics" / "expected.json").read_text())


@pytest.fixture(scope="session")
def metric_cases(golden, data_root, expected_metrics):
    """The cases of ``golden/metrics/expected.json`` with their folders resolved: name ->
    dict(input=source folder, modalities=[a, b], fused=fused folder, expected=the json entry).
    ``sources`` is relative to the folder holding ``data/``; ``fused`` to ``golden/metrics``
    or, for the pipeline case, to ``golden``."""
    shared = data_root.parent
    cases = {}
    for name, case in expected_metrics.items():
        fused = golden / "metrics" / case["fused"]
        if not fused.is_dir():
            fused = golden / case["fused"]
        cases[name] = {
            "input": _require(shared / case["sources"]),
            "modalities": list(case["modalities"]),
            "fused": _require(fused),
            "expected": case,
        }
    return cases
