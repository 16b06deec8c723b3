"""The package's own build produced the C extension: in CI a silent fallback to pure Python would be a defect."""

from __future__ import annotations

import os

import pytest

from ckbpool.ckb import eaglesong

pytestmark = pytest.mark.unit


@pytest.mark.skipif(not os.environ.get("CI"), reason="developer machines may run without the extension built")
def test_eaglesong_c_extension_is_built_in_ci() -> None:
    assert eaglesong.HAVE_C, "the Eaglesong C extension did not build; pip install -e . should compile it"
