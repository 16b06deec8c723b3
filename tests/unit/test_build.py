"""The package's own build produced the C extension: in CI a silent fallback to pure Python would be a defect."""

from __future__ import annotations

import os

import pytest

from ckbpool.ckb import eaglesong

pytestmark = pytest.mark.unit


@pytest.mark.skipif(not os.environ.get("CI"), reason="developer machines may run without the extension built")
def test_eaglesong_c_extension_is_built_in_ci() -> None:
    assert eaglesong.HAVE_C, "the Eaglesong C extension did not build; pip install -e . should compile it"


def test_the_noise_cipher_is_the_c_extension_built_against_libcrypto() -> None:
    """No fallback exists for the transport's cipher (sv2/_chacha.c): it is imported, built, on every machine."""
    from ckbpool.sv2 import _chacha, noise_transport

    assert noise_transport.Cipher is _chacha.Cipher
    assert _chacha.__file__ is not None and _chacha.__file__.endswith(".so")


def test_the_ipc_share_codec_is_the_c_extension() -> None:
    """No fallback exists for the stratum workers' share codec (bus/_sharecodec.c) either."""
    from ckbpool.bus import _sharecodec, ipc

    assert ipc.encode_shares is _sharecodec.encode_shares and ipc.decode_shares is _sharecodec.decode_shares
    assert _sharecodec.__file__ is not None and _sharecodec.__file__.endswith(".so")
