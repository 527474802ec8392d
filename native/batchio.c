/* mldht._batchio: one system call per batch of UDP datagrams (Linux recvmmsg/sendmmsg).

   Python's socket module reads and sends one datagram per call; a node under load pays a
   system call and its wrapper for every query and every reply. This module reads up to
   BATCH datagrams with one recvmmsg and sends a list with one sendmmsg per BATCH, and
   gives back exactly what socket.recvfrom would have: (bytes, address) pairs, addresses
   as (ip, port) or (ip, port, flowinfo, scope_id). It is a transport only: everything
   else stays in Python (mldht/udp.py chooses it, mldht/batchio.py wraps it).

   The GIL is held throughout: the sockets are non-blocking, and the receive buffers are
   static (allocated once, BATCH * 64 KiB) so that no datagram is ever truncated. */

#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define BATCH 64
#define SLOT_BYTES 65536 /* more than the largest UDP payload: nothing is cut */

static char *slots; /* BATCH * SLOT_BYTES, on first use */

static PyObject *
address_of(const struct sockaddr_storage *storage)
{
    char host[NI_MAXHOST];
    if (storage->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)storage;
        if (inet_ntop(AF_INET, &a->sin_addr, host, sizeof host) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(si)", host, (int)ntohs(a->sin_port));
    }
    if (storage->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)storage;
        /* As CPython does: getnameinfo, which names a link-local address's scope. */
        int error = getnameinfo((const struct sockaddr *)a, sizeof *a, host, sizeof host,
                                NULL, 0, NI_NUMERICHOST);
        if (error)
            return PyErr_Format(PyExc_OSError, "getnameinfo: %s", gai_strerror(error));
        return Py_BuildValue("(siII)", host, (int)ntohs(a->sin6_port),
                             (unsigned int)ntohl(a->sin6_flowinfo),
                             (unsigned int)a->sin6_scope_id);
    }
    return PyErr_Format(PyExc_OSError, "address family %d", (int)storage->ss_family);
}

PyDoc_STRVAR(recv_batch_doc,
"recv_batch(fd, count) -> list of (bytes, address)\n\n"
"Read up to `count` (at most 64) datagrams waiting on the non-blocking socket `fd` with\n"
"one recvmmsg; an empty list when none wait. Raises OSError for an error the socket\n"
"reports (an ICMP error queued on it, say).");

static PyObject *
recv_batch(PyObject *module, PyObject *args)
{
    int fd, count;
    if (!PyArg_ParseTuple(args, "ii:recv_batch", &fd, &count))
        return NULL;
    if (count < 1)
        return PyList_New(0);
    if (count > BATCH)
        count = BATCH;
    if (slots == NULL) {
        slots = PyMem_RawMalloc((size_t)BATCH * SLOT_BYTES);
        if (slots == NULL)
            return PyErr_NoMemory();
    }
    struct mmsghdr messages[BATCH];
    struct iovec vectors[BATCH];
    struct sockaddr_storage addresses[BATCH];
    memset(messages, 0, sizeof(struct mmsghdr) * (size_t)count);
    for (int i = 0; i < count; i++) {
        vectors[i].iov_base = slots + (size_t)i * SLOT_BYTES;
        vectors[i].iov_len = SLOT_BYTES;
        messages[i].msg_hdr.msg_iov = &vectors[i];
        messages[i].msg_hdr.msg_iovlen = 1;
        messages[i].msg_hdr.msg_name = &addresses[i];
        messages[i].msg_hdr.msg_namelen = sizeof addresses[i];
    }
    int received = recvmmsg(fd, messages, (unsigned int)count, MSG_DONTWAIT, NULL);
    if (received < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return PyList_New(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *batch = PyList_New(received);
    if (batch == NULL)
        return NULL;
    for (int i = 0; i < received; i++) {
        PyObject *address = address_of(&addresses[i]);
        if (address == NULL) {
            Py_DECREF(batch);
            return NULL;
        }
        PyObject *data = PyBytes_FromStringAndSize(vectors[i].iov_base,
                                                   (Py_ssize_t)messages[i].msg_len);
        if (data == NULL) {
            Py_DECREF(address);
            Py_DECREF(batch);
            return NULL;
        }
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(data);
            Py_DECREF(address);
            Py_DECREF(batch);
            return NULL;
        }
        PyTuple_SET_ITEM(pair, 0, data);
        PyTuple_SET_ITEM(pair, 1, address);
        PyList_SET_ITEM(batch, i, pair);
    }
    return batch;
}

/* Fills `storage` from a Python address of `family`; 0, or -1 when it is not a numeric
   address of that family (the caller lets Python's sendto deal with it). */
static int
parse_address(PyObject *address, int family, struct sockaddr_storage *storage,
              socklen_t *length)
{
    if (!PyTuple_Check(address) || PyTuple_GET_SIZE(address) < 2)
        return -1;
    PyObject *host = PyTuple_GET_ITEM(address, 0);
    PyObject *port_object = PyTuple_GET_ITEM(address, 1);
    if (!PyUnicode_Check(host) || !PyLong_Check(port_object))
        return -1;
    long port = PyLong_AsLong(port_object);
    if (port < 0 || port > 65535) {
        PyErr_Clear();
        return -1;
    }
    const char *text = PyUnicode_AsUTF8(host);
    if (text == NULL) {
        PyErr_Clear();
        return -1;
    }
    memset(storage, 0, sizeof *storage);
    if (family == AF_INET) {
        if (PyTuple_GET_SIZE(address) != 2)
            return -1;
        struct sockaddr_in *a = (struct sockaddr_in *)storage;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, text, &a->sin_addr) != 1)
            return -1;
        *length = sizeof *a;
        return 0;
    }
    if (family == AF_INET6) {
        if (PyTuple_GET_SIZE(address) > 4 || strchr(text, '%') != NULL)
            return -1; /* a scope by name: Python resolves it */
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)storage;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        if (PyTuple_GET_SIZE(address) > 2) {
            unsigned long flowinfo = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(address, 2));
            if (PyErr_Occurred() || flowinfo > 0xfffff) {
                PyErr_Clear();
                return -1;
            }
            a->sin6_flowinfo = htonl((uint32_t)flowinfo);
        }
        if (PyTuple_GET_SIZE(address) > 3) {
            unsigned long scope = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(address, 3));
            if (PyErr_Occurred() || scope > 0xffffffffUL) {
                PyErr_Clear();
                return -1;
            }
            a->sin6_scope_id = (uint32_t)scope;
        }
        if (inet_pton(AF_INET6, text, &a->sin6_addr) != 1)
            return -1;
        *length = sizeof *a;
        return 0;
    }
    return -1;
}

PyDoc_STRVAR(send_batch_doc,
"send_batch(fd, family, datagrams, start) -> (index, errno)\n\n"
"Send datagrams[start:], a list of (bytes, address), from the non-blocking socket `fd`\n"
"of `family`, with one sendmmsg per 64. Stops at the first datagram not sent and returns\n"
"its index with the reason: errno (EAGAIN: the send buffer is full; another: that\n"
"destination only), or -1 when its address is not a numeric one of the family (Python's\n"
"sendto should take it). (len(datagrams), 0) when all went.");

static PyObject *
send_batch(PyObject *module, PyObject *args)
{
    int fd, family;
    PyObject *datagrams;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "iiO!n:send_batch", &fd, &family, &PyList_Type, &datagrams,
                          &start))
        return NULL;
    Py_ssize_t total = PyList_GET_SIZE(datagrams);
    struct mmsghdr messages[BATCH];
    struct iovec vectors[BATCH];
    struct sockaddr_storage addresses[BATCH];
    Py_ssize_t position = start < 0 ? 0 : start;
    while (position < total) {
        int count = 0;
        int stop_reason = 0; /* -1: an address for Python */
        while (count < BATCH && position + count < total) {
            PyObject *item = PyList_GET_ITEM(datagrams, position + count);
            if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
                stop_reason = -1;
                break;
            }
            PyObject *data = PyTuple_GET_ITEM(item, 0);
            if (!PyBytes_Check(data)) {
                stop_reason = -1;
                break;
            }
            socklen_t length;
            if (parse_address(PyTuple_GET_ITEM(item, 1), family, &addresses[count],
                              &length) < 0) {
                stop_reason = -1;
                break;
            }
            memset(&messages[count], 0, sizeof messages[count]);
            vectors[count].iov_base = PyBytes_AS_STRING(data);
            vectors[count].iov_len = (size_t)PyBytes_GET_SIZE(data);
            messages[count].msg_hdr.msg_iov = &vectors[count];
            messages[count].msg_hdr.msg_iovlen = 1;
            messages[count].msg_hdr.msg_name = &addresses[count];
            messages[count].msg_hdr.msg_namelen = length;
            count++;
        }
        if (count > 0) {
            int sent = sendmmsg(fd, messages, (unsigned int)count, MSG_DONTWAIT);
            if (sent < 0)
                return Py_BuildValue("(ni)", position, errno == EWOULDBLOCK ? EAGAIN : errno);
            position += sent;
            if (sent < count) /* the next one failed: let the call say why */
                continue;
        }
        if (stop_reason)
            return Py_BuildValue("(ni)", position, stop_reason);
    }
    return Py_BuildValue("(ni)", total, 0);
}

static PyMethodDef methods[] = {
    {"recv_batch", recv_batch, METH_VARARGS, recv_batch_doc},
    {"send_batch", send_batch, METH_VARARGS, send_batch_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "mldht._batchio",
    "Batched UDP receive and send (recvmmsg/sendmmsg) for mldht's transport.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__batchio(void)
{
    PyObject *created = PyModule_Create(&module);
    if (created == NULL)
        return NULL;
    if (PyModule_AddIntConstant(created, "BATCH", BATCH) < 0 ||
        PyModule_AddIntConstant(created, "EAGAIN", EAGAIN) < 0) {
        Py_DECREF(created);
        return NULL;
    }
    return created;
}
