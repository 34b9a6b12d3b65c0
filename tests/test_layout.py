"""The architecture as checks: imports run one way (util/ a leaf, the generic diffusion code
below the method, nothing imports an entry point), benchmarks import the project as a user's
script would, no long functions, docs/cli.md current, and every option defined once (its flag,
choices and help come from its field)."""
import ast
import importlib.util
import sys
from dataclasses import fields

import pytest

from conftest import REPO

ENTRY_POINTS = ("sample", "evaluate", "reproduce", "demo")
PROJECT = ("ddfm", "util", "metrics", "guided_diffusion", "benchmarks", "demo_app", *ENTRY_POINTS)


def imported_modules(folder, pattern="*.py"):
    """(file, imported top-level name) of every import, nested ones included."""
    for path in sorted((REPO / folder).glob(pattern)):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                yield from ((path.name, a.name.split(".")[0]) for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield path.name, node.module.split(".")[0]


@pytest.mark.parametrize("folder, allowed", [("guided_diffusion", {"guided_diffusion"}),
                                             ("util", {"util"}),
                                             ("metrics", {"metrics", "util"}),
                                             ("ddfm", {"ddfm", "util", "guided_diffusion"})])
def test_imports_never_run_back_up_a_layer(folder, allowed):
    wrong = [(f, m) for f, m in imported_modules(folder) if m in PROJECT and m not in allowed]
    assert wrong == []


@pytest.mark.parametrize("folder, pattern", [(".", "*.py"), ("ddfm", "*.py"), ("util", "*.py"),
                                             ("metrics", "*.py"), ("guided_diffusion", "*.py"),
                                             ("benchmarks", "*.py"), ("tools", "*.py"), ("docs", "*.py")])
def test_no_module_imports_an_entry_point(folder, pattern):
    wrong = [(f, m) for f, m in imported_modules(folder, pattern) if m in ENTRY_POINTS]
    assert wrong == []


def test_benchmarks_never_edit_sys_path():
    edits = [p.name for p in sorted((REPO / "benchmarks").glob("*.py"))
             if "sys.path" in p.read_text(encoding="utf-8")]
    assert edits == []


def test_importing_ddfm_changes_nothing_in_the_process():
    code = ("import os, sys; before = dict(os.environ); import ddfm, metrics, util.images; "
            "sys.exit(0 if dict(os.environ) == before else 1)")
    import subprocess
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTORCH_CUDA_ALLOC_CONF"}
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env).returncode == 0


def _load_tool(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_function_outside_the_unet_is_over_60_lines():
    tool = _load_tool("function_lengths", REPO / "tools" / "function_lengths.py")
    long = [(rel, name, n) for rel, name, n in tool.function_lengths(REPO) if n > 60]
    assert long == []


def test_cli_md_is_generated_from_the_help():
    tool = _load_tool("make_cli", REPO / "docs" / "make_cli.py")
    assert (REPO / "docs" / "cli.md").read_text(encoding="utf-8") == tool.cli_markdown()


def test_every_option_comes_from_one_field():
    sys.path.insert(0, str(REPO))
    import sample
    from ddfm.config import OPTION_CLASSES
    from util.options import cli_fields, flag_of
    parser = sample.build_parser()
    by_dest = {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}
    from_fields = {f.name: (cls, f) for cls in OPTION_CLASSES for f in cli_fields(cls)}
    assert set(by_dest) == set(from_fields)
    for name, (cls, f) in from_fields.items():
        action = by_dest[name]
        assert action.option_strings[0] == flag_of(f)
        assert action.help == f.metadata["help"]
        assert action.default is None  # "not given": the field's default or a config file fills it
        choices = f.metadata.get("choices")
        assert action.metavar == ("{" + ",".join(choices) + "}" if choices else action.metavar)
    # the Fuser's keyword options are exactly FuserOptions' fields: no second list to keep
    from ddfm import FuserOptions
    assert {f.name for f in fields(FuserOptions)} <= set(by_dest)
