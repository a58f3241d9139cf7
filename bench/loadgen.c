/* loadgen: a WebSocket load generator for wspy's benchmarks (Linux, epoll, OpenSSL, zlib).
 *
 *   loadgen [OPTIONS] PORT echo SIZE CONNS INFLIGHT SECONDS   echo messages, keep INFLIGHT per connection
 *   loadgen [OPTIONS] PORT rtt SIZE COUNT                     one connection, one message at a time
 *   loadgen [OPTIONS] PORT handshake CONCURRENCY SECONDS      open, upgrade, reset (no TIME_WAIT), as fast as possible
 *   loadgen [OPTIONS] PORT idle CONNS                         open CONNS, print "ready", hold until stdin ends
 *
 * Options (before or after the positional arguments):
 *   --text     text frames (opcode 1) of valid UTF-8: printable ASCII, about one character
 *              in eight multi-byte (2 to 4 bytes); each message of a cycle differs
 *   --json     text frames of JSON-like records with varying numbers ({"id": 1234, "name":
 *              "user-1234", ...}), which deflate about 10:1
 *   --mask     a random 4-byte masking key per frame, the payload really masked (without it the
 *              key is zero and frames are prebuilt: the generator spends no time masking)
 *   --check    check every echoed message, opcode and payload byte for byte (inflated first when
 *              compressed), against what was sent: a difference exits with status 3
 *   --tls      wss: TLS 1.3 (OpenSSL's default cipher suites), certificate not verified, a
 *              full handshake per connection (no session resumption)
 *   --deflate  permessage-deflate (RFC 7692): offers "permessage-deflate; client_max_window_bits",
 *              follows the server's answer (window bits, no_context_takeover), compresses each
 *              message with a sync flush and without its 00 00 ff ff tail, sets RSV1 (echoes
 *              are inflated only with --check; handshake mode offers it and reads no answer)
 *
 * Without options: binary frames of 'x' bytes, zero masking key, echoes counted from their
 * headers only. Prints one line of "key=value" figures:
 *   echo       msgs seconds msgs_per_s MB_per_s (payload one way) wire_bytes_per_msg (bytes of
 *              frames received per message: headers and, compressed or not, payload)
 *              sent_bytes_per_msg
 *   rtt        count median_us (= p50_us) p50_us p90_us p99_us wire_bytes_per_msg
 *   handshake  handshakes seconds handshakes_per_s
 * and loadgen_busy, the share of the run the generator spent on its CPU: near 1, the figure
 * may be the generator's limit rather than the server's.
 *
 * With --text or --json the messages come from a cycle of up to 64 distinct ones (fewer for
 * large sizes), made once. With --deflate the cycle is compressed once, as one stream: each
 * message is compressed in the context the previous ones left (unless the server's answer says
 * client_no_context_takeover), and the first in a fresh one, so that it refers to nothing before
 * it and the cycle can start again on the same connection.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

enum payload_kind { BINARY, TEXT, JSON };

static struct {
    enum payload_kind kind;
    int mask, check, tls, deflate;
} opt;

static int port;
static char request[512];
static size_t request_len;
static SSL_CTX *tls_ctx;

/* -- small helpers ------------------------------------------------------------------------- */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* CPU time this process has used (user and system). */
static double cpu_time(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* Print a message and exit with `status`. */
static void fail(int status, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fputc('\n', stderr);
    exit(status);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die("malloc");
    return p;
}

static int fcntl_nonblock(int fd) {
    int flags = fcntl(fd, F_GETFL);
    return flags < 0 ? flags : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

/* splitmix64: payloads come from fixed seeds, masking keys from a seed taken at start. */
static uint64_t next_random(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static uint64_t mask_random;

/* -- payloads -------------------------------------------------------------------------------- */

/* é ü ß ñ (2 bytes), € → 中 (3 bytes), 😀 (4 bytes), in UTF-8. */
static const char *const MULTIBYTE[] = {
    "\xc3\xa9", "\xc3\xbc", "\xc3\x9f", "\xc3\xb1", "\xe2\x82\xac", "\xe2\x86\x92", "\xe4\xb8\xad",
    "\xf0\x9f\x98\x80",
};

/* `n` bytes of valid UTF-8: printable ASCII, a space in six characters, one in eight multi-byte. */
static void fill_text(unsigned char *p, size_t n, uint64_t seed) {
    size_t i = 0;
    while (i < n) {
        uint64_t r = next_random(&seed);
        if (r % 8 == 0) {
            const char *c = MULTIBYTE[(r >> 8) % 8];
            size_t len = strlen(c);
            if (len <= n - i) {
                memcpy(p + i, c, len);
                i += len;
                continue;
            }
        }
        p[i++] = (r >> 16) % 6 == 0 ? ' ' : '!' + (r >> 24) % 94;
    }
}

/* `n` bytes of JSON-like text: an array of records, padded with spaces before its ']'. */
static void fill_json(unsigned char *p, size_t n, uint64_t seed) {
    static const char *const CITIES[] = {"Paris", "Lyon", "Berlin", "Madrid", "Rome", "Oslo"};
    char record[256];
    size_t i = 0;
    if (n < 2) { memset(p, ' ', n); return; }
    p[i++] = '[';
    unsigned first_id = 10000 + next_random(&seed) % 80000;
    for (unsigned k = 0;; k++) {
        uint64_t r = next_random(&seed);
        unsigned id = first_id + k;
        int len = snprintf(record, sizeof record,
                           "%s{\"id\": %u, \"name\": \"user-%u\", \"active\": %s, \"city\": \"%s\", "
                           "\"score\": %u, \"tags\": [\"alpha\", \"beta\"]}",
                           k ? ", " : "", id, id, r & 1 ? "true" : "false",
                           CITIES[(r >> 8) % 6], (unsigned)(r >> 16) % 1000);
        if (i + len + 1 > n) break;
        memcpy(p + i, record, len);
        i += len;
    }
    memset(p + i, ' ', n - 1 - i);
    p[n - 1] = ']';
}

/* -- permessage-deflate ---------------------------------------------------------------------- */

/* The terms the server's answer set (the same for every connection of a run). */
static struct {
    int known;
    int server_reset, client_reset;   /* *_no_context_takeover */
    int client_bits;                  /* the window our compressor may use */
} pmd;

/* The value of a parameter such as server_max_window_bits=12 or ="12"; 15 when bare. */
static int window_bits(const char *value) {
    if (!value) return 15;
    if (*value == '"') value++;
    int bits = atoi(value);
    if (bits < 8 || bits > 15) fail(1, "bad window bits in the server's answer: %s", value);
    return bits;
}

/* Parse the Sec-WebSocket-Extensions value of the server's 101. */
static void parse_deflate_answer(char *value) {
    char *save = NULL, *param = strtok_r(value, ";", &save);
    while (param && *param == ' ') param++;
    if (!param || strncmp(param, "permessage-deflate", 18) != 0 || strchr(value, ','))
        fail(1, "unexpected extension answer: %s", value);
    int server_reset = 0, client_reset = 0, client_bits = 15;
    while ((param = strtok_r(NULL, ";", &save))) {
        while (*param == ' ') param++;
        char *end = param + strlen(param);
        while (end > param && end[-1] == ' ') *--end = 0;
        char *eq = strchr(param, '=');
        if (eq) *eq++ = 0;
        if (!strcmp(param, "server_no_context_takeover")) server_reset = 1;
        else if (!strcmp(param, "client_no_context_takeover")) client_reset = 1;
        else if (!strcmp(param, "client_max_window_bits")) client_bits = window_bits(eq);
        else if (strcmp(param, "server_max_window_bits") != 0)
            fail(1, "unknown permessage-deflate parameter: %s", param);
    }
    if (client_bits < 9) fail(1, "client_max_window_bits=8: zlib cannot compress with it");
    if (pmd.known && (pmd.server_reset != server_reset || pmd.client_reset != client_reset ||
                      pmd.client_bits != client_bits))
        fail(1, "the server's permessage-deflate answer changed between connections");
    pmd.known = 1;
    pmd.server_reset = server_reset;
    pmd.client_reset = client_reset;
    pmd.client_bits = client_bits;
}

/* Check the server's answer to the upgrade (the head, NUL-terminated). */
static void check_upgrade(char *head, int parse_extensions) {
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
        char *eol = strstr(head, "\r\n");
        if (eol) *eol = 0;
        fail(1, "no 101: %s", head);
    }
    if (!parse_extensions) return;
    static const char NAME[] = "\r\nsec-websocket-extensions:";
    char *line = NULL;
    for (char *p = head; (p = strstr(p, "\r\n")); p += 2)
        if (!strncasecmp(p, NAME, sizeof NAME - 1)) { line = p + sizeof NAME - 1; break; }
    if (!opt.deflate) {
        if (line) fail(1, "the server accepted an extension it was not offered");
        return;
    }
    if (!line) fail(1, "the server declined permessage-deflate");
    *strstr(line, "\r\n") = 0;
    while (*line == ' ') line++;
    parse_deflate_answer(line);
}

/* -- messages and frames ----------------------------------------------------------------------- */

struct message {
    unsigned char *plain;       /* what is sent, and must come back */
    size_t size;
    unsigned char *payload;     /* on the wire: plain, or compressed without its tail */
    size_t payload_len;
};

static struct message *messages;
static int nmessages;
static int data_opcode;

/* Compress the cycle of messages as one stream (see the header comment). */
static void compress_messages(void) {
    z_stream z = {0};
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -pmd.client_bits, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK)
        fail(1, "deflateInit2 failed");
    for (int i = 0; i < nmessages; i++) {
        struct message *m = &messages[i];
        if (i && pmd.client_reset) deflateReset(&z);
        size_t cap = deflateBound(&z, m->size) + 64;
        m->payload = xmalloc(cap);
        z.next_in = m->plain;
        z.avail_in = m->size;
        z.next_out = m->payload;
        z.avail_out = cap;
        if (deflate(&z, Z_SYNC_FLUSH) != Z_OK || z.avail_in || !z.avail_out)
            fail(1, "deflate failed");
        size_t len = cap - z.avail_out;
        if (len < 4 || memcmp(m->payload + len - 4, "\0\0\xff\xff", 4) != 0)
            fail(1, "deflate: no sync flush tail");
        m->payload_len = len - 4;
    }
    deflateEnd(&z);
}

/* Make the cycle of messages of `size` bytes (after the first upgrade: it needs pmd). */
static void make_messages(size_t size) {
    /* Binary payloads are all alike; text ones differ, 2 to 64 of them in 32 MiB at most. */
    size_t fit = (32u << 20) / (size ? size : 1);
    nmessages = opt.kind == BINARY ? 1 : fit < 2 ? 2 : fit > 64 ? 64 : (int)fit;
    data_opcode = opt.kind == BINARY ? 2 : 1;
    messages = calloc(nmessages, sizeof *messages);
    for (int i = 0; i < nmessages; i++) {
        struct message *m = &messages[i];
        m->plain = xmalloc(size);
        m->size = size;
        if (opt.kind == TEXT) fill_text(m->plain, size, i + 1);
        else if (opt.kind == JSON) fill_json(m->plain, size, i + 1);
        else memset(m->plain, 'x', size);
        m->payload = m->plain;
        m->payload_len = size;
    }
    if (opt.deflate) compress_messages();
}

#define MAX_HEADER 14
#define OUT_BUFFER (256 << 10)

static size_t max_payload_len(void) {
    size_t max = 0;
    for (int i = 0; i < nmessages; i++)
        if (messages[i].payload_len > max) max = messages[i].payload_len;
    return max;
}

/* A client frame header for a payload of `len` bytes masked with `key`; returns its length. */
static size_t put_header(unsigned char *f, uint64_t len, const unsigned char key[4]) {
    size_t n = 2;
    f[0] = 0x80 | (opt.deflate ? 0x40 : 0) | data_opcode;
    if (len < 126) {
        f[1] = 0x80 | len;
    } else if (len < 65536) {
        f[1] = 0x80 | 126; f[2] = len >> 8; f[3] = len & 0xff;
        n = 4;
    } else {
        f[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++) f[2 + i] = len >> (56 - 8 * i);
        n = 10;
    }
    memcpy(f + n, key, 4);
    return n + 4;
}

/* dst = src masked with `key`, where src starts `phase` bytes into the payload. */
static void mask_copy(unsigned char *dst, const unsigned char *src, size_t n,
                      const unsigned char key[4], size_t phase) {
    unsigned char k[8];
    for (int i = 0; i < 8; i++) k[i] = key[(phase + i) % 4];
    uint64_t k64;
    memcpy(&k64, k, 8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, src + i, 8);
        w ^= k64;
        memcpy(dst + i, &w, 8);
    }
    for (; i < n; i++) dst[i] = src[i] ^ k[i % 8];
}

static void new_key(unsigned char key[4]) {
    static const unsigned char ZERO[4];
    if (!opt.mask) { memcpy(key, ZERO, 4); return; }
    uint32_t r = next_random(&mask_random);
    memcpy(key, &r, 4);
}

/* The whole frame of message `m` into f (room for MAX_HEADER + payload); its length. */
static size_t put_frame(unsigned char *f, const struct message *m) {
    unsigned char key[4];
    new_key(key);
    size_t head = put_header(f, m->payload_len, key);
    mask_copy(f + head, m->payload, m->payload_len, key, 0);
    return head + m->payload_len;
}

/* Without --mask: the frames of the cycle, prebuilt, repeated to 64 KiB at least, so that any
   run of queued frames is one contiguous write from frames_buf. */
static unsigned char *frames_buf;
static size_t frames_period, frames_buf_len;
static size_t *frame_lens;

static void prebuild_frames(void) {
    frame_lens = xmalloc(nmessages * sizeof *frame_lens);
    unsigned char *cycle = xmalloc(nmessages * (MAX_HEADER + max_payload_len()));
    frames_period = 0;
    for (int i = 0; i < nmessages; i++) {
        frame_lens[i] = put_frame(cycle + frames_period, &messages[i]);
        frames_period += frame_lens[i];
    }
    size_t copies = frames_period >= 65536 ? 1 : 65536 / frames_period + 1;
    frames_buf_len = copies * frames_period;
    frames_buf = xmalloc(frames_buf_len);
    for (size_t i = 0; i < copies; i++) memcpy(frames_buf + i * frames_period, cycle, frames_period);
    free(cycle);
}

/* -- connections: plain or TLS ---------------------------------------------------------------- */

struct io {
    int fd;
    SSL *ssl;
};

static void tls_init(void) {
    tls_ctx = SSL_CTX_new(TLS_client_method());
    if (!tls_ctx) fail(1, "SSL_CTX_new failed");
    SSL_CTX_set_min_proto_version(tls_ctx, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(tls_ctx, TLS1_3_VERSION);
    SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(tls_ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(tls_ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Read many records a read() rather than two reads a record: the generator stays cheap. */
    SSL_CTX_set_read_ahead(tls_ctx, 1);
    SSL_CTX_set_default_read_buffer_len(tls_ctx, 256 << 10);
}

/* After an SSL call returned `ret`: -1 if it would block, 0 at the end; exits on an error. */
static ssize_t tls_result(SSL *ssl, int ret, const char *what) {
    int error = SSL_get_error(ssl, ret);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) return -1;
    if (error == SSL_ERROR_ZERO_RETURN || (error == SSL_ERROR_SYSCALL && errno == 0)) return 0;
    if (error == SSL_ERROR_SYSCALL) die(what);
    fprintf(stderr, "%s: TLS error\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

/* Bytes read (> 0), 0 at the end of the stream, -1 if it would block. */
static ssize_t io_read(struct io *io, void *buf, size_t n) {
    if (!io->ssl) {
        ssize_t r = read(io->fd, buf, n);
        if (r < 0 && errno == EAGAIN) return -1;
        if (r < 0) die("read");
        return r;
    }
    int r = SSL_read(io->ssl, buf, n > INT_MAX ? INT_MAX : (int)n);
    return r > 0 ? r : tls_result(io->ssl, r, "TLS read");
}

/* Bytes written (> 0), or -1 if it would block. */
static ssize_t io_write(struct io *io, const void *buf, size_t n) {
    if (!io->ssl) {
        ssize_t r = write(io->fd, buf, n);
        if (r < 0 && errno == EAGAIN) return -1;
        if (r < 0) die("write");
        return r;
    }
    int r = SSL_write(io->ssl, buf, n > INT_MAX ? INT_MAX : (int)n);
    if (r > 0) return r;
    if (tls_result(io->ssl, r, "TLS write") == 0) fail(1, "server closed the connection");
    return -1;
}

/* Echo connections write TLS records through a 256 KiB buffer, flushed by io_flush, so
   that a message of several records goes out in one write() rather than one a record. */
static void buffer_tls_writes(struct io *io) {
    BIO *sock = SSL_get_wbio(io->ssl), *buffer = BIO_new(BIO_f_buffer());
    if (!buffer || !BIO_set_write_buffer_size(buffer, OUT_BUFFER) || !BIO_up_ref(sock))
        fail(1, "BIO_f_buffer failed");
    SSL_set0_wbio(io->ssl, BIO_push(buffer, sock));
}

/* Write what the TLS buffer holds: 0 once all has gone, -1 if the socket is full. */
static int io_flush(struct io *io) {
    if (!io->ssl) return 0;
    BIO *wbio = SSL_get_wbio(io->ssl);
    if (BIO_flush(wbio) > 0) return 0;
    if (BIO_should_retry(wbio)) return -1;
    die("TLS write");
    return -1;
}

/* On a blocking connection. */
static void write_all(struct io *io, const void *buf, size_t n) {
    for (size_t done = 0; done < n;) {
        ssize_t r = io_write(io, (const char *)buf + done, n - done);
        if (r < 0) fail(1, "write would block on a blocking socket");
        done += r;
    }
}

static int connect_tcp(int nodelay) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    int one = 1;
    if (nodelay) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
    return fd;
}

static SSL *tls_new(int fd) {
    SSL *ssl = SSL_new(tls_ctx);
    if (!ssl || !SSL_set_fd(ssl, fd)) fail(1, "SSL_new failed");
    return ssl;
}

/* A blocking connection to 127.0.0.1:port, upgraded (TLS first with --tls). */
static struct io open_ws(void) {
    struct io io = {connect_tcp(1), NULL};
    if (opt.tls) {
        io.ssl = tls_new(io.fd);
        int r = SSL_connect(io.ssl);
        if (r != 1) { tls_result(io.ssl, r, "TLS handshake"); fail(1, "TLS handshake failed"); }
    }
    write_all(&io, request, request_len);
    char head[4096];
    size_t got = 0;
    while (got < 4 || memcmp(head + got - 4, "\r\n\r\n", 4) != 0) {
        /* Read byte by byte: the head must not swallow frames that follow it. */
        if (io_read(&io, head + got, 1) <= 0) fail(1, "handshake: the server closed the connection");
        if (++got == sizeof head) fail(1, "head too long");
    }
    head[got] = 0;
    check_upgrade(head, 1);
    return io;
}

static void make_request(void) {
    request_len = snprintf(
        request, sizeof request,
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
        opt.deflate ? "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                    : "");
}

/* -- reading the server's frames ---------------------------------------------------------------- */

/* Parses the server's (unmasked) frames in a byte stream, whatever the chunking; with --check,
   compares each data message with the one sent (the cycle's next), inflating it first. */
struct reader {
    int conn;                         /* for messages */
    unsigned char head[MAX_HEADER];
    size_t head_got, head_need;       /* header bytes held; needed (0: not known yet) */
    uint64_t left;                    /* payload bytes of the current frame still to come */
    int opcode, fin;                  /* of the current frame */
    int in_message, compressed, msg_opcode, stream_ended;
    size_t msg_off;                   /* bytes of the current message checked so far */
    unsigned char control[125];
    size_t control_got;
    long messages;                    /* data messages received whole */
    uint64_t bytes;                   /* every byte received after the upgrade */
    uint64_t message_bytes;           /* ...up to the end of the last data message */
    z_stream inflater;
    int inflater_ready;
};

static const struct message *expected(const struct reader *r) {
    return &messages[r->messages % nmessages];
}

static void mismatch(const struct reader *r, const char *what) {
    fail(3, "echo differs from what was sent: connection %d, message %ld: %s", r->conn,
         r->messages, what);
}

/* Compare `n` bytes of the current message with what was sent. */
static void check_bytes(struct reader *r, const unsigned char *p, size_t n) {
    const struct message *m = expected(r);
    char what[128];
    if (n > m->size - r->msg_off) {
        snprintf(what, sizeof what, "longer than the %zu bytes sent", m->size);
        mismatch(r, what);
    }
    if (memcmp(p, m->plain + r->msg_off, n) != 0) {
        size_t i = 0;
        while (p[i] == m->plain[r->msg_off + i]) i++;
        snprintf(what, sizeof what, "byte %zu is 0x%02x, 0x%02x was sent", r->msg_off + i, p[i],
                 m->plain[r->msg_off + i]);
        mismatch(r, what);
    }
    r->msg_off += n;
}

/* Inflate compressed payload bytes and check what they inflate to. */
static void inflate_check(struct reader *r, const unsigned char *p, size_t n) {
    static unsigned char out[1 << 16];
    z_stream *z = &r->inflater;
    if (!r->inflater_ready) {
        if (inflateInit2(z, -15) != Z_OK) fail(1, "inflateInit2 failed");
        r->inflater_ready = 1;
    }
    if (r->stream_ended) {
        if (n) mismatch(r, "bytes after the end of its deflate stream");
        return;
    }
    z->next_in = (unsigned char *)p;
    z->avail_in = n;
    do {
        z->next_out = out;
        z->avail_out = sizeof out;
        int rc = inflate(z, Z_SYNC_FLUSH);
        if (rc == Z_STREAM_END) r->stream_ended = 1;
        else if (rc != Z_OK && rc != Z_BUF_ERROR) mismatch(r, z->msg ? z->msg : "inflate failed");
        check_bytes(r, out, sizeof out - z->avail_out);
    } while (!r->stream_ended && (z->avail_in || z->avail_out == 0));
}

static void start_frame(struct reader *r) {
    const unsigned char *h = r->head;
    r->opcode = h[0] & 0x0f;
    r->fin = h[0] & 0x80;
    unsigned l = h[1] & 0x7f;
    r->left = l;
    if (l == 126) r->left = (h[2] << 8) | h[3];
    else if (l == 127) { r->left = 0; for (int i = 0; i < 8; i++) r->left = r->left << 8 | h[2 + i]; }
    r->head_got = r->head_need = 0;
    if (h[0] & 0x30) fail(1, "server frame with RSV2 or RSV3 set");
    if (r->opcode >= 8) {
        if (r->left > 125 || !r->fin) fail(1, "bad control frame from the server");
        r->control_got = 0;
        return;
    }
    if (r->opcode == 0) {
        if (!r->in_message) fail(1, "continuation frame outside a message");
        if (h[0] & 0x40) fail(1, "RSV1 on a continuation frame");
        return;
    }
    if (r->in_message) fail(1, "new message inside a fragmented one");
    if ((h[0] & 0x40) && !opt.deflate) fail(1, "RSV1 without permessage-deflate");
    r->in_message = 1;
    r->compressed = (h[0] & 0x40) != 0;
    r->msg_opcode = r->opcode;
    r->msg_off = 0;
    r->stream_ended = 0;
}

static void frame_payload(struct reader *r, const unsigned char *p, size_t n) {
    if (r->opcode >= 8) {
        memcpy(r->control + r->control_got, p, n);
        r->control_got += n;
    } else if (opt.check) {
        if (r->compressed) inflate_check(r, p, n);
        else check_bytes(r, p, n);
    }
}

/* The current frame has come whole; 1 if it ended a data message. */
static int end_frame(struct reader *r) {
    if (r->opcode == 8) {
        int code = r->control_got >= 2 ? r->control[0] << 8 | r->control[1] : 1005;
        fail(1, "the server closed the connection (code %d)", code);
    }
    if (r->opcode >= 8 || !r->fin) return 0;   /* pings and pongs are not echoes */
    if (opt.check) {
        if (r->compressed) inflate_check(r, (const unsigned char *)"\0\0\xff\xff", 4);
        const struct message *m = expected(r);
        char what[96];
        if (r->msg_off != m->size) {
            snprintf(what, sizeof what, "%zu bytes instead of %zu", r->msg_off, m->size);
            mismatch(r, what);
        }
        if (r->msg_opcode != data_opcode) {
            snprintf(what, sizeof what, "opcode %d instead of %d", r->msg_opcode, data_opcode);
            mismatch(r, what);
        }
        if (r->compressed && (pmd.server_reset || r->stream_ended)) inflateReset(&r->inflater);
    }
    r->in_message = 0;
    r->messages++;
    return 1;
}

/* Feed received bytes; returns how many data messages they completed. */
static long read_frames(struct reader *r, const unsigned char *p, size_t n) {
    long done = 0;
    r->bytes += n;
    while (n) {
        if (!r->left) {   /* between frames, or in a header */
            r->head[r->head_got++] = *p++;
            n--;
            if (r->head_got == 2) {
                if (r->head[1] & 0x80) fail(1, "masked frame from the server");
                unsigned l = r->head[1] & 0x7f;
                r->head_need = l < 126 ? 2 : l == 126 ? 4 : 10;
            }
            if (r->head_got < 2 || r->head_got < r->head_need) continue;
            start_frame(r);
        } else {
            size_t k = n < r->left ? n : r->left;
            frame_payload(r, p, k);
            r->left -= k; p += k; n -= k;
            if (r->left) continue;
        }
        if (!r->left && end_frame(r)) {
            done++;
            r->message_bytes = r->bytes - n;
        }
    }
    return done;
}

/* -- echo ---------------------------------------------------------------------------------------- */

/* A connection of the echo run and what it still has to send. Without --mask the frames are
   prebuilt and written straight from frames_buf (out_left bytes from out_off); with it each
   frame is masked into `out` as it goes, OUT_BUFFER bytes at a time. */
struct conn {
    struct io io;
    struct reader reader;
    long next;                        /* cycle index of the next message queued */
    uint64_t out_left;                /* prebuilt: bytes queued */
    size_t out_off;                   /* prebuilt: offset in frames_buf; masked: in out */
    uint64_t queued;                  /* masked: messages queued, not yet in out */
    unsigned char *out;
    size_t out_len;
    const struct message *frame;      /* masked: the message being masked into out, or NULL */
    size_t frame_off;                 /* ...how much of its payload is in out */
    unsigned char key[4];
    uint64_t sent_bytes;
};

static void queue(struct conn *c, long count) {
    if (opt.mask) {
        c->queued += count;
        return;
    }
    for (long i = 0; i < count; i++) c->out_left += frame_lens[c->next++ % nmessages];
}

/* Mask queued frames into c->out (emptied), up to OUT_BUFFER bytes. */
static void fill_out(struct conn *c) {
    c->out_len = c->out_off = 0;
    while (c->out_len < OUT_BUFFER) {
        if (!c->frame) {
            if (!c->queued || OUT_BUFFER - c->out_len < MAX_HEADER) return;
            c->frame = &messages[c->next++ % nmessages];
            c->queued--;
            c->frame_off = 0;
            new_key(c->key);
            c->out_len += put_header(c->out + c->out_len, c->frame->payload_len, c->key);
        }
        size_t k = c->frame->payload_len - c->frame_off;
        if (k > OUT_BUFFER - c->out_len) k = OUT_BUFFER - c->out_len;
        mask_copy(c->out + c->out_len, c->frame->payload + c->frame_off, k, c->key, c->frame_off);
        c->out_len += k;
        c->frame_off += k;
        if (c->frame_off == c->frame->payload_len) c->frame = NULL;
    }
}

static void write_some(struct conn *c) {
    for (;;) {
        const unsigned char *p;
        size_t k;
        if (opt.mask) {
            if (c->out_off == c->out_len) fill_out(c);
            p = c->out + c->out_off;
            k = c->out_len - c->out_off;
        } else {
            p = frames_buf + c->out_off;
            k = frames_buf_len - c->out_off;
            if (c->out_left < k) k = c->out_left;
        }
        if (!k) break;
        ssize_t n = io_write(&c->io, p, k);
        if (n < 0) break;
        c->sent_bytes += n;
        if (opt.mask) {
            c->out_off += n;
        } else {
            c->out_left -= n;
            c->out_off = (c->out_off + n) % frames_period;
        }
    }
    io_flush(&c->io);   /* if the socket is full, the rest goes at its next EPOLLOUT */
}

/* Read all that has come; returns the messages completed. */
static long read_some(struct conn *c, unsigned char *buf, size_t size) {
    long got = 0;
    for (;;) {
        ssize_t r = io_read(&c->io, buf, size);
        if (r < 0) return got;
        if (r == 0) fail(1, "server closed the connection");
        got += read_frames(&c->reader, buf, r);
    }
}

static void run_echo(size_t size, int nconns, int inflight, double seconds) {
    int ep = epoll_create1(0);
    struct conn *conns = calloc(nconns, sizeof *conns);
    for (int i = 0; i < nconns; i++) {
        conns[i].io = open_ws();
        if (i == 0) {
            make_messages(size);
            if (!opt.mask) prebuild_frames();
        }
        conns[i].reader.conn = i;
        if (opt.tls) buffer_tls_writes(&conns[i].io);
        if (opt.mask) conns[i].out = xmalloc(OUT_BUFFER);
        if (fcntl_nonblock(conns[i].io.fd) < 0) die("fcntl");
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = &conns[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].io.fd, &ev);
    }
    static unsigned char buf[1 << 20];
    long total = 0;
    double start = now(), end = start + seconds, cpu_start = cpu_time();
    for (int i = 0; i < nconns; i++) { queue(&conns[i], inflight); write_some(&conns[i]); }
    struct epoll_event events[256];
    while (now() < end) {
        int n = epoll_wait(ep, events, 256, 100);
        for (int e = 0; e < n; e++) {
            struct conn *c = events[e].data.ptr;
            long got = read_some(c, buf, sizeof buf);
            total += got;
            queue(c, got);
            write_some(c);
        }
    }
    double elapsed = now() - start;
    uint64_t received = 0, sent = 0;
    long sent_msgs = 0;
    for (int i = 0; i < nconns; i++) {
        received += conns[i].reader.message_bytes;
        sent += conns[i].sent_bytes;
        sent_msgs += conns[i].next;
    }
    printf("msgs=%ld seconds=%.3f msgs_per_s=%.0f MB_per_s=%.1f wire_bytes_per_msg=%.1f "
           "sent_bytes_per_msg=%.1f loadgen_busy=%.2f\n", total, elapsed, total / elapsed,
           total * (double)size / elapsed / 1e6, total ? received / (double)total : 0.0,
           sent_msgs ? sent / (double)sent_msgs : 0.0, (cpu_time() - cpu_start) / elapsed);
}

/* -- round trips ----------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void run_rtt(size_t size, int count) {
    struct io io = open_ws();
    make_messages(size);
    double *t = xmalloc(count * sizeof *t);
    static unsigned char buf[1 << 20];
    unsigned char *frame = xmalloc(MAX_HEADER + max_payload_len());
    struct reader reader = {0};
    double start = now(), cpu_start = cpu_time();
    for (int i = 0; i < count; i++) {
        size_t len = put_frame(frame, &messages[i % nmessages]);
        double t0 = now();
        write_all(&io, frame, len);
        long got = 0;
        while (!got) {
            ssize_t r = io_read(&io, buf, sizeof buf);
            if (r <= 0) fail(1, "server closed the connection");
            got = read_frames(&reader, buf, r);
        }
        t[i] = now() - t0;
    }
    double busy = (cpu_time() - cpu_start) / (now() - start);
    qsort(t, count, sizeof *t, cmp_double);
    double p50 = t[count / 2] * 1e6;
    printf("count=%d median_us=%.1f p50_us=%.1f p90_us=%.1f p99_us=%.1f wire_bytes_per_msg=%.1f "
           "loadgen_busy=%.2f\n", count, p50, p50, t[count * 9 / 10] * 1e6,
           t[count * 99 / 100] * 1e6, reader.message_bytes / (double)count, busy);
}

/* -- handshakes ------------------------------------------------------------------------------ */

enum step { STEP_TLS, STEP_REQUEST, STEP_HEAD };

/* One connection of the handshake run: TLS handshake, request, the 101's head. */
struct slot {
    struct io io;
    enum step step;
    uint32_t events;                  /* what epoll waits for */
    size_t sent, got;
    char head[4096];
};

static int handshake_ep;

static void wait_for(struct slot *s, uint32_t events) {
    if (s->events == events) return;
    struct epoll_event ev = {.events = events, .data.ptr = s};
    epoll_ctl(handshake_ep, s->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, s->io.fd, &ev);
    s->events = events;
}

/* Move a handshake on as far as it goes without blocking; 1 once the 101 has come. */
static int advance(struct slot *s) {
    if (s->step == STEP_TLS) {
        int r = SSL_connect(s->io.ssl);
        if (r != 1) {
            if (tls_result(s->io.ssl, r, "TLS handshake") == 0) fail(1, "TLS handshake: closed");
            wait_for(s, SSL_get_error(s->io.ssl, r) == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN);
            return 0;
        }
        s->step = STEP_REQUEST;
    }
    if (s->step == STEP_REQUEST) {
        while (s->sent < request_len) {
            ssize_t n = io_write(&s->io, request + s->sent, request_len - s->sent);
            if (n < 0) { wait_for(s, EPOLLOUT); return 0; }
            s->sent += n;
        }
        s->step = STEP_HEAD;
        wait_for(s, EPOLLIN);   /* the answer cannot have come yet: no read until it has */
        return 0;
    }
    ssize_t r = io_read(&s->io, s->head + s->got, sizeof s->head - 1 - s->got);
    if (r < 0) return 0;
    if (r == 0) fail(1, "handshake: the server closed the connection");
    s->got += r;
    s->head[s->got] = 0;
    if (s->got >= 4 && memcmp(s->head + s->got - 4, "\r\n\r\n", 4) == 0) {
        check_upgrade(s->head, 0);
        return 1;
    }
    if (s->got == sizeof s->head - 1) fail(1, "head too long");
    return 0;
}

static void open_slot(struct slot *s) {
    memset(s, 0, sizeof *s);
    s->io.fd = connect_tcp(opt.tls);   /* TLS writes twice in a row: no Nagle delay */
    if (fcntl_nonblock(s->io.fd) < 0) die("fcntl");
    if (opt.tls) s->io.ssl = tls_new(s->io.fd);
    s->step = opt.tls ? STEP_TLS : STEP_REQUEST;
    advance(s);
}

static void close_slot(struct slot *s) {
    /* Reset rather than FIN: tens of thousands of closes would otherwise leave their ports
       in TIME_WAIT, and finding a free port makes connect() slow (and each run slower than
       the one before). */
    struct linger reset = {.l_onoff = 1, .l_linger = 0};
    setsockopt(s->io.fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    if (s->io.ssl) SSL_free(s->io.ssl);
    close(s->io.fd);
    s->io.fd = -1;
}

static void run_handshakes(int concurrency, double seconds) {
    /* Keep CONCURRENCY connections in flight with epoll, each: connect, (TLS,) send the
       request, read the 101, reset. */
    handshake_ep = epoll_create1(0);
    struct slot *slots = calloc(concurrency, sizeof *slots);
    long done = 0;
    double start = now(), end = start + seconds, cpu_start = cpu_time();
    for (int i = 0; i < concurrency; i++) slots[i].io.fd = -1;
    struct epoll_event events[256];
    for (;;) {
        double t = now();
        for (int i = 0; i < concurrency && t < end; i++)
            if (slots[i].io.fd < 0) open_slot(&slots[i]);
        int open_slots = 0;
        for (int i = 0; i < concurrency; i++) open_slots += slots[i].io.fd >= 0;
        if (!open_slots) break;
        int n = epoll_wait(handshake_ep, events, 256, 100);
        for (int e = 0; e < n; e++) {
            struct slot *s = events[e].data.ptr;
            if (!advance(s)) continue;
            close_slot(s);
            if (now() < end) done++;
        }
    }
    double elapsed = now() - start;
    printf("handshakes=%ld seconds=%.3f handshakes_per_s=%.0f loadgen_busy=%.2f\n", done, elapsed,
           done / elapsed, (cpu_time() - cpu_start) / elapsed);
}

/* -- idle ------------------------------------------------------------------------------------- */

static void run_idle(int nconns) {
    struct io *conns = xmalloc(nconns * sizeof *conns);
    for (int i = 0; i < nconns; i++) conns[i] = open_ws();
    printf("ready conns=%d\n", nconns);
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {}
    for (int i = 0; i < nconns; i++) close(conns[i].fd);
}

/* -- main ------------------------------------------------------------------------------------- */

static const char USAGE[] =
    "usage: loadgen [--text|--json] [--mask] [--check] [--tls] [--deflate] PORT MODE ARGS...\n"
    "  echo SIZE CONNS INFLIGHT SECONDS | rtt SIZE COUNT | handshake CONCURRENCY SECONDS |"
    " idle CONNS\n";

static void parse_options(int argc, char **argv) {
    static const struct option OPTIONS[] = {
        {"text", no_argument, NULL, 't'}, {"json", no_argument, NULL, 'j'},
        {"mask", no_argument, NULL, 'm'}, {"check", no_argument, NULL, 'c'},
        {"tls", no_argument, NULL, 's'}, {"deflate", no_argument, NULL, 'd'},
        {NULL, 0, NULL, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "", OPTIONS, NULL)) != -1) {
        switch (o) {
        case 't': opt.kind = TEXT; break;
        case 'j': opt.kind = JSON; break;
        case 'm': opt.mask = 1; break;
        case 'c': opt.check = 1; break;
        case 's': opt.tls = 1; break;
        case 'd': opt.deflate = 1; break;
        default: fputs(USAGE, stderr); exit(2);
        }
    }
}

int main(int argc, char **argv) {
    parse_options(argc, argv);
    argc -= optind;
    argv += optind;
    if (argc < 2) {
        fputs(USAGE, stderr);
        return 2;
    }
    port = atoi(argv[0]);
    const char *mode = argv[1];
    mask_random = (uint64_t)time(NULL) << 20 ^ (uint64_t)getpid();
    make_request();
    if (opt.tls) tls_init();
    if (!strcmp(mode, "echo") && argc == 6)
        run_echo(strtoul(argv[2], 0, 10), atoi(argv[3]), atoi(argv[4]), atof(argv[5]));
    else if (!strcmp(mode, "rtt") && argc == 4)
        run_rtt(strtoul(argv[2], 0, 10), atoi(argv[3]));
    else if (!strcmp(mode, "handshake") && argc == 4)
        run_handshakes(atoi(argv[2]), atof(argv[3]));
    else if (!strcmp(mode, "idle") && argc == 3)
        run_idle(atoi(argv[2]));
    else {
        fputs(USAGE, stderr);
        return 2;
    }
    return 0;
}
