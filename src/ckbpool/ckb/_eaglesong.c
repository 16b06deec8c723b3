/*
 * _eaglesong.c -- Eaglesong (CKB's proof-of-work hash, RFC 0010) and BLAKE2b-256 with CKB's
 * "ckb-default-hash" personalization, as a CPython extension for ckbpool.
 *
 * Why C: a pure-Python Eaglesong manages a few hundred hashes per second, which is too slow for
 * the pool's share check (one hash per submitted share) and useless for the test CPU miner. The
 * public, typed API and a readable pure-Python reference live in eaglesong.py; this module only
 * offers the hot paths and is cross-checked against that reference by tests/unit/test_eaglesong.py.
 *
 * Conventions shared with eaglesong.py:
 *   - The PoW message is pow_hash (32 bytes) || nonce16 (16 bytes); nonce16 is the wire order and
 *     the header's u128 nonce is its little-endian reading.
 *   - A PoW output (32 bytes) is valid iff, read as a big-endian integer, it is <= the target; the
 *     target is passed in as 32 big-endian bytes so the comparison is a memcmp.
 *   - On testnet ("EaglesongBlake2b") the output is blake2b-256/"ckb-default-hash" of the
 *     Eaglesong output.
 *
 * Portable C99, no external libraries, no global mutable state (only const tables).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <limits.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Eaglesong                                                                                  */
/* ------------------------------------------------------------------------------------------ */

#define ES_ROUNDS 43
#define ES_RATE_BYTES 32 /* rate 256 bits = words 0..7 of the 16-word state */
#define ES_DELIMITER 0x06u
#define ES_OUT_BYTES 32
#define POW_HASH_BYTES 32
#define NONCE_BYTES 16

#if UINT_MAX != 0xFFFFFFFFu
#error "the rotations below assume a 32-bit unsigned int (uint32_t must not promote to int)"
#endif
/* Left rotation, 0 < n < 32. Also used on uint32_t vectors, hence no cast. */
#define ROTL32(x, n) (((x) << (n)) | ((x) >> (32 - (n))))

/* Round constants ("injection constants"), 16 per round, as published with RFC 0010. */
static const uint32_t ES_INJECTION[ES_ROUNDS * 16] = {
    /* round  0 */
    0x6e9e40ae, 0x71927c02, 0x9a13d3b1, 0xdaec32ad, 0x3d8951cf, 0xe1c9fe9a, 0xb806b54c, 0xacbbf417,
    0xd3622b3b, 0xa082762a, 0x9edcf1c0, 0xa9bada77, 0x7f91e46c, 0xcb0f6e4f, 0x265d9241, 0xb7bdeab0,
    /* round  1 */
    0x6260c9e6, 0xff50dd2a, 0x9036aa71, 0xce161879, 0xd1307cdf, 0x89e456df, 0xf83133e2, 0x65f55c3d,
    0x94871b01, 0xb5d204cd, 0x583a3264, 0x5e165957, 0x4cbda964, 0x675fca47, 0xf4a3033e, 0x2a417322,
    /* round  2 */
    0x3b61432f, 0x7f5532f2, 0xb609973b, 0x1a795239, 0x31b477c9, 0xd2949d28, 0x78969712, 0x0eb87b6e,
    0x7e11d22d, 0xccee88bd, 0xeed07eb8, 0xe5563a81, 0xe7cb6bcf, 0x25de953e, 0x4d05653a, 0x0b831557,
    /* round  3 */
    0x94b9cd77, 0x13f01579, 0x794b4a4a, 0x67e7c7dc, 0xc456d8d4, 0x59689c9b, 0x668456d7, 0x22d2a2e1,
    0x38b3a828, 0x0315ac3c, 0x438d681e, 0xab7109c5, 0x97ee19a8, 0xde062b2e, 0x2c76c47b, 0x0084456f,
    /* round  4 */
    0x908f0fd3, 0xa646551f, 0x3e826725, 0xd521788e, 0x9f01c2b0, 0x93180cdc, 0x92ea1df8, 0x431a9aae,
    0x7c2ea356, 0xda33ad03, 0x46926893, 0x66bde7d7, 0xb501cc75, 0x1f6e8a41, 0x685250f4, 0x3bb1f318,
    /* round  5 */
    0xaf238c04, 0x974ed2ec, 0x5b159e49, 0xd526f8bf, 0x12085626, 0x3e2432a9, 0x6bd20c48, 0x1f1d59da,
    0x18ab1068, 0x80f83cf8, 0x2c8c11c0, 0x7d548035, 0x0ff675c3, 0xfed160bf, 0x74bbbb24, 0xd98e006b,
    /* round  6 */
    0xdeaa47eb, 0x05f2179e, 0x437b0b71, 0xa7c95f8f, 0x00a99d3b, 0x3fc3c444, 0x72686f8e, 0x00fd01a9,
    0xdedc0787, 0xc6af7626, 0x7012fe76, 0xf2a5f7ce, 0x9a7b2eda, 0x5e57fcf2, 0x4da0d4ad, 0x5c63b155,
    /* round  7 */
    0x34117375, 0xd4134c11, 0x2ea77435, 0x5278b6de, 0xab522c4c, 0xbc8fc702, 0xc94a09e4, 0xebb93a9e,
    0x91ecb65e, 0x4c52ecc6, 0x8703bb52, 0xcb2d60aa, 0x30a0538a, 0x1514f10b, 0x157f6329, 0x3429dc3d,
    /* round  8 */
    0x5db73eb2, 0xa7a1a969, 0x7286bd24, 0x0df6881e, 0x3785ba5f, 0xcd04623a, 0x02758170, 0xd827f556,
    0x99d95191, 0x84457eb1, 0x58a7fb22, 0xd2967c5f, 0x4f0c33f6, 0x4a02099a, 0xe0904821, 0x94124036,
    /* round  9 */
    0x496a031b, 0x780b69c4, 0xcf1a4927, 0x87a119b8, 0xcdfaf4f8, 0x4cf9cd0f, 0x27c96a84, 0x6d11117e,
    0x7f8cf847, 0x74ceede5, 0xc88905e6, 0x60215841, 0x7172875a, 0x736e993a, 0x010aa53c, 0x43d53c2b,
    /* round 10 */
    0xf0d91a93, 0x0d983b56, 0xf816663c, 0xe5d13363, 0x0a61737c, 0x09d51150, 0x83a5ac2f, 0x3e884905,
    0x7b01aeb5, 0x600a6ea7, 0xb7678f7b, 0x72b38977, 0x068018f2, 0xce6ae45b, 0x29188aa8, 0xe5a0b1e9,
    /* round 11 */
    0xc04c2b86, 0x8bd14d75, 0x648781f3, 0xdbae1e0a, 0xddcdd8ae, 0xab4d81a3, 0x446baaba, 0x1cc0c19d,
    0x17be4f90, 0x82c0e65d, 0x676f9c95, 0x5c708db2, 0x6fd4c867, 0xa5106ef0, 0x19dde49d, 0x78182f95,
    /* round 12 */
    0xd089cd81, 0xa32e98fe, 0xbe306c82, 0x6cd83d8c, 0x037f1bde, 0x0b15722d, 0xeddc1e22, 0x93c76559,
    0x8a2f571b, 0x92cc81b4, 0x021b7477, 0x67523904, 0xc95dbccc, 0xac17ee9d, 0x944e46bc, 0x0781867e,
    /* round 13 */
    0xc854dd9d, 0x26e2c30c, 0x858c0416, 0x6d397708, 0xebe29c58, 0xc80ced86, 0xd496b4ab, 0xbe45e6f5,
    0x10d24706, 0xacf8187a, 0x96f523cb, 0x2227e143, 0x78c36564, 0x4643adc2, 0x4729d97a, 0xcff93e0d,
    /* round 14 */
    0x25484bbd, 0x91c6798e, 0x95f773f4, 0x44204675, 0x2eda57ba, 0x06d313ef, 0xeeaa4466, 0x2dfa7530,
    0xa8af0c9b, 0x39f1535e, 0x0cc2b7bd, 0x38a76c0e, 0x4f41071d, 0xcdaf2475, 0x49a6eff8, 0x01621748,
    /* round 15 */
    0x36ebacab, 0xbd6d9a29, 0x44d1cd65, 0x40815dfd, 0x55fa5a1a, 0x87cce9e9, 0xae559b45, 0xd76b4c26,
    0x637d60ad, 0xde29f5f9, 0x97491cbb, 0xfb350040, 0xffe7f997, 0x201c9dcd, 0xe61320e9, 0xa90987a3,
    /* round 16 */
    0xe24afa83, 0x61c1e6fc, 0xcc87ff62, 0xf1c9d8fa, 0x4fd04546, 0x90ecc76e, 0x46e456b9, 0x305dceb8,
    0xf627e68c, 0x2d286815, 0xc705bbfd, 0x101b6df3, 0x892dae62, 0xd5b7fb44, 0xea1d5c94, 0x5332e3cb,
    /* round 17 */
    0xf856f88a, 0xb341b0e9, 0x28408d9d, 0x5421bc17, 0xeb9af9bc, 0x602371c5, 0x67985a91, 0xd774907f,
    0x7c4d697d, 0x9370b0b8, 0x6ff5cebb, 0x7d465744, 0x674ceac0, 0xea9102fc, 0x0de94784, 0xc793de69,
    /* round 18 */
    0xfe599bb1, 0xc6ad952f, 0x6d6ca9c3, 0x928c3f91, 0xf9022f05, 0x24a164dc, 0xe5e98cd3, 0x7649efdb,
    0x6df3bcdb, 0x5d1e9ff1, 0x17f5d010, 0xe2686ea1, 0x6eac77fe, 0x7bb5c585, 0x88d90cbb, 0x18689163,
    /* round 19 */
    0x67c9efa5, 0xc0b76d9b, 0x960efbab, 0xbd872807, 0x70f4c474, 0x56c29d20, 0xd1541d15, 0x88137033,
    0xe3f02b3e, 0xb6d9b28d, 0x53a077ba, 0xeedcd29e, 0xa50a6c1d, 0x12c2801e, 0x52ba335b, 0x35984614,
    /* round 20 */
    0xe2599aa8, 0xaf94ed1d, 0xd90d4767, 0x202c7d07, 0x77bec4f4, 0xfa71bc80, 0xfc5c8b76, 0x8d0fbbfc,
    0xda366dc6, 0x8b32a0c7, 0x1b36f7fc, 0x6642dcbc, 0x6fe7e724, 0x8b5fa782, 0xc4227404, 0x3a7d1da7,
    /* round 21 */
    0x517ed658, 0x8a18df6d, 0x3e5c9b23, 0x1fbd51ef, 0x1470601d, 0x3400389c, 0x676b065d, 0x8864ad80,
    0xea6f1a9c, 0x2db484e1, 0x608785f0, 0x8dd384af, 0x69d26699, 0x409c4e16, 0x77f9986a, 0x7f491266,
    /* round 22 */
    0x883ea6cf, 0xeaa06072, 0xfa2e5db5, 0x352594b4, 0x9156bb89, 0xa2fbbbfb, 0xac3989c7, 0x6e2422b1,
    0x581f3560, 0x1009a9b5, 0x7e5ad9cd, 0xa9fc0a6e, 0x43e5998e, 0x7f8778f9, 0xf038f8e1, 0x5415c2e8,
    /* round 23 */
    0x6499b731, 0xb82389ae, 0x05d4d819, 0x0f06440e, 0xf1735aa0, 0x986430ee, 0x47ec952c, 0xbf149cc5,
    0xb3cb2cb6, 0x3f41e8c2, 0x271ac51b, 0x48ac5ded, 0xf76a0469, 0x717bba4d, 0x4f5c90d6, 0x3b74f756,
    /* round 24 */
    0x1824110a, 0xa4fd43e3, 0x1eb0507c, 0xa9375c08, 0x157c59a7, 0x0cad8f51, 0xd66031a0, 0xabb5343f,
    0xe533fa43, 0x1996e2bb, 0xd7953a71, 0xd2529b94, 0x58f0fa07, 0x4c9b1877, 0x057e990d, 0x8bfe19c4,
    /* round 25 */
    0xa8e2c0c9, 0x99fcaada, 0x69d2aaca, 0xdc1c4642, 0xf4d22307, 0x7fe27e8c, 0x1366aa07, 0x1594e637,
    0xce1066bf, 0xdb922552, 0x9930b52a, 0xaeaa9a3e, 0x31ff7eb4, 0x5e1f945a, 0x150ac49c, 0x0ccdac2d,
    /* round 26 */
    0xd8a8a217, 0xb82ea6e5, 0xd6a74659, 0x67b7e3e6, 0x836eef4a, 0xb6f90074, 0x7fa3ea4b, 0xcb038123,
    0xbf069f55, 0x1fa83fc4, 0xd6ebdb23, 0x16f0a137, 0x19a7110d, 0x5ff3b55f, 0xfb633868, 0xb466f845,
    /* round 27 */
    0xbce0c198, 0x88404296, 0xddbdd88b, 0x7fc52546, 0x63a553f8, 0xa728405a, 0x378a2bce, 0x6862e570,
    0xefb77e7d, 0xc611625e, 0x32515c15, 0x6984b765, 0xe8405976, 0x9ba386fd, 0xd4eed4d9, 0xf8fe0309,
    /* round 28 */
    0x0ce54601, 0xbaf879c2, 0xd8524057, 0x1d8c1d7a, 0x72c0a3a9, 0x5a1ffbde, 0x82f33a45, 0x5143f446,
    0x29c7e182, 0xe536c32f, 0x5a6f245b, 0x44272adb, 0xcb701d9c, 0xf76137ec, 0x0841f145, 0xe7042ecc,
    /* round 29 */
    0xf1277dd7, 0x745cf92c, 0xa8fe65fe, 0xd3e2d7cf, 0x54c513ef, 0x6079bc2d, 0xb66336b0, 0x101e383b,
    0xbcd75753, 0x25be238a, 0x56a6f0be, 0xeeffcc17, 0x5ea31f3d, 0x0ae772f5, 0xf76de3de, 0x1bbecdad,
    /* round 30 */
    0xc9107d43, 0xf7e38dce, 0x618358cd, 0x5c833f04, 0xf6975906, 0xde4177e5, 0x67d314dc, 0xb4760f3e,
    0x56ce5888, 0x0e8345a8, 0xbff6b1bf, 0x78dfb112, 0xf1709c1e, 0x7bb8ed8b, 0x902402b9, 0xdaa64ae0,
    /* round 31 */
    0x46b71d89, 0x7eee035f, 0xbe376509, 0x99648f3a, 0x0863ea1f, 0x49ad8887, 0x79bdecc5, 0x3c10b568,
    0x5f2e4bae, 0x04ef20ab, 0x72f8ce7b, 0x521e1ebe, 0x14525535, 0x2e8af95b, 0x9094ccfd, 0xbcf36713,
    /* round 32 */
    0xc73953ef, 0xd4b91474, 0x6554ec2d, 0xe3885c96, 0x03dc73b7, 0x931688a9, 0xcbbef182, 0x2b77cfc9,
    0x632a32bd, 0xd2115dcc, 0x1ae5533d, 0x32684e13, 0x4cc5a004, 0x13321bde, 0x62cbd38d, 0x78383a3b,
    /* round 33 */
    0xd00686f1, 0x9f601ee7, 0x7eaf23de, 0x3110c492, 0x9c351209, 0x7eb89d52, 0x6d566eac, 0xc2efd226,
    0x32e9fac5, 0x52227274, 0x09f84725, 0xb8d0b605, 0x72291f02, 0x71b5c34b, 0x3dbfcbb8, 0x04a02263,
    /* round 34 */
    0x55ba597f, 0xd4e4037d, 0xc813e1be, 0xffddeefa, 0xc3c058f3, 0x87010f2e, 0x1dfcf55f, 0xc694eeeb,
    0xa9c01a74, 0x98c2fc6b, 0xe57e1428, 0xdd265a71, 0x836b956d, 0x7e46ab1a, 0x5835d541, 0x50b32505,
    /* round 35 */
    0xe640913c, 0xbb486079, 0xfe496263, 0x113c5b69, 0x93cd6620, 0x5efe823b, 0x2d657b40, 0xb46dfc6c,
    0x57710c69, 0xfe9fadeb, 0xb5f8728a, 0xe3224170, 0xca28b751, 0xfdabae56, 0x5ab12c3c, 0xa697c457,
    /* round 36 */
    0xd28fa2b7, 0x056579f2, 0x9fd9d810, 0xe3557478, 0xd88d89ab, 0xa72a9422, 0x6d47abd0, 0x405bcbd9,
    0x6f83ebaf, 0x13caec76, 0xfceb9ee2, 0x2e922df7, 0xce9856df, 0xc05e9322, 0x2772c854, 0xb67f2a32,
    /* round 37 */
    0x6d1af28d, 0x3a78cf77, 0xdff411e4, 0x61c74ca9, 0xed8b842e, 0x72880845, 0x6e857085, 0xc6404932,
    0xee37f6bc, 0x27116f48, 0x5e9ec45a, 0x8ea2a51f, 0xa5573db7, 0xa746d036, 0x486b4768, 0x5b438f3b,
    /* round 38 */
    0x18c54a5c, 0x64fcf08e, 0xe993cdc1, 0x35c1ead3, 0x9de07de7, 0x321b841c, 0x87423c5e, 0x071aa0f6,
    0x962eb75b, 0xbb06bdd2, 0xdcdb5363, 0x389752f2, 0x83d9cc88, 0xd014adc6, 0xc71121bb, 0x2372f938,
    /* round 39 */
    0xcaff2650, 0x62be8951, 0x56dccaff, 0xac4084c0, 0x09712e95, 0x1d3c288f, 0x1b085744, 0xe1d3cfef,
    0x5c9a812e, 0x6611fd59, 0x85e46044, 0x1981d885, 0x5a4c903f, 0x43f30d4b, 0x7d1d601b, 0xdd3c3391,
    /* round 40 */
    0x030ec65e, 0xc12878cd, 0x72e795fe, 0xd0c76abd, 0x1ec085db, 0x7cbb61fa, 0x93e8dd1e, 0x8582eb06,
    0x73563144, 0x049d4e7e, 0x5fd5aefe, 0x7b842a00, 0x75ced665, 0xbb32d458, 0x4e83bba7, 0x8f15151f,
    /* round 41 */
    0x7795a125, 0xf0842455, 0x499af99d, 0x565cc7fa, 0xa3b1278d, 0x3f27ce74, 0x96ca058e, 0x8a497443,
    0xa6fb8cae, 0xc115aa21, 0x17504923, 0xe4932402, 0xaea886c2, 0x8eb79af5, 0xebd5ea6b, 0xc7980d3b,
    /* round 42 */
    0x71369315, 0x796e6a66, 0x3a7ec708, 0xb05175c8, 0xe02b74e7, 0xeb377ad3, 0x6c8c1f54, 0xb980c374,
    0x59aee281, 0x449cb799, 0xe01f5605, 0xed0e085e, 0xc9a1a3b4, 0xaac481b1, 0xc935c39c, 0xb7d8ce7f,
};

/*
 * The permutation F: 43 rounds of (1) the bit-matrix step new[j] = XOR of s[k] for M[k][j] = 1,
 * (2) the circulant step s[j] ^= rotl(s[j], a_j) ^ rotl(s[j], b_j), (3) constant injection and
 * (4) the add-rotate-add step on word pairs.
 *
 * The bit matrix M (rows k, columns j) is
 *     1111010111110001  0111101011111001  0011110101111101  0001111010111111
 *     1111101010101110  1000100010100111  1011000110100010  1010110100100001
 *     0101011010010001  0010101101001001  0001010110100101  0000101011010011
 *     1111000010011000  0111100001001100  0011110000100110  1110101111100011
 * Written out column by column it costs 120 XORs a round; below, pairs of words that several
 * columns share were factored out greedily (u0..u20), which brings it to 64 XORs. The result is
 * the same linear map; the tests compare every path with the plain reference in eaglesong.py.
 *
 * One round is written once, as a macro over the word type T, and expanded twice: for uint32_t
 * (one state) and, where the compiler has GNU vector extensions, for a vector of 4 uint32_t
 * (4 independent states, one per nonce, for the batch search). Only ^, +, << and >> are used,
 * which act lane by lane on such vectors; a scalar round constant is broadcast to every lane.
 */
#define ES_CIRC(t, a, b, k) t ^= ROTL32(t, a) ^ ROTL32(t, b) ^ rc[k]
#define ES_ARX(x, y, tx, ty) \
    do {                     \
        x = tx + ty;         \
        x = ROTL32(x, 8);    \
        y = ROTL32(ty, 24);  \
        y = x + y;           \
    } while (0)

#define ES_ROUND(T)                                                                                 \
    do {                                                                                            \
        /* (1) bit matrix, factored: u* are shared pairs, t* the 16 new words */                    \
        T u0 = s0 ^ s1;                                                                             \
        T u1 = s2 ^ s3;                                                                             \
        T u2 = s4 ^ s15;                                                                            \
        T u3 = s5 ^ u2;                                                                             \
        T u4 = s8 ^ u0;                                                                             \
        T u5 = s10 ^ u1;                                                                            \
        T u6 = s6 ^ s7;                                                                             \
        T u7 = s9 ^ s11;                                                                            \
        T u8 = s12 ^ s13;                                                                           \
        T u9 = s14 ^ u5;                                                                            \
        T u10 = s0 ^ u6;                                                                            \
        T u11 = s1 ^ u1;                                                                            \
        T u12 = s2 ^ s9;                                                                            \
        T u13 = s3 ^ s6;                                                                            \
        T u14 = s4 ^ u8;                                                                            \
        T u15 = s7 ^ u7;                                                                            \
        T u16 = s11 ^ s12;                                                                          \
        T u17 = s14 ^ u3;                                                                           \
        T u18 = u0 ^ u6;                                                                            \
        T u19 = u2 ^ u8;                                                                            \
        T u20 = u4 ^ u16;                                                                           \
        T t0 = u3 ^ u10 ^ s12;                                                                      \
        T t1 = u4 ^ u19;                                                                            \
        T t2 = u12 ^ u18 ^ u19 ^ s14;                                                               \
        T t3 = u4 ^ u9 ^ u14 ^ s6;                                                                  \
        T t4 = u11 ^ u15 ^ u17 ^ s13;                                                               \
        T t5 = u9 ^ s0 ^ s7 ^ s8;                                                                   \
        T t6 = u2 ^ u7 ^ s1 ^ s3 ^ s8;                                                              \
        T t7 = u10 ^ u12 ^ s10 ^ s15;                                                               \
        T t8 = u3 ^ u13 ^ u20 ^ s10;                                                                \
        T t9 = u0 ^ u7 ^ s2 ^ s13 ^ s15;                                                            \
        T t10 = u3 ^ u9 ^ u18;                                                                      \
        T t11 = u1 ^ u20;                                                                           \
        T t12 = u11 ^ u14 ^ s9;                                                                     \
        T t13 = u9 ^ s4 ^ s5 ^ s13;                                                                 \
        T t14 = u13 ^ u17 ^ s11;                                                                    \
        T t15 = u4 ^ u5 ^ u15 ^ s5 ^ s15;                                                           \
        /* (2) circulant multiplication and (3) constant injection */                               \
        ES_CIRC(t0, 2, 4, 0);                                                                       \
        ES_CIRC(t1, 13, 22, 1);                                                                     \
        ES_CIRC(t2, 4, 19, 2);                                                                      \
        ES_CIRC(t3, 3, 14, 3);                                                                      \
        ES_CIRC(t4, 27, 31, 4);                                                                     \
        ES_CIRC(t5, 3, 8, 5);                                                                       \
        ES_CIRC(t6, 17, 26, 6);                                                                     \
        ES_CIRC(t7, 3, 12, 7);                                                                      \
        ES_CIRC(t8, 18, 22, 8);                                                                     \
        ES_CIRC(t9, 12, 18, 9);                                                                     \
        ES_CIRC(t10, 4, 7, 10);                                                                     \
        ES_CIRC(t11, 4, 31, 11);                                                                    \
        ES_CIRC(t12, 12, 27, 12);                                                                   \
        ES_CIRC(t13, 7, 17, 13);                                                                    \
        ES_CIRC(t14, 7, 8, 14);                                                                     \
        ES_CIRC(t15, 1, 13, 15);                                                                    \
        /* (4) addition, rotation, addition on word pairs */                                        \
        ES_ARX(s0, s1, t0, t1);                                                                     \
        ES_ARX(s2, s3, t2, t3);                                                                     \
        ES_ARX(s4, s5, t4, t5);                                                                     \
        ES_ARX(s6, s7, t6, t7);                                                                     \
        ES_ARX(s8, s9, t8, t9);                                                                     \
        ES_ARX(s10, s11, t10, t11);                                                                 \
        ES_ARX(s12, s13, t12, t13);                                                                 \
        ES_ARX(s14, s15, t14, t15);                                                                 \
    } while (0)

/* Defines a permutation over the word type T (one state, or 4 states side by side); the state
 * lives in 16 locals so the compiler can keep it in registers across the 43 rounds. */
#define ES_DEFINE_PERMUTE(name, T)                                                      \
    static void name(T st[16])                                                          \
    {                                                                                   \
        T s0 = st[0], s1 = st[1], s2 = st[2], s3 = st[3];                               \
        T s4 = st[4], s5 = st[5], s6 = st[6], s7 = st[7];                               \
        T s8 = st[8], s9 = st[9], s10 = st[10], s11 = st[11];                           \
        T s12 = st[12], s13 = st[13], s14 = st[14], s15 = st[15];                       \
        const uint32_t *rc = ES_INJECTION;                                              \
        int round;                                                                      \
        for (round = 0; round < ES_ROUNDS; round++, rc += 16)                           \
            ES_ROUND(T);                                                                \
        st[0] = s0, st[1] = s1, st[2] = s2, st[3] = s3;                                 \
        st[4] = s4, st[5] = s5, st[6] = s6, st[7] = s7;                                 \
        st[8] = s8, st[9] = s9, st[10] = s10, st[11] = s11;                             \
        st[12] = s12, st[13] = s13, st[14] = s14, st[15] = s15;                         \
    }

ES_DEFINE_PERMUTE(es_permute, uint32_t)

#if defined(__GNUC__) || defined(__clang__)
/* GNU vector extension (GCC, Clang): 128-bit vectors are SSE2 on x86-64 and NEON on arm64, and
 * the compiler lowers them to scalar code elsewhere. Other compilers use the scalar search. */
#define ES_HAVE_X4 1
typedef uint32_t es_x4 __attribute__((vector_size(16)));
ES_DEFINE_PERMUTE(es_permute_x4, es_x4)
#endif

static uint32_t load_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

/* Squeeze: the 256-bit output is words 0..7, each little-endian. A 256-bit output equals the
 * rate, so no permutation follows the last absorb. */
static void es_squeeze(const uint32_t st[8], uint8_t out[ES_OUT_BYTES])
{
    int j;
    for (j = 0; j < 8; j++) {
        out[4 * j + 0] = (uint8_t)(st[j]);
        out[4 * j + 1] = (uint8_t)(st[j] >> 8);
        out[4 * j + 2] = (uint8_t)(st[j] >> 16);
        out[4 * j + 3] = (uint8_t)(st[j] >> 24);
    }
}

/* Eaglesong of an arbitrary message. Absorb as in RFC 0010: ((len + 1) * 8 + 255) / 256 blocks;
 * each rate word is built big-endian from its 4 bytes, the delimiter 0x06 takes the place of byte
 * number len, and bytes past it shift nothing in (a final partial word is right-aligned). */
static void es_hash(const uint8_t *in, size_t len, uint8_t out[ES_OUT_BYTES])
{
    uint32_t st[16] = {0};
    size_t blocks = ((len + 1) * 8 + 255) / 256;
    size_t b, p;
    int j, k;

    for (b = 0; b < blocks; b++) {
        for (j = 0; j < 8; j++) {
            uint32_t w = 0;
            p = b * ES_RATE_BYTES + 4 * (size_t)j;
            if (p + 4 <= len) {
                w = load_be32(in + p);
            } else {
                for (k = 0; k < 4; k++, p++) {
                    if (p < len)
                        w = (w << 8) | in[p];
                    else if (p == len)
                        w = (w << 8) | ES_DELIMITER;
                }
            }
            st[j] ^= w;
        }
        es_permute(st);
    }
    es_squeeze(st, out);
}

/* The 48-byte PoW message has exactly two blocks and the first is pow_hash alone, so the state
 * after absorbing it (the "midstate") is shared by every nonce of a job: a nonce then costs one
 * permutation instead of two. */
static void es_pow_midstate(const uint8_t pow_hash[POW_HASH_BYTES], uint32_t mid[16])
{
    int j;
    memset(mid, 0, 16 * sizeof(uint32_t));
    for (j = 0; j < 8; j++)
        mid[j] = load_be32(pow_hash + 4 * j);
    es_permute(mid);
}

/* Second block: nonce16 as four big-endian words, then word 4 = 0x00000006 (the delimiter at
 * byte 48 with nothing shifted after it), words 5..7 zero. */
static void es_pow_finish(const uint32_t mid[16], const uint8_t nonce[NONCE_BYTES],
                          uint8_t out[ES_OUT_BYTES])
{
    uint32_t st[16];
    memcpy(st, mid, sizeof(st));
    st[0] ^= load_be32(nonce);
    st[1] ^= load_be32(nonce + 4);
    st[2] ^= load_be32(nonce + 8);
    st[3] ^= load_be32(nonce + 12);
    st[4] ^= ES_DELIMITER;
    es_permute(st);
    es_squeeze(st, out);
}

/* ------------------------------------------------------------------------------------------ */
/* BLAKE2b-256, personalization "ckb-default-hash" (RFC 7693; CKB's ckb_hash)                 */
/* ------------------------------------------------------------------------------------------ */

static const uint64_t B2B_IV[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

static const uint8_t B2B_SIGMA[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
};

#define ROTR64(x, n) ((uint64_t)(((x) >> (n)) | ((x) << (64 - (n)))))

#define B2B_G(a, b, c, d, x, y)        \
    do {                               \
        a = a + b + (x);               \
        d = ROTR64(d ^ a, 32);         \
        c = c + d;                     \
        b = ROTR64(b ^ c, 24);         \
        a = a + b + (y);               \
        d = ROTR64(d ^ a, 16);         \
        c = c + d;                     \
        b = ROTR64(b ^ c, 63);         \
    } while (0)

static uint64_t load_le64(const uint8_t *p)
{
    return (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) | ((uint64_t)p[3] << 24) |
           ((uint64_t)p[4] << 32) | ((uint64_t)p[5] << 40) | ((uint64_t)p[6] << 48) |
           ((uint64_t)p[7] << 56);
}

/* t: bytes hashed so far including this block (inputs here stay far below 2^64 bytes). */
static void b2b_compress(uint64_t h[8], const uint8_t block[128], uint64_t t, int last)
{
    uint64_t m[16], v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15;
    int i;

    for (i = 0; i < 16; i++)
        m[i] = load_le64(block + 8 * i);
    v0 = h[0], v1 = h[1], v2 = h[2], v3 = h[3], v4 = h[4], v5 = h[5], v6 = h[6], v7 = h[7];
    v8 = B2B_IV[0], v9 = B2B_IV[1], v10 = B2B_IV[2], v11 = B2B_IV[3];
    v12 = B2B_IV[4] ^ t, v13 = B2B_IV[5], v14 = B2B_IV[6], v15 = B2B_IV[7];
    if (last)
        v14 = ~v14;
    for (i = 0; i < 12; i++) {
        const uint8_t *s = B2B_SIGMA[i];
        B2B_G(v0, v4, v8, v12, m[s[0]], m[s[1]]);
        B2B_G(v1, v5, v9, v13, m[s[2]], m[s[3]]);
        B2B_G(v2, v6, v10, v14, m[s[4]], m[s[5]]);
        B2B_G(v3, v7, v11, v15, m[s[6]], m[s[7]]);
        B2B_G(v0, v5, v10, v15, m[s[8]], m[s[9]]);
        B2B_G(v1, v6, v11, v12, m[s[10]], m[s[11]]);
        B2B_G(v2, v7, v8, v13, m[s[12]], m[s[13]]);
        B2B_G(v3, v4, v9, v14, m[s[14]], m[s[15]]);
    }
    h[0] ^= v0 ^ v8, h[1] ^= v1 ^ v9, h[2] ^= v2 ^ v10, h[3] ^= v3 ^ v11;
    h[4] ^= v4 ^ v12, h[5] ^= v5 ^ v13, h[6] ^= v6 ^ v14, h[7] ^= v7 ^ v15;
}

/* ckb_hash: BLAKE2b, 32-byte digest, no key, personalization "ckb-default-hash". */
static void ckb_hash(const uint8_t *in, size_t len, uint8_t out[32])
{
    static const uint8_t personal[16] = {'c', 'k', 'b', '-', 'd', 'e', 'f', 'a',
                                         'u', 'l', 't', '-', 'h', 'a', 's', 'h'};
    uint64_t h[8];
    uint8_t block[128];
    uint64_t t = 0;
    int i;

    for (i = 0; i < 8; i++)
        h[i] = B2B_IV[i];
    h[0] ^= 0x01010000ULL | 32u; /* depth 1, fanout 1, key length 0, digest length 32 */
    h[6] ^= load_le64(personal);
    h[7] ^= load_le64(personal + 8);

    while (len > 128) {
        t += 128;
        b2b_compress(h, in, t, 0);
        in += 128;
        len -= 128;
    }
    memset(block, 0, sizeof(block));
    if (len)
        memcpy(block, in, len);
    t += len;
    b2b_compress(h, block, t, 1);

    for (i = 0; i < 4; i++) {
        int k;
        for (k = 0; k < 8; k++)
            out[8 * i + k] = (uint8_t)(h[i] >> (8 * k));
    }
}

/* ------------------------------------------------------------------------------------------ */
/* PoW helpers                                                                                */
/* ------------------------------------------------------------------------------------------ */

/* EaglesongBlake2b (testnet) hashes the Eaglesong output once more with ckb_hash. */
static void pow_extra_hash(uint8_t out[32], int blake2b)
{
    if (blake2b) {
        uint8_t tmp[32];
        ckb_hash(out, 32, tmp);
        memcpy(out, tmp, 32);
    }
}

static void pow_result(const uint32_t mid[16], const uint8_t nonce[NONCE_BYTES], int blake2b,
                       uint8_t out[32])
{
    es_pow_finish(mid, nonce, out);
    pow_extra_hash(out, blake2b);
}

/* Valid iff out, read as a big-endian integer, is <= the big-endian target. */
static int pow_meets(const uint8_t out[32], const uint8_t target_be[32])
{
    return memcmp(out, target_be, 32) <= 0;
}

/* How many consecutive counter values, starting with the current one, fit in nonce bytes
 * [prefix_len, 16) read little-endian; saturates at UINT64_MAX. */
static uint64_t counter_room(const uint8_t nonce[NONCE_BYTES], Py_ssize_t prefix_len)
{
    uint64_t left = 0; /* (largest counter) - (current counter), i.e. the complement */
    Py_ssize_t i, width = NONCE_BYTES - prefix_len;

    for (i = width - 1; i >= 0; i--) {
        uint8_t c = (uint8_t)~nonce[prefix_len + i];
        if (i >= 8) {
            if (c)
                return UINT64_MAX;
        } else {
            left |= (uint64_t)c << (8 * i);
        }
    }
    return left == UINT64_MAX ? UINT64_MAX : left + 1;
}

/* Step the little-endian counter in nonce bytes [prefix_len, 16) by one. Carrying out of byte 15
 * wraps to zero, which only happens after the last nonce of a range that callers checked fits. */
static void nonce_increment(uint8_t nonce[NONCE_BYTES], Py_ssize_t prefix_len)
{
    Py_ssize_t p;
    for (p = prefix_len; p < NONCE_BYTES; p++) {
        if (++nonce[p] != 0)
            break;
    }
}

/* Try n nonces from `nonce` on (which it advances); on a hit store the index of the first nonce
 * that meets the target in *hit and return 1, else return 0. Pure C: runs without the GIL.
 * Where vectors exist, 4 consecutive nonces share one 4-lane permutation and the lanes are
 * checked in nonce order, so the result is the same first hit as the one-by-one loop. */
static int search_range(const uint32_t mid[16], uint8_t nonce[NONCE_BYTES], Py_ssize_t prefix_len,
                        uint64_t n, const uint8_t target[32], int blake2b, uint64_t *hit)
{
    uint8_t out[32];
    uint64_t i = 0;

#ifdef ES_HAVE_X4
    for (; n - i >= 4; i += 4) {
        es_x4 st[16];
        uint8_t lane_nonce[4][NONCE_BYTES];
        int j, lane;

        for (lane = 0; lane < 4; lane++) {
            memcpy(lane_nonce[lane], nonce, NONCE_BYTES);
            nonce_increment(nonce, prefix_len);
        }
        for (j = 0; j < 16; j++) {
            es_x4 word = {mid[j], mid[j], mid[j], mid[j]};
            st[j] = word;
        }
        for (j = 0; j < 4; j++) {
            es_x4 word = {load_be32(lane_nonce[0] + 4 * j), load_be32(lane_nonce[1] + 4 * j),
                          load_be32(lane_nonce[2] + 4 * j), load_be32(lane_nonce[3] + 4 * j)};
            st[j] ^= word;
        }
        st[4] ^= ES_DELIMITER;
        es_permute_x4(st);
        for (lane = 0; lane < 4; lane++) {
            uint32_t words[8];
            for (j = 0; j < 8; j++)
                words[j] = st[j][lane];
            es_squeeze(words, out);
            pow_extra_hash(out, blake2b);
            if (pow_meets(out, target)) {
                *hit = i + (uint64_t)lane;
                return 1;
            }
        }
    }
#endif
    for (; i < n; i++) {
        pow_result(mid, nonce, blake2b, out);
        if (pow_meets(out, target)) {
            *hit = i;
            return 1;
        }
        nonce_increment(nonce, prefix_len);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Python bindings                                                                            */
/* ------------------------------------------------------------------------------------------ */

static int require_len(const Py_buffer *buf, Py_ssize_t want, const char *func, const char *name)
{
    if (buf->len != want) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must be %zd bytes, got %zd", func, name, want,
                     buf->len);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(py_hash_doc, "hash(data, /) -> bytes\n\n"
                          "Eaglesong-256 of a bytes-like object (32 bytes).");

static PyObject *py_hash(PyObject *self, PyObject *args)
{
    Py_buffer data;
    uint8_t out[ES_OUT_BYTES];
    (void)self;

    if (!PyArg_ParseTuple(args, "y*:hash", &data))
        return NULL;
    if (data.len >= 65536) {
        /* Only a big buffer is worth the GIL round trip; the exporter keeps it alive meanwhile. */
        Py_BEGIN_ALLOW_THREADS
        es_hash((const uint8_t *)data.buf, (size_t)data.len, out);
        Py_END_ALLOW_THREADS
    } else {
        es_hash((const uint8_t *)data.buf, (size_t)data.len, out);
    }
    PyBuffer_Release(&data);
    return PyBytes_FromStringAndSize((const char *)out, ES_OUT_BYTES);
}

PyDoc_STRVAR(py_ckb_hash_doc, "ckb_hash(data, /) -> bytes\n\n"
                              "BLAKE2b-256 with personalization b'ckb-default-hash' (CKB's ckb_hash).");

static PyObject *py_ckb_hash(PyObject *self, PyObject *args)
{
    Py_buffer data;
    uint8_t out[32];
    (void)self;

    if (!PyArg_ParseTuple(args, "y*:ckb_hash", &data))
        return NULL;
    ckb_hash((const uint8_t *)data.buf, (size_t)data.len, out);
    PyBuffer_Release(&data);
    return PyBytes_FromStringAndSize((const char *)out, 32);
}

PyDoc_STRVAR(py_pow_output_doc,
             "pow_output(pow_hash, nonce16, blake2b, /) -> bytes\n\n"
             "Eaglesong(pow_hash || nonce16), then ckb_hash of it if blake2b is true.");

static PyObject *py_pow_output(PyObject *self, PyObject *args)
{
    Py_buffer ph, nb;
    int blake2b;
    uint32_t mid[16];
    uint8_t out[32];
    (void)self;

    if (!PyArg_ParseTuple(args, "y*y*p:pow_output", &ph, &nb, &blake2b))
        return NULL;
    if (require_len(&ph, POW_HASH_BYTES, "pow_output", "pow_hash") < 0 ||
        require_len(&nb, NONCE_BYTES, "pow_output", "nonce16") < 0) {
        PyBuffer_Release(&ph);
        PyBuffer_Release(&nb);
        return NULL;
    }
    es_pow_midstate((const uint8_t *)ph.buf, mid);
    pow_result(mid, (const uint8_t *)nb.buf, blake2b, out);
    PyBuffer_Release(&ph);
    PyBuffer_Release(&nb);
    return PyBytes_FromStringAndSize((const char *)out, 32);
}

PyDoc_STRVAR(py_check_doc,
             "check(pow_hash, nonce16, target_be32, blake2b, /) -> bool\n\n"
             "True iff the PoW output, read big-endian, is <= the 32-byte big-endian target.");

static PyObject *py_check(PyObject *self, PyObject *args)
{
    Py_buffer ph, nb, tg;
    int blake2b, ok;
    uint32_t mid[16];
    uint8_t out[32];
    (void)self;

    if (!PyArg_ParseTuple(args, "y*y*y*p:check", &ph, &nb, &tg, &blake2b))
        return NULL;
    if (require_len(&ph, POW_HASH_BYTES, "check", "pow_hash") < 0 ||
        require_len(&nb, NONCE_BYTES, "check", "nonce16") < 0 ||
        require_len(&tg, 32, "check", "target_be32") < 0) {
        PyBuffer_Release(&ph);
        PyBuffer_Release(&nb);
        PyBuffer_Release(&tg);
        return NULL;
    }
    es_pow_midstate((const uint8_t *)ph.buf, mid);
    pow_result(mid, (const uint8_t *)nb.buf, blake2b, out);
    ok = pow_meets(out, (const uint8_t *)tg.buf);
    PyBuffer_Release(&ph);
    PyBuffer_Release(&nb);
    PyBuffer_Release(&tg);
    return PyBool_FromLong(ok);
}

PyDoc_STRVAR(
    py_search_doc,
    "search(pow_hash, start_nonce16, prefix_len, count, target_be32, blake2b, /) -> int | None\n\n"
    "Try `count` nonces starting at start_nonce16. Bytes [0, prefix_len) stay fixed; bytes\n"
    "[prefix_len, 16) are a little-endian counter that goes up by one per try (byte prefix_len\n"
    "changes fastest). Returns the number of increments from start_nonce16 to the first nonce\n"
    "whose output is <= the target, or None. The loop runs without the GIL. Raises ValueError\n"
    "if the counter would have to carry past byte 15.");

static PyObject *py_search(PyObject *self, PyObject *args)
{
    Py_buffer ph, nb, tg;
    Py_ssize_t prefix_len;
    long long count;
    int blake2b, found = 0;
    uint32_t mid[16];
    uint8_t nonce[NONCE_BYTES], target[32];
    uint64_t i = 0, n;
    (void)self;

    if (!PyArg_ParseTuple(args, "y*y*nLy*p:search", &ph, &nb, &prefix_len, &count, &tg, &blake2b))
        return NULL;
    if (require_len(&ph, POW_HASH_BYTES, "search", "pow_hash") < 0 ||
        require_len(&nb, NONCE_BYTES, "search", "start_nonce16") < 0 ||
        require_len(&tg, 32, "search", "target_be32") < 0) {
        PyBuffer_Release(&ph);
        PyBuffer_Release(&nb);
        PyBuffer_Release(&tg);
        return NULL;
    }
    /* Copy the small inputs so the GIL-free loop reads nothing a Python thread could change. */
    es_pow_midstate((const uint8_t *)ph.buf, mid);
    memcpy(nonce, nb.buf, NONCE_BYTES);
    memcpy(target, tg.buf, 32);
    PyBuffer_Release(&ph);
    PyBuffer_Release(&nb);
    PyBuffer_Release(&tg);

    if (prefix_len < 0 || prefix_len > NONCE_BYTES) {
        PyErr_Format(PyExc_ValueError, "search(): prefix_len must be in 0..16, got %zd", prefix_len);
        return NULL;
    }
    if (count < 0) {
        PyErr_Format(PyExc_ValueError, "search(): count must be >= 0, got %lld", count);
        return NULL;
    }
    n = (uint64_t)count;
    if (n > counter_room(nonce, prefix_len)) {
        PyErr_SetString(PyExc_ValueError,
                        "search(): start + count runs past the counter bytes after the prefix");
        return NULL;
    }

    Py_BEGIN_ALLOW_THREADS
    found = search_range(mid, nonce, prefix_len, n, target, blake2b, &i);
    Py_END_ALLOW_THREADS

    if (!found)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong((unsigned long long)i);
}

static PyMethodDef eaglesong_methods[] = {
    {"hash", py_hash, METH_VARARGS, py_hash_doc},
    {"ckb_hash", py_ckb_hash, METH_VARARGS, py_ckb_hash_doc},
    {"pow_output", py_pow_output, METH_VARARGS, py_pow_output_doc},
    {"check", py_check, METH_VARARGS, py_check_doc},
    {"search", py_search, METH_VARARGS, py_search_doc},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot eaglesong_slots[] = {
    {0, NULL},
};

PyDoc_STRVAR(module_doc, "Eaglesong (RFC 0010) and ckb_hash hot paths for ckbpool.ckb.eaglesong.\n\n"
                         "Use ckbpool.ckb.eaglesong; this module's signatures are internal.");

static struct PyModuleDef eaglesong_module = {
    PyModuleDef_HEAD_INIT,
    "_eaglesong",
    module_doc,
    0, /* no per-module state */
    eaglesong_methods,
    eaglesong_slots,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__eaglesong(void)
{
    return PyModuleDef_Init(&eaglesong_module);
}
