"""MODEL.WEIGHTS from URLs and the zoo: download, cache, SHA-256 verification, MODEL_ZOO.md consistency."""
import functools
import hashlib
import http.server
import os
import threading

import pytest
import torch
from torch import nn

from hhcl_plugin.engine.checkpoint import load_model_weights, save_checkpoint
from hhcl_plugin.modeling import zoo
from hhcl_plugin.utils.errors import WeightsError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small():
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A checkpoint named with its SHA-256 prefix, served over HTTP on 127.0.0.1, and a private hub cache."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    site = tmp_path / "site"
    site.mkdir()
    model = small()
    raw = site / "raw.pth"
    save_checkpoint({"model": model.state_dict()}, str(raw))
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    name = f"model-{digest[:10]}.pth"
    raw.rename(site / name)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield {"url": f"{base}/{name}", "base": base, "model": model, "digest": digest, "site": site, "name": name}
    server.shutdown()
    server.server_close()


def test_download_verifies_and_then_hits_the_cache(served, tmp_path):
    dst = small()
    load_model_weights(dst, served["url"])
    assert all(torch.equal(a, b) for a, b in zip(served["model"].state_dict().values(), dst.state_dict().values()))
    cached = os.path.join(zoo.cache_dir(), served["name"])
    assert os.path.isfile(cached)
    os.remove(served["site"] / served["name"])  # the server no longer has it: only the cache can answer
    assert zoo.fetch(served["url"]) == cached


def test_wrong_checksum_is_an_error_and_caches_nothing(served):
    with pytest.raises(WeightsError, match="has SHA-256 .* expected 0000000000"):
        zoo.fetch(served["url"], sha256="0000000000")
    assert not os.path.isdir(zoo.cache_dir()) or os.listdir(zoo.cache_dir()) == []


def test_unreachable_url_names_it_and_where_to_put_the_file(served):
    url = served["base"] + "/missing-0123456789.pth"
    with pytest.raises(WeightsError, match=r"could not download .*missing-0123456789.pth.*put it at"):
        zoo.fetch(url)


def test_url_without_known_digest_is_refused(served):
    with pytest.raises(WeightsError, match="no SHA-256 known"):
        zoo.fetch(served["base"] + "/plain.pth")


def test_zoo_names_resolve_or_explain():
    with pytest.raises(WeightsError, match="no model 'nope' in the model zoo; known: hhcl_lite0_synthreid"):
        zoo.resolve_weights("zoo:nope")
    with pytest.raises(WeightsError, match="not hosted; reproduce it with `hhcl-train --config-file"):
        zoo.resolve_weights("zoo:hhcl_lite0_synthreid")


def test_model_zoo_md_agrees_with_the_index():
    text = open(os.path.join(REPO, "MODEL_ZOO.md"), encoding="utf-8").read()
    rows = {line.split("|")[1].strip().strip("`"): line for line in text.splitlines() if line.startswith("| `")}
    index = zoo.load_zoo_index()
    assert set(rows) == set(index)
    for name, entry in index.items():
        row = rows[name]
        assert entry["sha256"] in row and entry["config"] in row
        assert f"{entry['metrics']['mAP']:.1f}" in row and f"{entry['metrics']['rank1']:.1f}" in row
        assert f"{entry['size_bytes'] / 2**20:.1f} MiB" in row
        assert os.path.isfile(os.path.join(REPO, entry["config"]))
