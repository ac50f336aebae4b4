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
 * connection objects already live in (cryptography's), so the seven
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
 * Two more steps include the socket, for syncpb.tls.stream on gevent:
 * recv_from(fd) reads once without waiting (MSG_DONTWAIT) into one
 * process-wide buffer and hands the bytes to the incoming BIO, then
 * decrypts; send_to(fd, data) encrypts and writes once without waiting,
 * returning what the socket did not take. They save a trip through Python
 * per message, and the stream waits for readability instead of retrying
 * reads that fail.
 *
 * Decrypting: a step on less than 64 KiB decrypts into a static scratch
 * buffer and copies the plaintext into a bytes object of its exact size
 * (allocating the most it could be and shrinking costs more than the
 * copy); near the end of its bytes it stops as soon as nothing decrypted
 * is left and the incoming BIO is empty, instead of asking OpenSSL once
 * more to hear "want read" (see all_read()).
 *
 * The pure-Python path (syncpb.tls.direct with SYNCPB_PURE=1) does the
 * same steps and is the reference the tests hold this module to.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

typedef struct ssl_st SSL;
typedef struct bio_st BIO;

static int (*p_ssl_read)(SSL *, void *, int);
static int (*p_ssl_write)(SSL *, const void *, int);
static int (*p_ssl_get_error)(const SSL *, int);
static int (*p_bio_read)(BIO *, void *, int);
static int (*p_bio_write)(BIO *, const void *, int);
static int (*p_ssl_pending)(const SSL *);
static long (*p_bio_get_mem_data)(BIO *, char **);
static int want_read_code = -1;
static int zero_return_code = -1;

/* Results of receive(). */
#define WANT_MORE 0
#define CLOSED 1
#define FAILED 2
/* And of recv_from(). */
#define AGAIN 3
#define END 4

/* One incomplete record may wait in the incoming BIO from before: 16 KiB
 * of data, its header, tag and padding. */
#define HELD_BACK (16384 + 2048)
/* Steps on at least this much data let other threads run. */
#define RELEASE_GIL_AT (64 * 1024)
/* A step never hands OpenSSL more than an int's worth at once. */
#define MAX_STEP (1 << 30)
/* recv_from() reads at most this much at once (syncpb.tls.stream says why
 * reads are this large), into one buffer for the process: only the pages
 * a read fills become resident. */
#define READ_SIZE (1024 * 1024)
static char incoming[READ_SIZE];
static PyThread_type_lock incoming_lock;

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
bind_functions(PyObject *module, PyObject *args)
{
    PyObject *read, *write, *get_error, *bio_read, *bio_write, *pending, *mem_data;
    int want_read, zero_return;
    if (!PyArg_ParseTuple(args, "OOOOOOOii:bind", &read, &write, &get_error, &bio_read,
                          &bio_write, &pending, &mem_data, &want_read, &zero_return))
        return NULL;
    void *f1 = address(read), *f2 = address(write), *f3 = address(get_error);
    void *f4 = address(bio_read), *f5 = address(bio_write), *f6 = address(pending);
    void *f7 = address(mem_data);
    if (PyErr_Occurred())
        return NULL;
    p_ssl_read = (int (*)(SSL *, void *, int))f1;
    p_ssl_write = (int (*)(SSL *, const void *, int))f2;
    p_ssl_get_error = (int (*)(const SSL *, int))f3;
    p_bio_read = (int (*)(BIO *, void *, int))f4;
    p_bio_write = (int (*)(BIO *, const void *, int))f5;
    p_ssl_pending = (int (*)(const SSL *))f6;
    p_bio_get_mem_data = (long (*)(BIO *, char **))f7;
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

/* Bytes waiting in a memory BIO (BIO_get_mem_data's count). It also
 * moves the unread bytes to the start of the BIO's buffer: call it only
 * when few can be left. */
static Py_ssize_t
waiting(BIO *bio)
{
    char *unused;
    long count = p_bio_get_mem_data(bio, &unused);
    return count > 0 ? (Py_ssize_t)count : 0;
}

/* (value, status, result), stealing value. */
static PyObject *
outcome(PyObject *value, int status, int result)
{
    if (value == NULL)
        return NULL;
    PyObject *tuple = PyTuple_New(3), *a = PyLong_FromLong(status), *b = PyLong_FromLong(result);
    if (tuple == NULL || a == NULL || b == NULL) {
        Py_DECREF(value);
        Py_XDECREF(tuple);
        Py_XDECREF(a);
        Py_XDECREF(b);
        return NULL;
    }
    PyTuple_SET_ITEM(tuple, 0, value);
    PyTuple_SET_ITEM(tuple, 1, a);
    PyTuple_SET_ITEM(tuple, 2, b);
    return tuple;
}

/* Drain the outgoing BIO into a new bytes object, starting from a guess of
 * its size. A memory BIO reads as much as it holds, so a read that fills
 * less than it was offered emptied it. NULL with an exception set on
 * failure. */
static PyObject *
drain(Records *self, Py_ssize_t guess)
{
    Py_ssize_t room = guess < 1024 ? 1024 : guess, filled = 0;
    PyObject *out = PyBytes_FromStringAndSize(NULL, room);
    if (out == NULL)
        return NULL;
    for (;;) {
        Py_ssize_t space = room - filled;
        if (space > MAX_STEP)
            space = MAX_STEP;
        int count = p_bio_read(self->from, PyBytes_AS_STRING(out) + filled, (int)space);
        if (count <= 0)
            break;
        filled += count;
        if (count < space)
            break;
        if (filled == room) {  /* there may be more: grow and go on */
            room *= 2;
            if (_PyBytes_Resize(&out, room) < 0)
                return NULL;
        }
    }
    if (filled != room && _PyBytes_Resize(&out, filled) < 0)
        return NULL;
    return out;
}

/* One SSL_read into `into`, letting other threads run if `release`.
 * Returns its result; when it is not data, *status says how the reading
 * ended: WANT_MORE (all complete records decrypted), CLOSED (the peer sent
 * close_notify) or FAILED (a failure, for the caller's error translation). */
static int
read_step(Records *self, char *into, Py_ssize_t space, int release, int *status)
{
    int count;
    if (release) {
        Py_BEGIN_ALLOW_THREADS
        count = p_ssl_read(self->ssl, into, (int)space);
        Py_END_ALLOW_THREADS
    } else {
        count = p_ssl_read(self->ssl, into, (int)space);
    }
    if (count > 0)
        return count;
    int reason = p_ssl_get_error(self->ssl, count);
    if (reason == want_read_code)
        *status = WANT_MORE;
    else if (reason == zero_return_code)
        *status = CLOSED;
    else
        *status = FAILED;
    return count;
}

/* Every TLS record costs at least this many bytes besides its plaintext
 * (TLS 1.3: a 5-byte header, the inner content type, a 16-byte tag). */
#define RECORD_OVERHEAD 22

/* Decrypting a step of `input` bytes has produced `filled` bytes in
 * `reads` records, the last of which did not fill the space it was
 * offered: is everything decrypted? Then another SSL_read would only say
 * "want read", and it is skipped. Only asked once the step's bytes can all
 * have been used (looking at the incoming BIO moves what is left in it to
 * its start), and exact: nothing decrypted is left over in OpenSSL and the
 * BIO is empty. (Our contexts never set read-ahead, so OpenSSL holds no
 * unread record of its own.) */
static int
all_read(Records *self, Py_ssize_t input, Py_ssize_t filled, Py_ssize_t reads)
{
    return filled + RECORD_OVERHEAD * reads >= input && p_ssl_pending(self->ssl) == 0
        && waiting(self->into) == 0;
}

/* Small steps decrypt into this buffer first (the GIL held): the plaintext
 * then gets a bytes object of exactly its size. */
#define SCRATCH_SIZE (64 * 1024)
static char scratch[SCRATCH_SIZE];

/* SSL_read all that `input` new bytes in the incoming BIO complete, into
 * one new bytes object (`room`: the most it can be; more makes it grow).
 * Returns (plaintext, status, result) as read_step() ends; after FAILED,
 * result is SSL_read's return and the plaintext before the failure comes
 * too. */
static PyObject *
decrypt(Records *self, Py_ssize_t input, Py_ssize_t room, int release)
{
    int count = 0, status = -1;
    Py_ssize_t filled = 0, reads = 0;
    if (!release) {
        while (status < 0 && filled < SCRATCH_SIZE) {
            Py_ssize_t space = SCRATCH_SIZE - filled;
            count = read_step(self, scratch + filled, space, 0, &status);
            if (count > 0) {
                filled += count;
                reads++;
                if (count < space && all_read(self, input, filled, reads))
                    status = WANT_MORE;
            }
        }
        if (status >= 0)
            return outcome(PyBytes_FromStringAndSize(scratch, filled), status, count);
        room = 2 * SCRATCH_SIZE;  /* more than was expected: go on in a bytes object */
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, room);
    if (out == NULL)
        return NULL;
    memcpy(PyBytes_AS_STRING(out), scratch, (size_t)filled);
    while (status < 0) {
        if (filled == room) {
            room *= 2;
            if (_PyBytes_Resize(&out, room) < 0)
                return NULL;
        }
        Py_ssize_t space = room - filled;
        if (space > MAX_STEP)
            space = MAX_STEP;
        count = read_step(self, PyBytes_AS_STRING(out) + filled, space, release, &status);
        if (count > 0) {
            filled += count;
            reads++;
            if (count < space && all_read(self, input, filled, reads))
                status = WANT_MORE;
        }
    }
    if (filled != room && _PyBytes_Resize(&out, filled) < 0)
        return NULL;
    return outcome(out, status, count);
}

/* receive(data) -> (plaintext, status, result): data into the incoming
 * BIO, then decrypt() (room for all the plaintext it completes: at most its
 * own size plus one record held back from before). */
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
    Py_ssize_t size = view.len;
    PyBuffer_Release(&view);
    return decrypt(self, size, size + HELD_BACK, size >= RELEASE_GIL_AT);
}

/* A file descriptor argument, or -1 with an exception set. */
static int
descriptor(PyObject *arg)
{
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return -1;
    if (fd < 0 || fd > INT_MAX) {
        errno = EBADF;  /* a closed socket's fileno() is -1 */
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return (int)fd;
}

/* recv_from(fd) -> (plaintext, status, result)
 *
 * One non-blocking read of the socket, straight into the incoming BIO, then
 * decrypt(). Two more statuses: AGAIN (nothing was waiting; nothing
 * changed: wait until the socket is readable and call again) and END (the
 * peer closed the stream). Other read errors raise OSError, as a socket's
 * recv does. The read goes through one buffer for the whole process: its
 * lock is held, and the GIL released, only while the bytes move from the
 * kernel into the BIO. */
static PyObject *
records_recv_from(Records *self, PyObject *arg)
{
    int fd = descriptor(arg);
    if (fd < 0 || !ready(self))
        return NULL;
    ssize_t got;
    int error = 0, stored = 1;
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(incoming_lock, WAIT_LOCK);
    got = recv(fd, incoming, READ_SIZE, MSG_DONTWAIT);
    if (got < 0)
        error = errno;
    else if (got > 0)
        stored = p_bio_write(self->into, incoming, (int)got) == got;
    PyThread_release_lock(incoming_lock);
    Py_END_ALLOW_THREADS
    if (got < 0) {
        if (error == EAGAIN || error == EWOULDBLOCK || error == EINTR) {
            if (error == EINTR && PyErr_CheckSignals() < 0)
                return NULL;
            return outcome(PyBytes_FromStringAndSize(NULL, 0), AGAIN, 0);
        }
        errno = error;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (got == 0)
        return outcome(PyBytes_FromStringAndSize(NULL, 0), END, 0);
    if (!stored) {
        PyErr_SetString(PyExc_MemoryError, "OpenSSL could not take incoming TLS data");
        return NULL;
    }
    return decrypt(self, got, got + HELD_BACK, got >= RELEASE_GIL_AT);
}

/* seal(data) -> (written, ciphertext, result)
 *
 * SSL_write until all of data is in (pyOpenSSL's contexts allow partial
 * writes: one record per call), then drain the outgoing BIO. When the
 * first write fails, written is 0, ciphertext is None and result is
 * SSL_write's return for the caller's error translation; a later failure
 * just stops early (the caller writes the rest again, which reports it). */
static PyObject *
seal(Records *self, PyObject *arg, Py_ssize_t *size_out)
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
    *size_out = size;
    if (done == 0 && size > 0)
        return Py_BuildValue("nOi", (Py_ssize_t)0, Py_None, count);
    /* Each record adds a header, a tag and at most a little padding. */
    PyObject *out = drain(self, done + (done / 16384 + 2) * 64);
    if (out == NULL)
        return NULL;
    return Py_BuildValue("nNi", done, out, count);
}

static PyObject *
records_seal(Records *self, PyObject *arg)
{
    Py_ssize_t size;
    return seal(self, arg, &size);
}

/* send_to(fd, data) -> (written, rest, result)
 *
 * seal(data), and when all of data went in, one non-blocking write of the
 * ciphertext to the socket: rest is what the socket did not take (b"" as a
 * rule). When seal() did not take everything, nothing is written and rest
 * is its ciphertext (None when the first write failed), for the caller to
 * finish as after seal(). Write errors other than "would block" raise
 * OSError, as a socket's send does. */
static PyObject *
records_send_to(Records *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "send_to(fd, data) takes two arguments");
        return NULL;
    }
    int fd = descriptor(args[0]);
    if (fd < 0)
        return NULL;
    Py_ssize_t size;
    PyObject *sealed = seal(self, args[1], &size);
    if (sealed == NULL)
        return NULL;
    Py_ssize_t written = PyLong_AsSsize_t(PyTuple_GET_ITEM(sealed, 0));
    PyObject *cipher = PyTuple_GET_ITEM(sealed, 1);
    if (written != size || cipher == Py_None)
        return sealed;
    const char *bytes = PyBytes_AS_STRING(cipher);
    Py_ssize_t length = PyBytes_GET_SIZE(cipher);
    ssize_t sent;
    int error = 0;
    if (length >= RELEASE_GIL_AT) {
        Py_BEGIN_ALLOW_THREADS
        sent = send(fd, bytes, (size_t)length, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (sent < 0)
            error = errno;
        Py_END_ALLOW_THREADS
    } else {
        sent = send(fd, bytes, (size_t)length, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (sent < 0)
            error = errno;
    }
    if (sent < 0) {
        if (error != EAGAIN && error != EWOULDBLOCK && error != EINTR) {
            Py_DECREF(sealed);
            errno = error;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        sent = 0;
    }
    PyObject *rest;
    if (sent == 0) {
        rest = cipher;
        Py_INCREF(rest);
    } else {
        rest = PyBytes_FromStringAndSize(bytes + sent, length - sent);
        if (rest == NULL) {
            Py_DECREF(sealed);
            return NULL;
        }
    }
    int result = (int)PyLong_AsLong(PyTuple_GET_ITEM(sealed, 2));
    Py_DECREF(sealed);
    return Py_BuildValue("nNi", written, rest, result);
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
    {"recv_from", (PyCFunction)records_recv_from, METH_O,
     "recv_from(fd) -> (plaintext, status, result): read the socket once and decrypt."},
    {"send_to", (PyCFunction)(void (*)(void))records_send_to, METH_FASTCALL,
     "send_to(fd, data) -> (written, rest, result): encrypt, write what the socket takes."},
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
    {"bind", bind_functions, METH_VARARGS,
     "bind(SSL_read, SSL_write, SSL_get_error, BIO_read, BIO_write, SSL_pending, "
     "BIO_get_mem_data, WANT_READ, ZERO_RETURN): the OpenSSL functions to call, as "
     "addresses."},
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
    if (incoming_lock == NULL && (incoming_lock = PyThread_allocate_lock()) == NULL)
        return PyErr_NoMemory();
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    Py_INCREF(&RecordsType);
    if (PyModule_AddObject(module, "Records", (PyObject *)&RecordsType) < 0
        || PyModule_AddIntConstant(module, "WANT_MORE", WANT_MORE) < 0
        || PyModule_AddIntConstant(module, "CLOSED", CLOSED) < 0
        || PyModule_AddIntConstant(module, "FAILED", FAILED) < 0
        || PyModule_AddIntConstant(module, "AGAIN", AGAIN) < 0
        || PyModule_AddIntConstant(module, "END", END) < 0) {
        Py_DECREF(&RecordsType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
