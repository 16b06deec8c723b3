"""The secp256k1 binding (coincurve's cffi to libsecp256k1) against the BIPs' own test vectors.

Our Noise handshake relies on three primitives we do not implement ourselves: ElligatorSwift decoding,
BIP324's x-only ElligatorSwift ECDH (``ellswift_xdh`` with the BIP324 hash and the right ``party``) and
BIP340 Schnorr signatures. These rows are copied verbatim from bitcoin/bips:

* ``bip-0324/packet_encoding_test_vectors.csv`` (columns in_idx, in_priv_ours, in_ellswift_ours,
  in_ellswift_theirs, in_initiating, mid_x_ours, mid_x_shared, mid_shared_secret) — rows 1, 999, 0, 255;
* ``bip-0324/xelligatorswift_test_vectors.csv`` (ellswift -> x) — five rows incl. u >= p and t edge cases;
* ``bip-0324/xswiftec_test_vectors.csv`` (u, x, case*_t: every listed t decodes with u to x) — two rows;
* ``bip-0340/test-vectors.csv`` — rows 0-3 (sign + verify), 4 (verify), 5-14 (must not verify).
"""

from __future__ import annotations

import pytest
from coincurve import PrivateKey, PublicKey, PublicKeyXOnly

from ckbpool.sv2.keys import (
    KeyFormatError,
    check_xonly,
    ellswift_create,
    ellswift_to_xonly,
    ellswift_xdh,
    public_key_from_ellswift,
    xonly_from_secret,
)

pytestmark = pytest.mark.unit

# (in_idx, priv_ours, ellswift_ours, ellswift_theirs, initiating, x_ours, x_shared, shared_secret)
BIP324_ECDH = [
    (
        1,
        "e79f04ad4c684525ff3e3cf7c19f4cdb11193d387d7f3fe82a948a0c3165f5fe",
        "4eff53ea1945e57b5d170565e760d771e5d496101c1005c302fd687af80d8b85"
        "8c5a681c474fc4c0546ee464a1b95899ecb9d4f50c2c0854fe029fc054ae6777",
        "824a1da0530fa695b95b375fee2a56ec96ce375ddd2fcf8367cc8ec1c0b751a3"
        "304bbef5dc96543acaac50c24be8cb39906ef8521727de0c6e96c2060a026bd7",
        True,
        "b63341693587b4944b865485cffcc34707b3e0760a6ba8d1d402fc1c996c4e91",
        "961fa6c9491bde887a6e67898c9335579d1931b435af16d969f3c9f12e58c698",
        "05ac09c882b2cddd57fd4a1a14f93ae78d78a2ab2adb8cb6d67176cdb3101e15",
    ),
    (
        999,
        "53a915e6d8f6c5bbb93e537081085e9e642dc525649acf05be74e3a825e20921",
        "715d7b8357dd4d15a07b3f8c6764ebd9927140f75047fb50478c33ea8889d710"
        "511cdf39aa0fd6b1e94ea660d87f9d97bffc548646f9e2aaebc1468fe563fb97",
        "cea7abc3112397b894bd3e89a615248af473f897bbdd30997c20e53e7ce499a2"
        "95e55c4c5655cd3d21191e76c8af0aa1bbea10fd1b540a42d0fbed388dc59877",
        False,
        "533bbaefc711f303be5e8271fdecfd31d03abd42128ff73479e2a427059e4a74",
        "ed679745127d32714ff84bcce7651a14b9f275bf4b18bc8e880ff51cd7ac012b",
        "08cbe6a86ff92a9757b2aeea92b8b2f4d78426786a2caec99c3cc73d7dda47ab",
    ),
    (
        0,
        "dcf45714d450a32cdd05997b75acd34e8786969dfcff34295c287a13ba3225f0",
        "feaa1ef8bb05296a8d5153855357868835fc5bc59d96dcbccb108e0e2dd67167"
        "6c5683ad566ee4290ede5236ba6259ab47668e25853d64c0678641d27d5d0eed",
        "c8067851ccc5df7331e9f137e66ebce1220306c4644266ff3e38436a1036ea36"
        "582dac8ce2c30de59a890f81611f866f659c1334bdd82cce1ea20ab0128b7f56",
        True,
        "d23f19ad26c7ab984c682c5b1475f5a7df0452a05dd29a164974d2027a6e488a",
        "6f8420ebf786ee13dcf65855b11428db43061cb599e6fe9ed79e59d9f273dc44",
        "33a1ef8464def100bf031dae882ae4b7837b481f6adbc63c44baa8ef61c102eb",
    ),
    (
        255,
        "f360308206fb441c7713b1a24ba4096a2fa0d5401411198b7008f82ae85257fe",
        "3d4aa6a71a8a734e014b4d9e6b62989f022c1e2238ae476b11465cb86fe8cf72"
        "43db6f9472e188590705cf9b35121e06e57cb106a6043ab147b7c73871da8222",
        "f0ebc3c872339622fbf2ab1b8aa2117c4d752b64eac9203962c03a47497a89c0"
        "dd298348e5bb63d3433c48ed6da6bc2e2dbe78f7b91247dd29f1f51a858d464a",
        False,
        "29bf8fe2cbd12835d3e6652840b8b1a2acf99d7b44610e738aafd7fd207c9b25",
        "8f088a98122e3ffae5fee255fbfdf653a1f830f85dfe595707a1f4a7f74dab76",
        "07eff272cd331aeb14db342b82f6df98303b01471f4dbe71028b127577216d9b",
    ),
]

# ellswift (64 bytes) -> x coordinate
BIP324_XELLIGATORSWIFT = [
    (
        "26b25d457597a7b0463f9620f666dd10aa2c4373a505967c7c8d70922a2d6ece"
        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffb2dabde1",
        "240b740607e14d8cb767f53c9dacf5becde98abe73ffa36f096971215280dc58",
    ),
    (
        "bf5e8ffa51a9e748985800c1d3d7f1a2a6ae7435136593ca8d9637e3f87c699c"
        "76cc5805dab9b4eacefdb477f498020fd82bccdbc9c6a2d9ce10586ac85512b4",
        "5579653da55ae6af8c92b0ab623bfede27756fdba141124c72aec43bc5b746e5",
    ),
    (
        "fd50cee538a3798d17dde484f9d935860a88fe8dd6cd2341254ab5d558b0b67f"
        "5c5ec4b2af7c601e0f4b8d3893192292759a5c3b0a760c0589e5337bfb4e8a2d",
        "0969798ab212485d36a0f007f744a17bffbc4fa9c3e73afcb4e7a27fb3580de9",
    ),
    (
        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffff3d60a4a9"
        "252c0b6b080fa045acfcd1437f693f3be2be2ac8223ea525d492fa19ab028942",
        "c163b493f047704ba83e241472ebb2a05f95ef47c6bf5feedd8da33504866d68",
    ),
    (
        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffff72a7e655"
        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffff1dd15ad9",
        "34818ed876cbbb6710eb832627de9eb7c468846f26bfc336303601593bbb706d",
    ),
]

# (u, x, [t values]) — each u || t decodes to x
BIP324_XSWIFTEC = [
    (
        "0a6361b3a802f55cd5ae06101c88a1e216320fe11cc0cfe1d791eed08a1200fd",
        "a0223bc98997647daf4d520129bdb66e4937a00d1533af1fa29645fb96fb5bb5",
        [
            "60a3ed14bd9df0bfb89ada9372a7b5790b123a66bf130f5788237e8cd5225de4",
            "9c4ee4629f10220fda49532d0c859a539dec5148eefc78bf48d93d2828027a9c",
            "fc5e72f042fd1792cbf88728a374a2cc1e03e1f9ec8813fa3692e497cfa7d5e6",
            "cb39fac005f26dc0a383ea64cb9b3b0b26767f20232cae4486f32904df4f04e3",
            "9f5c12eb42620f404765256c8d584a86f4edc59940ecf0a877dc81722add9e4b",
            "63b11b9d60efddf025b6acd2f37a65ac6213aeb711038740b726c2d6d7fd8193",
            "03a18d0fbd02e86d340778d75c8b5d33e1fc1e061377ec05c96d1b6730582649",
            "34c6053ffa0d923f5c7c159b3464c4f4d98980dfdcd351bb790cd6fa20b0f74c",
        ],
    ),
    (
        "102b51b9765a56a3e899f7cf0ee38e5251f9c503b357b330a49183eb7b155604",
        "102b51b9765a56a3e899f7cf0ee38e5251f9c503b357b330a49183eb7b155604",
        [
            "bdb5bd58ca96eae36147a6c55bc2bef2cee55a757ee193cb619edc8d3590f90a",
            "bda953c1da02059350e740b83f59149628e0be50c24ac8dc6908a2225931b4a0",
            "424a42a73569151c9eb8593aa43d410d311aa58a811e6c349e612371ca6f0325",
            "4256ac3e25fdfa6caf18bf47c0a6eb69d71f41af3db5372396f75ddca6ce478f",
        ],
    ),
]

# bip-0340/test-vectors.csv, verbatim: index,secret key,public key,aux_rand,message,signature,verification result
BIP340_CSV = """\
0,0000000000000000000000000000000000000000000000000000000000000003,F9308A019258C31049344F85F89D5229B531C845836F99B08601F113BCE036F9,0000000000000000000000000000000000000000000000000000000000000000,0000000000000000000000000000000000000000000000000000000000000000,E907831F80848D1069A5371B402410364BDF1C5F8307B0084C55F1CE2DCA821525F66A4A85EA8B71E482A74F382D2CE5EBEEE8FDB2172F477DF4900D310536C0,TRUE
1,B7E151628AED2A6ABF7158809CF4F3C762E7160F38B4DA56A784D9045190CFEF,DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659,0000000000000000000000000000000000000000000000000000000000000001,243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89,6896BD60EEAE296DB48A229FF71DFE071BDE413E6D43F917DC8DCF8C78DE33418906D11AC976ABCCB20B091292BFF4EA897EFCB639EA871CFA95F6DE339E4B0A,TRUE
2,C90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B14E5C9,DD308AFEC5777E13121FA72B9CC1B7CC0139715309B086C960E18FD969774EB8,C87AA53824B4D7AE2EB035A2B5BBBCCC080E76CDC6D1692C4B0B62D798E6D906,7E2D58D8B3BCDF1ABADEC7829054F90DDA9805AAB56C77333024B9D0A508B75C,5831AAEED7B44BB74E5EAB94BA9D4294C49BCF2A60728D8B4C200F50DD313C1BAB745879A5AD954A72C45A91C3A51D3C7ADEA98D82F8481E0E1E03674A6F3FB7,TRUE
3,0B432B2677937381AEF05BB02A66ECD012773062CF3FA2549E44F58ED2401710,25D1DFF95105F5253C4022F628A996AD3A0D95FBF21D468A1B33F8C160D8F517,FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF,FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF,7EB0509757E246F19449885651611CB965ECC1A187DD51B64FDA1EDC9637D5EC97582B9CB13DB3933705B32BA982AF5AF25FD78881EBB32771FC5922EFC66EA3,TRUE
4,,D69C3509BB99E412E68B0FE8544E72837DFA30746D8BE2AA65975F29D22DC7B9,,4DF3C3F68FCC83B27E9D42C90431A72499F17875C81A599B566C9889B9696703,00000000000000000000003B78CE563F89A0ED9414F5AA28AD0D96D6795F9C6376AFB1548AF603B3EB45C9F8207DEE1060CB71C04E80F593060B07D28308D7F4,TRUE
5,,EEFDEA4CDB677750A420FEE807EACF21EB9898AE79B9768766E4FAA04A2D4A34,,243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89,6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E17776969E89B4C5564D00349106B8497785DD7D1D713A8AE82B32FA79D5F7FC407D39B,FALSE
6,,DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659,,243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89,FFF97BD5755EEEA420453A14355235D382F6472F8568A18B2F057A14602975563CC27944640AC607CD107AE10923D9EF7A73C643E166BE5EBEAFA34B1AC553E2,FALSE
7,,DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659,,243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89,1FA62E331EDBC21C394792D2AB1100A7B432B013DF3F6FF4F99FCB33E0E1515F28890B3EDB6E7189B630448B515CE4F8622A954CFE545735AAEA5134FCCDB2BD,FALSE
8,,DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659,,243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89,6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E177769961764B3AA9B2FFCB6EF947B6887A226E8D7C93E00C5ED0C1834FF0D0C2E6DA6,FALSE
9,,DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659,,243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89,0000000000000000000000000000000000000000000000000000000000000000123DDA8328AF9C23A94C1FEECFD123BA4FB73476F0D594DCB65C6425BD186051,FALSE
10,,DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659,,243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89,00000000000000000000000000000000000000000000000000000000000000017615FBAF5AE28864013C099742DEADB4DBA87F11AC6754F93780D5A1837CF197,FALSE
11,,DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659,,243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89,4A298DACAE57395A15D0795DDBFD1DCB564DA82B0F269BC70A74F8220429BA1D69E89B4C5564D00349106B8497785DD7D1D713A8AE82B32FA79D5F7FC407D39B,FALSE
12,,DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659,,243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89,FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F69E89B4C5564D00349106B8497785DD7D1D713A8AE82B32FA79D5F7FC407D39B,FALSE
13,,DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659,,243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89,6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E177769FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,FALSE
14,,FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC30,,243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89,6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E17776969E89B4C5564D00349106B8497785DD7D1D713A8AE82B32FA79D5F7FC407D39B,FALSE
"""
BIP340 = [
    (int(i), sk or None, pk, aux or None, msg, sig, ok == "TRUE")
    for i, sk, pk, aux, msg, sig, ok in (line.split(",") for line in BIP340_CSV.splitlines())
]


@pytest.mark.parametrize("row", BIP324_ECDH, ids=lambda r: f"idx{r[0]}")
def test_bip324_ellswift_ecdh(row: tuple[int, str, str, str, bool, str, str, str]) -> None:
    _, priv_hex, ours_hex, theirs_hex, initiating, x_ours, x_shared, shared = row
    priv, ours, theirs = bytes.fromhex(priv_hex), bytes.fromhex(ours_hex), bytes.fromhex(theirs_hex)
    assert xonly_from_secret(priv).hex() == x_ours
    assert ellswift_to_xonly(ours).hex() == x_ours
    # the raw ECDH point: the peer's decoded key times our secret (independent of the BIP324 hash)
    assert public_key_from_ellswift(theirs).multiply(priv).format()[1:].hex() == x_shared
    # the BIP324 shared secret: initiator's encoding always first, our side given by `initiator`
    ell_a, ell_b = (ours, theirs) if initiating else (theirs, ours)
    assert ellswift_xdh(ell_a, ell_b, priv, initiator=initiating).hex() == shared
    # with the party flag wrong, libsecp256k1 decodes the wrong key: a different (useless) secret
    assert ellswift_xdh(ell_a, ell_b, priv, initiator=not initiating).hex() != shared


@pytest.mark.parametrize(("ellswift", "x"), BIP324_XELLIGATORSWIFT)
def test_bip324_ellswift_decode(ellswift: str, x: str) -> None:
    assert ellswift_to_xonly(bytes.fromhex(ellswift)).hex() == x


@pytest.mark.parametrize(("u", "x", "ts"), BIP324_XSWIFTEC)
def test_bip324_xswiftec_cases(u: str, x: str, ts: list[str]) -> None:
    for t in ts:
        assert ellswift_to_xonly(bytes.fromhex(u + t)).hex() == x


def test_ellswift_create_round_trips_and_is_randomised() -> None:
    secret = bytes.fromhex(BIP324_ECDH[0][1])
    a, b = ellswift_create(secret), ellswift_create(secret)
    assert a != b  # fresh encoding each time
    assert ellswift_to_xonly(a) == ellswift_to_xonly(b) == xonly_from_secret(secret)
    full = PrivateKey(secret).public_key.format()
    assert public_key_from_ellswift(a).format() == full  # parity preserved too


def test_ellswift_rejects_wrong_sizes() -> None:
    with pytest.raises(KeyFormatError):
        ellswift_to_xonly(b"\x00" * 63)
    with pytest.raises(KeyFormatError):
        ellswift_xdh(b"\x00" * 64, b"\x00" * 65, b"\x01" * 32, initiator=True)


@pytest.mark.parametrize("row", BIP340, ids=lambda r: f"bip340-{r[0]}")
def test_bip340_vectors(row: tuple[int, str | None, str, str | None, str, str, bool]) -> None:
    _, secret, pubkey, aux, msg, sig, expected = row
    pub, message, signature = bytes.fromhex(pubkey), bytes.fromhex(msg), bytes.fromhex(sig)
    if secret is not None:
        assert aux is not None
        key = bytes.fromhex(secret)
        assert xonly_from_secret(key) == pub
        assert PrivateKey(key).sign_schnorr(message, bytes.fromhex(aux)) == signature
    try:
        check_xonly(pub)
    except KeyFormatError:
        assert not expected  # rows 5 and 14: the public key itself is invalid
        return
    assert PublicKeyXOnly(pub).verify(signature, message) is expected


def test_binding_module_is_the_same_library_for_ecdsa_keys() -> None:
    # sanity: coincurve's PublicKey and our decode agree on a plain key
    secret = bytes.fromhex(BIP324_ECDH[1][1])
    assert PublicKey.from_secret(secret).format() == public_key_from_ellswift(ellswift_create(secret)).format()
