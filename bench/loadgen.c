/* loadgen: a WebSocket load generator for wspy's benchmarks (Linux, epoll).
 *
 *   loadgen PORT echo SIZE CONNS INFLIGHT SECONDS   echo messages, keep INFLIGHT per connection
 *   loadgen PORT rtt SIZE COUNT                     one connection, one message at a time
 *   loadgen PORT handshake CONCURRENCY SECONDS      open, upgrade, reset (no TIME_WAIT), as fast as possible
 *   loadgen PORT idle CONNS                         open CONNS, print "ready", hold until stdin ends
 *
 * Prints one line of "key=value" figures. Frames are binary, masked with a zero key so
 * that the generator spends no time masking; echoes are counted from their headers only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char REQUEST[] =
    "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

static int port;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static int fcntl_nonblock(int fd) {
    int flags = fcntl(fd, F_GETFL);
    return flags < 0 ? flags : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

/* A blocking TCP connection to 127.0.0.1:port, upgraded; returns the fd. */
static int open_ws(void) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
    if (write(fd, REQUEST, sizeof REQUEST - 1) != (ssize_t)(sizeof REQUEST - 1)) die("write");
    char head[4096];
    size_t got = 0;
    while (got < 4 || memcmp(head + got - 4, "\r\n\r\n", 4) != 0) {
        /* Read byte by byte: the head must not swallow frames that follow it. */
        ssize_t n = read(fd, head + got, 1);
        if (n <= 0) die("handshake read");
        if (++got == sizeof head) { fprintf(stderr, "head too long\n"); exit(1); }
    }
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) { fprintf(stderr, "no 101\n"); exit(1); }
    return fd;
}

/* A masked (zero key) binary frame with a payload of `size` bytes; its length in *len. */
static unsigned char *make_frame(size_t size, size_t *len) {
    size_t head = 2 + (size < 126 ? 0 : size < 65536 ? 2 : 8) + 4;
    unsigned char *f = calloc(1, head + size);
    if (!f) die("calloc");
    f[0] = 0x82;
    if (size < 126) {
        f[1] = 0x80 | size;
    } else if (size < 65536) {
        f[1] = 0x80 | 126; f[2] = size >> 8; f[3] = size & 0xff;
    } else {
        f[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++) f[2 + i] = (uint64_t)size >> (56 - 8 * i);
    }
    memset(f + head, 'x', size);
    *len = head + size;
    return f;
}

/* Counts the server's (unmasked) frames in a byte stream, whatever the chunking. */
struct counter {
    unsigned char hdr[10];
    size_t hdr_got, need;       /* header bytes held; header bytes needed (0: unknown yet) */
    uint64_t skip;               /* payload bytes still to skip */
};

static long count_frames(struct counter *c, const unsigned char *p, size_t n) {
    long frames = 0;
    while (n) {
        if (c->skip) {
            size_t k = n < c->skip ? n : c->skip;
            c->skip -= k; p += k; n -= k;
            if (!c->skip) frames++;
            continue;
        }
        c->hdr[c->hdr_got++] = *p++; n--;
        if (c->hdr_got == 2) {
            unsigned l = c->hdr[1] & 0x7f;
            c->need = l < 126 ? 2 : l == 126 ? 4 : 10;
        }
        if (c->hdr_got >= 2 && c->hdr_got == c->need) {
            unsigned l = c->hdr[1] & 0x7f;
            uint64_t len = l;
            if (l == 126) len = (c->hdr[2] << 8) | c->hdr[3];
            else if (l == 127) { len = 0; for (int i = 0; i < 8; i++) len = len << 8 | c->hdr[2 + i]; }
            c->hdr_got = 0;
            if (len) c->skip = len; else frames++;
        }
    }
    return frames;
}

struct conn {
    int fd;
    struct counter counter;
    uint64_t out_left;           /* bytes still to write, cyclically from the frame buffer */
    size_t out_off;
};

static unsigned char *frames_buf;   /* many copies of one frame */
static size_t frame_len, frames_buf_len;

static void write_some(struct conn *c) {
    while (c->out_left) {
        size_t room = frames_buf_len - c->out_off;
        size_t k = c->out_left < room ? c->out_left : room;
        ssize_t n = write(c->fd, frames_buf + c->out_off, k);
        if (n < 0) { if (errno == EAGAIN) return; die("write"); }
        c->out_left -= n;
        c->out_off = (c->out_off + n) % frame_len;
    }
}

static void setup_frames(size_t size) {
    unsigned char *one = make_frame(size, &frame_len);
    size_t copies = frame_len >= 65536 ? 1 : 65536 / frame_len + 1;
    frames_buf_len = copies * frame_len;
    frames_buf = malloc(frames_buf_len);
    for (size_t i = 0; i < copies; i++) memcpy(frames_buf + i * frame_len, one, frame_len);
    free(one);
}

static void run_echo(size_t size, int nconns, int inflight, double seconds) {
    setup_frames(size);
    int ep = epoll_create1(0);
    struct conn *conns = calloc(nconns, sizeof *conns);
    for (int i = 0; i < nconns; i++) {
        conns[i].fd = open_ws();
        if (fcntl_nonblock(conns[i].fd) < 0) die("fcntl");
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = &conns[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
    }
    static unsigned char buf[1 << 20];
    long total = 0;
    double start = now(), end = start + seconds;
    for (int i = 0; i < nconns; i++) { conns[i].out_left = (uint64_t)inflight * frame_len; write_some(&conns[i]); }
    struct epoll_event events[256];
    while (now() < end) {
        int n = epoll_wait(ep, events, 256, 100);
        for (int e = 0; e < n; e++) {
            struct conn *c = events[e].data.ptr;
            for (;;) {
                ssize_t r = read(c->fd, buf, sizeof buf);
                if (r < 0) { if (errno == EAGAIN) break; die("read"); }
                if (r == 0) { fprintf(stderr, "server closed\n"); exit(1); }
                long got = count_frames(&c->counter, buf, r);
                total += got;
                c->out_left += (uint64_t)got * frame_len;
            }
            write_some(c);
        }
    }
    double elapsed = now() - start;
    printf("msgs=%ld seconds=%.3f msgs_per_s=%.0f MB_per_s=%.1f\n", total, elapsed,
           total / elapsed, total * (double)size / elapsed / 1e6);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void run_rtt(size_t size, int count) {
    setup_frames(size);
    int fd = open_ws();
    double *t = malloc(count * sizeof *t);
    static unsigned char buf[1 << 20];
    struct counter counter = {0};
    for (int i = 0; i < count; i++) {
        double t0 = now();
        if (write(fd, frames_buf, frame_len) != (ssize_t)frame_len) die("write");
        long got = 0;
        while (!got) {
            ssize_t r = read(fd, buf, sizeof buf);
            if (r <= 0) die("read");
            got = count_frames(&counter, buf, r);
        }
        t[i] = now() - t0;
    }
    qsort(t, count, sizeof *t, cmp_double);
    printf("count=%d median_us=%.1f p90_us=%.1f p99_us=%.1f\n", count, t[count / 2] * 1e6,
           t[count * 9 / 10] * 1e6, t[count * 99 / 100] * 1e6);
}

static void run_handshakes(int concurrency, double seconds) {
    /* CONCURRENCY blocking workers would need threads; instead keep CONCURRENCY
       connections in flight with epoll, each: connect, send request, read the 101, close. */
    int ep = epoll_create1(0);
    struct slot { int fd; size_t got; char head[4096]; } *slots = calloc(concurrency, sizeof *slots);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    long done = 0;
    double start = now(), end = start + seconds;
    for (int i = 0; i < concurrency; i++) slots[i].fd = -1;
    struct epoll_event events[256];
    for (;;) {
        double t = now();
        for (int i = 0; i < concurrency && t < end; i++) {
            struct slot *s = &slots[i];
            if (s->fd >= 0) continue;
            s->fd = socket(AF_INET, SOCK_STREAM, 0);
            s->got = 0;
            if (connect(s->fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
            if (write(s->fd, REQUEST, sizeof REQUEST - 1) < 0) die("write");
            fcntl_nonblock(s->fd);
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
            epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
        }
        int open_slots = 0;
        for (int i = 0; i < concurrency; i++) open_slots += slots[i].fd >= 0;
        if (!open_slots) break;
        int n = epoll_wait(ep, events, 256, 100);
        for (int e = 0; e < n; e++) {
            struct slot *s = events[e].data.ptr;
            ssize_t r = read(s->fd, s->head + s->got, sizeof s->head - s->got);
            if (r < 0 && errno == EAGAIN) continue;
            if (r <= 0) die("handshake read");
            s->got += r;
            if (s->got >= 4 && memcmp(s->head + s->got - 4, "\r\n\r\n", 4) == 0) {
                if (strncmp(s->head, "HTTP/1.1 101", 12) != 0) { fprintf(stderr, "no 101\n"); exit(1); }
                /* Reset rather than FIN: tens of thousands of closes would otherwise leave
                   their ports in TIME_WAIT, and finding a free port makes connect() slow
                   (and each run slower than the one before). */
                struct linger reset = {.l_onoff = 1, .l_linger = 0};
                setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
                close(s->fd);
                s->fd = -1;
                if (now() < end) done++;
            }
        }
    }
    double elapsed = now() - start;
    printf("handshakes=%ld seconds=%.3f handshakes_per_s=%.0f\n", done, elapsed, done / elapsed);
}

static void run_idle(int nconns) {
    int *fds = malloc(nconns * sizeof *fds);
    for (int i = 0; i < nconns; i++) fds[i] = open_ws();
    printf("ready conns=%d\n", nconns);
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {}
    for (int i = 0; i < nconns; i++) close(fds[i]);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: loadgen PORT echo SIZE CONNS INFLIGHT SECONDS | rtt SIZE COUNT |"
                        " handshake CONCURRENCY SECONDS | idle CONNS\n");
        return 2;
    }
    port = atoi(argv[1]);
    const char *mode = argv[2];
    if (!strcmp(mode, "echo") && argc == 7)
        run_echo(strtoul(argv[3], 0, 10), atoi(argv[4]), atoi(argv[5]), atof(argv[6]));
    else if (!strcmp(mode, "rtt") && argc == 5)
        run_rtt(strtoul(argv[3], 0, 10), atoi(argv[4]));
    else if (!strcmp(mode, "handshake") && argc == 5)
        run_handshakes(atoi(argv[3]), atof(argv[4]));
    else if (!strcmp(mode, "idle") && argc == 4)
        run_idle(atoi(argv[3]));
    else {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    return 0;
}
