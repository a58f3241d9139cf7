/* Optional C accelerator for wspy: XOR masking of frame payloads (RFC 6455 5.3). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

PyDoc_STRVAR(mask_doc,
"mask(key, data, offset=0) -> bytes\n\n"
"XOR `data` with the 4-byte masking `key`, starting at byte `offset` of the key stream.");

static PyObject *
mask(PyObject *self, PyObject *args)
{
    Py_buffer key, data;
    Py_ssize_t offset = 0;
    PyObject *result = NULL;

    if (!PyArg_ParseTuple(args, "y*y*|n:mask", &key, &data, &offset))
        return NULL;
    if (key.len != 4) {
        PyErr_SetString(PyExc_ValueError, "masking key must be 4 bytes");
        goto done;
    }
    if (offset < 0) {
        PyErr_SetString(PyExc_ValueError, "offset must not be negative");
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result == NULL)
        goto done;

    {
        const unsigned char *k = key.buf;
        const unsigned char *in = data.buf;
        unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
        unsigned char rotated[8];
        Py_ssize_t i = 0, n = data.len;
        uint64_t word_key;

        /* The key rotated so that rotated[0] applies to data[0]; doubled to 8 bytes. */
        for (int j = 0; j < 8; j++)
            rotated[j] = k[(offset + j) & 3];
        memcpy(&word_key, rotated, 8);

        Py_BEGIN_ALLOW_THREADS
        for (; i + 8 <= n; i += 8) {
            uint64_t w;
            memcpy(&w, in + i, 8);
            w ^= word_key;
            memcpy(out + i, &w, 8);
        }
        for (; i < n; i++)
            out[i] = in[i] ^ rotated[i & 7];
        Py_END_ALLOW_THREADS
    }

done:
    PyBuffer_Release(&key);
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef speedups_methods[] = {
    {"mask", mask, METH_VARARGS, mask_doc},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT, "wspy._speedups",
    "C accelerator for wspy's hot loops.", -1, speedups_methods
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&speedups_module);
}
