"""Image-fusion quality metrics: every metric once, and profiles that pick the conventions of
each reference evaluator (see docs/metrics.md).

``metrics.evaluator``: the twelve metrics of the Python evaluator the DDFM and CDDFuse tables
were computed with (profiles ``reference`` and ``textbook``).
``metrics.toolkits`` (formulas in ``metrics.toolkit_metrics``): the MATLAB toolkits' tables, VIFB
(``vifb``), MEFB (``mefb``), Liu's imageFusionMetrics (``liu``) and Tang's Evaluation-for-Image-Fusion (``tang``). ``metrics.profiles``: every profile
by name, as evaluate.py looks them up.
"""
from metrics.evaluator import (METRIC_NAMES, PROFILES, PSNR_CAP_DB, TABLE_COLUMNS, Profile,
                               evaluate_pair, get_profile)

__all__ = ["METRIC_NAMES", "PROFILES", "PSNR_CAP_DB", "TABLE_COLUMNS", "Profile", "evaluate_pair",
           "get_profile"]
