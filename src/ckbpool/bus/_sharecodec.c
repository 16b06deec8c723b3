/*
 * _sharecodec.c -- the IPC bus's SHARES codec (ckbpool.bus.ipc) in C: a batch of Share events to one payload on a
 * stratum worker, and the payload back to Share tuples in the parent.
 *
 * Why C (issue 19): with two stratum workers the parent decodes every share a worker checked and each worker
 * encodes it: both are pure per-share overhead of running several processes (the one-process pool has neither), and
 * in Python they cost ~0.3 us (encode) and ~0.5 us (decode) of a ~12 us share -- a tenth of what keeps two workers
 * from scaling to 2x. Here a share is a fixed copy of 115 bytes each way plus the objects a Share holds.
 *
 * The wire format (unchanged from the Python codec it replaces; tests/unit/test_share_codec.py keeps a struct-based
 * reference and checks both directions against it):
 *
 *   u32 strings | u32 shares | (u32 length | UTF-8)*strings | record*shares | block_hash*
 *
 * all big-endian; a record is ">IQQ16s32sd??dQIIIIIB": channel_id, job_id, height, nonce (u128 little-endian),
 * share_target (u256 little-endian), share_difficulty, accepted, is_block, timestamp, seq, the string-table indexes
 * of server_id, user, worker, reason and source, and the length of the share's block_hash (the hashes follow all the
 * records, in order, so the records stay fixed-size). A string is in the table once, in order of first use.
 *
 * A Share is a 16-field tuple subclass (ckbpool.bus.events.Share); decode builds each one as tuple.__new__ would
 * (the type's tp_alloc, then the items), without Share.__new__'s range checks: the record's field widths are the
 * ranges a Share allows, except seq (u64 on the wire, at most SEQ_MAX in a Share), which is checked here.
 *
 * configure(share_type, frame_error, seq_max) is called once by ipc.py before either function is used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define FIELDS 16
#define RECORD 115 /* struct.calcsize(">IQQ16s32sd??dQIIIIIB") */
#define TARGET_CACHE 8

/* Share's field positions */
enum { F_SERVER, F_CHANNEL, F_USER, F_WORKER, F_JOB, F_HEIGHT, F_NONCE, F_TARGET, F_DIFF, F_ACCEPTED, F_REASON,
       F_BLOCK, F_HASH, F_TS, F_SOURCE, F_SEQ };

static PyTypeObject *share_type = NULL;
static PyObject *frame_error = NULL;
static unsigned long long seq_max = 0;

/* --- big-endian helpers ------------------------------------------------------------------------------------ */

static void put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16); p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (56 - 8 * i));
}

static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | p[i];
    return v;
}

static void put_f64(unsigned char *p, double d) {
    uint64_t bits;
    memcpy(&bits, &d, 8);
    put_u64(p, bits);
}

static double get_f64(const unsigned char *p) {
    uint64_t bits = get_u64(p);
    double d;
    memcpy(&d, &bits, 8);
    return d;
}

/* --- ints <-> little-endian bytes (CPython's own converters; their signatures moved in 3.13) --------------- */

static int int_to_le(PyObject *v, unsigned char *out, size_t size, const char *what) {
    if (!PyLong_Check(v)) {
        PyErr_Format(PyExc_TypeError, "share %s must be an int, not %.100s", what, Py_TYPE(v)->tp_name);
        return -1;
    }
#if PY_VERSION_HEX >= 0x030D0000
    int r = _PyLong_AsByteArray((PyLongObject *)v, out, size, 1, 0, 1);
#else
    int r = _PyLong_AsByteArray((PyLongObject *)v, out, size, 1, 0);
#endif
    if (r < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_OverflowError, "share %s out of range for %zu bytes", what, size);
        return -1;
    }
    return 0;
}

static int uint_field(PyObject *v, unsigned long long max, const char *what, unsigned long long *out) {
    if (!PyLong_Check(v)) {
        PyErr_Format(PyExc_TypeError, "share %s must be an int, not %.100s", what, Py_TYPE(v)->tp_name);
        return -1;
    }
    unsigned long long x = PyLong_AsUnsignedLongLong(v);
    if (x == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_OverflowError, "share %s out of range", what);
        return -1;
    }
    if (x > max) {
        PyErr_Format(PyExc_OverflowError, "share %s %llu above %llu", what, x, max);
        return -1;
    }
    *out = x;
    return 0;
}

static int float_field(PyObject *v, const char *what, double *out) {
    double d = PyFloat_AsDouble(v);
    if (d == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "share %s must be a number, not %.100s", what, Py_TYPE(v)->tp_name);
        return -1;
    }
    *out = d;
    return 0;
}

/* --- encode ------------------------------------------------------------------------------------------------- */

/* The string's index in the batch's table (added at the end when new). */
static int table_index(PyObject *table, PyObject *order, PyObject *text, const char *what, uint32_t *out) {
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "share %s must be a str, not %.100s", what, Py_TYPE(text)->tp_name);
        return -1;
    }
    PyObject *known = PyDict_GetItemWithError(table, text);
    if (known != NULL) {
        *out = (uint32_t)PyLong_AsUnsignedLong(known);
        return 0;
    }
    if (PyErr_Occurred()) return -1;
    Py_ssize_t index = PyList_GET_SIZE(order);
    PyObject *boxed = PyLong_FromSsize_t(index);
    if (boxed == NULL) return -1;
    int r = PyDict_SetItem(table, text, boxed);
    Py_DECREF(boxed);
    if (r < 0 || PyList_Append(order, text) < 0) return -1;
    *out = (uint32_t)index;
    return 0;
}

PyDoc_STRVAR(encode_doc, "encode_shares(shares, /) -> bytes\n\nShare events as one SHARES payload (see the module).");

static PyObject *py_encode(PyObject *module, PyObject *arg) {
    PyObject *seq = PySequence_Fast(arg, "encode_shares takes a sequence of Shares");
    if (seq == NULL) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *table = PyDict_New(), *order = PyList_New(0), *result = NULL;
    unsigned char *records = NULL;
    if (table == NULL || order == NULL) goto done;
    if (count > (Py_ssize_t)UINT32_MAX || count > PY_SSIZE_T_MAX / RECORD) {
        PyErr_SetString(PyExc_OverflowError, "too many shares for one SHARES payload");
        goto done;
    }
    records = PyMem_Malloc(count ? (size_t)count * RECORD : 1);
    if (records == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t hash_bytes = 0;
    PyObject *last_target = NULL;
    unsigned char target_le[32];
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *share = items[i];
        if (!PyTuple_Check(share) || PyTuple_GET_SIZE(share) != FIELDS) {
            PyErr_Format(PyExc_TypeError, "encode_shares: item %zd is not a Share", i);
            goto done;
        }
        PyObject **f = &PyTuple_GET_ITEM(share, 0);
        unsigned char *r = records + (size_t)i * RECORD;
        unsigned long long channel, job, height, sequence;
        double diff, ts;
        uint32_t refs[5];
        if (uint_field(f[F_CHANNEL], UINT32_MAX, "channel_id", &channel) < 0 ||
            uint_field(f[F_JOB], UINT64_MAX, "job_id", &job) < 0 ||
            uint_field(f[F_HEIGHT], UINT64_MAX, "height", &height) < 0 ||
            uint_field(f[F_SEQ], UINT64_MAX, "seq", &sequence) < 0 ||
            float_field(f[F_DIFF], "share_difficulty", &diff) < 0 || float_field(f[F_TS], "timestamp", &ts) < 0)
            goto done;
        put_u32(r, (uint32_t)channel);
        put_u64(r + 4, job);
        put_u64(r + 12, height);
        if (int_to_le(f[F_NONCE], r + 20, 16, "nonce") < 0) goto done;
        /* a channel's shares carry the same target object: converted once per run of them */
        if (f[F_TARGET] != last_target) {
            if (int_to_le(f[F_TARGET], target_le, 32, "share_target") < 0) goto done;
            last_target = f[F_TARGET];
        }
        memcpy(r + 36, target_le, 32);
        put_f64(r + 68, diff);
        int accepted = PyObject_IsTrue(f[F_ACCEPTED]), block = PyObject_IsTrue(f[F_BLOCK]);
        if (accepted < 0 || block < 0) goto done;
        r[76] = (unsigned char)accepted;
        r[77] = (unsigned char)block;
        put_f64(r + 78, ts);
        put_u64(r + 86, sequence);
        if (table_index(table, order, f[F_SERVER], "server_id", &refs[0]) < 0 ||
            table_index(table, order, f[F_USER], "user", &refs[1]) < 0 ||
            table_index(table, order, f[F_WORKER], "worker", &refs[2]) < 0 ||
            table_index(table, order, f[F_REASON], "reason", &refs[3]) < 0 ||
            table_index(table, order, f[F_SOURCE], "source", &refs[4]) < 0)
            goto done;
        for (int k = 0; k < 5; k++) put_u32(r + 94 + 4 * k, refs[k]);
        PyObject *hash = f[F_HASH];
        if (!PyBytes_Check(hash)) {
            PyErr_Format(PyExc_TypeError, "share block_hash must be bytes, not %.100s", Py_TYPE(hash)->tp_name);
            goto done;
        }
        Py_ssize_t hl = PyBytes_GET_SIZE(hash);
        if (hl > 255) {
            PyErr_Format(PyExc_OverflowError, "share block_hash of %zd bytes (at most 255)", hl);
            goto done;
        }
        r[114] = (unsigned char)hl;
        hash_bytes += hl;
    }
    /* the payload: counts, the string table, the records, the hashes */
    Py_ssize_t strings = PyList_GET_SIZE(order), size = 8 + (Py_ssize_t)count * RECORD + hash_bytes;
    for (Py_ssize_t k = 0; k < strings; k++) {
        Py_ssize_t n;
        if (PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(order, k), &n) == NULL) goto done;
        size += 4 + n;
    }
    result = PyBytes_FromStringAndSize(NULL, size);
    if (result == NULL) goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    put_u32(out, (uint32_t)strings);
    put_u32(out + 4, (uint32_t)count);
    out += 8;
    for (Py_ssize_t k = 0; k < strings; k++) {
        Py_ssize_t n;
        const char *utf8 = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(order, k), &n);
        put_u32(out, (uint32_t)n);
        memcpy(out + 4, utf8, (size_t)n);
        out += 4 + n;
    }
    if (count) memcpy(out, records, (size_t)count * RECORD);
    out += (size_t)count * RECORD;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *hash = PyTuple_GET_ITEM(items[i], F_HASH);
        Py_ssize_t hl = PyBytes_GET_SIZE(hash);
        if (hl) {
            memcpy(out, PyBytes_AS_STRING(hash), (size_t)hl);
            out += hl;
        }
    }
done:
    PyMem_Free(records);
    Py_XDECREF(table);
    Py_XDECREF(order);
    Py_DECREF(seq);
    return result;
}

/* --- decode ------------------------------------------------------------------------------------------------- */

static PyObject *frame_err(const char *format, ...) {
    va_list va;
    va_start(va, format);
    PyObject *text = PyUnicode_FromFormatV(format, va);
    va_end(va);
    if (text != NULL) {
        PyErr_SetObject(frame_error ? frame_error : PyExc_ValueError, text);
        Py_DECREF(text);
    }
    return NULL;
}

/* A Share holding the 16 new references in v (taken in every case; NULL on failure, with an exception set). Up to
 * 3.13 as tuple.__new__(Share, ...) does it (the type's tp_alloc, then the items); later versions may add state to
 * a tuple that tp_alloc leaves unset, so there it goes through tuple.__new__ itself (one more tuple). */
static PyObject *new_share(PyObject **v) {
    PyObject *share = NULL;
    int missing = 0;
    for (int k = 0; k < FIELDS; k++) missing |= v[k] == NULL;
    if (missing) goto fail;
#if PY_VERSION_HEX < 0x030E0000
    share = share_type->tp_alloc(share_type, FIELDS);
    if (share == NULL) goto fail;
    for (int k = 0; k < FIELDS; k++) PyTuple_SET_ITEM(share, k, v[k]);
    return share;
#else
    PyObject *items = PyTuple_New(FIELDS);
    if (items == NULL) goto fail;
    for (int k = 0; k < FIELDS; k++) PyTuple_SET_ITEM(items, k, v[k]);
    PyObject *args = PyTuple_Pack(1, items);
    Py_DECREF(items);
    if (args == NULL) return NULL;
    share = PyTuple_Type.tp_new(share_type, args, NULL);
    Py_DECREF(args);
    return share;
#endif
fail:
    for (int k = 0; k < FIELDS; k++) Py_XDECREF(v[k]);
    return NULL;
}

PyDoc_STRVAR(decode_doc, "decode_shares(payload, /) -> list[Share]\n\nThe inverse of encode_shares; FrameError for "
                         "a payload that is not one.");

static PyObject *py_decode(PyObject *module, PyObject *arg) {
    if (share_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_sharecodec.configure() was not called");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *data = view.buf;
    Py_ssize_t size = view.len;
    PyObject *strings = NULL, *shares = NULL, *targets[TARGET_CACHE];
    unsigned char target_keys[TARGET_CACHE][32];
    int cached = 0;
    if (size < 8) {
        frame_err("malformed SHARES frame: %zd bytes, shorter than its counts", size);
        goto fail;
    }
    uint32_t count = get_u32(data), total = get_u32(data + 4);
    Py_ssize_t offset = 8;
    /* each string takes at least 4 bytes: a count beyond that is refused before anything is allocated */
    if ((Py_ssize_t)count > (size - offset) / 4) {
        frame_err("malformed SHARES frame: %u strings cannot fit in %zd bytes", count, size);
        goto fail;
    }
    strings = PyList_New(count);
    if (strings == NULL) goto fail;
    for (uint32_t k = 0; k < count; k++) {
        if (size - offset < 4) {
            frame_err("malformed SHARES frame: string %u's length runs past the end", k);
            goto fail;
        }
        uint32_t n = get_u32(data + offset);
        offset += 4;
        if ((Py_ssize_t)n > size - offset) {
            frame_err("a string runs past the end of its SHARES frame");
            goto fail;
        }
        PyObject *text = PyUnicode_DecodeUTF8((const char *)data + offset, n, "strict");
        if (text == NULL) {
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            frame_err("malformed SHARES frame: string %u is not UTF-8: %S", k, value ? value : Py_None);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
            goto fail;
        }
        PyList_SET_ITEM(strings, k, text);
        offset += n;
    }
    if ((Py_ssize_t)total > (size - offset) / RECORD) {
        frame_err("the share records run past the end of their SHARES frame");
        goto fail;
    }
    Py_ssize_t end = offset + (Py_ssize_t)total * RECORD, hashes = end;
    shares = PyList_New(total);
    if (shares == NULL) goto fail;
    for (uint32_t i = 0; i < total; i++) {
        const unsigned char *r = data + offset + (Py_ssize_t)i * RECORD;
        uint64_t sequence = get_u64(r + 86);
        if (sequence > seq_max) {
            frame_err("share seq %llu above %llu", (unsigned long long)sequence, seq_max);
            goto fail;
        }
        uint32_t refs[5];
        for (int k = 0; k < 5; k++) {
            refs[k] = get_u32(r + 94 + 4 * k);
            if (refs[k] >= count) {
                frame_err("malformed SHARES frame: share %u names string %u of %u", i, refs[k], count);
                goto fail;
            }
        }
        unsigned hl = r[114];
        if ((Py_ssize_t)hl > size - hashes) {
            frame_err("a block hash runs past the end of its SHARES frame");
            goto fail;
        }
        PyObject *target = NULL;
        for (int c = 0; c < cached; c++) {
            if (memcmp(target_keys[c], r + 36, 32) == 0) {
                target = Py_NewRef(targets[c]);
                break;
            }
        }
        if (target == NULL) {
            target = _PyLong_FromByteArray(r + 36, 32, 1, 0);
            if (target == NULL) goto fail;
            if (cached < TARGET_CACHE) {
                memcpy(target_keys[cached], r + 36, 32);
                targets[cached++] = Py_NewRef(target);
            }
        }
        PyObject *v[FIELDS];
        v[F_SERVER] = Py_NewRef(PyList_GET_ITEM(strings, refs[0]));
        v[F_USER] = Py_NewRef(PyList_GET_ITEM(strings, refs[1]));
        v[F_WORKER] = Py_NewRef(PyList_GET_ITEM(strings, refs[2]));
        v[F_REASON] = Py_NewRef(PyList_GET_ITEM(strings, refs[3]));
        v[F_SOURCE] = Py_NewRef(PyList_GET_ITEM(strings, refs[4]));
        v[F_TARGET] = target;
        v[F_CHANNEL] = PyLong_FromUnsignedLong(get_u32(r));
        v[F_JOB] = PyLong_FromUnsignedLongLong(get_u64(r + 4));
        v[F_HEIGHT] = PyLong_FromUnsignedLongLong(get_u64(r + 12));
        v[F_NONCE] = _PyLong_FromByteArray(r + 20, 16, 1, 0);
        v[F_DIFF] = PyFloat_FromDouble(get_f64(r + 68));
        v[F_ACCEPTED] = PyBool_FromLong(r[76]);
        v[F_BLOCK] = PyBool_FromLong(r[77]);
        v[F_HASH] = PyBytes_FromStringAndSize((const char *)data + hashes, hl);
        v[F_TS] = PyFloat_FromDouble(get_f64(r + 78));
        v[F_SEQ] = PyLong_FromUnsignedLongLong(sequence);
        hashes += hl;
        PyObject *share = new_share(v);
        if (share == NULL) goto fail;
        PyList_SET_ITEM(shares, i, share);
    }
    if (hashes != size) {
        frame_err("%zd bytes after the last share of a SHARES frame", size - hashes);
        goto fail;
    }
    for (int c = 0; c < cached; c++) Py_DECREF(targets[c]);
    Py_DECREF(strings);
    PyBuffer_Release(&view);
    return shares;
fail:
    for (int c = 0; c < cached; c++) Py_DECREF(targets[c]);
    Py_XDECREF(strings);
    Py_XDECREF(shares);
    PyBuffer_Release(&view);
    return NULL;
}

/* --- module -------------------------------------------------------------------------------------------------- */

PyDoc_STRVAR(configure_doc, "configure(share_type, frame_error, seq_max, /)\n\nThe Share type decode builds, the "
                            "exception for a malformed payload, and the largest seq a Share may carry.");

static PyObject *py_configure(PyObject *module, PyObject *args) {
    PyObject *type, *error;
    unsigned long long limit;
    if (!PyArg_ParseTuple(args, "OOK:configure", &type, &error, &limit)) return NULL;
    if (!PyType_Check(type) || !PyType_IsSubtype((PyTypeObject *)type, &PyTuple_Type) ||
        ((PyTypeObject *)type)->tp_dictoffset != 0) {
        PyErr_SetString(PyExc_TypeError, "configure: share_type must be a tuple subclass with __slots__ = ()");
        return NULL;
    }
    if (!PyExceptionClass_Check(error)) {
        PyErr_SetString(PyExc_TypeError, "configure: frame_error must be an exception class");
        return NULL;
    }
    Py_XSETREF(share_type, (PyTypeObject *)Py_NewRef(type));
    Py_XSETREF(frame_error, Py_NewRef(error));
    seq_max = limit;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"configure", py_configure, METH_VARARGS, configure_doc},
    {"encode_shares", py_encode, METH_O, encode_doc},
    {"decode_shares", py_decode, METH_O, decode_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ckbpool.bus._sharecodec",
    .m_doc = "The IPC bus's SHARES codec (Share events <-> one payload) for the stratum workers' hot path.",
    .m_size = 0,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__sharecodec(void) { return PyModule_Create(&module_def); }
