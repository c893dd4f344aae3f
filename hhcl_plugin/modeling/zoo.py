"""Where ``MODEL.WEIGHTS`` points: a local file, an ``http(s)://`` URL, or ``zoo:NAME``.

Downloads go through ``torch.hub``'s downloader into ``<torch hub dir>/checkpoints/hhcl``
and are verified with SHA-256 before they are trusted: the digest comes from the zoo
index (``model_zoo.json`` in this package) or, for a bare URL, from torch.hub's file
name convention ``name-<first hex digits of the sha256>.pth``.  A download is written
to a temporary file and renamed into the cache only once verified, so a bad or
interrupted download never leaves a file that a later run would trust.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import urllib.parse
from typing import Dict, Optional

import torch

from ..utils.errors import WeightsError

logger = logging.getLogger(__name__)

ZOO_INDEX = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "model_zoo.json")
HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.")


def load_zoo_index(path: str = ZOO_INDEX) -> Dict[str, Dict]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)["models"]


def cache_dir() -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints", "hhcl")


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights(spec: str) -> str:
    """A local, verified file for ``spec``; downloads (once) when ``spec`` is a URL or a zoo name."""
    if spec.startswith("zoo:"):
        name = spec[4:]
        zoo = load_zoo_index()
        if name not in zoo:
            raise WeightsError(f"no model '{name}' in the model zoo; known: {', '.join(sorted(zoo)) or '(none)'}")
        entry = zoo[name]
        if not entry.get("url"):
            raise WeightsError(f"zoo model '{name}' is not hosted; reproduce it with `{entry['reproduce']}` "
                               f"(the published file has SHA-256 {entry['sha256']}) and set MODEL.WEIGHTS to it")
        return fetch(entry["url"], entry["sha256"])
    if spec.startswith(("http://", "https://")):
        return fetch(spec)
    return spec


def fetch(url: str, sha256: Optional[str] = None) -> str:
    """Download ``url`` into the cache unless a verified copy is there; return its path."""
    filename = os.path.basename(urllib.parse.urlparse(url).path) or "weights.pth"
    expected = (sha256 or _hash_from_name(filename) or "").lower()
    if not expected:
        raise WeightsError(f"no SHA-256 known for {url}: name the file name-<sha256 prefix>.pth "
                           "(torch.hub convention) or use a zoo entry")
    folder = cache_dir()
    target = os.path.join(folder, filename)
    if os.path.isfile(target):
        if sha256_of(target).startswith(expected):
            logger.info("weights %s found in the cache: %s", url, target)
            return target
        logger.warning("cached %s does not match its SHA-256; downloading it again", target)
        os.remove(target)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".download-", dir=folder)
    os.close(fd)
    try:
        try:
            torch.hub.download_url_to_file(url, tmp, progress=False)
        except Exception as e:  # URLError, HTTPError, timeouts: all mean "could not download"
            raise WeightsError(f"could not download {url} ({type(e).__name__}: {str(e)[:120]}). Offline? Download "
                               f"it elsewhere and put it at {target}, or set MODEL.WEIGHTS to a local path") from None
        actual = sha256_of(tmp)
        if not actual.startswith(expected):
            raise WeightsError(f"{url} has SHA-256 {actual}, expected {expected}: the download is corrupt or "
                               "the file has changed; nothing was cached")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    logger.info("downloaded %s to %s (SHA-256 verified)", url, target)
    return target


def _hash_from_name(filename: str) -> Optional[str]:
    match = HASH_IN_NAME.search(filename)
    return match.group(1) if match else None
