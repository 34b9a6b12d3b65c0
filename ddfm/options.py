"""The options of DDFM that change its output, and the choice lists, each defined once."""
from __future__ import annotations

from dataclasses import dataclass

PRIORS = ("diffusion", "none")
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
SIZES = ("crop", "pad")
NOISE_DEVICES = ("run", "cpu")
# Which source plays which role in the EM model (y = I - V, x = f - V, f = I - x):
#   "release": I = the visible image (vi/), V = the infrared image (ir/), as the released code
#              passes them (its sample.py reads vi/ into `inf_img` and ir/ into `vis_img`);
#   "paper":   I = infrared, V = visible, the assignment the paper's Eq. 13 describes.
EM_ROLES = ("release", "paper")


@dataclass(frozen=True)
class FuseOptions:
    """Per-call settings that change the output (all defaults reproduce the release)."""
    seed: int = 3407             # reset for every pair, as released
    lamb: float = 0.5
    rho: float = 0.001
    em_roles: str = "release"    # see EM_ROLES above
    size: str = "crop"           # crop: top-left to multiples (released); pad: reflect-pad, crop back
    crop_multiple: int = 32
    color: bool = False          # also return Y-fused / CbCr-from-the-colour-source RGB

    def validate(self) -> "FuseOptions":
        if not self.lamb > 0:
            raise ValueError(f"lamb must be > 0, got {self.lamb}")
        if not self.rho >= 0:
            raise ValueError(f"rho must be >= 0, got {self.rho}")
        if self.em_roles not in EM_ROLES:
            raise ValueError(f"em_roles must be one of {', '.join(EM_ROLES)}, got {self.em_roles!r}")
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {', '.join(SIZES)}, got {self.size!r}")
        if self.crop_multiple < 1:
            raise ValueError(f"crop_multiple must be >= 1, got {self.crop_multiple}")
        return self
