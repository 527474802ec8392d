/* KRPC load generator and trivial responder for tools/bench/throughput.py (loopback only).

   Built by throughput.py with: gcc -O2 -o loadgen loadgen.c

   loadgen gen TARGET_IP PORT TEMPLATES_FILE SOURCES SOURCE_PREFIX WINDOW SECONDS WARMUP
               MAX_QUERIES TIMEOUT_MS
       Sends queries to TARGET (must be in 127.0.0.0/8) from SOURCES sockets bound to
       SOURCE_PREFIX.x.y (127.a), at most WINDOW outstanding in all, for WARMUP + SECONDS
       seconds and at most MAX_QUERIES queries. TEMPLATES_FILE: one line per query,
       "<tid offset> <id offset> <hex bytes>": the 4-byte transaction id and the 20-byte
       sender id are patched in (one id per source). A reply (y=r or y=e) whose transaction
       id matches an outstanding query frees its slot; a query not answered in TIMEOUT_MS is
       counted lost. Prints one JSON object: counts and CPU time measured after the warmup.

   loadgen echo BIND_IP PORT SECONDS MAX_REPLIES NODES
       Answers every query it receives with a minimal reply carrying the query's transaction
       id and NODES * 26 bytes of compact node info (the rig ceiling), until SECONDS or
       MAX_REPLIES. Prints one JSON object.

   Every address used is checked to be in 127.0.0.0/8; every loop is bounded in time. */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MAXDGRAM 2048
#define MAXTEMPLATES 4096
#define HIST_BUCKETS 200000 /* 10 us each: up to 2 s */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static int loopback_address(const char *ip, struct in_addr *out) {
    if (inet_pton(AF_INET, ip, out) != 1) return 0;
    return (ntohl(out->s_addr) >> 24) == 127;
}

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void set_buffers(int fd) {
    int size = 4 * 1024 * 1024;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
}

/* Offset just past the bencoded element starting at p, or -1 when malformed. */
static long skip(const unsigned char *b, long p, long n, int depth) {
    if (p >= n || depth > 32) return -1;
    if (b[p] == 'i') {
        const unsigned char *e = memchr(b + p, 'e', n - p);
        return e ? (e - b) + 1 : -1;
    }
    if (b[p] == 'l' || b[p] == 'd') {
        p++;
        while (p < n && b[p] != 'e') {
            p = skip(b, p, n, depth + 1);
            if (p < 0) return -1;
        }
        return p < n ? p + 1 : -1;
    }
    if (b[p] >= '0' && b[p] <= '9') {
        long len = 0;
        while (p < n && b[p] >= '0' && b[p] <= '9') len = len * 10 + (b[p++] - '0');
        if (p >= n || b[p] != ':' || p + 1 + len > n) return -1;
        return p + 1 + len;
    }
    return -1;
}

/* Finds the top-level keys "t" and "y" of a bencoded dictionary. */
static int parse_ty(const unsigned char *b, long n, const unsigned char **tid, long *tid_len, int *y) {
    *tid = NULL;
    *y = 0;
    if (n < 2 || b[0] != 'd') return 0;
    long p = 1;
    while (p < n && b[p] != 'e') {
        long key_end = skip(b, p, n, 0);
        if (key_end < 0 || b[p] < '0' || b[p] > '9') return 0;
        const unsigned char *colon = memchr(b + p, ':', key_end - p);
        const unsigned char *key = colon + 1;
        long key_len = (b + key_end) - key;
        long value_end = skip(b, key_end, n, 0);
        if (value_end < 0) return 0;
        if (key_len == 1 && (key[0] == 't' || key[0] == 'y') && b[key_end] >= '0' && b[key_end] <= '9') {
            const unsigned char *vcolon = memchr(b + key_end, ':', value_end - key_end);
            const unsigned char *value = vcolon + 1;
            long value_len = (b + value_end) - value;
            if (key[0] == 't') {
                *tid = value;
                *tid_len = value_len;
            } else if (value_len == 1) {
                *y = value[0];
            }
        }
        p = value_end;
    }
    return *tid != NULL;
}

struct template { int tid_off, id_off, len; unsigned char data[MAXDGRAM]; };
static struct template templates[MAXTEMPLATES];
static int ntemplates;

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void load_templates(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) die("templates file");
    static char line[2 * MAXDGRAM + 64];
    while (ntemplates < MAXTEMPLATES && fgets(line, sizeof line, f)) {
        struct template *t = &templates[ntemplates];
        char *hex = NULL;
        t->tid_off = (int)strtol(line, &hex, 10);
        t->id_off = (int)strtol(hex, &hex, 10);
        while (*hex == ' ') hex++;
        int len = 0;
        while (hexval(hex[0]) >= 0 && hexval(hex[1]) >= 0 && len < MAXDGRAM) {
            t->data[len++] = (unsigned char)(hexval(hex[0]) * 16 + hexval(hex[1]));
            hex += 2;
        }
        t->len = len;
        if (len == 0 || t->tid_off < 0 || t->tid_off + 4 > len || (t->id_off >= 0 && t->id_off + 20 > len)) {
            fprintf(stderr, "loadgen: bad template line %d\n", ntemplates + 1);
            exit(2);
        }
        ntemplates++;
    }
    fclose(f);
    if (ntemplates == 0) {
        fprintf(stderr, "loadgen: no templates\n");
        exit(2);
    }
}

struct slot { uint64_t sent; uint16_t gen; uint8_t busy; };

struct source {
    int fd;
    unsigned char id[20];
    int window, outstanding;
    struct slot *slots;
    int *free_list, nfree;
};

static unsigned long long hist[HIST_BUCKETS];

static double percentile(double q, unsigned long long total) {
    if (total == 0) return 0;
    unsigned long long want = (unsigned long long)(q * total), seen = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += hist[i];
        if (seen > want) return i * 10.0 + 5.0;
    }
    return HIST_BUCKETS * 10.0;
}

static unsigned char sendbuf[BATCH][MAXDGRAM];
static struct mmsghdr smsg[BATCH];
static struct iovec siov[BATCH];

/* Sends queries into the source's free slots, when at least `threshold` are free. */
static void fill(struct source *s, int threshold, unsigned long long *sent, unsigned long long *total_sent,
                 long long max_queries, unsigned long long *template_counter, unsigned long long *blocked) {
    if (threshold < 1) threshold = 1;
    if (s->nfree < threshold) return;
    int sslot[BATCH];
    while (s->nfree > 0 && *total_sent < (unsigned long long)max_queries) {
        int n = 0;
        while (n < BATCH && s->nfree > 0 && *total_sent + n < (unsigned long long)max_queries) {
            int idx = s->free_list[--s->nfree];
            struct slot *slot = &s->slots[idx];
            slot->gen++;
            struct template *t = &templates[(*template_counter)++ % ntemplates];
            memcpy(sendbuf[n], t->data, t->len);
            sendbuf[n][t->tid_off] = (unsigned char)(idx >> 8);
            sendbuf[n][t->tid_off + 1] = (unsigned char)idx;
            sendbuf[n][t->tid_off + 2] = (unsigned char)(slot->gen >> 8);
            sendbuf[n][t->tid_off + 3] = (unsigned char)slot->gen;
            if (t->id_off >= 0) memcpy(sendbuf[n] + t->id_off, s->id, 20);
            siov[n].iov_base = sendbuf[n];
            siov[n].iov_len = t->len;
            memset(&smsg[n], 0, sizeof smsg[n]);
            smsg[n].msg_hdr.msg_iov = &siov[n];
            smsg[n].msg_hdr.msg_iovlen = 1;
            sslot[n] = idx;
            n++;
        }
        int done = sendmmsg(s->fd, smsg, n, MSG_DONTWAIT);
        if (done < 0) done = 0;
        uint64_t t_sent = now_ns();
        for (int k = 0; k < n; k++) {
            int idx = sslot[k];
            if (k < done) {
                s->slots[idx].busy = 1;
                s->slots[idx].sent = t_sent;
                s->outstanding++;
            } else {
                s->free_list[s->nfree++] = idx;
            }
        }
        *sent += done;
        *total_sent += done;
        if (done < n) {
            (*blocked)++;
            return;
        }
    }
}

static int run_gen(int argc, char **argv) {
    if (argc != 12) {
        fprintf(stderr, "usage: loadgen gen TARGET_IP PORT TEMPLATES SOURCES SOURCE_PREFIX WINDOW "
                        "SECONDS WARMUP MAX_QUERIES TIMEOUT_MS\n");
        return 2;
    }
    struct sockaddr_in target = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[3]))};
    if (!loopback_address(argv[2], &target.sin_addr)) {
        fprintf(stderr, "loadgen: target %s is not in 127.0.0.0/8\n", argv[2]);
        return 2;
    }
    load_templates(argv[4]);
    int nsources = atoi(argv[5]);
    const char *prefix = argv[6];
    int window = atoi(argv[7]);
    double seconds = atof(argv[8]), warmup = atof(argv[9]);
    long long max_queries = atoll(argv[10]);
    uint64_t timeout = (uint64_t)atoll(argv[11]) * 1000000ull;
    if (nsources < 1 || nsources > 60000 || window < nsources || seconds <= 0 || seconds > 3600 ||
        warmup < 0 || warmup > 600 || max_queries < 1) {
        fprintf(stderr, "loadgen: bad arguments\n");
        return 2;
    }

    struct source *sources = calloc(nsources, sizeof *sources);
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < nsources; i++) {
        struct source *s = &sources[i];
        char ip[64];
        snprintf(ip, sizeof ip, "%s.%d.%d", prefix, i / 250, i % 250 + 1);
        struct sockaddr_in local = {.sin_family = AF_INET, .sin_port = 0};
        if (!loopback_address(ip, &local.sin_addr)) {
            fprintf(stderr, "loadgen: source %s is not in 127.0.0.0/8\n", ip);
            return 2;
        }
        s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (s->fd < 0) die("socket");
        set_buffers(s->fd);
        if (bind(s->fd, (struct sockaddr *)&local, sizeof local) < 0) die("bind");
        if (connect(s->fd, (struct sockaddr *)&target, sizeof target) < 0) die("connect");
        for (int k = 0; k < 20; k++) {
            seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
            s->id[k] = (unsigned char)(seed >> 24);
        }
        s->window = window / nsources + (i < window % nsources ? 1 : 0);
        if (s->window > 65535) s->window = 65535;
        s->slots = calloc(s->window, sizeof *s->slots);
        s->free_list = calloc(s->window, sizeof *s->free_list);
        for (int k = 0; k < s->window; k++) s->free_list[k] = s->window - 1 - k;
        s->nfree = s->window;
    }

    static unsigned char recvbuf[BATCH][MAXDGRAM];
    struct mmsghdr rmsg[BATCH];
    struct iovec riov[BATCH];
    memset(rmsg, 0, sizeof rmsg);
    for (int k = 0; k < BATCH; k++) {
        riov[k].iov_base = recvbuf[k];
        riov[k].iov_len = MAXDGRAM;
        rmsg[k].msg_hdr.msg_iov = &riov[k];
        rmsg[k].msg_hdr.msg_iovlen = 1;
    }

    unsigned long long sent = 0, replies = 0, errors = 0, queries_in = 0, unmatched = 0, lost = 0,
                       send_again = 0, bytes_in = 0, rtt_count = 0, total_sent = 0, wakeups = 0;
    unsigned long long template_counter = 0;
    uint64_t start = now_ns();
    uint64_t measure_from = start + (uint64_t)(warmup * 1e9);
    uint64_t deadline = measure_from + (uint64_t)(seconds * 1e9);
    uint64_t last_sweep = start;
    int measuring = warmup <= 0;
    double cpu_at_start = cpu_seconds();
    uint64_t wall_at_start = start;

    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    for (int i = 0; i < nsources; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, sources[i].fd, &ev) < 0) die("epoll_ctl");
    }
    struct epoll_event events[256];
    for (int i = 0; i < nsources; i++) fill(&sources[i], 1, &sent, &total_sent, max_queries, &template_counter, &send_again);

    for (;;) {
        uint64_t now = now_ns();
        if (now >= deadline) break;
        if (!measuring && now >= measure_from) {
            measuring = 1;
            sent = replies = errors = queries_in = unmatched = lost = send_again = bytes_in = rtt_count = wakeups = 0;
            memset(hist, 0, sizeof hist);
            cpu_at_start = cpu_seconds();
            wall_at_start = now;
        }
        int ready = epoll_wait(ep, events, 256, 1);
        if (ready < 0 && errno != EINTR) die("epoll_wait");
        wakeups++;
        now = now_ns();
        for (int e = 0; e < ready; e++) {
            struct source *s = &sources[events[e].data.u32];
            for (;;) {
                int got = recvmmsg(s->fd, rmsg, BATCH, MSG_DONTWAIT, NULL);
                if (got <= 0) break;
                for (int k = 0; k < got; k++) {
                    long len = rmsg[k].msg_len;
                    const unsigned char *tid;
                    long tid_len;
                    int y;
                    bytes_in += len;
                    if (!parse_ty(recvbuf[k], len, &tid, &tid_len, &y)) {
                        unmatched++;
                        continue;
                    }
                    if (y == 'q') {
                        queries_in++; /* e.g. the node verifying us: not answered */
                        continue;
                    }
                    if (tid_len != 4) {
                        unmatched++;
                        continue;
                    }
                    int idx = (tid[0] << 8) | tid[1];
                    uint16_t gen = (uint16_t)((tid[2] << 8) | tid[3]);
                    if (idx >= s->window || !s->slots[idx].busy || s->slots[idx].gen != gen) {
                        unmatched++;
                        continue;
                    }
                    struct slot *slot = &s->slots[idx];
                    slot->busy = 0;
                    s->outstanding--;
                    s->free_list[s->nfree++] = idx;
                    if (y == 'r') replies++;
                    else errors++;
                    uint64_t rtt = now > slot->sent ? (now - slot->sent) / 10000 : 0; /* 10 us buckets */
                    hist[rtt < HIST_BUCKETS ? rtt : HIST_BUCKETS - 1]++;
                    rtt_count++;
                }
                if (got < BATCH) break;
            }
            /* Refill in batches: a quarter of the source's window at a time. */
            fill(s, s->window / 4, &sent, &total_sent, max_queries, &template_counter, &send_again);
        }
        if (now - last_sweep > 10000000ull) { /* every 10 ms: expire unanswered queries */
            last_sweep = now;
            int open = 0;
            for (int i = 0; i < nsources; i++) {
                struct source *s = &sources[i];
                for (int idx = 0; idx < s->window && s->outstanding > 0; idx++) {
                    struct slot *slot = &s->slots[idx];
                    if (slot->busy && slot->sent + timeout < now) {
                        slot->busy = 0;
                        s->outstanding--;
                        s->free_list[s->nfree++] = idx;
                        lost++;
                    }
                }
                fill(s, 1, &sent, &total_sent, max_queries, &template_counter, &send_again);
                open += s->outstanding;
            }
            if (total_sent >= (unsigned long long)max_queries && open == 0) break;
        }
    }
    close(ep);
    uint64_t end = now_ns();
    double wall = (end - wall_at_start) / 1e9;
    double cpu = cpu_seconds() - cpu_at_start;
    printf("{\"sent\": %llu, \"replies\": %llu, \"errors\": %llu, \"queries_in\": %llu, "
           "\"unmatched\": %llu, \"lost\": %llu, \"send_blocked\": %llu, \"bytes_in\": %llu, "
           "\"seconds\": %.4f, \"cpu_seconds\": %.4f, \"rtt_p50_us\": %.0f, \"rtt_p99_us\": %.0f, "
           "\"sources\": %d, \"window\": %d, \"wakeups\": %llu}\n",
           sent, replies, errors, queries_in, unmatched, lost, send_again, bytes_in, wall, cpu,
           percentile(0.5, rtt_count), percentile(0.99, rtt_count), nsources, window, wakeups);
    for (int i = 0; i < nsources; i++) close(sources[i].fd);
    return 0;
}

static int run_echo(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: loadgen echo BIND_IP PORT SECONDS MAX_REPLIES NODES\n");
        return 2;
    }
    struct sockaddr_in local = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[3]))};
    if (!loopback_address(argv[2], &local.sin_addr)) {
        fprintf(stderr, "loadgen: %s is not in 127.0.0.0/8\n", argv[2]);
        return 2;
    }
    double seconds = atof(argv[4]);
    long long max_replies = atoll(argv[5]);
    int nodes = atoi(argv[6]);
    if (seconds <= 0 || seconds > 3600 || max_replies < 1 || nodes < 0 || nodes > 40) {
        fprintf(stderr, "loadgen: bad arguments\n");
        return 2;
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) die("socket");
    set_buffers(fd);
    if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) die("bind");
    printf("{\"ready\": true}\n");
    fflush(stdout);

    static unsigned char recvbuf[BATCH][MAXDGRAM], sendbuf[BATCH][MAXDGRAM];
    struct sockaddr_in from[BATCH];
    struct mmsghdr rmsg[BATCH], smsg[BATCH];
    struct iovec riov[BATCH], siov[BATCH];
    memset(rmsg, 0, sizeof rmsg);
    for (int k = 0; k < BATCH; k++) {
        riov[k].iov_base = recvbuf[k];
        riov[k].iov_len = MAXDGRAM;
        rmsg[k].msg_hdr.msg_iov = &riov[k];
        rmsg[k].msg_hdr.msg_iovlen = 1;
        rmsg[k].msg_hdr.msg_name = &from[k];
    }
    unsigned long long answered = 0, received = 0;
    uint64_t start = now_ns(), deadline = start + (uint64_t)(seconds * 1e9);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    while (now_ns() < deadline && answered < (unsigned long long)max_replies) {
        if (poll(&pfd, 1, 100) <= 0) continue;
        for (int k = 0; k < BATCH; k++) rmsg[k].msg_hdr.msg_namelen = sizeof from[k];
        int got = recvmmsg(fd, rmsg, BATCH, MSG_DONTWAIT, NULL);
        if (got <= 0) continue;
        received += got;
        int n = 0;
        for (int k = 0; k < got; k++) {
            const unsigned char *tid;
            long tid_len;
            int y;
            if (!parse_ty(recvbuf[k], rmsg[k].msg_len, &tid, &tid_len, &y) || y != 'q' || tid_len > 64)
                continue;
            if ((ntohl(from[k].sin_addr.s_addr) >> 24) != 127) continue;
            unsigned char *o = sendbuf[n];
            int len = sprintf((char *)o, "d1:rd2:id20:EEEEEEEEEEEEEEEEEEEE");
            if (nodes > 0) {
                len += sprintf((char *)o + len, "5:nodes%d:", nodes * 26);
                memset(o + len, 'N', nodes * 26);
                len += nodes * 26;
            }
            len += sprintf((char *)o + len, "e1:t%ld:", tid_len);
            memcpy(o + len, tid, tid_len);
            len += tid_len;
            len += sprintf((char *)o + len, "1:y1:re");
            siov[n].iov_base = o;
            siov[n].iov_len = len;
            memset(&smsg[n], 0, sizeof smsg[n]);
            smsg[n].msg_hdr.msg_iov = &siov[n];
            smsg[n].msg_hdr.msg_iovlen = 1;
            smsg[n].msg_hdr.msg_name = &from[k];
            smsg[n].msg_hdr.msg_namelen = sizeof from[k];
            n++;
        }
        if (n > 0) {
            int done = sendmmsg(fd, smsg, n, 0);
            if (done > 0) answered += done;
        }
    }
    printf("{\"received\": %llu, \"answered\": %llu, \"cpu_seconds\": %.4f, \"seconds\": %.4f}\n",
           received, answered, cpu_seconds(), (now_ns() - start) / 1e9);
    close(fd);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "gen") == 0) return run_gen(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "echo") == 0) return run_echo(argc, argv);
    fprintf(stderr, "usage: loadgen gen ... | loadgen echo ... (see the comment at the top)\n");
    return 2;
}
