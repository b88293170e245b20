"""Optimizer settings are checked on construction, each with a message naming the field."""

import pytest

from jcsp.relax import FireConfig, LBFGSConfig


@pytest.mark.parametrize("cls, kwargs, words", [
    (FireConfig, dict(dt=0.0), "FireConfig.dt must be a finite number > 0"),
    (FireConfig, dict(fdec="half"), "FireConfig.fdec"),
    (FireConfig, dict(n_min=2.5), "FireConfig.n_min must be an integer"),
    (LBFGSConfig, dict(memory=0), "LBFGSConfig.memory must be an integer >= 1"),
    (LBFGSConfig, dict(maxstep=1.5), "LBFGSConfig.maxstep .* <= 1.0"),
    (LBFGSConfig, dict(shrink=1.0), "LBFGSConfig.shrink .* < 1"),
])
def test_bad_settings_raise(cls, kwargs, words):
    with pytest.raises(ValueError, match=words):
        cls(**kwargs)


def test_settings_are_hashable_values():
    """Configs key compiled-kernel caches: equal settings, equal hashes."""
    assert FireConfig(dt=1) == FireConfig(dt=1.0) and hash(FireConfig()) == hash(FireConfig())
    assert FireConfig(dt=1).dt == 1.0 and isinstance(FireConfig(dt=1).dt, float)
    assert LBFGSConfig(memory=7) != LBFGSConfig()
