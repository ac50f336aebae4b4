/* glibc's mallopt and malloc_trim for syncpb.heap: syncpb._heap.
 *
 * syncpb.heap.tune_malloc raises two of glibc's heap thresholds, and
 * syncpb.heap.release_free_memory gives the heap's free memory back once a
 * server is set up (malloc_trim). Python
 * has no mallopt of its own; ctypes can call it, but importing ctypes
 * costs a server about 0.6 MiB of resident memory, a few percent of an
 * idle one. This module is that one call, and syncpb.heap falls back to
 * ctypes where it was not built. Where the C library is not glibc,
 * mallopt() returns 0 and changes nothing.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#ifdef __GLIBC__
#include <malloc.h>
#endif

static PyObject *
heap_mallopt(PyObject *module, PyObject *args)
{
    int param, value;
    if (!PyArg_ParseTuple(args, "ii:mallopt", &param, &value))
        return NULL;
#ifdef __GLIBC__
    return PyLong_FromLong(mallopt(param, value));
#else
    (void)param;
    (void)value;
    return PyLong_FromLong(0);
#endif
}

static PyObject *
heap_malloc_trim(PyObject *module, PyObject *args)
{
    Py_ssize_t pad;
    if (!PyArg_ParseTuple(args, "n:malloc_trim", &pad))
        return NULL;
#ifdef __GLIBC__
    if (pad < 0) {
        PyErr_SetString(PyExc_ValueError, "pad must not be negative");
        return NULL;
    }
    return PyLong_FromLong(malloc_trim((size_t)pad));
#else
    (void)pad;
    return PyLong_FromLong(0);
#endif
}

static PyMethodDef heap_methods[] = {
    {"mallopt", heap_mallopt, METH_VARARGS,
     "mallopt(param, value) -> int: glibc's mallopt (1 on success); 0 without glibc."},
    {"malloc_trim", heap_malloc_trim, METH_VARARGS,
     "malloc_trim(pad) -> int: glibc's malloc_trim (1 when memory was given back); "
     "0 without glibc."},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef heap_module = {
    PyModuleDef_HEAD_INIT, "syncpb._heap", "glibc's mallopt and malloc_trim (see syncpb.heap).", -1,
    heap_methods
};

PyMODINIT_FUNC
PyInit__heap(void)
{
    return PyModule_Create(&heap_module);
}
