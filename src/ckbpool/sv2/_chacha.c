/*
 * _chacha.c -- the Stratum V2 Noise transport's ChaCha20-Poly1305 (RFC 8439) as a small CPython type, on OpenSSL's
 * libcrypto (the library Python's own ssl module links; no cryptography written here, only the calls).
 *
 * Why C (issue 19): the pool's two hot paths are made of tiny AEAD messages -- every share is a 22-byte encrypted
 * header + a 40-byte encrypted payload, every new tip is four messages per channel (job and SetNewPrevHash, each a
 * header and a payload) -- and for messages this small the cost is the Python around each call, not the cipher.
 * The `cryptography` package's ChaCha20Poly1305 also holds an OpenSSL context of ~2.2 KiB per key, two per
 * connection. Here a key is 32 bytes in the object; the process shares one encryption and one decryption context
 * and re-keys it per message (ChaCha20's key setup is a copy), so an idle encrypted channel carries ~100 bytes of
 * cipher state instead of ~4.4 KiB.
 *
 * The framing rules (SRI noise_sv2 2.0 / codec_sv2 7.0, see noise_transport.py):
 *   - nonce = 4 zero bytes || counter as u64 little-endian; one counter per direction, +1 per AEAD message; the
 *     counter value 2^64-1 is never used;
 *   - an SV2 frame = its 6-byte header sealed alone (22 bytes) + its payload sealed in chunks of <= 65519 bytes;
 *   - empty associated data.
 *
 * Cross-checked against `cryptography`'s ChaCha20Poly1305 by tests/unit/test_noise_chacha.py; the SRI interop
 * tests run the whole transport against the reference implementation.
 *
 * The GIL is held throughout: the shared contexts need no lock, and nothing here blocks (the socket write is
 * MSG_DONTWAIT).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define KEY_BYTES 32
#define MAC_BYTES 16
#define HEADER_BYTES 6
#define SEALED_HEADER_BYTES (HEADER_BYTES + MAC_BYTES)
#define MAX_CHUNK 65519 /* SRI's 65535-byte chunk minus the MAC */
#define NONCE_LIMIT UINT64_MAX /* a counter may never reach it */

static EVP_CIPHER_CTX *enc_ctx = NULL;
static EVP_CIPHER_CTX *dec_ctx = NULL;
/* the exceptions noise_transport.py maps to (set_errors); until then RuntimeError / ValueError */
static PyObject *state_error = NULL;
static PyObject *tag_error = NULL;

typedef struct {
    PyObject_HEAD
    unsigned char key[KEY_BYTES];
    unsigned long long n;
} CipherObject;

static void nonce_of(uint64_t n, unsigned char iv[12]) {
    memset(iv, 0, 4);
    for (int i = 0; i < 8; i++) iv[4 + i] = (unsigned char)(n >> (8 * i));
}

static void raise_state(const char *what) { PyErr_SetString(state_error ? state_error : PyExc_RuntimeError, what); }

static void raise_openssl(const char *what) { PyErr_Format(PyExc_RuntimeError, "OpenSSL failed: %s", what); }

/* nonces n .. n+calls-1 must all stay below 2^64-1 */
static int reserve(CipherObject *self, uint64_t calls) {
    if (calls > NONCE_LIMIT - (uint64_t)self->n) {
        raise_state("nonce counter exhausted");
        return -1;
    }
    return 0;
}

/* Start one AEAD message under the object's key and nonce n. */
static int begin(EVP_CIPHER_CTX *ctx, const CipherObject *self, uint64_t n, int enc) {
    unsigned char iv[12];
    nonce_of(n, iv);
    if (EVP_CipherInit_ex(ctx, NULL, NULL, self->key, iv, enc) != 1) {
        raise_openssl("cipher init");
        return -1;
    }
    return 0;
}

/* Continue the message begun on enc_ctx: out receives len bytes of ciphertext. */
static int seal_update(const unsigned char *in, int len, unsigned char *out) {
    int outl = 0;
    if (len > 0 && (EVP_EncryptUpdate(enc_ctx, out, &outl, in, len) != 1 || outl != len)) {
        raise_openssl("encrypt");
        return -1;
    }
    return 0;
}

/* Finish the message begun on enc_ctx: the 16-byte tag goes to tag. */
static int seal_final(unsigned char *tag) {
    unsigned char scratch[32];
    int outl = 0;
    if (EVP_EncryptFinal_ex(enc_ctx, scratch, &outl) != 1 || outl != 0 ||
        EVP_CIPHER_CTX_ctrl(enc_ctx, EVP_CTRL_AEAD_GET_TAG, MAC_BYTES, tag) != 1) {
        raise_openssl("encrypt final");
        return -1;
    }
    return 0;
}

/* Seal `len` bytes with nonce n into out (len + 16 bytes). */
static int seal_one(const CipherObject *self, uint64_t n, const unsigned char *in, int len, unsigned char *out) {
    if (begin(enc_ctx, self, n, 1) < 0 || seal_update(in, len, out) < 0) return -1;
    return seal_final(out + len);
}

/* One SV2 frame for the wire from its header and its payload, the payload given as `prefix` (at most 4 bytes: a
 * channel id patched in, or none) followed by `tail`: the header sealed alone, then the payload in chunks of at
 * most MAX_CHUNK bytes, under nonces *n, *n+1, ... (advanced). Writes 22 + plen + tlen + 16 x chunks bytes. */
static int seal_frame_parts(const CipherObject *self, uint64_t *n, const unsigned char *header,
                            const unsigned char *prefix, int plen, const unsigned char *tail, Py_ssize_t tlen,
                            unsigned char **dst) {
    if (seal_one(self, (*n)++, header, HEADER_BYTES, *dst) < 0) return -1;
    *dst += SEALED_HEADER_BYTES;
    for (Py_ssize_t left = plen + tlen; left > 0; plen = 0) {
        int len = (int)(left < MAX_CHUNK ? left : MAX_CHUNK), from_tail = len - plen;
        if (begin(enc_ctx, self, (*n)++, 1) < 0 || (plen && seal_update(prefix, plen, *dst) < 0) ||
            seal_update(tail, from_tail, *dst + plen) < 0 || seal_final(*dst + len) < 0)
            return -1;
        tail += from_tail;
        left -= len;
        *dst += len + MAC_BYTES;
    }
    return 0;
}

/* chunks of a payload of `len` bytes (0 for an empty one) */
static Py_ssize_t chunks_of(Py_ssize_t len) { return (len + MAX_CHUNK - 1) / MAX_CHUNK; }

/* Open `len` (>= 16) sealed bytes with nonce n into out (len - 16 bytes). 1: ok, 0: the tag does not verify,
 * -1: an error is set. */
static int open_one(const CipherObject *self, uint64_t n, const unsigned char *in, Py_ssize_t len, unsigned char *out) {
    int outl = 0, plain = (int)(len - MAC_BYTES);
    unsigned char scratch[32];
    if (begin(dec_ctx, self, n, 0) < 0) return -1;
    if (plain > 0 && (EVP_DecryptUpdate(dec_ctx, out, &outl, in, plain) != 1 || outl != plain)) {
        raise_openssl("decrypt");
        return -1;
    }
    if (EVP_CIPHER_CTX_ctrl(dec_ctx, EVP_CTRL_AEAD_SET_TAG, MAC_BYTES, (void *)(in + plain)) != 1) {
        raise_openssl("set tag");
        return -1;
    }
    return EVP_DecryptFinal_ex(dec_ctx, scratch, &outl) == 1 ? 1 : 0;
}

static void raise_tag(const char *what) { PyErr_SetString(tag_error ? tag_error : PyExc_ValueError, what); }

/* ------------------------------------------------------------------------------------------------------------- */

static int Cipher_init(CipherObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"key", NULL};
    Py_buffer key;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*:Cipher", kwlist, &key)) return -1;
    if (key.len != KEY_BYTES) {
        PyBuffer_Release(&key);
        raise_state("cipher key must be 32 bytes");
        return -1;
    }
    memcpy(self->key, key.buf, KEY_BYTES);
    PyBuffer_Release(&key);
    self->n = 0;
    return 0;
}

static void Cipher_dealloc(CipherObject *self) {
    OPENSSL_cleanse(self->key, KEY_BYTES);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Cipher_repr(CipherObject *self) { return PyUnicode_FromFormat("Cipher(n=%llu)", self->n); }

PyDoc_STRVAR(seal_doc, "seal(data) -> bytes\n\nOne AEAD message (data + 16-byte tag) under the next nonce.");

static PyObject *Cipher_seal(CipherObject *self, PyObject *arg) {
    Py_buffer in;
    if (PyObject_GetBuffer(arg, &in, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *out = NULL;
    if (in.len > INT_MAX - MAC_BYTES) {
        PyErr_SetString(PyExc_ValueError, "message too large");
    } else if (reserve(self, 1) == 0 && (out = PyBytes_FromStringAndSize(NULL, in.len + MAC_BYTES)) != NULL) {
        if (seal_one(self, self->n, in.buf, (int)in.len, (unsigned char *)PyBytes_AS_STRING(out)) < 0) {
            Py_CLEAR(out);
        } else {
            self->n++;
        }
    }
    PyBuffer_Release(&in);
    return out;
}

PyDoc_STRVAR(open_doc, "open(data) -> bytes\n\nOne AEAD message back to its plaintext under the next nonce; raises "
                       "the tag error (the counter unchanged) if it does not verify.");

static PyObject *Cipher_open(CipherObject *self, PyObject *arg) {
    Py_buffer in;
    if (PyObject_GetBuffer(arg, &in, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *out = NULL;
    if (in.len < MAC_BYTES || in.len > INT_MAX) {
        raise_tag("authentication tag mismatch");
    } else if (reserve(self, 1) == 0 && (out = PyBytes_FromStringAndSize(NULL, in.len - MAC_BYTES)) != NULL) {
        int ok = open_one(self, self->n, in.buf, in.len, (unsigned char *)PyBytes_AS_STRING(out));
        if (ok == 1) {
            self->n++;
        } else {
            if (ok == 0) raise_tag("authentication tag mismatch");
            Py_CLEAR(out);
        }
    }
    PyBuffer_Release(&in);
    return out;
}

PyDoc_STRVAR(seal_frame_doc,
             "seal_frame(frame) -> bytes\n\nA whole plaintext SV2 frame for the wire: its 6-byte header sealed alone, "
             "then its payload in chunks of at most 65519 bytes (the caller checks the header's length).");

static PyObject *Cipher_seal_frame(CipherObject *self, PyObject *arg) {
    Py_buffer in;
    if (PyObject_GetBuffer(arg, &in, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *out = NULL;
    if (in.len < HEADER_BYTES) {
        PyErr_SetString(PyExc_ValueError, "an SV2 frame has a 6-byte header");
        goto done;
    }
    Py_ssize_t chunks = chunks_of(in.len - HEADER_BYTES);
    if (reserve(self, 1 + (uint64_t)chunks) < 0) goto done;
    out = PyBytes_FromStringAndSize(NULL, in.len + (1 + chunks) * MAC_BYTES);
    if (out == NULL) goto done;
    const unsigned char *src = in.buf;
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
    uint64_t n = self->n;
    if (seal_frame_parts(self, &n, src, NULL, 0, src + HEADER_BYTES, in.len - HEADER_BYTES, &dst) < 0) {
        Py_CLEAR(out);
        goto done;
    }
    self->n = n;
done:
    PyBuffer_Release(&in);
    return out;
}

/* msg_length of a 6-byte SV2 header (u24 LE at bytes 3..5) */
static Py_ssize_t header_length(const unsigned char *h) { return h[3] | (h[4] << 8) | (h[5] << 16); }

PyDoc_STRVAR(seal_job_doc,
             "seal_job(fd, channel_id, header1, tail1, header2, tail2) -> bytes | None\n\n"
             "A new tip's per-channel step: two frames whose payloads are the channel id (u32 LE) followed by a tail "
             "encoded once for every channel, sealed as `seal_frame` seals each (the header alone, the payload in "
             "chunks of at most 65519 bytes: four AEAD messages for the usual small job), then "
             "written to the socket `fd` without blocking when fd >= 0. Returns None when every byte went out, else "
             "the bytes still to write (all of them for fd < 0, the rest after a short or refused write): the caller "
             "hands them to its transport, which then keeps the order.");

static PyObject *Cipher_seal_job(CipherObject *self, PyObject *args) {
    int fd;
    PyObject *cid_obj;
    Py_buffer h1, t1, h2, t2;
    if (!PyArg_ParseTuple(args, "iOy*y*y*y*:seal_job", &fd, &cid_obj, &h1, &t1, &h2, &t2)) return NULL;
    PyObject *result = NULL;
    unsigned char *buf = NULL;
    unsigned char stack[2048];
    /* a u32: checked, never wrapped ("k" would take any int modulo 2^64) */
    unsigned long long cid = PyLong_Check(cid_obj) ? PyLong_AsUnsignedLongLong(cid_obj) : 0;
    if (!PyLong_Check(cid_obj) || (cid == (unsigned long long)-1 && PyErr_Occurred()) || cid > 0xFFFFFFFFull) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "seal_job: the channel id must be an integer in 0..2^32-1");
        goto done;
    }
    if (h1.len != HEADER_BYTES || h2.len != HEADER_BYTES || header_length(h1.buf) != 4 + t1.len ||
        header_length(h2.buf) != 4 + t2.len) {
        PyErr_SetString(PyExc_ValueError, "seal_job: a header's msg_length does not match its payload");
        goto done;
    }
    Py_ssize_t chunks1 = chunks_of(4 + t1.len), chunks2 = chunks_of(4 + t2.len);
    if (reserve(self, 2 + (uint64_t)(chunks1 + chunks2)) < 0) goto done;
    Py_ssize_t total = 2 * SEALED_HEADER_BYTES + (4 + t1.len) + (4 + t2.len) + (chunks1 + chunks2) * MAC_BYTES;
    buf = total <= (Py_ssize_t)sizeof stack ? stack : PyMem_Malloc((size_t)total);
    if (buf == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    unsigned char id[4] = {(unsigned char)cid, (unsigned char)(cid >> 8), (unsigned char)(cid >> 16),
                           (unsigned char)(cid >> 24)};
    uint64_t n = self->n;
    unsigned char *dst = buf;
    if (seal_frame_parts(self, &n, h1.buf, id, 4, t1.buf, t1.len, &dst) < 0 ||
        seal_frame_parts(self, &n, h2.buf, id, 4, t2.buf, t2.len, &dst) < 0)
        goto done;
    self->n = n;
    Py_ssize_t sent = 0;
    if (fd >= 0) {
        ssize_t w;
        do {
            w = send(fd, buf, (size_t)total, MSG_DONTWAIT | MSG_NOSIGNAL);
        } while (w < 0 && errno == EINTR);
        /* a refused write (EAGAIN, a reset peer, ...) leaves all of it to the transport, which meets the same
         * condition on its own path and handles it as it handles any write */
        sent = w > 0 ? (Py_ssize_t)w : 0;
    }
    if (sent >= total) {
        result = Py_NewRef(Py_None);
    } else {
        result = PyBytes_FromStringAndSize((const char *)buf + sent, total - sent);
    }
done:
    if (buf != NULL && buf != stack) PyMem_Free(buf);
    PyBuffer_Release(&h1);
    PyBuffer_Release(&t1);
    PyBuffer_Release(&h2);
    PyBuffer_Release(&t2);
    return result;
}

PyDoc_STRVAR(open_frames_doc,
             "open_frames(data, limit) -> (frames, pos, header)\n\n"
             "Whole single-chunk frames straight out of `data` from its start: each plaintext frame (header + "
             "payload). Stops at fewer than 22 bytes left (pos: where, header None) or at a frame whose payload is "
             "larger than `limit` or 65519 bytes or not all in `data` (its header is returned opened, pos after it: "
             "the caller's general path takes it from there). Raises the tag error on a message that does not "
             "verify, the counter left at that message.");

static PyObject *Cipher_open_frames(CipherObject *self, PyObject *args) {
    Py_buffer in;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "y*n:open_frames", &in, &limit)) return NULL;
    PyObject *frames = PyList_New(0), *pending = NULL, *result = NULL;
    if (frames == NULL) goto done;
    const unsigned char *data = in.buf;
    Py_ssize_t end = in.len, pos = 0;
    uint64_t n = self->n;
    while (end - pos >= SEALED_HEADER_BYTES) {
        if (n >= NONCE_LIMIT) {
            self->n = n;
            raise_state("nonce counter exhausted");
            goto done;
        }
        unsigned char header[HEADER_BYTES];
        int ok = open_one(self, n, data + pos, SEALED_HEADER_BYTES, header);
        if (ok != 1) {
            self->n = n;
            if (ok == 0) raise_tag("authentication tag mismatch on an incoming frame");
            goto done;
        }
        n++;
        Py_ssize_t length = header_length(header), p = pos + SEALED_HEADER_BYTES;
        Py_ssize_t stop = p + length + MAC_BYTES;
        if (length > 0 && (length > limit || length > MAX_CHUNK || stop > end)) {
            self->n = n;
            pending = PyBytes_FromStringAndSize((const char *)header, HEADER_BYTES);
            if (pending == NULL) goto done;
            result = Py_BuildValue("(OnO)", frames, p, pending);
            goto done;
        }
        PyObject *frame = PyBytes_FromStringAndSize(NULL, HEADER_BYTES + length);
        if (frame == NULL) {
            self->n = n;
            goto done;
        }
        unsigned char *plain = (unsigned char *)PyBytes_AS_STRING(frame);
        memcpy(plain, header, HEADER_BYTES);
        if (length > 0) {
            if (n >= NONCE_LIMIT) {
                Py_DECREF(frame);
                self->n = n;
                raise_state("nonce counter exhausted");
                goto done;
            }
            ok = open_one(self, n, data + p, length + MAC_BYTES, plain + HEADER_BYTES);
            if (ok != 1) {
                Py_DECREF(frame);
                self->n = n;
                if (ok == 0) raise_tag("authentication tag mismatch on an incoming frame");
                goto done;
            }
            n++;
            pos = stop;
        } else {
            pos = p;
        }
        int appended = PyList_Append(frames, frame);
        Py_DECREF(frame);
        if (appended < 0) {
            self->n = n;
            goto done;
        }
    }
    self->n = n;
    result = Py_BuildValue("(OnO)", frames, pos, Py_None);
done:
    Py_XDECREF(frames);
    Py_XDECREF(pending);
    PyBuffer_Release(&in);
    return result;
}

static PyMethodDef Cipher_methods[] = {
    {"seal", (PyCFunction)Cipher_seal, METH_O, seal_doc},
    {"open", (PyCFunction)Cipher_open, METH_O, open_doc},
    {"seal_frame", (PyCFunction)Cipher_seal_frame, METH_O, seal_frame_doc},
    {"seal_job", (PyCFunction)Cipher_seal_job, METH_VARARGS, seal_job_doc},
    {"open_frames", (PyCFunction)Cipher_open_frames, METH_VARARGS, open_frames_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Cipher_members[] = {
    {"n", T_ULONGLONG, offsetof(CipherObject, n), 0, "the nonce counter: the next message's nonce"},
    {NULL, 0, 0, 0, NULL},
};

PyDoc_STRVAR(Cipher_doc, "Cipher(key)\n\nOne direction of an established Noise transport: a 32-byte "
                         "ChaCha20-Poly1305 key (never readable back) and its nonce counter `n`.");

static PyTypeObject CipherType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ckbpool.sv2._chacha.Cipher",
    .tp_basicsize = sizeof(CipherObject),
    .tp_itemsize = 0,
    .tp_dealloc = (destructor)Cipher_dealloc,
    .tp_repr = (reprfunc)Cipher_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = Cipher_doc,
    .tp_methods = Cipher_methods,
    .tp_members = Cipher_members,
    .tp_init = (initproc)Cipher_init,
    .tp_new = PyType_GenericNew,
};

PyDoc_STRVAR(set_errors_doc, "set_errors(state_error, tag_error)\n\nThe exception classes to raise for an exhausted "
                             "counter or a bad key, and for a tag that does not verify.");

static PyObject *py_set_errors(PyObject *module, PyObject *args) {
    PyObject *s, *t;
    if (!PyArg_ParseTuple(args, "OO:set_errors", &s, &t)) return NULL;
    if (!PyExceptionClass_Check(s) || !PyExceptionClass_Check(t)) {
        PyErr_SetString(PyExc_TypeError, "set_errors takes two exception classes");
        return NULL;
    }
    Py_XSETREF(state_error, Py_NewRef(s));
    Py_XSETREF(tag_error, Py_NewRef(t));
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"set_errors", py_set_errors, METH_VARARGS, set_errors_doc},
    {NULL, NULL, 0, NULL},
};

static int module_exec(PyObject *module) {
    if (enc_ctx == NULL) {
        const EVP_CIPHER *cipher = EVP_chacha20_poly1305();
        EVP_CIPHER_CTX *e = EVP_CIPHER_CTX_new(), *d = EVP_CIPHER_CTX_new();
        if (cipher == NULL || e == NULL || d == NULL || EVP_EncryptInit_ex(e, cipher, NULL, NULL, NULL) != 1 ||
            EVP_DecryptInit_ex(d, cipher, NULL, NULL, NULL) != 1) {
            EVP_CIPHER_CTX_free(e);
            EVP_CIPHER_CTX_free(d);
            raise_openssl("ChaCha20-Poly1305 is not available");
            return -1;
        }
        enc_ctx = e;
        dec_ctx = d;
    }
    if (PyType_Ready(&CipherType) < 0) return -1;
    if (PyModule_AddObjectRef(module, "Cipher", (PyObject *)&CipherType) < 0) return -1;
    if (PyModule_AddIntConstant(module, "MAX_CHUNK", MAX_CHUNK) < 0) return -1;
    return 0;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ckbpool.sv2._chacha",
    .m_doc = "ChaCha20-Poly1305 for the SV2 Noise transport's hot paths (OpenSSL libcrypto).",
    .m_size = 0,
    .m_methods = module_methods,
    .m_slots = module_slots,
};

PyMODINIT_FUNC PyInit__chacha(void) { return PyModuleDef_Init(&module_def); }
