"""The torch.hub entries (hubconf.py), loaded as torch.hub loads a local checkout."""

from __future__ import annotations

import pytest
import torch

from separation import Separator
from separation.errors import WeightsUnavailableError
from separation.pretrained import WEIGHTS_DIR, upstream_cache_path
from tests.helpers import ROOT, SR
from tests.test_umx import _upstream_net


@pytest.mark.parametrize("name", ["dprnn", "conv1d"])
def test_hub_entry_gives_a_trained_separator(name):
    sep = torch.hub.load(str(ROOT), name, source="local", device="cpu", trust_repo=True)
    assert isinstance(sep, Separator) and sep.info.trained
    assert str(WEIGHTS_DIR / name) in sep.info.origin  # the weights inside the package
    x = torch.randn(2, SR) * 0.1
    stems = sep.separate(x, SR)
    assert set(stems) == {"vocals", "accompaniment"} and all(torch.isfinite(s).all() for s in stems.values())


def test_hub_umxhq_goes_through_the_projects_loader(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no download: the cache or a clear error
    with pytest.raises(WeightsUnavailableError, match="python -m separation download umxhq"):
        torch.hub.load(str(ROOT), "umxhq", source="local", device="cpu", trust_repo=True)
    path = upstream_cache_path("umxhq")  # upstream's release file, as a stand-in in the test's own cache
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(_upstream_net().state_dict(), path)
    sep = torch.hub.load(str(ROOT), "umxhq", source="local", device="cpu", trust_repo=True)
    assert sep.info.trained and sep.info.architecture == "umx"
