"""Checkpoint audit and loading, as the I/O layer names it.

The code lives in :mod:`guided_diffusion.checkpoint` so that ``create_model`` can load weights
without importing anything above ``guided_diffusion``; this module is the same objects under
the ``util`` name the entry points and tests use."""
from guided_diffusion.checkpoint import (DEFAULT_EXPECTED, CheckpointError, audit_state_dict,  # noqa: F401
                                         load_checkpoint, manifest_of, read_state_dict)
