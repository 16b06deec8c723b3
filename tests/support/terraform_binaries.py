"""Run the Terraform tests on every binary the product supports: ``terraform`` and OpenTofu's ``tofu``.

``tf_binary`` is a parametrized fixture (ids ``terraform`` / ``tofu``): it finds the binary the way the product does
(:func:`ckbpool.deploy.terraform.locate`: PATH, then ``~/.cache/ckbpool/bin`` where ``scripts/tofu-deps.sh`` builds
OpenTofu) and selects it with ``CKBPOOL_TERRAFORM`` for the test, so the product's own binary choice runs, not a
test-only path. A missing binary skips only its half, with the reason and the script that provides it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ckbpool.deploy.terraform import BINARY_NAMES, cache_bin_dir, locate

HOW_TO_GET = {
    "terraform": "install Terraform >= 1.7 on PATH",
    "tofu": "scripts/tofu-deps.sh builds OpenTofu from its Go module",
}


@pytest.fixture(params=BINARY_NAMES)
def tf_binary(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Path of the binary under test, also set as ``CKBPOOL_TERRAFORM`` for everything the test runs."""
    name: str = request.param
    path = locate(name)
    if path is None:
        pytest.skip(f"{name} is not installed (not on PATH nor in {cache_bin_dir()}): {HOW_TO_GET[name]}")
    monkeypatch.setenv("CKBPOOL_TERRAFORM", path)
    return path


def binary_name() -> str:
    """The name of the binary the current test selected (``terraform`` or ``tofu``), for expected messages."""
    return Path(os.environ["CKBPOOL_TERRAFORM"]).name
