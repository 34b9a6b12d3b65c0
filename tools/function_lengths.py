#!/usr/bin/env python3
"""List the functions longer than a limit in the repository's Python files (the UNet excepted).

    python tools/function_lengths.py            # limit 60 lines; exit 1 when any is longer
    python tools/function_lengths.py --limit 40 --all

A function's length is from its ``def`` line (decorators excluded) to its last line, as
``ast`` gives them; nested functions count inside their parent and on their own.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXEMPT = {"guided_diffusion/unet.py"}   # OpenAI's UNet architecture, kept as its authors wrote it


def function_lengths(root: Path = REPO):
    """(path, qualified name, lines) of every function in the repository's .py files."""
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith((".git/", "shared/")) or rel in EXEMPT:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)

        def visit(node, prefix=""):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    name = prefix + child.name
                    out.append((rel, name, child.end_lineno - child.lineno + 1))
                    visit(child, name + ".")
                elif isinstance(child, ast.ClassDef):
                    visit(child, prefix + child.name + ".")
        visit(tree)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=60)
    p.add_argument("--all", action="store_true", help="also list the longest functions within the limit")
    args = p.parse_args(argv)
    lengths = sorted(function_lengths(), key=lambda r: -r[2])
    over = [r for r in lengths if r[2] > args.limit]
    for rel, name, n in (lengths[:10] if args.all else over):
        print(f"{n:4d}  {rel}:{name}")
    print(f"{len(lengths)} functions, {len(over)} over {args.limit} lines"
          f"{'; longest ' + str(lengths[0][2]) if lengths else ''}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
