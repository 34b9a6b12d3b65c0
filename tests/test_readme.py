"""The README's commands that need no checkpoint run as written (from a folder holding a copy of
the bundled input/, so the repository itself is never written into)."""
import re
import shlex
import shutil
import subprocess
import sys

from conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def readme_commands() -> list[str]:
    """Every ``python ...`` line of the README's bash blocks, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    text = "\n".join(blocks).replace("\\\n", " ")
    return [line.split("#")[0].strip() for line in text.splitlines() if line.startswith("python ")]


def run(command: str, cwd) -> subprocess.CompletedProcess:
    argv = shlex.split(command)
    script = REPO / argv[1]
    return subprocess.run([sys.executable, str(script), *argv[2:]], cwd=cwd, capture_output=True,
                          text=True, timeout=1800)  # a hang only


def test_the_checkpoint_free_quick_start_runs_as_written(tmp_path):
    commands = readme_commands()
    em_only = next(c for c in commands if "--prior none --save_dir OUT_EM" in c)
    shutil.copytree(REPO / "input", tmp_path / "input")
    proc = run(em_only, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "OUT_EM" / "recon").iterdir()) == \
        sorted(p.stem + ".png" for p in (REPO / "input" / "ir").iterdir())
    evaluate = next(c for c in commands if c.startswith("python evaluate.py --input input --fused"))
    proc = run(evaluate.replace("output/recon", "OUT_EM/recon"), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "EN" in proc.stdout and "OUT_EM" not in proc.stderr


def test_every_readme_command_names_an_existing_script_and_options_it_knows():
    """Each command's script exists and its --help lists every flag the README gives it."""
    for command in readme_commands():
        argv = shlex.split(command)
        if argv[1] == "-m" or not argv[1].endswith(".py"):
            continue
        script = REPO / argv[1]
        assert script.is_file(), command
        helptext = subprocess.run([sys.executable, str(script), "--help"], cwd=REPO, capture_output=True,
                                  text=True, timeout=600).stdout
        for flag in (a for a in argv[2:] if a.startswith("--")):
            assert flag.split("=")[0] in helptext, (command, flag)
