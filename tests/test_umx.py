"""Open-Unmix through the real upstream-weight loader, with stand-in weights in a temporary
torch hub cache (saved in upstream's format and file names; Zenodo is never contacted)."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from openunmix.model import OpenUnmix
from openunmix.model import Separator as UpstreamSeparator

from separation import Separator
from separation import pretrained as umx_module
from separation.errors import CheckpointError, WeightsUnavailableError
from separation.pretrained import upstream_cache_path
from tests.helpers import SR


def _upstream_net(hidden_size=512, seed=0):
    torch.manual_seed(seed)
    net = OpenUnmix(nb_bins=2049, nb_channels=2, hidden_size=hidden_size, max_bin=1487)
    with torch.no_grad():
        net.input_mean.normal_(0, 0.1)
        net.input_scale.uniform_(0.5, 1.5)
        net.output_mean.uniform_(0.5, 1.5)
        net.bn1.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture
def no_network(monkeypatch):
    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture
def cached_umxhq(no_network):
    net = _upstream_net()
    path = upstream_cache_path("umxhq")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = net.state_dict()
    state["stft.window"] = torch.hann_window(4096)  # older upstream files carry their STFT window
    torch.save(state, path)
    return net


def test_umxhq_matches_upstream_separator(cached_umxhq, mixture):
    sep = Separator.from_name("umxhq", device="cpu")
    assert sep.info.trained and sep.info.origin.startswith("https://zenodo.org/")
    assert sep.sources == ("vocals", "accompaniment")
    stems = sep.separate(mixture, SR)
    upstream = UpstreamSeparator({"vocals": cached_umxhq}, niter=1, residual=True, wiener_win_len=300).eval()
    with torch.no_grad():
        ref = upstream(mixture[None])[0]
    for i, name in enumerate(["vocals", "accompaniment"]):
        assert stems[name].shape == mixture.shape
        err = float((stems[name] - ref[i]).abs().max()) / float(ref[i].abs().max())
        assert err < 1e-4, (name, err)


def test_umxhq_without_em_stems_sum_to_the_mixture(cached_umxhq, mixture):
    stems = Separator.from_name("umxhq", device="cpu", wiener=0).separate(mixture, SR)
    torch.testing.assert_close(stems["vocals"] + stems["accompaniment"], mixture, atol=1e-4, rtol=0)


def test_umxhq_long_input_is_chunked(cached_umxhq):
    x = torch.randn(2, int(2.5 * SR)) * 0.1
    calls = []
    stems = Separator.from_name("umxhq", device="cpu", segment=1.0).separate(
        x, SR, progress=lambda d, t: calls.append(t)
    )
    assert calls and calls[0] >= 3 and stems["vocals"].shape == x.shape


def test_missing_weights_offline_says_what_to_do(no_network):
    with pytest.raises(WeightsUnavailableError) as e:
        Separator.from_name("umxhq")
    msg = str(e.value)
    assert str(upstream_cache_path("umxhq")) in msg and "python -m separation download umxhq" in msg
    assert not upstream_cache_path("umxhq").exists()


def test_wrong_size_upstream_file_is_refused(no_network):
    path = upstream_cache_path("umxhq")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(_upstream_net(hidden_size=64).state_dict(), path)
    with pytest.raises(CheckpointError, match="does not fit umxhq"):
        Separator.from_name("umxhq")


def test_corrupt_download_is_reported(no_network):
    path = upstream_cache_path("umxl")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(CheckpointError, match="damaged.*delete it and retry"):
        Separator.from_name("umxl")


class Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_pickled_code_is_never_executed(no_network, capsys):
    path = upstream_cache_path("umxhq")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"fc1.weight": Payload()}, path)
    with pytest.raises(CheckpointError):
        Separator.from_name("umxhq")
    assert "pickled code ran" not in capsys.readouterr().out


def test_download_command_uses_the_same_loader(monkeypatch, tmp_path):
    """`download` fetches through torch.hub into the cache that `from_name` reads."""
    net = _upstream_net(seed=3)
    src = tmp_path / "served.pth"
    torch.save(net.state_dict(), src)

    def fake_download(url, dst, progress=True):
        assert url == umx_module.UPSTREAM["umxhq"]["url"]
        dst_tmp = f"{dst}.partial"
        with open(src, "rb") as f, open(dst_tmp, "wb") as g:
            g.write(f.read())
        import os

        os.replace(dst_tmp, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    from separation.cli import main

    assert main(["download", "umxhq"]) == 2  # HF_HUB_OFFLINE=1 (as in every test): no download is tried
    monkeypatch.delenv("HF_HUB_OFFLINE")  # online, with the download served by the stand-in
    assert main(["download", "umxhq"]) == 0
    loaded = Separator.from_name("umxhq", device="cpu")
    torch.testing.assert_close(loaded.model.targets["vocals"].fc1.weight, net.fc1.weight)
