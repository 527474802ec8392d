/* mldht._krpc: the codec of the quick path, in C.

   Nearly every query a DHT node gets is a plain ping, find_node or get_peers. Python's
   quick path (mldht/server.py, QueryHandler.quick_reply) decodes each into a dict, checks
   its form and looks for the closest nodes in the routing table; this module does the two
   costly parts of that without Python objects:

   - parse_plain_query(datagram) reads a datagram that is exactly a plain query in
     canonical bencode and returns its fields; anything else (another form, extra keys,
     keys out of order, any doubt) returns None and goes to the Python path, which then
     answers it as before. What it accepts, Python's decoder reads to the same values and
     QueryHandler.quick_reply accepts (tests/test_native_krpc.py holds it to that).
   - closest_compact(blob, width, target, count, exclude) picks the `count` entries
     closest to `target` by XOR distance from the routing table's cached compact forms.

   It decides nothing: which nodes are in the table, the tokens, the peers and every
   bookkeeping step stay in Python (mldht/native.py chooses it). No allocation but the
   returned objects; every read is bounded by the datagram's length. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#define ID_BYTES 20
#define MAX_TRANSACTION_ID 64 /* mldht.krpc.MAX_TRANSACTION_ID_LENGTH */
#define MAX_COUNT 64

static PyObject *name_ping, *name_find_node, *name_get_peers;

struct cursor {
    const unsigned char *at;
    const unsigned char *end;
};

/* A byte string in canonical form (no leading zero in its length); its bytes in *out. */
static int
read_string(struct cursor *c, const unsigned char **out, Py_ssize_t *length)
{
    const unsigned char *p = c->at;
    Py_ssize_t n = 0;
    int digits = 0;
    while (p < c->end && *p >= '0' && *p <= '9') {
        if (digits == 0 && *p == '0' && p + 1 < c->end && p[1] != ':')
            return 0; /* leading zero */
        n = n * 10 + (*p - '0');
        if (++digits > 6)
            return 0; /* longer than any datagram */
        p++;
    }
    if (digits == 0 || p >= c->end || *p != ':')
        return 0;
    p++;
    if (n > c->end - p)
        return 0;
    *out = p;
    *length = n;
    c->at = p + n;
    return 1;
}

static int
is_key(const unsigned char *key, Py_ssize_t length, const char *name)
{
    return (size_t)length == strlen(name) && memcmp(key, name, (size_t)length) == 0;
}

/* Keys of a canonical dictionary come in strictly increasing byte order. */
static int
in_order(const unsigned char *previous, Py_ssize_t previous_length,
         const unsigned char *key, Py_ssize_t length)
{
    if (previous == NULL)
        return 1;
    Py_ssize_t shorter = previous_length < length ? previous_length : length;
    int order = memcmp(previous, key, (size_t)shorter);
    return order < 0 || (order == 0 && previous_length < length);
}

struct plain {
    const unsigned char *t, *q, *v, *id, *target;
    Py_ssize_t t_length, q_length, v_length;
    int has_y_query, read_only, arguments, has_target, has_info_hash;
};

/* The `a` dictionary: `id` and at most one of `info_hash` and `target`, 20 bytes each. */
static int
read_arguments(struct cursor *c, struct plain *plain)
{
    const unsigned char *previous = NULL;
    Py_ssize_t previous_length = 0;
    if (c->at >= c->end || *c->at != 'd')
        return 0;
    c->at++;
    while (c->at < c->end && *c->at != 'e') {
        const unsigned char *key, *value;
        Py_ssize_t key_length, value_length;
        if (!read_string(c, &key, &key_length) || !in_order(previous, previous_length, key, key_length))
            return 0;
        previous = key;
        previous_length = key_length;
        if (!read_string(c, &value, &value_length) || value_length != ID_BYTES)
            return 0;
        if (is_key(key, key_length, "id"))
            plain->id = value;
        else if (is_key(key, key_length, "info_hash")) {
            plain->target = value;
            plain->has_info_hash = 1;
        } else if (is_key(key, key_length, "target")) {
            plain->target = value;
            plain->has_target = 1;
        } else
            return 0;
        plain->arguments++;
    }
    if (c->at >= c->end)
        return 0;
    c->at++;
    return plain->id != NULL;
}

static int
parse(const unsigned char *data, Py_ssize_t size, struct plain *plain)
{
    struct cursor c = {data, data + size};
    const unsigned char *previous = NULL;
    Py_ssize_t previous_length = 0;
    int has_arguments = 0;
    memset(plain, 0, sizeof *plain);
    if (size < 2 || *c.at != 'd')
        return 0;
    c.at++;
    while (c.at < c.end && *c.at != 'e') {
        const unsigned char *key, *value;
        Py_ssize_t key_length, value_length;
        if (!read_string(&c, &key, &key_length) || !in_order(previous, previous_length, key, key_length))
            return 0;
        previous = key;
        previous_length = key_length;
        if (is_key(key, key_length, "a")) {
            if (!read_arguments(&c, plain))
                return 0;
            has_arguments = 1;
        } else if (is_key(key, key_length, "ro")) {
            /* Only i0e and i1e: other integers go to the Python path. */
            if (c.end - c.at < 3 || c.at[0] != 'i' || (c.at[1] != '0' && c.at[1] != '1') ||
                c.at[2] != 'e')
                return 0;
            plain->read_only = c.at[1] == '1';
            c.at += 3;
        } else {
            if (!read_string(&c, &value, &value_length))
                return 0;
            if (is_key(key, key_length, "q")) {
                plain->q = value;
                plain->q_length = value_length;
            } else if (is_key(key, key_length, "t")) {
                if (value_length > MAX_TRANSACTION_ID)
                    return 0;
                plain->t = value;
                plain->t_length = value_length;
            } else if (is_key(key, key_length, "v")) {
                plain->v = value;
                plain->v_length = value_length;
            } else if (is_key(key, key_length, "y")) {
                if (value_length != 1 || *value != 'q')
                    return 0;
                plain->has_y_query = 1;
            } else
                return 0;
        }
    }
    /* The dictionary's end must be the datagram's end. */
    if (c.at >= c.end || c.at + 1 != c.end)
        return 0;
    return has_arguments && plain->has_y_query && plain->t != NULL && plain->q != NULL;
}

PyDoc_STRVAR(parse_plain_query_doc,
"parse_plain_query(datagram) -> (method, t, id, target, v, ro) or None\n\n"
"The fields of a datagram that is exactly a plain query in canonical bencode: ping with\n"
"only `id`, find_node with only `id` and `target`, get_peers with only `id` and\n"
"`info_hash`, and at the top only `a`, `q`, `t` (at most 64 bytes), `y` (`q`), `v` (a\n"
"string) and `ro` (0 or 1). `method` is b'ping', b'find_node' or b'get_peers'; `target`\n"
"is None for ping, `v` None when absent, `ro` 0 when absent. None for anything else.");

static PyObject *
parse_plain_query(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    struct plain plain;
    PyObject *method;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    int ok = parse((const unsigned char *)view.buf, view.len, &plain);
    if (ok) {
        if (plain.q_length == 4 && memcmp(plain.q, "ping", 4) == 0)
            ok = plain.arguments == 1 ? (method = name_ping, 1) : 0;
        else if (plain.q_length == 9 && memcmp(plain.q, "find_node", 9) == 0)
            ok = plain.arguments == 2 && plain.has_target ? (method = name_find_node, 1) : 0;
        else if (plain.q_length == 9 && memcmp(plain.q, "get_peers", 9) == 0)
            ok = plain.arguments == 2 && plain.has_info_hash ? (method = name_get_peers, 1) : 0;
        else
            ok = 0;
    }
    if (!ok) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    PyObject *target = method != name_ping
        ? PyBytes_FromStringAndSize((const char *)plain.target, ID_BYTES)
        : Py_NewRef(Py_None);
    PyObject *version = plain.v != NULL
        ? PyBytes_FromStringAndSize((const char *)plain.v, plain.v_length)
        : Py_NewRef(Py_None);
    PyObject *result = NULL;
    if (target != NULL && version != NULL)
        result = Py_BuildValue("(Oy#y#OOi)", method, (const char *)plain.t, plain.t_length,
                               (const char *)plain.id, (Py_ssize_t)ID_BYTES, target, version,
                               plain.read_only);
    Py_XDECREF(target);
    Py_XDECREF(version);
    PyBuffer_Release(&view);
    return result;
}

/* XOR distance of an id to the target, compared byte by byte from the top. */
static int
closer(const unsigned char *a, const unsigned char *b, const unsigned char *target)
{
    for (int i = 0; i < ID_BYTES; i++) {
        unsigned char x = a[i] ^ target[i], y = b[i] ^ target[i];
        if (x != y)
            return x < y;
    }
    return 0;
}

PyDoc_STRVAR(closest_compact_doc,
"closest_compact(blob, width, target, count, exclude) -> bytes\n\n"
"`blob` holds compact node infos of `width` bytes each (26: IPv4, 38: IPv6), ids first\n"
"and all different; returns the `count` (at most 64) closest to the 20-byte `target` by\n"
"XOR distance, closest first, joined, leaving out the one whose address (the bytes after\n"
"the id) equals `exclude`.");

static PyObject *
closest_compact(PyObject *module, PyObject *args)
{
    Py_buffer blob, target, exclude;
    Py_ssize_t width, count;
    const unsigned char *chosen[MAX_COUNT];
    Py_ssize_t found = 0;
    if (!PyArg_ParseTuple(args, "y*ny*ny*", &blob, &width, &target, &count, &exclude))
        return NULL;
    PyObject *result = NULL;
    if (width != 26 && width != 38) {
        PyErr_SetString(PyExc_ValueError, "width is 26 or 38");
        goto done;
    }
    if (blob.len % width != 0 || target.len != ID_BYTES || count < 0 || count > MAX_COUNT) {
        PyErr_SetString(PyExc_ValueError,
                        "blob is a whole number of entries, target 20 bytes, count 0 to 64");
        goto done;
    }
    const unsigned char *base = blob.buf, *goal = target.buf;
    Py_ssize_t address_bytes = width - ID_BYTES;
    int excluding = exclude.len == address_bytes;
    for (Py_ssize_t offset = 0; offset < blob.len; offset += width) {
        const unsigned char *entry = base + offset;
        if (excluding && memcmp(entry + ID_BYTES, exclude.buf, (size_t)address_bytes) == 0)
            continue;
        if (found == count && (count == 0 || !closer(entry, chosen[found - 1], goal)))
            continue;
        /* Insert in order; the farthest falls off when the list is full. */
        Py_ssize_t position = found < count ? found++ : found - 1;
        while (position > 0 && closer(entry, chosen[position - 1], goal)) {
            chosen[position] = chosen[position - 1];
            position--;
        }
        chosen[position] = entry;
    }
    result = PyBytes_FromStringAndSize(NULL, found * width);
    if (result != NULL) {
        char *out = PyBytes_AS_STRING(result);
        for (Py_ssize_t i = 0; i < found; i++)
            memcpy(out + i * width, chosen[i], (size_t)width);
    }
done:
    PyBuffer_Release(&blob);
    PyBuffer_Release(&target);
    PyBuffer_Release(&exclude);
    return result;
}

static PyMethodDef methods[] = {
    {"parse_plain_query", parse_plain_query, METH_O, parse_plain_query_doc},
    {"closest_compact", closest_compact, METH_VARARGS, closest_compact_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "mldht._krpc",
    "The quick path's codec in C: plain queries read, closest compact nodes picked.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__krpc(void)
{
    name_ping = PyBytes_FromString("ping");
    name_find_node = PyBytes_FromString("find_node");
    name_get_peers = PyBytes_FromString("get_peers");
    if (!name_ping || !name_find_node || !name_get_peers)
        return NULL;
    return PyModule_Create(&module);
}
