/* Optional C accelerator for wspy: XOR masking of frame payloads (RFC 6455 5.3). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define WSPY_X86_64 1
#include <immintrin.h>
#endif

/* Payloads from this size on are masked with the GIL released (below it, releasing and
   taking the GIL back costs more than the masking lets other threads do). */
#define RELEASE_GIL_FROM (256 * 1024)

/* XOR in[i] with key[i & 7] into out[i] for i < n; key is the 4-byte key, twice. */
static void
xor_portable(const unsigned char *in, unsigned char *out, Py_ssize_t n, const unsigned char *key)
{
    Py_ssize_t i = 0;
    uint64_t word_key;

    memcpy(&word_key, key, 8);
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, in + i, 8);
        w ^= word_key;
        memcpy(out + i, &w, 8);
    }
    for (; i < n; i++)
        out[i] = in[i] ^ key[i & 7];
}

#ifdef WSPY_X86_64
/* SSE2 is part of x86-64: 16 bytes a step. */
static void
xor_sse2(const unsigned char *in, unsigned char *out, Py_ssize_t n, const unsigned char *key)
{
    uint32_t k4;
    Py_ssize_t i = 0;

    memcpy(&k4, key, 4);
    __m128i k = _mm_set1_epi32((int)k4);
    for (; i + 16 <= n; i += 16) {
        __m128i w = _mm_loadu_si128((const __m128i *)(in + i));
        _mm_storeu_si128((__m128i *)(out + i), _mm_xor_si128(w, k));
    }
    xor_portable(in + i, out + i, n - i, key);  /* i is a multiple of 4: same key phase */
}

/* AVX2, where the processor has it: 32 bytes a step. */
__attribute__((target("avx2")))
static void
xor_avx2(const unsigned char *in, unsigned char *out, Py_ssize_t n, const unsigned char *key)
{
    uint32_t k4;
    Py_ssize_t i = 0;

    memcpy(&k4, key, 4);
    __m256i k = _mm256_set1_epi32((int)k4);
    for (; i + 32 <= n; i += 32) {
        __m256i w = _mm256_loadu_si256((const __m256i *)(in + i));
        _mm256_storeu_si256((__m256i *)(out + i), _mm256_xor_si256(w, k));
    }
    xor_sse2(in + i, out + i, n - i, key);
}
#endif

typedef void (*xor_function)(const unsigned char *, unsigned char *, Py_ssize_t,
                             const unsigned char *);
static xor_function xor_payload = xor_portable;

PyDoc_STRVAR(mask_doc,
"mask(key, data, offset=0) -> bytes\n\n"
"XOR `data` with the 4-byte masking `key`, starting at byte `offset` of the key stream.");

static PyObject *
mask(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer key, data;
    Py_ssize_t offset = 0;
    PyObject *result = NULL;

    if (nargs < 2 || nargs > 3) {
        PyErr_Format(PyExc_TypeError, "mask() takes 2 or 3 arguments (%zd given)", nargs);
        return NULL;
    }
    if (nargs == 3) {
        offset = PyNumber_AsSsize_t(args[2], PyExc_OverflowError);
        if (offset == -1 && PyErr_Occurred())
            return NULL;
        if (offset < 0) {
            PyErr_SetString(PyExc_ValueError, "offset must not be negative");
            return NULL;
        }
    }
    if (PyObject_GetBuffer(args[0], &key, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &data, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&key);
        return NULL;
    }
    if (key.len != 4) {
        PyErr_SetString(PyExc_ValueError, "masking key must be 4 bytes");
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result == NULL)
        goto done;

    {
        const unsigned char *k = key.buf;
        unsigned char rotated[8];
        unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);

        /* The key rotated so that rotated[0] applies to data[0]; doubled to 8 bytes. */
        for (int j = 0; j < 8; j++)
            rotated[j] = k[(offset + j) & 3];
        if (data.len >= RELEASE_GIL_FROM) {
            Py_BEGIN_ALLOW_THREADS
            xor_payload(data.buf, out, data.len, rotated);
            Py_END_ALLOW_THREADS
        }
        else {
            xor_payload(data.buf, out, data.len, rotated);
        }
    }

done:
    PyBuffer_Release(&key);
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef speedups_methods[] = {
    {"mask", (PyCFunction)(void (*)(void))mask, METH_FASTCALL, mask_doc},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT, "wspy._speedups",
    "C accelerator for wspy's hot loops.", -1, speedups_methods
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
#ifdef WSPY_X86_64
    xor_payload = __builtin_cpu_supports("avx2") ? xor_avx2 : xor_sse2;
#endif
    return PyModule_Create(&speedups_module);
}
