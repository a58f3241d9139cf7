/* scale_client: one process of `make bench-scale`'s load generator.

     scale_client PORT SOURCE CONNS BROADCASTS OPEN_SECONDS OUTFILE

   Opens CONNS WebSocket connections to 127.0.0.1:PORT from the loopback address SOURCE
   (each bound to SOURCE before it connects: every source address has its own ephemeral
   ports), at most PENDING handshakes at a time, within OPEN_SECONDS, then prints
   "ready opened=N failed=F seconds=S". It then holds them, answers pings, and for every
   binary message of 16 bytes (an 8-byte CLOCK_REALTIME send time in nanoseconds, then a
   4-byte broadcast number below BROADCASTS, both little-endian) records the delivery
   latency: from that send time to the message's arrival in this socket, the kernel's
   receive timestamp (SO_TIMESTAMPNS), so that the figure does not depend on how soon this
   process gets a CPU to read it. "all seq=K" once every open connection has broadcast K.
   When stdin ends it writes the latencies (doubles, seconds, one per message received) to
   OUTFILE, prints "summary opened=N closed=C bad=B shared=S got=G0,G1,..." and exits
   (shared: messages read together with another one, whose arrival times the kernel gives
   as one). */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PENDING 128          /* handshakes under way at once, per process */
#define MAX_BROADCASTS 64
#define PART 136             /* a partial frame: a ping's header (2) and payload (125) fit */
#define HEAD_MAX 1024        /* the 101 response's head */
#define BATCH_NS 1000000     /* while messages arrive, read them a millisecond at a time */

enum { CONNECTING, UPGRADING, OPEN, CLOSED };

struct conn {
    int fd;
    uint8_t state;
    uint16_t len;            /* bytes held in part (or in head while upgrading) */
    unsigned char *head;     /* the 101 response so far, while upgrading */
    unsigned char part[PART];
};

static const char REQUEST[] =
    "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
static const char ACCEPT[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

static struct conn *conns;
static int nconns, nbroadcasts, epfd, port;
static struct in_addr source;
static int opened, failed, closed, pending, bad, next_to_open;
static long got[MAX_BROADCASTS];
static double *latencies;
static long nlatencies, max_latencies, shared;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double realtime(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void watch(struct conn *c, int op, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(epfd, op, c->fd, &ev) < 0) die("epoll_ctl");
}

static void give_up(struct conn *c, const char *why) {
    if (c->state == OPEN) {
        if (++closed <= 5) fprintf(stderr, "scale_client: a connection closed: %s\n", why);
    } else {
        failed++;
        pending--;
        if (failed <= 5) fprintf(stderr, "scale_client: a connection failed: %s\n", why);
    }
    free(c->head);
    c->head = NULL;
    close(c->fd);
    c->state = CLOSED;
}

static void start_connect(struct conn *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) die("socket");
    int on = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) < 0) die("SO_TIMESTAMPNS");
    struct sockaddr_in local = {.sin_family = AF_INET, .sin_addr = source};
    struct sockaddr_in server = {.sin_family = AF_INET, .sin_port = htons(port)};
    server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = fd;
    c->state = CONNECTING;
    c->len = 0;
    pending++;
    if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) {
        give_up(c, strerror(errno));
        return;
    }
    if (connect(fd, (struct sockaddr *)&server, sizeof server) < 0 && errno != EINPROGRESS) {
        give_up(c, strerror(errno));
        return;
    }
    watch(c, EPOLL_CTL_ADD, EPOLLOUT);
}

static void open_more(void) {
    while (pending < PENDING && next_to_open < nconns) start_connect(&conns[next_to_open++]);
}

static void send_request(struct conn *c) {
    int error = 0;
    socklen_t len = sizeof error;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &len);
    if (error) {
        give_up(c, strerror(error));
        return;
    }
    if (write(c->fd, REQUEST, sizeof REQUEST - 1) != (ssize_t)(sizeof REQUEST - 1)) {
        give_up(c, "short write of the upgrade request");
        return;
    }
    c->head = malloc(HEAD_MAX);
    if (!c->head) die("malloc");
    c->state = UPGRADING;
    watch(c, EPOLL_CTL_MOD, EPOLLIN);
}

/* Answers a ping with its pong (masked with a zero key: a client's frames are masked). */
static void pong(struct conn *c, const unsigned char *payload, size_t n) {
    unsigned char frame[2 + 4 + 125];
    frame[0] = 0x8A;
    frame[1] = 0x80 | (unsigned char)n;
    memset(frame + 2, 0, 4);
    memcpy(frame + 6, payload, n);
    if (write(c->fd, frame, 6 + n) != (ssize_t)(6 + n)) bad++;
}

static void record(const unsigned char *payload, double arrived) {
    uint64_t sent_ns = 0;
    uint32_t seq = 0;
    for (int i = 7; i >= 0; i--) sent_ns = sent_ns << 8 | payload[i];
    for (int i = 11; i >= 8; i--) seq = seq << 8 | payload[i];
    if (seq >= (uint32_t)nbroadcasts) {
        bad++;
        return;
    }
    if (nlatencies < max_latencies) latencies[nlatencies++] = arrived - sent_ns * 1e-9;
    if (++got[seq] == opened - closed && next_to_open == nconns && !pending) {
        printf("all seq=%u\n", seq);
        fflush(stdout);
    }
}

/* Handles the complete frames at the start of p; returns the bytes used (-1: closed). */
static long frames(struct conn *c, const unsigned char *p, size_t n, double arrived) {
    size_t used = 0;
    int data_messages = 0;
    while (n - used >= 2) {
        const unsigned char *f = p + used;
        size_t len = f[1] & 0x7F;
        if (len > 125 || f[1] & 0x80) {  /* only short frames are expected, never masked */
            bad++;
            return -1;
        }
        if (n - used < 2 + len) break;
        int opcode = f[0] & 0x0F;
        if (opcode == 9) pong(c, f + 2, len);
        else if (opcode == 8) return -1;
        else if (opcode == 2 && len == 16) {
            record(f + 2, arrived);
            if (++data_messages == 2) shared += 2;
            else if (data_messages > 2) shared++;
        }
        else if (opcode != 10) bad++;
        used += 2 + len;
    }
    return (long)used;
}

static void upgraded(struct conn *c, size_t end, size_t n) {
    c->head[end] = 0;
    if (strncmp((char *)c->head, "HTTP/1.1 101 ", 13) || !strstr((char *)c->head, ACCEPT)) {
        char *line_end = strstr((char *)c->head, "\r\n");
        if (line_end) *line_end = 0;
        give_up(c, (char *)c->head);  /* the status line: not 101 */
        return;
    }
    size_t rest = n - end - 4;
    unsigned char *head = c->head;
    c->head = NULL;
    c->state = OPEN;
    c->len = 0;
    opened++;
    pending--;
    if (rest) {  /* frames right behind the 101 */
        long used = frames(c, head + end + 4, rest, realtime());
        if (used < 0) {
            free(head);
            give_up(c, "closed");
            return;
        }
        c->len = rest - used;
        memcpy(c->part, head + end + 4 + used, c->len);
    }
    free(head);
}

static void read_upgrade(struct conn *c) {
    ssize_t r = read(c->fd, c->head + c->len, HEAD_MAX - 1 - c->len);
    if (r <= 0) {
        if (r < 0 && errno == EAGAIN) return;
        give_up(c, r ? strerror(errno) : "closed during the handshake");
        return;
    }
    c->len += r;
    c->head[c->len] = 0;
    char *end = strstr((char *)c->head, "\r\n\r\n");
    if (end) upgraded(c, end - (char *)c->head, c->len);
    else if (c->len >= HEAD_MAX - 1) give_up(c, "response head too long");
}

/* The kernel's receive time of what a recvmsg read (of its last segment), else now. */
static double arrival(struct msghdr *m) {
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(m); cm; cm = CMSG_NXTHDR(m, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(cm), sizeof ts);
            return ts.tv_sec + ts.tv_nsec * 1e-9;
        }
    }
    return realtime();
}

static void read_frames(struct conn *c) {
    unsigned char buf[4096];
    char control[CMSG_SPACE(sizeof(struct timespec))];
    memcpy(buf, c->part, c->len);
    struct iovec iov = {buf + c->len, sizeof buf - c->len};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                       .msg_controllen = sizeof control};
    ssize_t r = recvmsg(c->fd, &m, 0);
    if (r <= 0) {
        if (r < 0 && errno == EAGAIN) return;
        give_up(c, "closed");
        return;
    }
    size_t n = c->len + r;
    long used = frames(c, buf, n, arrival(&m));
    if (used < 0) {
        give_up(c, "closed by the server");
        return;
    }
    if (n - used > PART) {
        bad++;
        give_up(c, "frame too long");
        return;
    }
    c->len = n - used;
    memcpy(c->part, buf + used, c->len);
}

static void write_results(const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(latencies, sizeof *latencies, nlatencies, f) != (size_t)nlatencies ||
        fclose(f))
        die(path);
    printf("summary opened=%d closed=%d bad=%d shared=%ld got=", opened, closed, bad, shared);
    for (int i = 0; i < nbroadcasts; i++) printf(i ? ",%ld" : "%ld", got[i]);
    printf("\n");
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fputs("usage: scale_client PORT SOURCE CONNS BROADCASTS OPEN_SECONDS OUTFILE\n", stderr);
        return 2;
    }
    port = atoi(argv[1]);
    if (inet_pton(AF_INET, argv[2], &source) != 1) die("SOURCE");
    nconns = atoi(argv[3]);
    nbroadcasts = atoi(argv[4]);
    double open_deadline = now() + atof(argv[5]);
    if (nbroadcasts < 1 || nbroadcasts > MAX_BROADCASTS) {
        fprintf(stderr, "BROADCASTS: 1 to %d\n", MAX_BROADCASTS);
        return 2;
    }
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit);
    }
    conns = calloc(nconns, sizeof *conns);
    max_latencies = (long)nconns * nbroadcasts;
    latencies = malloc(max_latencies * sizeof *latencies);
    if (!conns || !latencies) die("malloc");
    epfd = epoll_create1(0);
    if (epfd < 0) die("epoll_create1");
    struct conn input = {.fd = 0};
    watch(&input, EPOLL_CTL_ADD, EPOLLIN);
    double started = now();
    int ready = 0;
    open_more();
    struct epoll_event events[1024];
    for (;;) {
        if (!ready && ((next_to_open == nconns && !pending) || now() > open_deadline)) {
            ready = 1;
            printf("ready opened=%d failed=%d seconds=%.3f\n", opened,
                   failed + (nconns - next_to_open) + pending, now() - started);
            fflush(stdout);
        }
        int n = epoll_wait(epfd, events, 1024, ready ? -1 : 100);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c == &input) {
                char discard[256];
                if (read(0, discard, sizeof discard) <= 0) {
                    write_results(argv[6]);
                    return 0;
                }
                continue;
            }
            if (c->state == CONNECTING) send_request(c);
            else if (c->state == UPGRADING) read_upgrade(c);
            else if (c->state == OPEN) read_frames(c);
        }
        if (!ready && now() <= open_deadline) open_more();
        else if (ready && n > 0 && n < 1024) {
            /* A broadcast under way: let its messages gather for a moment rather than
               wake for each. Remote clients would cost the server no wake-up at all, and
               the 2 CPUs here are the server's as much as this load generator's. */
            struct timespec pause = {0, BATCH_NS};
            nanosleep(&pause, NULL);
        }
    }
}
