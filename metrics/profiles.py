"""Every metric table evaluate.py can print, looked up by name: the Python evaluator's profiles
(``reference``, ``textbook``: metrics/evaluator.py) and the MATLAB toolkits' (``vifb``,
``mefb``, ``liu``, ``tang``, ``tang2022``: metrics/toolkits.py). Each says its columns, how it
reads an image file and how it computes one pair, so a folder runner needs nothing else."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Tuple, Union

from metrics.evaluator import PROFILES, TABLE_COLUMNS, Profile, evaluate_pair
from metrics.toolkits import TOOLKIT_PROFILES, ToolkitProfile
from util.images import read_gray

#: evaluate.py's --profile choices, the evaluator's first (its default stays 'reference').
PROFILE_NAMES = (*PROFILES, *TOOLKIT_PROFILES)


@dataclass(frozen=True)
class EvaluatorTable:
    """The Python evaluator's twelve metrics under one of its profiles."""
    profile: Profile
    columns: Tuple[str, ...] = TABLE_COLUMNS
    read: Callable = read_gray
    decimals: int = 2  # the papers' tables

    @property
    def name(self) -> str:
        return self.profile.name

    @property
    def description(self) -> str:
        return self.profile.description

    def evaluate_pair(self, fused, a, b) -> Dict[str, float]:
        return evaluate_pair(fused, a, b, self.profile)


def table_profile(profile: Union[str, Profile, ToolkitProfile, EvaluatorTable]):
    """The table profile called ``profile`` (or wrapping a Profile object)."""
    if isinstance(profile, (ToolkitProfile, EvaluatorTable)):
        return profile
    if isinstance(profile, Profile):
        return EvaluatorTable(profile)
    if profile in PROFILES:
        return EvaluatorTable(PROFILES[profile])
    if profile in TOOLKIT_PROFILES:
        return TOOLKIT_PROFILES[profile]
    raise ValueError(f"unknown metric profile {profile!r}; choose one of {', '.join(PROFILE_NAMES)}")
