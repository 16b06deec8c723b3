"""Eaglesong, CKB's proof-of-work hash (RFC 0010), and the PoW check / nonce search built on it.

Why this module exists: the pool checks every submitted share with one Eaglesong hash and the test CPU miner
searches nonces, so both hot paths run in the C extension ``ckbpool.ckb._eaglesong`` (built by setup.py).
The pure-Python reference below is kept because it is the readable statement of the algorithm, the oracle the
tests compare the C code with, and the fallback when the extension is not built (under a thousand hashes/s:
enough for tests, not for a pool).

Byte order, stated once:

- The PoW message is ``pow_hash (32 bytes) || nonce16 (16 bytes)``. ``nonce16`` is the wire order; the
  header's u128 nonce is its little-endian reading: ``nonce = int.from_bytes(nonce16, "little")`` and
  ``nonce16 = nonce.to_bytes(16, "little")``.
- A PoW output (32 bytes) meets a target iff ``int.from_bytes(output, "big") <= target``.
- Mainnet and dev chains use ``Eaglesong``: output = eaglesong(message). Testnet uses ``EaglesongBlake2b``:
  output = ckb_hash(eaglesong(message)), ckb_hash being blake2b-256 with personalization
  ``b"ckb-default-hash"``. Every PoW function takes ``blake2b=True`` for the testnet variant.

Nonce search order (:func:`search`): a miner whose pool fixed the first ``k = len(nonce_prefix)`` bytes of
``nonce16`` (the extranonce prefix) varies only bytes ``k..15``. Those bytes are a little-endian counter:
``nonce16 = nonce_prefix || counter.to_bytes(16 - k, "little")``, and the counter runs from ``nonce_start``
upwards by one per try, so byte ``k`` changes fastest and byte 15 slowest. The header nonce of a try is
therefore ``int.from_bytes(nonce_prefix, "little") + (counter << 8 * k)``. The counter never carries into
the prefix: a range that would run past ``256 ** (16 - k)`` is rejected.
"""

from __future__ import annotations

import hashlib
import importlib
import warnings
from typing import Final, Protocol, TypeAlias, cast

__all__ = [
    "HAVE_C",
    "NONCE_BYTES",
    "POW_HASH_BYTES",
    "BytesLike",
    "EaglesongFallbackWarning",
    "check_pow",
    "eaglesong",
    "eaglesong_py",
    "pow_output",
    "search",
]

BytesLike: TypeAlias = bytes | bytearray | memoryview
"""What every function here accepts for binary arguments (copied to bytes where the fallback needs it)."""

POW_HASH_BYTES: Final = 32
NONCE_BYTES: Final = 16
_U256_MAX: Final = (1 << 256) - 1
_MAX_COUNT: Final = (1 << 63) - 1  # the C loop counts in a signed 64-bit integer
_CKB_HASH_PERSONALIZATION: Final = b"ckb-default-hash"

# --- the algorithm's constants (RFC 0010; the same values as the `eaglesong` crate the ckb node uses) ---

_ROUNDS: Final = 43
_RATE_BYTES: Final = 32  # rate 256 bits: words 0..7 of the 16-word state; capacity is words 8..15
_DELIMITER: Final = 0x06
_MASK32: Final = 0xFFFFFFFF

# Bit matrix M, row k = input word, column j = output word: new[j] = XOR of s[k] over all k with M[k][j] = 1.
# (The RFC pseudocode indexes it M[j][k], the transpose, which does not reproduce the test vectors.)
_BIT_MATRIX_ROWS: Final = (
    "1111010111110001",
    "0111101011111001",
    "0011110101111101",
    "0001111010111111",
    "1111101010101110",
    "1000100010100111",
    "1011000110100010",
    "1010110100100001",
    "0101011010010001",
    "0010101101001001",
    "0001010110100101",
    "0000101011010011",
    "1111000010011000",
    "0111100001001100",
    "0011110000100110",
    "1110101111100011",
)
# For each output word j, the input words k that feed it.
_MATRIX_COLUMNS: Final = tuple(tuple(k for k in range(16) if _BIT_MATRIX_ROWS[k][j] == "1") for j in range(16))

# Circulant step: s[j] ^= rotl(s[j], a_j) ^ rotl(s[j], b_j).
_CIRCULANT: Final = (
    (2, 4), (13, 22), (4, 19), (3, 14), (27, 31), (3, 8), (17, 26), (3, 12),
    (18, 22), (12, 18), (4, 7), (4, 31), (12, 27), (7, 17), (7, 8), (1, 13),
)  # fmt: skip

# Injection constants: 16 per round, word j of round i gets _INJECTION[16 * i + j].
# fmt: off
_INJECTION: Final = (
    0x6E9E40AE, 0x71927C02, 0x9A13D3B1, 0xDAEC32AD, 0x3D8951CF, 0xE1C9FE9A, 0xB806B54C, 0xACBBF417,
    0xD3622B3B, 0xA082762A, 0x9EDCF1C0, 0xA9BADA77, 0x7F91E46C, 0xCB0F6E4F, 0x265D9241, 0xB7BDEAB0,
    0x6260C9E6, 0xFF50DD2A, 0x9036AA71, 0xCE161879, 0xD1307CDF, 0x89E456DF, 0xF83133E2, 0x65F55C3D,
    0x94871B01, 0xB5D204CD, 0x583A3264, 0x5E165957, 0x4CBDA964, 0x675FCA47, 0xF4A3033E, 0x2A417322,
    0x3B61432F, 0x7F5532F2, 0xB609973B, 0x1A795239, 0x31B477C9, 0xD2949D28, 0x78969712, 0x0EB87B6E,
    0x7E11D22D, 0xCCEE88BD, 0xEED07EB8, 0xE5563A81, 0xE7CB6BCF, 0x25DE953E, 0x4D05653A, 0x0B831557,
    0x94B9CD77, 0x13F01579, 0x794B4A4A, 0x67E7C7DC, 0xC456D8D4, 0x59689C9B, 0x668456D7, 0x22D2A2E1,
    0x38B3A828, 0x0315AC3C, 0x438D681E, 0xAB7109C5, 0x97EE19A8, 0xDE062B2E, 0x2C76C47B, 0x0084456F,
    0x908F0FD3, 0xA646551F, 0x3E826725, 0xD521788E, 0x9F01C2B0, 0x93180CDC, 0x92EA1DF8, 0x431A9AAE,
    0x7C2EA356, 0xDA33AD03, 0x46926893, 0x66BDE7D7, 0xB501CC75, 0x1F6E8A41, 0x685250F4, 0x3BB1F318,
    0xAF238C04, 0x974ED2EC, 0x5B159E49, 0xD526F8BF, 0x12085626, 0x3E2432A9, 0x6BD20C48, 0x1F1D59DA,
    0x18AB1068, 0x80F83CF8, 0x2C8C11C0, 0x7D548035, 0x0FF675C3, 0xFED160BF, 0x74BBBB24, 0xD98E006B,
    0xDEAA47EB, 0x05F2179E, 0x437B0B71, 0xA7C95F8F, 0x00A99D3B, 0x3FC3C444, 0x72686F8E, 0x00FD01A9,
    0xDEDC0787, 0xC6AF7626, 0x7012FE76, 0xF2A5F7CE, 0x9A7B2EDA, 0x5E57FCF2, 0x4DA0D4AD, 0x5C63B155,
    0x34117375, 0xD4134C11, 0x2EA77435, 0x5278B6DE, 0xAB522C4C, 0xBC8FC702, 0xC94A09E4, 0xEBB93A9E,
    0x91ECB65E, 0x4C52ECC6, 0x8703BB52, 0xCB2D60AA, 0x30A0538A, 0x1514F10B, 0x157F6329, 0x3429DC3D,
    0x5DB73EB2, 0xA7A1A969, 0x7286BD24, 0x0DF6881E, 0x3785BA5F, 0xCD04623A, 0x02758170, 0xD827F556,
    0x99D95191, 0x84457EB1, 0x58A7FB22, 0xD2967C5F, 0x4F0C33F6, 0x4A02099A, 0xE0904821, 0x94124036,
    0x496A031B, 0x780B69C4, 0xCF1A4927, 0x87A119B8, 0xCDFAF4F8, 0x4CF9CD0F, 0x27C96A84, 0x6D11117E,
    0x7F8CF847, 0x74CEEDE5, 0xC88905E6, 0x60215841, 0x7172875A, 0x736E993A, 0x010AA53C, 0x43D53C2B,
    0xF0D91A93, 0x0D983B56, 0xF816663C, 0xE5D13363, 0x0A61737C, 0x09D51150, 0x83A5AC2F, 0x3E884905,
    0x7B01AEB5, 0x600A6EA7, 0xB7678F7B, 0x72B38977, 0x068018F2, 0xCE6AE45B, 0x29188AA8, 0xE5A0B1E9,
    0xC04C2B86, 0x8BD14D75, 0x648781F3, 0xDBAE1E0A, 0xDDCDD8AE, 0xAB4D81A3, 0x446BAABA, 0x1CC0C19D,
    0x17BE4F90, 0x82C0E65D, 0x676F9C95, 0x5C708DB2, 0x6FD4C867, 0xA5106EF0, 0x19DDE49D, 0x78182F95,
    0xD089CD81, 0xA32E98FE, 0xBE306C82, 0x6CD83D8C, 0x037F1BDE, 0x0B15722D, 0xEDDC1E22, 0x93C76559,
    0x8A2F571B, 0x92CC81B4, 0x021B7477, 0x67523904, 0xC95DBCCC, 0xAC17EE9D, 0x944E46BC, 0x0781867E,
    0xC854DD9D, 0x26E2C30C, 0x858C0416, 0x6D397708, 0xEBE29C58, 0xC80CED86, 0xD496B4AB, 0xBE45E6F5,
    0x10D24706, 0xACF8187A, 0x96F523CB, 0x2227E143, 0x78C36564, 0x4643ADC2, 0x4729D97A, 0xCFF93E0D,
    0x25484BBD, 0x91C6798E, 0x95F773F4, 0x44204675, 0x2EDA57BA, 0x06D313EF, 0xEEAA4466, 0x2DFA7530,
    0xA8AF0C9B, 0x39F1535E, 0x0CC2B7BD, 0x38A76C0E, 0x4F41071D, 0xCDAF2475, 0x49A6EFF8, 0x01621748,
    0x36EBACAB, 0xBD6D9A29, 0x44D1CD65, 0x40815DFD, 0x55FA5A1A, 0x87CCE9E9, 0xAE559B45, 0xD76B4C26,
    0x637D60AD, 0xDE29F5F9, 0x97491CBB, 0xFB350040, 0xFFE7F997, 0x201C9DCD, 0xE61320E9, 0xA90987A3,
    0xE24AFA83, 0x61C1E6FC, 0xCC87FF62, 0xF1C9D8FA, 0x4FD04546, 0x90ECC76E, 0x46E456B9, 0x305DCEB8,
    0xF627E68C, 0x2D286815, 0xC705BBFD, 0x101B6DF3, 0x892DAE62, 0xD5B7FB44, 0xEA1D5C94, 0x5332E3CB,
    0xF856F88A, 0xB341B0E9, 0x28408D9D, 0x5421BC17, 0xEB9AF9BC, 0x602371C5, 0x67985A91, 0xD774907F,
    0x7C4D697D, 0x9370B0B8, 0x6FF5CEBB, 0x7D465744, 0x674CEAC0, 0xEA9102FC, 0x0DE94784, 0xC793DE69,
    0xFE599BB1, 0xC6AD952F, 0x6D6CA9C3, 0x928C3F91, 0xF9022F05, 0x24A164DC, 0xE5E98CD3, 0x7649EFDB,
    0x6DF3BCDB, 0x5D1E9FF1, 0x17F5D010, 0xE2686EA1, 0x6EAC77FE, 0x7BB5C585, 0x88D90CBB, 0x18689163,
    0x67C9EFA5, 0xC0B76D9B, 0x960EFBAB, 0xBD872807, 0x70F4C474, 0x56C29D20, 0xD1541D15, 0x88137033,
    0xE3F02B3E, 0xB6D9B28D, 0x53A077BA, 0xEEDCD29E, 0xA50A6C1D, 0x12C2801E, 0x52BA335B, 0x35984614,
    0xE2599AA8, 0xAF94ED1D, 0xD90D4767, 0x202C7D07, 0x77BEC4F4, 0xFA71BC80, 0xFC5C8B76, 0x8D0FBBFC,
    0xDA366DC6, 0x8B32A0C7, 0x1B36F7FC, 0x6642DCBC, 0x6FE7E724, 0x8B5FA782, 0xC4227404, 0x3A7D1DA7,
    0x517ED658, 0x8A18DF6D, 0x3E5C9B23, 0x1FBD51EF, 0x1470601D, 0x3400389C, 0x676B065D, 0x8864AD80,
    0xEA6F1A9C, 0x2DB484E1, 0x608785F0, 0x8DD384AF, 0x69D26699, 0x409C4E16, 0x77F9986A, 0x7F491266,
    0x883EA6CF, 0xEAA06072, 0xFA2E5DB5, 0x352594B4, 0x9156BB89, 0xA2FBBBFB, 0xAC3989C7, 0x6E2422B1,
    0x581F3560, 0x1009A9B5, 0x7E5AD9CD, 0xA9FC0A6E, 0x43E5998E, 0x7F8778F9, 0xF038F8E1, 0x5415C2E8,
    0x6499B731, 0xB82389AE, 0x05D4D819, 0x0F06440E, 0xF1735AA0, 0x986430EE, 0x47EC952C, 0xBF149CC5,
    0xB3CB2CB6, 0x3F41E8C2, 0x271AC51B, 0x48AC5DED, 0xF76A0469, 0x717BBA4D, 0x4F5C90D6, 0x3B74F756,
    0x1824110A, 0xA4FD43E3, 0x1EB0507C, 0xA9375C08, 0x157C59A7, 0x0CAD8F51, 0xD66031A0, 0xABB5343F,
    0xE533FA43, 0x1996E2BB, 0xD7953A71, 0xD2529B94, 0x58F0FA07, 0x4C9B1877, 0x057E990D, 0x8BFE19C4,
    0xA8E2C0C9, 0x99FCAADA, 0x69D2AACA, 0xDC1C4642, 0xF4D22307, 0x7FE27E8C, 0x1366AA07, 0x1594E637,
    0xCE1066BF, 0xDB922552, 0x9930B52A, 0xAEAA9A3E, 0x31FF7EB4, 0x5E1F945A, 0x150AC49C, 0x0CCDAC2D,
    0xD8A8A217, 0xB82EA6E5, 0xD6A74659, 0x67B7E3E6, 0x836EEF4A, 0xB6F90074, 0x7FA3EA4B, 0xCB038123,
    0xBF069F55, 0x1FA83FC4, 0xD6EBDB23, 0x16F0A137, 0x19A7110D, 0x5FF3B55F, 0xFB633868, 0xB466F845,
    0xBCE0C198, 0x88404296, 0xDDBDD88B, 0x7FC52546, 0x63A553F8, 0xA728405A, 0x378A2BCE, 0x6862E570,
    0xEFB77E7D, 0xC611625E, 0x32515C15, 0x6984B765, 0xE8405976, 0x9BA386FD, 0xD4EED4D9, 0xF8FE0309,
    0x0CE54601, 0xBAF879C2, 0xD8524057, 0x1D8C1D7A, 0x72C0A3A9, 0x5A1FFBDE, 0x82F33A45, 0x5143F446,
    0x29C7E182, 0xE536C32F, 0x5A6F245B, 0x44272ADB, 0xCB701D9C, 0xF76137EC, 0x0841F145, 0xE7042ECC,
    0xF1277DD7, 0x745CF92C, 0xA8FE65FE, 0xD3E2D7CF, 0x54C513EF, 0x6079BC2D, 0xB66336B0, 0x101E383B,
    0xBCD75753, 0x25BE238A, 0x56A6F0BE, 0xEEFFCC17, 0x5EA31F3D, 0x0AE772F5, 0xF76DE3DE, 0x1BBECDAD,
    0xC9107D43, 0xF7E38DCE, 0x618358CD, 0x5C833F04, 0xF6975906, 0xDE4177E5, 0x67D314DC, 0xB4760F3E,
    0x56CE5888, 0x0E8345A8, 0xBFF6B1BF, 0x78DFB112, 0xF1709C1E, 0x7BB8ED8B, 0x902402B9, 0xDAA64AE0,
    0x46B71D89, 0x7EEE035F, 0xBE376509, 0x99648F3A, 0x0863EA1F, 0x49AD8887, 0x79BDECC5, 0x3C10B568,
    0x5F2E4BAE, 0x04EF20AB, 0x72F8CE7B, 0x521E1EBE, 0x14525535, 0x2E8AF95B, 0x9094CCFD, 0xBCF36713,
    0xC73953EF, 0xD4B91474, 0x6554EC2D, 0xE3885C96, 0x03DC73B7, 0x931688A9, 0xCBBEF182, 0x2B77CFC9,
    0x632A32BD, 0xD2115DCC, 0x1AE5533D, 0x32684E13, 0x4CC5A004, 0x13321BDE, 0x62CBD38D, 0x78383A3B,
    0xD00686F1, 0x9F601EE7, 0x7EAF23DE, 0x3110C492, 0x9C351209, 0x7EB89D52, 0x6D566EAC, 0xC2EFD226,
    0x32E9FAC5, 0x52227274, 0x09F84725, 0xB8D0B605, 0x72291F02, 0x71B5C34B, 0x3DBFCBB8, 0x04A02263,
    0x55BA597F, 0xD4E4037D, 0xC813E1BE, 0xFFDDEEFA, 0xC3C058F3, 0x87010F2E, 0x1DFCF55F, 0xC694EEEB,
    0xA9C01A74, 0x98C2FC6B, 0xE57E1428, 0xDD265A71, 0x836B956D, 0x7E46AB1A, 0x5835D541, 0x50B32505,
    0xE640913C, 0xBB486079, 0xFE496263, 0x113C5B69, 0x93CD6620, 0x5EFE823B, 0x2D657B40, 0xB46DFC6C,
    0x57710C69, 0xFE9FADEB, 0xB5F8728A, 0xE3224170, 0xCA28B751, 0xFDABAE56, 0x5AB12C3C, 0xA697C457,
    0xD28FA2B7, 0x056579F2, 0x9FD9D810, 0xE3557478, 0xD88D89AB, 0xA72A9422, 0x6D47ABD0, 0x405BCBD9,
    0x6F83EBAF, 0x13CAEC76, 0xFCEB9EE2, 0x2E922DF7, 0xCE9856DF, 0xC05E9322, 0x2772C854, 0xB67F2A32,
    0x6D1AF28D, 0x3A78CF77, 0xDFF411E4, 0x61C74CA9, 0xED8B842E, 0x72880845, 0x6E857085, 0xC6404932,
    0xEE37F6BC, 0x27116F48, 0x5E9EC45A, 0x8EA2A51F, 0xA5573DB7, 0xA746D036, 0x486B4768, 0x5B438F3B,
    0x18C54A5C, 0x64FCF08E, 0xE993CDC1, 0x35C1EAD3, 0x9DE07DE7, 0x321B841C, 0x87423C5E, 0x071AA0F6,
    0x962EB75B, 0xBB06BDD2, 0xDCDB5363, 0x389752F2, 0x83D9CC88, 0xD014ADC6, 0xC71121BB, 0x2372F938,
    0xCAFF2650, 0x62BE8951, 0x56DCCAFF, 0xAC4084C0, 0x09712E95, 0x1D3C288F, 0x1B085744, 0xE1D3CFEF,
    0x5C9A812E, 0x6611FD59, 0x85E46044, 0x1981D885, 0x5A4C903F, 0x43F30D4B, 0x7D1D601B, 0xDD3C3391,
    0x030EC65E, 0xC12878CD, 0x72E795FE, 0xD0C76ABD, 0x1EC085DB, 0x7CBB61FA, 0x93E8DD1E, 0x8582EB06,
    0x73563144, 0x049D4E7E, 0x5FD5AEFE, 0x7B842A00, 0x75CED665, 0xBB32D458, 0x4E83BBA7, 0x8F15151F,
    0x7795A125, 0xF0842455, 0x499AF99D, 0x565CC7FA, 0xA3B1278D, 0x3F27CE74, 0x96CA058E, 0x8A497443,
    0xA6FB8CAE, 0xC115AA21, 0x17504923, 0xE4932402, 0xAEA886C2, 0x8EB79AF5, 0xEBD5EA6B, 0xC7980D3B,
    0x71369315, 0x796E6A66, 0x3A7EC708, 0xB05175C8, 0xE02B74E7, 0xEB377AD3, 0x6C8C1F54, 0xB980C374,
    0x59AEE281, 0x449CB799, 0xE01F5605, 0xED0E085E, 0xC9A1A3B4, 0xAAC481B1, 0xC935C39C, 0xB7D8CE7F,
)
# fmt: on
assert len(_INJECTION) == 16 * _ROUNDS


class EaglesongFallbackWarning(RuntimeWarning):
    """Emitted once at import when the C extension is missing and the slow pure-Python code is in use."""


# --- the C extension --------------------------------------------------------------------------------------


class _CModule(Protocol):
    """The functions ``_eaglesong.c`` exports (positional-only, validated again in C)."""

    def hash(self, data: bytes, /) -> bytes: ...
    def ckb_hash(self, data: bytes, /) -> bytes: ...
    def pow_output(self, pow_hash: bytes, nonce16: bytes, blake2b: bool, /) -> bytes: ...
    def check(self, pow_hash: bytes, nonce16: bytes, target_be32: bytes, blake2b: bool, /) -> bool: ...
    def search(
        self,
        pow_hash: bytes,
        start_nonce16: bytes,
        prefix_len: int,
        count: int,
        target_be32: bytes,
        blake2b: bool,
        /,
    ) -> int | None: ...


def _load_c_extension() -> _CModule | None:
    """Import the C extension, or warn once (here, at import) that the pure-Python fallback is in use."""
    try:
        module = importlib.import_module("ckbpool.ckb._eaglesong")
    except ImportError as exc:
        warnings.warn(
            f"ckbpool.ckb._eaglesong is unavailable ({exc}); Eaglesong uses the pure-Python fallback, "
            "which is several hundred times slower (too slow for a pool or a miner). "
            "Build the extension with `pip install -e .` or `python setup.py build_ext --inplace`.",
            EaglesongFallbackWarning,
            stacklevel=2,
        )
        return None
    return cast(_CModule, module)


_C: Final = _load_c_extension()
HAVE_C: Final[bool] = _C is not None
"""True when the C extension is loaded; False means every call runs the slow pure-Python reference."""


# --- the pure-Python reference ----------------------------------------------------------------------------


def _rotl(x: int, n: int) -> int:
    return ((x << n) | (x >> (32 - n))) & _MASK32


def _permute(state: list[int]) -> None:
    """The Eaglesong permutation F, in place: 43 rounds of matrix, circulant, injection, add-rotate-add."""
    for i in range(_ROUNDS):
        # (1) bit matrix
        new = [0] * 16
        for j, column in enumerate(_MATRIX_COLUMNS):
            x = 0
            for k in column:
                x ^= state[k]
            new[j] = x
        # (2) circulant multiplication, (3) constant injection
        for j, (a, b) in enumerate(_CIRCULANT):
            x = new[j]
            new[j] = x ^ _rotl(x, a) ^ _rotl(x, b) ^ _INJECTION[16 * i + j]
        # (4) addition, rotation, addition on each pair of words
        for t in range(0, 16, 2):
            even = _rotl((new[t] + new[t + 1]) & _MASK32, 8)
            odd = _rotl(new[t + 1], 24)
            new[t] = even
            new[t + 1] = (even + odd) & _MASK32
        state[:] = new


def _rate_words(data: bytes, block: int) -> list[int]:
    """The 8 rate words of one block, built exactly as RFC 0010 absorbs.

    Each word is big-endian from bytes p = 32*block + 4j + k: byte p of the message while p < len, the
    delimiter 0x06 at p == len, and nothing at all past it, so a final partial word is right-aligned
    (for a 48-byte message word 4 of block 1 is 0x00000006).
    """
    words = []
    for j in range(_RATE_BYTES // 4):
        word = 0
        for k in range(4):
            p = _RATE_BYTES * block + 4 * j + k
            if p < len(data):
                word = (word << 8) ^ data[p]
            elif p == len(data):
                word = (word << 8) ^ _DELIMITER
        words.append(word)
    return words


def _squeeze(state: list[int]) -> bytes:
    """The 256-bit output: words 0..7, each little-endian, straight after the last absorb."""
    return b"".join(word.to_bytes(4, "little") for word in state[:8])


def eaglesong_py(data: BytesLike) -> bytes:
    """Eaglesong-256 of ``data`` in pure Python: the reference the C code is tested against.

    Always available, whatever was built; slow (under a thousand short messages a second).
    """
    message = _as_bytes("data", data)
    state = [0] * 16
    blocks = ((len(message) + 1) * 8 + 255) // 256
    for block in range(blocks):
        for j, word in enumerate(_rate_words(message, block)):
            state[j] ^= word
        _permute(state)
    return _squeeze(state)


def _pow_midstate_py(pow_hash: bytes) -> list[int]:
    """State after absorbing block 0 of the 48-byte PoW message, which is pow_hash alone.

    Every nonce of a job shares it, so a search pays one permutation per nonce instead of two.
    """
    state = [int.from_bytes(pow_hash[4 * j : 4 * j + 4], "big") for j in range(8)] + [0] * 8
    _permute(state)
    return state


def _pow_finish_py(midstate: list[int], nonce16: bytes, blake2b: bool) -> bytes:
    """Absorb block 1 (nonce16, then word 4 = 0x00000006, words 5..7 zero) and squeeze."""
    state = list(midstate)
    for j in range(4):
        state[j] ^= int.from_bytes(nonce16[4 * j : 4 * j + 4], "big")
    state[4] ^= _DELIMITER
    _permute(state)
    output = _squeeze(state)
    return _ckb_hash(output) if blake2b else output


def _ckb_hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32, person=_CKB_HASH_PERSONALIZATION).digest()


# --- argument checks shared by both paths (so the C and the fallback raise the same errors) --------------


def _as_bytes(name: str, value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"{name} must be bytes, not {type(value).__name__}")


def _exact_bytes(name: str, value: object, size: int) -> bytes:
    data = _as_bytes(name, value)
    if len(data) != size:
        raise ValueError(f"{name} must be {size} bytes, got {len(data)}")
    return data


def _target_be32(target: int) -> bytes:
    """The target as 32 big-endian bytes, so C compares it with the output by memcmp."""
    if not isinstance(target, int):
        raise TypeError(f"target must be int, not {type(target).__name__}")
    if not 0 <= target <= _U256_MAX:
        raise ValueError(f"target must be in 0..2**256-1, got {target:#x}")
    return target.to_bytes(32, "big")


def _non_negative_int(name: str, value: int) -> int:
    if not isinstance(value, int):
        raise TypeError(f"{name} must be int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


# --- public API -------------------------------------------------------------------------------------------


def eaglesong(data: BytesLike) -> bytes:
    """Eaglesong-256 of ``data`` (32 bytes): in C when built, else the pure-Python reference."""
    if _C is not None:
        return _C.hash(_as_bytes("data", data))
    return eaglesong_py(data)


def pow_output(pow_hash: BytesLike, nonce16: BytesLike, blake2b: bool = False) -> bytes:
    """The 32-byte PoW output of a header: eaglesong(pow_hash || nonce16), ckb_hash'ed again if blake2b.

    ``nonce16`` is the 16 wire bytes (``header_nonce.to_bytes(16, "little")``), not the u128. Raises
    ValueError naming the argument if pow_hash is not 32 bytes or nonce16 not 16.
    """
    pow_hash = _exact_bytes("pow_hash", pow_hash, POW_HASH_BYTES)
    nonce16 = _exact_bytes("nonce16", nonce16, NONCE_BYTES)
    if _C is not None:
        return _C.pow_output(pow_hash, nonce16, bool(blake2b))
    return _pow_finish_py(_pow_midstate_py(pow_hash), nonce16, bool(blake2b))


def check_pow(pow_hash: BytesLike, nonce16: BytesLike, target: int, blake2b: bool = False) -> bool:
    """Whether a share meets ``target``: ``int.from_bytes(pow_output(...), "big") <= target``.

    The pool runs this once per submitted share, so with C the hash and the comparison happen in one call
    (the target travels as 32 big-endian bytes). ``target`` must be in 0..2**256-1.
    """
    pow_hash = _exact_bytes("pow_hash", pow_hash, POW_HASH_BYTES)
    nonce16 = _exact_bytes("nonce16", nonce16, NONCE_BYTES)
    target_be32 = _target_be32(target)
    if _C is not None:
        return _C.check(pow_hash, nonce16, target_be32, bool(blake2b))
    output = _pow_finish_py(_pow_midstate_py(pow_hash), nonce16, bool(blake2b))
    return output <= target_be32  # equal-length bytes compare as big-endian integers


def search(
    pow_hash: BytesLike,
    nonce_start: int,
    count: int,
    target: int,
    *,
    blake2b: bool = False,
    nonce_prefix: BytesLike = b"",
) -> int | None:
    """Try ``count`` nonces and return the first header nonce (u128) whose output is <= ``target``, else None.

    The nonces tried are ``nonce16 = nonce_prefix || counter.to_bytes(16 - k, "little")`` for
    ``counter = nonce_start, nonce_start + 1, ..., nonce_start + count - 1`` with ``k = len(nonce_prefix)``
    (0..16): the prefix the pool fixed stays put, byte ``k`` changes fastest. Without a prefix the counter
    *is* the header nonce. The returned value is the header's nonce, ``int.from_bytes(nonce16, "little")``;
    its wire bytes are ``nonce.to_bytes(16, "little")``, and the counter that hit is ``nonce >> 8 * k``.

    With C the loop holds no GIL and pays one permutation per nonce (the pow_hash block is absorbed once),
    so miner threads scale across cores; keep ``count`` small enough to notice a new job in time. Raises
    ValueError when ``nonce_start + count`` exceeds the ``256 ** (16 - k)`` counter values (the counter must
    not carry into the prefix), for a negative start or count, and for bad lengths.
    """
    pow_hash = _exact_bytes("pow_hash", pow_hash, POW_HASH_BYTES)
    prefix = _as_bytes("nonce_prefix", nonce_prefix)
    if len(prefix) > NONCE_BYTES:
        raise ValueError(f"nonce_prefix must be at most {NONCE_BYTES} bytes, got {len(prefix)}")
    nonce_start = _non_negative_int("nonce_start", nonce_start)
    count = _non_negative_int("count", count)
    if count > _MAX_COUNT:
        raise ValueError(f"count must be at most 2**63-1, got {count}")
    target_be32 = _target_be32(target)
    counter_bytes = NONCE_BYTES - len(prefix)
    if nonce_start + count > 1 << (8 * counter_bytes):
        raise ValueError(
            f"nonce_start + count = {nonce_start + count} exceeds the {counter_bytes}-byte counter after a "
            f"{len(prefix)}-byte nonce_prefix (at most {1 << (8 * counter_bytes)})"
        )
    if count == 0:
        return None

    prefix_value = int.from_bytes(prefix, "little")
    shift = 8 * len(prefix)
    if _C is not None:
        start_nonce16 = prefix + nonce_start.to_bytes(counter_bytes, "little")
        offset = _C.search(pow_hash, start_nonce16, len(prefix), count, target_be32, bool(blake2b))
        return None if offset is None else prefix_value + ((nonce_start + offset) << shift)

    midstate = _pow_midstate_py(pow_hash)
    for counter in range(nonce_start, nonce_start + count):
        nonce16 = prefix + counter.to_bytes(counter_bytes, "little")
        if _pow_finish_py(midstate, nonce16, bool(blake2b)) <= target_be32:
            return prefix_value + (counter << shift)
    return None
