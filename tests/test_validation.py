"""ddfm.validation: an option given from Python is held to the command line's rule, converted
to its plain type, and refused in one ValueError line naming the option (never a TypeError)."""
from dataclasses import fields, replace

import numpy as np
import pytest

from ddfm.options import SEED_MAX, FuseOptions, FuserOptions
from ddfm.validation import checked_fuse_options, checked_fuser_options, real_number, whole_number


def test_the_defaults_pass_unchanged():
    assert checked_fuse_options(FuseOptions()) == FuseOptions()
    assert checked_fuser_options(FuserOptions()) == FuserOptions()


def test_numpy_numbers_become_plain_ones():
    opts = checked_fuse_options(FuseOptions(seed=np.int64(7), lamb=np.float32(0.25), crop_multiple=np.uint8(32),
                                            color=np.True_))
    assert (opts.seed, opts.lamb, opts.crop_multiple, opts.color) == (7, 0.25, 32, True)
    assert type(opts.seed) is int and type(opts.lamb) is float and type(opts.color) is bool
    assert checked_fuse_options(FuseOptions(seed=np.uint64(SEED_MAX))).seed == SEED_MAX


@pytest.mark.parametrize("options, message", [
    (FuserOptions(prior="none", em_iterations=-5), "em_iterations must be >= 1, got -5"),
    (FuserOptions(prior="none", em_iterations=0), "em_iterations must be >= 1, got 0"),
    (FuserOptions(em_iterations=10), "em_iterations applies to prior none only"),
    (FuserOptions(compile_mode="default"), "compile_mode applies to a compiled UNet"),
    (FuserOptions(gpu=-1), "gpu must be >= 0, got -1"),
    (FuserOptions(precision="fp64"), "precision must be one of fp32, tf32, bf16, fp16, got 'fp64'"),
])
def test_the_cli_rules_hold_from_python(options, message):
    with pytest.raises(ValueError) as exc:
        checked_fuser_options(options)
    assert str(exc.value).startswith(message)


@pytest.mark.parametrize("value, message", [
    ("7", "seed must be a whole number, got '7' (str)"), (7.0, "seed must be a whole number, got 7.0 (float)"),
    (True, "seed must be a whole number, got True (bool)"), (-2 ** 63 - 1, "seed must be from"),
])
def test_seeds(value, message):
    with pytest.raises(ValueError) as exc:
        checked_fuse_options(FuseOptions(seed=value))
    assert str(exc.value).startswith(message)


@pytest.mark.parametrize("cls, check", [(FuseOptions, checked_fuse_options), (FuserOptions, checked_fuser_options)])
def test_every_field_has_a_rule(cls, check):
    """A value of no sensible type in any field is refused naming that field: a field added
    without a rule fails here."""
    for field in fields(cls):
        with pytest.raises(ValueError) as exc:
            check(replace(cls(prior="none") if cls is FuserOptions else cls(), **{field.name: object()}))
        assert str(exc.value).startswith(field.name) and "\n" not in str(exc.value), field.name


def test_number_rules():
    assert whole_number("batch", np.int32(4), 1) == 4
    for bad in (float("nan"), float("inf"), 0.0, "0.5"):
        with pytest.raises(ValueError):
            real_number("lamb", bad, above=0)
    assert real_number("rho", 0, at_least=0) == 0.0
