"""The DDFM paper's published numbers, kept as data in configs/paper_results.yaml."""
import csv
import numbers

import pytest
import yaml

from conftest import REPO

PATH = REPO / "configs" / "paper_results.yaml"
CSV = REPO / "tests" / "fixtures" / "paper" / "ddfm_tables.csv"
METRICS = ["EN", "SD", "MI", "VIF", "Qabf", "SSIM"]
ROWS = ["FGAN", "GMcC", "U2F", "RFN", "TarD", "DeF", "UMF", "DDFM"]
DATASETS = {"ivf": ["MSRS", "M3FD", "RoadScene", "TNO"], "mif": ["Harvard"]}
PAIRS = {"MSRS": 361, "M3FD": 300, "RoadScene": 50, "TNO": 25}

# Cells quoted as text elsewhere (the paper's text; MMIF-DDFM issues 17 and 21): the transcription agrees.
PUBLISHED = {
    ("ivf", "MSRS", "DDFM"): [6.88, 40.75, 2.35, 0.81, 0.58, 0.94],
    ("ivf", "RoadScene", "DDFM"): [7.41, 52.61, 2.35, 0.75, 0.65, 0.98],
    ("mif", "Harvard", "DDFM"): [4.64, 63.11, 1.99, 0.76, 0.60, 1.41],
}
QUOTED_SD = {("ivf", "TNO", "DDFM"): 51.42, ("ivf", "TNO", "TarD"): 49.89}


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


def test_every_row_has_six_numbers(data):
    for task, name, entry in _datasets(data):
        assert set(entry["rows"]) == set(ROWS), (task, name)
        assert "missing" not in entry, f"{task}/{name}: the tables are complete; no missing list"
        for row in ROWS:
            values = entry["rows"][row]
            assert isinstance(values, list) and len(values) == len(METRICS), (task, name, row)
            assert all(_is_number(v) for v in values), (task, name, row, values)


def test_every_cell_equals_the_transcription(data):
    """All 240 cells (5 datasets x 8 methods x 6 metrics) against the CSV kept in the fixtures."""
    with open(CSV, newline="", encoding="utf-8") as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == 40
    seen = set()
    for line in lines:
        key = (line["table"], line["dataset"], line["method"])
        assert key not in seen, key
        seen.add(key)
        values = data["tables"][key[0]][key[1]]["rows"][key[2]]
        assert values == [float(line[m]) for m in METRICS], key
    assert seen == {(t, n, r) for t, names in DATASETS.items() for n in names for r in ROWS}
    assert sum(len(e["rows"][r]) for _, _, e in _datasets(data) for r in ROWS) == 240


def test_every_non_cell_value_has_a_source(data):
    assert "tests/fixtures/paper/ddfm_tables.csv" in data["source"]["cells"]
    for task, name, entry in _datasets(data):
        sources = entry.get("sources") or {}
        assert all(isinstance(v, str) and v for v in sources.values()), (task, name)
        assert "pairs" in sources, (task, name)
        if "modality" in entry:
            assert "modality" in sources, (task, name)


def test_test_set_sizes(data):
    for name, pairs in PAIRS.items():
        assert data["tables"]["ivf"][name]["pairs"] == pairs
    harvard = data["tables"]["mif"]["Harvard"]["pairs"]
    assert harvard is None or (isinstance(harvard, int) and harvard > 0)


@pytest.mark.parametrize("key", sorted(PUBLISHED), ids=lambda k: "/".join(k))
def test_published_cells(data, key):
    task, name, row = key
    assert data["tables"][task][name]["rows"][row] == PUBLISHED[key]


@pytest.mark.parametrize("key", sorted(QUOTED_SD), ids=lambda k: "/".join(k))
def test_quoted_tno_sd(data, key):
    task, name, row = key
    assert data["tables"][task][name]["rows"][row][METRICS.index("SD")] == QUOTED_SD[key]


def test_values_are_plausible(data):
    # Loose sanity bounds that catch a shifted column or a typo, not a check of the values.
    bounds = {"EN": (0, 8), "SD": (0, 128), "MI": (0, 8), "VIF": (0, 2), "Qabf": (0, 1), "SSIM": (0, 2)}
    for task, name, entry in _datasets(data):
        for row in ROWS:
            for metric, v in zip(METRICS, entry["rows"][row]):
                lo, hi = bounds[metric]
                assert lo <= v <= hi, (task, name, row, metric, v)
