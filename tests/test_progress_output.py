"""The sampler's progress bar is drawn on a terminal only: a log file or a pipe given as
stderr receives nothing from it (guided_diffusion.diffusion.sample, progress=True)."""
import io
import sys

import torch

from guided_diffusion.diffusion import SamplerOptions, make_schedule, sample


def run_steps():
    sched = make_schedule("linear", 1000, "5")
    model = lambda x, t: torch.zeros(x.shape[0], 2 * x.shape[1], *x.shape[2:])  # noqa: E731
    sample(model, torch.zeros(1, 1, 8, 8), sched, SamplerOptions(), progress=True, desc="steps")


def test_no_bar_in_a_log_file(tmp_path, monkeypatch):
    log = tmp_path / "run.log"
    with open(log, "w") as fh:
        monkeypatch.setattr(sys, "stderr", fh)
        run_steps()
    assert log.read_bytes() == b""


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_a_bar_on_a_terminal(monkeypatch):
    """The same run with a terminal as stderr draws the bar (so the test above can fail)."""
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    run_steps()
    assert "steps:   0%" in terminal.getvalue() and "0/5" in terminal.getvalue()
