"""Stratum V2 Noise layer for ckbpool: handshake + encrypted transport, sans-IO.

One import point for the rest of the code base; the work is done in :mod:`ckbpool.sv2.noise_handshake`
(Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256, the two handshake messages, certificate checking) and
:mod:`ckbpool.sv2.noise_transport` (ChaCha20-Poly1305 framing of SV2 frames after the handshake).
Certificates live in :mod:`ckbpool.sv2.certs`, keys and their encodings in :mod:`ckbpool.sv2.keys`.

A whole session, without sockets::

    creds = ResponderCredentials.from_certificate(static_secret, certificate)
    initiator = NoiseInitiator(authority_public_key)            # miner / proxy
    msg2, pool_side = NoiseResponder(creds).respond(initiator.start())
    miner_side = initiator.complete(msg2)
    wire = miner_side.encrypt_frame(frame)                      # -> socket
    frames = pool_side.feed(wire)                               # <- socket, any split
"""

from ckbpool.sv2.certs import (
    Certificate,
    CertificateError,
    CertificateExpired,
    CertificateMalformed,
    CertificateNotYetValid,
    CertificateTampered,
    CertificateUnsupportedVersion,
    CertificateWrongAuthority,
)
from ckbpool.sv2.noise_handshake import (
    MSG1_SIZE,
    MSG2_SIZE,
    PROTOCOL_NAME,
    NoiseInitiator,
    NoiseResponder,
    ResponderCredentials,
)
from ckbpool.sv2.noise_transport import (
    DEFAULT_MAX_FRAME_PAYLOAD,
    ENCRYPTED_HEADER_SIZE,
    MAX_CHUNK_PLAINTEXT,
    CipherState,
    NoiseDecryptError,
    NoiseDecryptor,
    NoiseEncryptor,
    NoiseError,
    NoiseFrameError,
    NoiseFrameTooLarge,
    NoiseHandshakeError,
    NoiseStateError,
    NoiseTransport,
    encrypted_payload_size,
)

__all__ = [
    "DEFAULT_MAX_FRAME_PAYLOAD",
    "ENCRYPTED_HEADER_SIZE",
    "MAX_CHUNK_PLAINTEXT",
    "MSG1_SIZE",
    "MSG2_SIZE",
    "PROTOCOL_NAME",
    "Certificate",
    "CertificateError",
    "CertificateExpired",
    "CertificateMalformed",
    "CertificateNotYetValid",
    "CertificateTampered",
    "CertificateUnsupportedVersion",
    "CertificateWrongAuthority",
    "CipherState",
    "NoiseDecryptError",
    "NoiseDecryptor",
    "NoiseEncryptor",
    "NoiseError",
    "NoiseFrameError",
    "NoiseFrameTooLarge",
    "NoiseHandshakeError",
    "NoiseInitiator",
    "NoiseResponder",
    "NoiseStateError",
    "NoiseTransport",
    "ResponderCredentials",
    "encrypted_payload_size",
]
