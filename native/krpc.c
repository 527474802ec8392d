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
   - parse_reply(datagram) reads, for the client side (a lookup's, a crawler's), a reply
     of the plain kinds (find_node, get_peers, sample_infohashes: id, nodes, nodes6,
     token, values, samples, num, interval) in canonical bencode; anything else is None
     and goes to Python's decoder. mldht.krpc.response_from_fields makes of its fields the
     Response that Python's decoder makes.

   It decides nothing: which nodes are in the table, the tokens (a hash of a secret the
   engine rotates: Python's hashlib), the peers and every bookkeeping step stay in Python (mldht/native.py chooses it). No allocation but the
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

struct keys {
    const unsigned char *previous;
    Py_ssize_t previous_length;
};

/* Opens a dictionary: 0 when the next value is not one. */
static int
open_dict(struct cursor *c, struct keys *keys)
{
    if (c->at >= c->end || *c->at != 'd')
        return 0;
    c->at++;
    keys->previous = NULL;
    keys->previous_length = 0;
    return 1;
}

/* The next key of an open dictionary, keys strictly increasing: 1 with the key, 0 at the
   dictionary's end (read past), -1 when the input is not canonical bencode. */
static int
next_key(struct cursor *c, struct keys *keys, const unsigned char **key, Py_ssize_t *length)
{
    if (c->at >= c->end)
        return -1;
    if (*c->at == 'e') {
        c->at++;
        return 0;
    }
    if (!read_string(c, key, length) || !in_order(keys->previous, keys->previous_length, *key, *length))
        return -1;
    keys->previous = *key;
    keys->previous_length = *length;
    return 1;
}

/* A message's `t`, `v` and `y`, read by both parsers. */
struct envelope {
    const unsigned char *t, *v;
    Py_ssize_t t_length, v_length;
    unsigned char y;
};

/* A top-level string of a message: 1 when it is `t`, `v` or `y` and taken, 0 when the key
   is another, -1 when its value cannot be (a `t` over 64 bytes, a `y` not one letter). */
static int
envelope_key(struct envelope *e, const unsigned char *key, Py_ssize_t key_length,
             const unsigned char *value, Py_ssize_t value_length)
{
    if (is_key(key, key_length, "t")) {
        if (value_length > MAX_TRANSACTION_ID)
            return -1;
        e->t = value;
        e->t_length = value_length;
    } else if (is_key(key, key_length, "v")) {
        e->v = value;
        e->v_length = value_length;
    } else if (is_key(key, key_length, "y")) {
        if (value_length != 1)
            return -1;
        e->y = *value;
    } else
        return 0;
    return 1;
}

struct plain {
    struct envelope e;
    const unsigned char *q, *id, *target;
    Py_ssize_t q_length;
    int read_only, arguments, has_target, has_info_hash;
};

/* The `a` dictionary: `id` and at most one of `info_hash` and `target`, 20 bytes each. */
static int
read_arguments(struct cursor *c, struct plain *plain)
{
    struct keys keys;
    const unsigned char *key, *value;
    Py_ssize_t key_length, value_length;
    int more;
    if (!open_dict(c, &keys))
        return 0;
    while ((more = next_key(c, &keys, &key, &key_length)) > 0) {
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
    return more == 0 && plain->id != NULL;
}

static int
parse(const unsigned char *data, Py_ssize_t size, struct plain *plain)
{
    struct cursor c = {data, data + size};
    struct keys keys;
    const unsigned char *key, *value;
    Py_ssize_t key_length, value_length;
    int has_arguments = 0, more;
    memset(plain, 0, sizeof *plain);
    if (!open_dict(&c, &keys))
        return 0;
    while ((more = next_key(&c, &keys, &key, &key_length)) > 0) {
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
            int taken = envelope_key(&plain->e, key, key_length, value, value_length);
            if (taken < 0)
                return 0;
            if (!taken) {
                if (!is_key(key, key_length, "q"))
                    return 0;
                plain->q = value;
                plain->q_length = value_length;
            }
        }
    }
    /* The dictionary's end must be the datagram's end. */
    if (more != 0 || c.at != c.end)
        return 0;
    return has_arguments && plain->e.y == 'q' && plain->e.t != NULL && plain->q != NULL;
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
    (void)module;
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
    PyObject *version = plain.e.v != NULL
        ? PyBytes_FromStringAndSize((const char *)plain.e.v, plain.e.v_length)
        : Py_NewRef(Py_None);
    PyObject *result = NULL;
    if (target != NULL && version != NULL)
        result = Py_BuildValue("(Oy#y#OOi)", method, (const char *)plain.e.t, plain.e.t_length,
                               (const char *)plain.id, (Py_ssize_t)ID_BYTES, target, version,
                               plain.read_only);
    Py_XDECREF(target);
    Py_XDECREF(version);
    PyBuffer_Release(&view);
    return result;
}

/* A canonical integer (no leading zero, no -0) of at most 18 digits. */
static int
read_int(struct cursor *c, long long *out)
{
    const unsigned char *p = c->at;
    int negative = 0, digits = 0;
    long long value = 0;
    if (p >= c->end || *p != 'i')
        return 0;
    p++;
    if (p < c->end && *p == '-') {
        negative = 1;
        p++;
    }
    const unsigned char *first = p;
    while (p < c->end && *p >= '0' && *p <= '9') {
        if (++digits > 18)
            return 0;
        value = value * 10 + (*p - '0');
        p++;
    }
    if (digits == 0 || p >= c->end || *p != 'e')
        return 0;
    if (*first == '0' && (digits > 1 || negative))
        return 0;
    *out = negative ? -value : value;
    c->at = p + 1;
    return 1;
}

struct reply {
    struct envelope e;
    const unsigned char *ip, *id, *nodes, *nodes6, *token, *samples;
    Py_ssize_t ip_length, nodes_length, nodes6_length, token_length, samples_length;
    const unsigned char *values_at; /* the list's first item, when there is a list */
    Py_ssize_t values_count;
    long long num, interval;
    int has_body, has_num, has_interval;
};

/* The `values` list: 6- or 18-byte strings. */
static int
read_values(struct cursor *c, struct reply *reply)
{
    if (c->at >= c->end || *c->at != 'l')
        return 0;
    c->at++;
    reply->values_at = c->at;
    while (c->at < c->end && *c->at != 'e') {
        const unsigned char *item;
        Py_ssize_t length;
        if (!read_string(c, &item, &length) || (length != 6 && length != 18))
            return 0;
        reply->values_count++;
    }
    if (c->at >= c->end)
        return 0;
    c->at++;
    return 1;
}

static int
read_body(struct cursor *c, struct reply *reply)
{
    struct keys keys;
    const unsigned char *key, *value;
    Py_ssize_t key_length, value_length;
    int more;
    if (!open_dict(c, &keys))
        return 0;
    while ((more = next_key(c, &keys, &key, &key_length)) > 0) {
        if (is_key(key, key_length, "values")) {
            if (!read_values(c, reply))
                return 0;
            continue;
        }
        if (is_key(key, key_length, "num") || is_key(key, key_length, "interval")) {
            int num = is_key(key, key_length, "num");
            if (!read_int(c, num ? &reply->num : &reply->interval))
                return 0;
            *(num ? &reply->has_num : &reply->has_interval) = 1;
            continue;
        }
        if (!read_string(c, &value, &value_length))
            return 0;
        if (is_key(key, key_length, "id")) {
            if (value_length != ID_BYTES)
                return 0;
            reply->id = value;
        } else if (is_key(key, key_length, "nodes")) {
            if (value_length % 26)
                return 0;
            reply->nodes = value;
            reply->nodes_length = value_length;
        } else if (is_key(key, key_length, "nodes6")) {
            if (value_length % 38)
                return 0;
            reply->nodes6 = value;
            reply->nodes6_length = value_length;
        } else if (is_key(key, key_length, "token")) {
            reply->token = value;
            reply->token_length = value_length;
        } else if (is_key(key, key_length, "samples")) {
            reply->samples = value;
            reply->samples_length = value_length;
        } else
            return 0;
    }
    return more == 0 && reply->id != NULL;
}

static int
parse_reply_fields(const unsigned char *data, Py_ssize_t size, struct reply *reply)
{
    struct cursor c = {data, data + size};
    struct keys keys;
    const unsigned char *key, *value;
    Py_ssize_t key_length, value_length;
    int more;
    memset(reply, 0, sizeof *reply);
    if (!open_dict(&c, &keys))
        return 0;
    while ((more = next_key(&c, &keys, &key, &key_length)) > 0) {
        if (is_key(key, key_length, "r")) {
            if (!read_body(&c, reply))
                return 0;
            reply->has_body = 1;
            continue;
        }
        if (!read_string(&c, &value, &value_length))
            return 0;
        int taken = envelope_key(&reply->e, key, key_length, value, value_length);
        if (taken < 0)
            return 0;
        if (!taken) {
            if (!is_key(key, key_length, "ip") || (value_length != 6 && value_length != 18))
                return 0;
            reply->ip = value;
            reply->ip_length = value_length;
        }
    }
    if (more != 0 || c.at != c.end)
        return 0;
    return reply->has_body && reply->e.y == 'r' && reply->e.t != NULL;
}

static PyObject *
bytes_or_none(const unsigned char *at, Py_ssize_t length)
{
    return at != NULL ? PyBytes_FromStringAndSize((const char *)at, length) : Py_NewRef(Py_None);
}

PyDoc_STRVAR(parse_reply_doc,
"parse_reply(datagram) -> (t, v, ip, id, nodes, nodes6, token, values, samples, num,\n"
"interval) or None\n\n"
"The fields of a datagram that is exactly a plain reply in canonical bencode: at the top\n"
"only `ip` (6 or 18 bytes), `r`, `t` (at most 64 bytes), `v` and `y` (`r`); in `r` only\n"
"`id` (20 bytes), `interval` and `num` (integers), `nodes` (26-byte entries), `nodes6`\n"
"(38-byte entries), `samples`, `token` (strings) and `values` (a list of 6- or 18-byte\n"
"strings). Absent fields are None; `values` is a list of bytes. None for anything else.");

static PyObject *
parse_reply(PyObject *module, PyObject *arg)
{
    (void)module;
    Py_buffer view;
    struct reply reply;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (!parse_reply_fields((const unsigned char *)view.buf, view.len, &reply)) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    PyObject *values = Py_NewRef(Py_None);
    if (reply.values_at != NULL) {
        Py_DECREF(values);
        values = PyList_New(reply.values_count);
        struct cursor c = {reply.values_at, (const unsigned char *)view.buf + view.len};
        for (Py_ssize_t i = 0; values != NULL && i < reply.values_count; i++) {
            const unsigned char *item;
            Py_ssize_t length;
            read_string(&c, &item, &length); /* read once already: cannot fail */
            PyObject *one = PyBytes_FromStringAndSize((const char *)item, length);
            if (one == NULL) {
                Py_CLEAR(values);
                break;
            }
            PyList_SET_ITEM(values, i, one);
        }
    }
    PyObject *fields[11] = {
        bytes_or_none(reply.e.t, reply.e.t_length), bytes_or_none(reply.e.v, reply.e.v_length),
        bytes_or_none(reply.ip, reply.ip_length), bytes_or_none(reply.id, ID_BYTES),
        bytes_or_none(reply.nodes, reply.nodes_length),
        bytes_or_none(reply.nodes6, reply.nodes6_length),
        bytes_or_none(reply.token, reply.token_length), values,
        bytes_or_none(reply.samples, reply.samples_length),
        reply.has_num ? PyLong_FromLongLong(reply.num) : Py_NewRef(Py_None),
        reply.has_interval ? PyLong_FromLongLong(reply.interval) : Py_NewRef(Py_None),
    };
    PyObject *result = PyTuple_New(11);
    for (int i = 0; i < 11; i++) {
        if (fields[i] == NULL || result == NULL) {
            Py_CLEAR(result);
            break;
        }
    }
    if (result != NULL) {
        for (int i = 0; i < 11; i++)
            PyTuple_SET_ITEM(result, i, fields[i]);
    } else {
        for (int i = 0; i < 11; i++)
            Py_XDECREF(fields[i]);
    }
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
    (void)module;
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
    {"parse_reply", parse_reply, METH_O, parse_reply_doc},
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
