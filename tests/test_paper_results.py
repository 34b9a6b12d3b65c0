"""The DDFM paper's published numbers, kept as data in configs/paper_results.yaml."""
import numbers

import pytest
import yaml

from conftest import REPO

PATH = REPO / "configs" / "paper_results.yaml"
METRICS = ["EN", "SD", "MI", "VIF", "Qabf", "SSIM"]
ROWS = ["FGAN", "GMcC", "U2F", "RFN", "TarD", "DeF", "UMF", "DDFM"]
DATASETS = {"ivf": ["MSRS", "M3FD", "RoadScene", "TNO"], "mif": ["Harvard"]}
PAIRS = {"MSRS": 361, "M3FD": 300, "RoadScene": 50, "TNO": 25}

# Cells quoted in issue 8 as the paper's published values.
PUBLISHED = {
    ("ivf", "MSRS", "DDFM"): [6.88, 40.75, 2.35, 0.81, 0.58, 0.94],
    ("ivf", "RoadScene", "DDFM"): [7.41, 52.61, 2.35, 0.75, 0.65, 0.98],
    ("mif", "Harvard", "DDFM"): [4.64, 63.11, 1.99, 0.76, 0.60, 1.41],
}


@pytest.fixture(scope="module")
def data():
    with open(PATH, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _datasets(data):
    for task, names in DATASETS.items():
        for name in names:
            yield task, name, data["tables"][task][name]


def _is_number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _null_cells(entry):
    """Names of the null cells of a dataset entry: 'ROW' for a whole row, 'ROW.METRIC' for one cell."""
    nulls = set()
    for row in ROWS:
        values = entry["rows"][row]
        if values is None:
            nulls.add(row)
        else:
            nulls.update(f"{row}.{m}" for m, v in zip(METRICS, values) if v is None)
    if entry.get("pairs") is None:
        nulls.add("pairs")
    return nulls


def test_header(data):
    src = data["source"]
    assert src["arxiv"] == "2303.06840"
    assert "DDFM" in src["paper"]
    assert set(src["tables"]) == {"ivf", "mif"}
    assert all(isinstance(v, str) and v for v in src["tables"].values())
    assert data["metrics"] == METRICS
    assert data["rows"] == ROWS
    assert set(data["row_names"]) == set(ROWS)
    assert data["higher_is_better"] == {m: True for m in METRICS}


def test_datasets_present(data):
    assert set(data["tables"]) == set(DATASETS)
    for task, names in DATASETS.items():
        assert set(data["tables"][task]) == set(names)


def test_every_row_has_six_values_or_null(data):
    for task, name, entry in _datasets(data):
        assert set(entry["rows"]) == set(ROWS), (task, name)
        for row in ROWS:
            values = entry["rows"][row]
            if values is None:
                continue
            assert isinstance(values, list) and len(values) == len(METRICS), (task, name, row)
            assert all(v is None or _is_number(v) for v in values), (task, name, row, values)
            assert any(v is not None for v in values), f"{task}/{name}/{row}: write null, not six nulls"


def test_nulls_are_noted_and_notes_are_current(data):
    for task, name, entry in _datasets(data):
        missing = set(entry.get("missing") or [])
        nulls = _null_cells(entry)
        assert nulls <= missing, f"{task}/{name}: nulls without a missing note: {sorted(nulls - missing)}"
        assert missing <= nulls, f"{task}/{name}: stale missing notes: {sorted(missing - nulls)}"


def test_every_value_has_a_source(data):
    for task, name, entry in _datasets(data):
        sources = entry.get("sources") or {}
        assert all(isinstance(v, str) and v for v in sources.values()), (task, name)
        for row in ROWS:
            values = entry["rows"][row]
            if values is None:
                continue
            for metric, v in zip(METRICS, values):
                if v is not None:
                    assert row in sources or f"{row}.{metric}" in sources, (task, name, row, metric)
        if entry.get("pairs") is not None:
            assert "pairs" in sources, (task, name)


def test_test_set_sizes(data):
    for name, pairs in PAIRS.items():
        assert data["tables"]["ivf"][name]["pairs"] == pairs
    harvard = data["tables"]["mif"]["Harvard"]["pairs"]
    assert harvard is None or (isinstance(harvard, int) and harvard > 0)


@pytest.mark.parametrize("key", sorted(PUBLISHED), ids=lambda k: "/".join(k))
def test_published_cells(data, key):
    task, name, row = key
    assert data["tables"][task][name]["rows"][row] == PUBLISHED[key]


def test_values_are_plausible(data):
    # Loose sanity bounds that catch a shifted column or a typo, not a check of the values.
    bounds = {"EN": (0, 8), "SD": (0, 128), "MI": (0, 8), "VIF": (0, 2), "Qabf": (0, 1), "SSIM": (0, 2)}
    for task, name, entry in _datasets(data):
        for row in ROWS:
            for metric, v in zip(METRICS, entry["rows"][row] or []):
                if v is not None:
                    lo, hi = bounds[metric]
                    assert lo <= v <= hi, (task, name, row, metric, v)
