/* The TLS record path in C: syncpb.tls._records.
 *
 * Theory of operation
 * -------------------
 * Once a TLS handshake is done, every PB message costs each side two
 * engine steps: decrypt what arrived (write the ciphertext into the
 * incoming memory BIO, SSL_read until OpenSSL wants more) and encrypt the
 * answer (SSL_write until all of it is in, drain the outgoing memory BIO).
 * syncpb.tls.direct makes those steps from Python through cffi; for small
 * messages the Python glue around the calls costs several times what
 * OpenSSL does. This module makes each step one call.
 *
 * It links against nothing. OpenSSL is the copy that pyOpenSSL's
 * connection objects already live in (cryptography's), so the five
 * functions are looked up in that binding by syncpb.tls.direct and handed
 * over once, as addresses, to bind(). A Records object then holds the
 * addresses of one connection's SSL object and its two memory BIOs, and a
 * reference to the Python object that owns them, so they cannot be freed
 * under it.
 *
 * Nothing here decides what a failure means: a step that does not go the
 * healthy way (data, "want read", close_notify) reports SSL_read's or
 * SSL_write's result, with OpenSSL's error queue untouched, and
 * syncpb.tls.direct hands it to pyOpenSSL's own error translation. The
 * caller (the engine, under its lock) guarantees one step at a time per
 * connection. Steps on large buffers let other threads run meanwhile, as
 * cffi's calls do; small ones keep the GIL, which costs less than
 * switching.
 *
 * The pure-Python path (syncpb.tls.direct with SYNCPB_PURE=1) does the
 * same steps and is the reference the tests hold this module to.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef struct ssl_st SSL;
typedef struct bio_st BIO;

static int (*p_ssl_read)(SSL *, void *, int);
static int (*p_ssl_write)(SSL *, const void *, int);
static int (*p_ssl_get_error)(const SSL *, int);
static int (*p_bio_read)(BIO *, void *, int);
static int (*p_bio_write)(BIO *, const void *, int);
static int want_read_code = -1;
static int zero_return_code = -1;

/* Results of receive(). */
#define WANT_MORE 0
#define CLOSED 1
#define FAILED 2

/* One incomplete record may wait in the incoming BIO from before: 16 KiB
 * of data, its header, tag and padding. */
#define HELD_BACK (16384 + 2048)
/* Steps on at least this much data let other threads run. */
#define RELEASE_GIL_AT (64 * 1024)
/* A step never hands OpenSSL more than an int's worth at once. */
#define MAX_STEP (1 << 30)

typedef struct {
    PyObject_HEAD
    SSL *ssl;
    BIO *into;
    BIO *from;
    PyObject *owner;
} Records;

/* The functions are bound and this object points at a connection. */
static int
ready(Records *self)
{
    if (p_ssl_read == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "syncpb.tls._records: bind() was not called");
        return 0;
    }
    if (self->ssl == NULL) {
        PyErr_SetString(PyExc_ValueError, "Records() was not given a connection");
        return 0;
    }
    return 1;
}

static void *
address(PyObject *number)
{
    uintptr_t value = (uintptr_t)PyLong_AsUnsignedLongLong(number);
    if (value == 0 && !PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "a NULL address");
    return (void *)value;
}

static PyObject *
bind(PyObject *module, PyObject *args)
{
    PyObject *read, *write, *get_error, *bio_read, *bio_write;
    int want_read, zero_return;
    if (!PyArg_ParseTuple(args, "OOOOOii:bind", &read, &write, &get_error, &bio_read,
                          &bio_write, &want_read, &zero_return))
        return NULL;
    void *f1 = address(read), *f2 = address(write), *f3 = address(get_error);
    void *f4 = address(bio_read), *f5 = address(bio_write);
    if (PyErr_Occurred())
        return NULL;
    p_ssl_read = (int (*)(SSL *, void *, int))f1;
    p_ssl_write = (int (*)(SSL *, const void *, int))f2;
    p_ssl_get_error = (int (*)(const SSL *, int))f3;
    p_bio_read = (int (*)(BIO *, void *, int))f4;
    p_bio_write = (int (*)(BIO *, const void *, int))f5;
    want_read_code = want_read;
    zero_return_code = zero_return;
    Py_RETURN_NONE;
}

static int
records_init(Records *self, PyObject *args, PyObject *kwargs)
{
    PyObject *ssl, *into, *from, *owner;
    static char *names[] = {"ssl", "into", "from_", "owner", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOO:Records", names, &ssl, &into, &from,
                                     &owner))
        return -1;
    void *s = address(ssl), *i = address(into), *f = address(from);
    if (PyErr_Occurred())
        return -1;
    self->ssl = (SSL *)s;
    self->into = (BIO *)i;
    self->from = (BIO *)f;
    Py_INCREF(owner);
    Py_XSETREF(self->owner, owner);
    return 0;
}

static void
records_dealloc(Records *self)
{
    Py_CLEAR(self->owner);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Drain the outgoing BIO into a new bytes object, starting from a guess of
 * its size. NULL with an exception set on failure. */
static PyObject *
drain(Records *self, Py_ssize_t guess)
{
    Py_ssize_t room = guess < 1024 ? 1024 : guess, filled = 0;
    PyObject *out = PyBytes_FromStringAndSize(NULL, room);
    if (out == NULL)
        return NULL;
    for (;;) {
        Py_ssize_t space = room - filled;
        int count = p_bio_read(self->from, PyBytes_AS_STRING(out) + filled,
                               space > MAX_STEP ? MAX_STEP : (int)space);
        if (count <= 0)
            break;
        filled += count;
        if (filled == room) {  /* there may be more: grow and go on */
            room *= 2;
            if (_PyBytes_Resize(&out, room) < 0)
                return NULL;
        }
    }
    if (filled == 0) {
        Py_DECREF(out);
        return PyBytes_FromStringAndSize(NULL, 0);
    }
    if (filled != room && _PyBytes_Resize(&out, filled) < 0)
        return NULL;
    return out;
}

/* receive(data) -> (plaintext, status, result)
 *
 * status: WANT_MORE (all complete records decrypted), CLOSED (the peer sent
 * close_notify) or FAILED (result is SSL_read's return, for the caller's
 * error translation; the plaintext before it is returned too). */
static PyObject *
records_receive(Records *self, PyObject *arg)
{
    Py_buffer view;
    if (!ready(self) || PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (view.len > MAX_STEP) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "more than 1 GiB of ciphertext at once");
        return NULL;
    }
    if (view.len > 0 && p_bio_write(self->into, view.buf, (int)view.len) != view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_MemoryError, "OpenSSL could not take incoming TLS data");
        return NULL;
    }
    int release = view.len >= RELEASE_GIL_AT;
    /* Room for all the plaintext this data completes: at most its own size
     * plus one record held back from before. */
    Py_ssize_t room = view.len + HELD_BACK, filled = 0;
    PyBuffer_Release(&view);
    PyObject *out = PyBytes_FromStringAndSize(NULL, room);
    if (out == NULL)
        return NULL;
    int count, status;
    for (;;) {
        char *into = PyBytes_AS_STRING(out) + filled;
        Py_ssize_t space = room - filled;
        if (space > MAX_STEP)
            space = MAX_STEP;
        if (release) {
            Py_BEGIN_ALLOW_THREADS
            count = p_ssl_read(self->ssl, into, (int)space);
            Py_END_ALLOW_THREADS
        } else {
            count = p_ssl_read(self->ssl, into, (int)space);
        }
        if (count > 0) {
            filled += count;
            if (filled == room) {  /* more than expected: grow and go on */
                room *= 2;
                if (_PyBytes_Resize(&out, room) < 0)
                    return NULL;
            }
            continue;
        }
        int reason = p_ssl_get_error(self->ssl, count);
        if (reason == want_read_code)
            status = WANT_MORE;
        else if (reason == zero_return_code)
            status = CLOSED;
        else
            status = FAILED;
        break;
    }
    if (filled == 0) {
        Py_DECREF(out);
        out = PyBytes_FromStringAndSize(NULL, 0);
        if (out == NULL)
            return NULL;
    } else if (_PyBytes_Resize(&out, filled) < 0) {
        return NULL;
    }
    return Py_BuildValue("Nii", out, status, count);
}

/* seal(data) -> (written, ciphertext, result)
 *
 * SSL_write until all of data is in (pyOpenSSL's contexts allow partial
 * writes: one record per call), then drain the outgoing BIO. When the
 * first write fails, written is 0, ciphertext is None and result is
 * SSL_write's return for the caller's error translation; a later failure
 * just stops early (the caller writes the rest again, which reports it). */
static PyObject *
records_seal(Records *self, PyObject *arg)
{
    Py_buffer view;
    if (!ready(self) || PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const char *data = view.buf;
    Py_ssize_t size = view.len, done = 0;
    int count = 1;
    int release = size >= RELEASE_GIL_AT;
    if (release) {
        Py_BEGIN_ALLOW_THREADS
        while (done < size) {
            Py_ssize_t step = size - done > MAX_STEP ? MAX_STEP : size - done;
            count = p_ssl_write(self->ssl, data + done, (int)step);
            if (count <= 0)
                break;
            done += count;
        }
        Py_END_ALLOW_THREADS
    } else {
        while (done < size) {
            count = p_ssl_write(self->ssl, data + done, (int)(size - done));
            if (count <= 0)
                break;
            done += count;
        }
    }
    PyBuffer_Release(&view);
    if (done == 0 && size > 0)
        return Py_BuildValue("nOi", (Py_ssize_t)0, Py_None, count);
    /* Each record adds a header, a tag and at most a little padding. */
    PyObject *out = drain(self, done + (done / 16384 + 2) * 64);
    if (out == NULL)
        return NULL;
    return Py_BuildValue("nNi", done, out, count);
}

/* drain() -> bytes: all the ciphertext waiting in the outgoing BIO. */
static PyObject *
records_drain(Records *self, PyObject *unused)
{
    if (!ready(self))
        return NULL;
    return drain(self, 16384);
}

static PyMethodDef records_methods[] = {
    {"receive", (PyCFunction)records_receive, METH_O,
     "receive(data) -> (plaintext, status, result): decrypt all that is complete."},
    {"seal", (PyCFunction)records_seal, METH_O,
     "seal(data) -> (written, ciphertext, result): encrypt and drain."},
    {"drain", (PyCFunction)records_drain, METH_NOARGS,
     "drain() -> bytes: the ciphertext waiting to be written."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RecordsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "syncpb.tls._records.Records",
    .tp_basicsize = sizeof(Records),
    .tp_dealloc = (destructor)records_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Records(ssl, into, from_, owner): one TLS connection's record steps.",
    .tp_methods = records_methods,
    .tp_init = (initproc)records_init,
    .tp_new = PyType_GenericNew,
};

static PyMethodDef module_methods[] = {
    {"bind", bind, METH_VARARGS,
     "bind(SSL_read, SSL_write, SSL_get_error, BIO_read, BIO_write, WANT_READ, "
     "ZERO_RETURN): the OpenSSL functions to call, as addresses."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "syncpb.tls._records",
    "The TLS record path in C (see syncpb.tls.direct).", -1, module_methods,
};

PyMODINIT_FUNC
PyInit__records(void)
{
    if (PyType_Ready(&RecordsType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    Py_INCREF(&RecordsType);
    if (PyModule_AddObject(module, "Records", (PyObject *)&RecordsType) < 0
        || PyModule_AddIntConstant(module, "WANT_MORE", WANT_MORE) < 0
        || PyModule_AddIntConstant(module, "CLOSED", CLOSED) < 0
        || PyModule_AddIntConstant(module, "FAILED", FAILED) < 0) {
        Py_DECREF(&RecordsType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
