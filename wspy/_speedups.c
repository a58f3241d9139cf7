/* Optional C accelerator for wspy: XOR masking of frame payloads (RFC 6455 5.3), and the
   splitting of one complete, valid frame off a receive buffer (FrameParser.next_frame), or
   of one that is a whole message on its own (FrameParser.next_whole_message), or of all
   such in a row (FrameParser.next_whole_messages). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>

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
"XOR `data` with the 4-byte masking `key`, starting at byte `offset` of the key stream.\n\n"
"RFC 6455 5.3: \"Octet i of the transformed data (\"transformed-octet-i\")\n"
"is the XOR of octet i of the original data (\"original-octet-i\") with\n"
"octet at index i modulo 4 of the masking key\": the same call masks and\n"
"unmasks. `offset` continues the key stream where a previous call on the\n"
"payload's first `offset` bytes left it.\n\n"
"Raises:\n"
"    ValueError: a key of other than 4 bytes, or a negative `offset`.");

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

/* A frame's header, as parse_plain_header reads it. */
struct header {
    unsigned char b1;
    int masked;
    const unsigned char *key;
    Py_ssize_t header_length, length;
};

/* The frame at the start of p[0:available], if it is complete and plainly valid: known
   opcode, reserved bits only as `rsv_allowed` lets data frames have them, a control frame
   final and of 125 bytes at most, masked as `require_mask` asks (-1: either), its payload
   within `limit` (-1: none). Returns 1 and fills the header fields, or 0. */
static int
parse_plain_header(const unsigned char *p, Py_ssize_t available, int require_mask,
                   Py_ssize_t limit, long rsv_allowed, struct header *h)
{
    if (available < 2)
        return 0;
    unsigned char b1 = p[0], b2 = p[1];
    unsigned opcode = b1 & 0x0F;
    if ((opcode & 0x8) ? (opcode > 0xA || !(b1 & 0x80) || (b1 & 0x70) || (b2 & 0x7F) > 125)
                       : (opcode > 0x2 || (b1 & 0x70 & ~rsv_allowed)))
        return 0;
    int masked = (b2 & 0x80) != 0;
    if (require_mask != -1 && masked != require_mask)
        return 0;
    uint64_t length = b2 & 0x7F;
    Py_ssize_t header = 2;
    if (length == 126) {
        if (available < 4)
            return 0;
        length = ((uint64_t)p[2] << 8) | p[3];
        header = 4;
    }
    else if (length == 127) {
        if (available < 10)
            return 0;
        length = 0;
        for (int i = 2; i < 10; i++)
            length = (length << 8) | p[i];
        header = 10;
    }
    /* Over the limit (even a compressed frame within its bound): Python decides. */
    if ((limit >= 0 && length > (uint64_t)limit) || length > (uint64_t)PY_SSIZE_T_MAX / 2)
        return 0;
    h->key = p + header;
    if (masked)
        header += 4;
    if (available < header || (uint64_t)(available - header) < length)
        return 0;
    h->b1 = b1;
    h->masked = masked;
    h->header_length = header;
    h->length = (Py_ssize_t)length;
    return 1;
}

/* The payload of a parsed frame, unmasked, as new bytes. */
static PyObject *
unmasked_payload(const unsigned char *p, const struct header *h)
{
    PyObject *payload = PyBytes_FromStringAndSize(NULL, h->length);
    if (payload == NULL)
        return NULL;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(payload);
    if (!h->masked) {
        memcpy(out, p + h->header_length, (size_t)h->length);
        return payload;
    }
    unsigned char doubled[8];
    for (int j = 0; j < 8; j++)
        doubled[j] = h->key[j & 3];
    if (h->length >= RELEASE_GIL_FROM) {
        Py_BEGIN_ALLOW_THREADS
        xor_payload(p + h->header_length, out, h->length, doubled);
        Py_END_ALLOW_THREADS
    }
    else {
        xor_payload(p + h->header_length, out, h->length, doubled);
    }
    return payload;
}

/* The arguments both splitters start with: (buf, pos, require_mask, max_frame_size). */
struct split_args {
    Py_buffer view;
    const unsigned char *p;
    Py_ssize_t pos, available, limit;
    int require_mask;
};

static int
get_split_args(const char *name, PyObject *const *args, Py_ssize_t nargs, struct split_args *a)
{
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "%s() takes 5 arguments (%zd given)", name, nargs);
        return -1;
    }
    a->pos = PyNumber_AsSsize_t(args[1], PyExc_OverflowError);
    if (a->pos == -1 && PyErr_Occurred())
        return -1;
    a->require_mask = args[2] == Py_None ? -1 : PyObject_IsTrue(args[2]);
    if (a->require_mask == -1 && args[2] != Py_None)
        return -1;
    a->limit = -1;
    if (args[3] != Py_None) {
        a->limit = PyNumber_AsSsize_t(args[3], PyExc_OverflowError);
        if (a->limit == -1 && PyErr_Occurred())
            return -1;
    }
    if (PyObject_GetBuffer(args[0], &a->view, PyBUF_SIMPLE) < 0)
        return -1;
    a->available = a->pos < 0 || a->pos > a->view.len ? 0 : a->view.len - a->pos;
    a->p = (const unsigned char *)a->view.buf + (a->available ? a->pos : 0);
    return 0;
}

PyDoc_STRVAR(split_frame_doc,
"split_frame(buf, pos, require_mask, max_frame_size, rsv_allowed)\n"
"    -> (first_byte, payload, masking_key, end) | None\n\n"
"The frame starting at `buf[pos]`, its payload unmasked, and where it ends; None unless\n"
"the frame is complete and plainly valid (known opcode, reserved bits only as\n"
"`rsv_allowed` lets data frames have them, a control frame final and of 125 bytes at\n"
"most, masked as `require_mask` asks, within `max_frame_size`). On None the caller\n"
"parses in Python, which tells an incomplete frame from an invalid one.");

static PyObject *
split_frame(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    struct split_args a;
    struct header h;
    PyObject *result = NULL;

    if (get_split_args("split_frame", args, nargs, &a) < 0)
        return NULL;
    long rsv_allowed = PyLong_AsLong(args[4]);
    if (rsv_allowed == -1 && PyErr_Occurred()) {
        PyBuffer_Release(&a.view);
        return NULL;
    }
    if (!parse_plain_header(a.p, a.available, a.require_mask, a.limit, rsv_allowed, &h)) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    PyObject *payload = unmasked_payload(a.p, &h);
    if (payload == NULL)
        goto done;
    PyObject *key = PyBytes_FromStringAndSize(h.masked ? (const char *)h.key : NULL,
                                              h.masked ? 4 : 0);
    if (key == NULL) {
        Py_DECREF(payload);
        goto done;
    }
    result = Py_BuildValue("(iNNn)", (int)h.b1, payload, key,
                           a.pos + h.header_length + h.length);
done:
    PyBuffer_Release(&a.view);
    return result;
}

PyDoc_STRVAR(split_message_doc,
"split_message(buf, pos, require_mask, max_frame_size, max_message_size)\n"
"    -> (opcode, payload, end, utf8) | None\n\n"
"The frame starting at `buf[pos]` if it is a whole message on its own: a complete,\n"
"plainly valid (see split_frame), final text or binary frame without reserved bits,\n"
"within `max_message_size`, a text payload valid UTF-8. The payload is unmasked, a\n"
"text one decoded to str; `utf8` is the text's bytes as they came when it is not all\n"
"ASCII (else None). None otherwise: the caller goes through the frames.");

/* The classes split_messages makes its messages of, and where their slots are: given by
   wspy.protocol.message (message_classes), which owns them. */
static PyTypeObject *text_class, *binary_class;
static Py_ssize_t text_opcode, text_payload, text_utf8, text_utf8_of;
static Py_ssize_t binary_opcode, binary_payload;

/* The offset of the object slot `name` of `type` (a __slots__ member), or -1 with an error. */
static Py_ssize_t
slot_offset(PyTypeObject *type, const char *name)
{
    PyObject *descr = PyObject_GetAttrString((PyObject *)type, name);
    if (descr == NULL)
        return -1;
    Py_ssize_t offset = -1;
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type)
        && ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX)
        offset = ((PyMemberDescrObject *)descr)->d_member->offset;
    else
        PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, name);
    Py_DECREF(descr);
    return offset;
}

PyDoc_STRVAR(message_classes_doc,
"message_classes(text_class, binary_class)\n\n"
"The classes of the messages split_messages makes: instances filled slot by slot\n"
"(opcode, payload; for text also _utf8 and _utf8_of, as\n"
"wspy.protocol.message.received_message fills them), no __init__ called.");

static PyObject *
message_classes(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyType_Check(args[0]) || !PyType_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "message_classes() takes 2 classes");
        return NULL;
    }
    PyTypeObject *text = (PyTypeObject *)args[0], *binary = (PyTypeObject *)args[1];
    static const char *const names[6] = {"opcode", "payload", "_utf8", "_utf8_of", "opcode",
                                         "payload"};
    Py_ssize_t offsets[6];
    for (int i = 0; i < 6; i++) {
        offsets[i] = slot_offset(i < 4 ? text : binary, names[i]);
        if (offsets[i] < 0)
            return NULL;
    }
    Py_XSETREF(text_class, (PyTypeObject *)Py_NewRef(text));
    Py_XSETREF(binary_class, (PyTypeObject *)Py_NewRef(binary));
    text_opcode = offsets[0];
    text_payload = offsets[1];
    text_utf8 = offsets[2];
    text_utf8_of = offsets[3];
    binary_opcode = offsets[4];
    binary_payload = offsets[5];
    Py_RETURN_NONE;
}

#define SLOT(object, offset) (*(PyObject **)((char *)(object) + (offset)))

/* A message of the registered classes, as received_message makes it; steals `payload`
   and `utf8` (a new reference or Py_None, borrowed then). NULL with an error. */
static PyObject *
new_message(unsigned opcode, PyObject *payload, PyObject *utf8)
{
    PyTypeObject *type = opcode == 1 ? text_class : binary_class;
    PyObject *message = type->tp_alloc(type, 0);
    if (message == NULL) {
        Py_DECREF(payload);
        if (utf8 != Py_None)
            Py_DECREF(utf8);
        return NULL;
    }
    PyObject *code = PyLong_FromLong((long)opcode);  /* a small int: cached */
    if (opcode == 1) {
        SLOT(message, text_opcode) = code;
        SLOT(message, text_payload) = payload;
        if (utf8 == Py_None) {
            SLOT(message, text_utf8_of) = Py_NewRef(Py_None);
        }
        else {
            SLOT(message, text_utf8_of) = Py_NewRef(payload);
            SLOT(message, text_utf8) = utf8;
        }
    }
    else {
        SLOT(message, binary_opcode) = code;
        SLOT(message, binary_payload) = payload;
    }
    return message;
}

/* The message of the frame at the start of p[0:available] (see split_message_doc) as a
   new (opcode, payload, utf8) in *item, and the frame's length in *used. Returns 1 with
   them, 0 when the frame is not a whole valid message (nothing set), -1 on an error. */
static int
split_one(const unsigned char *p, Py_ssize_t available, int require_mask, Py_ssize_t limit,
          Py_ssize_t message_limit, int as_message, PyObject **item, Py_ssize_t *used)
{
    struct header h;
    unsigned opcode = available ? p[0] & 0x0F : 0;
    if (!(available && (p[0] & 0xF0) == 0x80 && (opcode == 1 || opcode == 2)
          && parse_plain_header(p, available, require_mask, limit, 0, &h)
          && (message_limit < 0 || h.length <= message_limit)))
        return 0;
    PyObject *payload = unmasked_payload(p, &h);
    if (payload == NULL)
        return -1;
    PyObject *utf8 = Py_None;
    if (opcode == 1) {
        PyObject *text = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(payload),
                                              PyBytes_GET_SIZE(payload), "strict");
        if (text == NULL) {
            Py_DECREF(payload);
            if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
                return -1;
            PyErr_Clear();  /* invalid UTF-8: Python fails the connection with 1007 */
            return 0;
        }
        /* Kept for sending the message on without encoding it again (an ASCII str's
           encoding is a copy of its characters already). */
        if (!PyUnicode_IS_ASCII(text))
            utf8 = payload;
        else
            Py_DECREF(payload);
        payload = text;
    }
    *used = h.header_length + h.length;
    if (as_message) {
        *item = new_message(opcode, payload, utf8);
        return *item == NULL ? -1 : 1;
    }
    if (utf8 == Py_None)
        Py_INCREF(utf8);
    *item = PyTuple_New(3);
    if (*item == NULL) {
        Py_DECREF(payload);
        Py_DECREF(utf8);
        return -1;
    }
    PyTuple_SET_ITEM(*item, 0, PyLong_FromLong((long)opcode));  /* small ints: cached */
    PyTuple_SET_ITEM(*item, 1, payload);
    PyTuple_SET_ITEM(*item, 2, utf8);
    return 1;
}

static int
get_message_limit(PyObject *arg, Py_ssize_t *limit)
{
    *limit = -1;
    if (arg != Py_None) {
        *limit = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
        if (*limit == -1 && PyErr_Occurred())
            return -1;
    }
    return 0;
}

static PyObject *
split_message(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    struct split_args a;
    Py_ssize_t message_limit, used;
    PyObject *item = NULL, *result = NULL;

    if (get_split_args("split_message", args, nargs, &a) < 0)
        return NULL;
    if (get_message_limit(args[4], &message_limit) < 0)
        goto done;
    switch (split_one(a.p, a.available, a.require_mask, a.limit, message_limit, 0, &item,
                      &used)) {
    case 0:
        result = Py_NewRef(Py_None);
        break;
    case 1:
        result = Py_BuildValue("(OOnO)", PyTuple_GET_ITEM(item, 0), PyTuple_GET_ITEM(item, 1),
                               a.pos + used, PyTuple_GET_ITEM(item, 2));
        Py_DECREF(item);
        break;
    }
done:
    PyBuffer_Release(&a.view);
    return result;
}

PyDoc_STRVAR(split_messages_doc,
"split_messages(buf, pos, require_mask, max_frame_size, max_message_size)\n"
"    -> (messages, end)\n\n"
"Every frame from `buf[pos]` on that is a whole message on its own (as split_message\n"
"takes them), up to the first that is not: a list of messages of the classes given to\n"
"message_classes, and where the last of them ends (`pos` when there is none). One call\n"
"for all the messages of a read instead of one each.\n\n"
"Raises:\n"
"    RuntimeError: message_classes was not called.");

/* One call a read, not one a message: a C call and the Python around it each message were
   a fifth of AsyncServer's instructions per message (20,800 to 16,800; callgrind,
   bench/run.py '16 B text echo, 64 x 16'). */
static PyObject *
split_messages(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    struct split_args a;
    Py_ssize_t message_limit, used, offset = 0;
    PyObject *item, *list = NULL, *result = NULL;

    if (text_class == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "split_messages() before message_classes()");
        return NULL;
    }
    if (get_split_args("split_messages", args, nargs, &a) < 0)
        return NULL;
    if (get_message_limit(args[4], &message_limit) < 0)
        goto done;
    list = PyList_New(0);
    if (list == NULL)
        goto done;
    for (;;) {
        int found = split_one(a.p + offset, a.available - offset, a.require_mask, a.limit,
                              message_limit, 1, &item, &used);
        if (found < 0)
            goto done;
        if (!found)
            break;
        if (PyList_Append(list, item) < 0) {
            Py_DECREF(item);
            goto done;
        }
        Py_DECREF(item);
        offset += used;
    }
    result = Py_BuildValue("(On)", list, a.pos + offset);
done:
    Py_XDECREF(list);
    PyBuffer_Release(&a.view);
    return result;
}

PyDoc_STRVAR(unmasked_frame_doc,
"unmasked_frame(opcode, payload) -> (data, rest)\n\n"
"A final, unmasked frame without RSV bits: (its bytes, b''), or for a payload of 64 KiB\n"
"and more (its header, payload). As wspy.protocol.frame.unmasked_frame.");

/* One C call instead of a Python one, a struct.pack and a concatenation: 1,500
   instructions a message sent (16,800 to 15,300 per message; callgrind, bench/run.py
   '16 B text echo, 64 x 16'). */
static PyObject *
unmasked_frame(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer payload;
    unsigned char header[10];
    Py_ssize_t header_length;
    PyObject *data, *rest, *result;

    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "unmasked_frame() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    long opcode = PyLong_AsLong(args[0]);
    if (opcode == -1 && PyErr_Occurred())
        return NULL;
    if (opcode < 0 || opcode > 0x7F) {
        PyErr_SetString(PyExc_ValueError, "opcode out of range");
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &payload, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t n = payload.len;
    header[0] = (unsigned char)(0x80 | opcode);
    if (n < 126) {
        header[1] = (unsigned char)n;
        header_length = 2;
    }
    else if (n < 0x10000) {
        header[1] = 126;
        header[2] = (unsigned char)(n >> 8);
        header[3] = (unsigned char)n;
        header_length = 4;
    }
    else {
        header[1] = 127;
        for (int i = 0; i < 8; i++)
            header[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
        header_length = 10;
    }
    if (n < 0x10000) {  /* one buffer: the header and a copy of the payload */
        data = PyBytes_FromStringAndSize(NULL, header_length + n);
        if (data != NULL) {
            memcpy(PyBytes_AS_STRING(data), header, (size_t)header_length);
            memcpy(PyBytes_AS_STRING(data) + header_length, payload.buf, (size_t)n);
        }
        rest = PyBytes_FromStringAndSize(NULL, 0);
    }
    else {  /* the header alone: the payload goes out after it, not copied */
        data = PyBytes_FromStringAndSize((const char *)header, header_length);
        rest = Py_NewRef(args[1]);
    }
    PyBuffer_Release(&payload);
    if (data == NULL || rest == NULL) {
        Py_XDECREF(data);
        Py_XDECREF(rest);
        return NULL;
    }
    result = PyTuple_New(2);
    if (result == NULL) {
        Py_DECREF(data);
        Py_DECREF(rest);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, data);
    PyTuple_SET_ITEM(result, 1, rest);
    return result;
}

PyDoc_STRVAR(utf8_check_doc,
"utf8_check(data, state) -> int\n\n"
"Check that `data` continues valid UTF-8 from `state` (0 at a character boundary, else\n"
"what an earlier call returned). Returns the state after it, or -1 at the first byte\n"
"that no valid UTF-8 can have there (surrogates and code points above U+10FFFF included).");

/* UTF-8 as a small automaton. Each byte falls in one of 12 classes; a state is a row of
   16 next states (its number times 16, so that a step is one lookup). States: 0 at a
   character boundary; 1, 2, 3 continuation bytes still expected (80-BF each); 4 after E0
   (next A0-BF), 5 after ED (80-9F: no surrogates), 6 after F0 (90-BF), 7 after F4 (80-8F:
   nothing above U+10FFFF); 8 rejected, for good. */
enum { ASCII, C80_8F, C90_9F, CA0_BF, LEAD2, E0, LEAD3, ED, F0, LEAD4, F4, BAD };
#define UTF8_REJECT (8 * 16)
static unsigned char utf8_class[256];
static unsigned char utf8_next[9 * 16];

static void
utf8_tables_init(void)
{
    for (int b = 0; b < 256; b++)
        utf8_class[b] = b < 0x80 ? ASCII : b < 0x90 ? C80_8F : b < 0xA0 ? C90_9F
                      : b < 0xC0 ? CA0_BF : b < 0xC2 ? BAD : b < 0xE0 ? LEAD2
                      : b == 0xE0 ? E0 : b == 0xED ? ED : b < 0xF0 ? LEAD3
                      : b == 0xF0 ? F0 : b < 0xF4 ? LEAD4 : b == 0xF4 ? F4 : BAD;
    memset(utf8_next, UTF8_REJECT, sizeof utf8_next);
    unsigned char *from_boundary = utf8_next;
    from_boundary[ASCII] = 0;
    from_boundary[LEAD2] = 1 * 16;
    from_boundary[LEAD3] = 2 * 16;
    from_boundary[LEAD4] = 3 * 16;
    from_boundary[E0] = 4 * 16;
    from_boundary[ED] = 5 * 16;
    from_boundary[F0] = 6 * 16;
    from_boundary[F4] = 7 * 16;
    for (int expected = 1; expected <= 3; expected++)
        for (int c = C80_8F; c <= CA0_BF; c++)
            utf8_next[expected * 16 + c] = (expected - 1) * 16;
    utf8_next[4 * 16 + CA0_BF] = 1 * 16;
    utf8_next[5 * 16 + C80_8F] = utf8_next[5 * 16 + C90_9F] = 1 * 16;
    utf8_next[6 * 16 + C90_9F] = utf8_next[6 * 16 + CA0_BF] = 2 * 16;
    utf8_next[7 * 16 + C80_8F] = 2 * 16;
}

/* The state after p[0:n] from `state` (a state number), or -1 if rejected. Sixteen bytes a
   step: skipped at once if all ASCII at a character boundary, else through the automaton
   (the rejected state is a sink: checked once a step). */
static long
utf8_advance(const unsigned char *p, Py_ssize_t n, long state)
{
    unsigned s = (unsigned)state * 16;
    Py_ssize_t i = 0;
    for (; i + 16 <= n; i += 16) {
        if (s == 0) {
            uint64_t a, b;
            memcpy(&a, p + i, 8);
            memcpy(&b, p + i + 8, 8);
            if (!((a | b) & 0x8080808080808080ULL))
                continue;
        }
        for (int j = 0; j < 16; j++)
            s = utf8_next[s + utf8_class[p[i + j]]];
        if (s == UTF8_REJECT)
            return -1;
    }
    for (; i < n; i++)
        s = utf8_next[s + utf8_class[p[i]]];
    return s == UTF8_REJECT ? -1 : (long)(s / 16);
}

static PyObject *
utf8_check(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "utf8_check() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    long state = PyLong_AsLong(args[1]);
    if (state == -1 && PyErr_Occurred())
        return NULL;
    if (state < 0 || state > 7) {
        PyErr_SetString(PyExc_ValueError, "not a state utf8_check returned");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0)
        return NULL;
    long result;
    if (data.len >= RELEASE_GIL_FROM) {
        Py_BEGIN_ALLOW_THREADS
        result = utf8_advance(data.buf, data.len, state);
        Py_END_ALLOW_THREADS
    }
    else {
        result = utf8_advance(data.buf, data.len, state);
    }
    PyBuffer_Release(&data);
    return PyLong_FromLong(result);
}

static PyMethodDef speedups_methods[] = {
    {"mask", (PyCFunction)(void (*)(void))mask, METH_FASTCALL, mask_doc},
    {"split_frame", (PyCFunction)(void (*)(void))split_frame, METH_FASTCALL, split_frame_doc},
    {"split_message", (PyCFunction)(void (*)(void))split_message, METH_FASTCALL,
     split_message_doc},
    {"message_classes", (PyCFunction)(void (*)(void))message_classes, METH_FASTCALL,
     message_classes_doc},
    {"split_messages", (PyCFunction)(void (*)(void))split_messages, METH_FASTCALL,
     split_messages_doc},
    {"unmasked_frame", (PyCFunction)(void (*)(void))unmasked_frame, METH_FASTCALL,
     unmasked_frame_doc},
    {"utf8_check", (PyCFunction)(void (*)(void))utf8_check, METH_FASTCALL, utf8_check_doc},
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
    utf8_tables_init();
    return PyModule_Create(&speedups_module);
}
