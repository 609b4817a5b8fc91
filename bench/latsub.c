/* Latency subscribers in C: N streams in one epoll loop, every delivery timed.
 *
 * The Python subscribers (bench/load.py) cost about 9 us of CPU per delivery:
 * at 1,000 subscribers and 100 messages/s they fill the load core, fall behind,
 * and then one read returns several messages, which all get the newest
 * segment's kernel stamp. This program costs a fraction of that, so it reads
 * every segment as it arrives and each message gets its own stamps.
 *
 *   latsub PORT N DEADLINE_S REQUEST
 *
 * REQUEST is the exact bytes of the HTTP request (GET or WebSocket upgrade).
 * It connects N sockets to 127.0.0.1:PORT, sends REQUEST on each, checks for a
 * 200 or 101 status, then prints "ready CONNECTED". It then reads commands on
 * stdin: "start" turns on SO_TIMESTAMPNS and recording, "stop" prints one line
 * of results and exits. It also exits by itself DEADLINE_S seconds after start
 * and when stdin closes (its parent died). Each delivery is a '"t0":<ms>}' in
 * the stream, timed twice: the kernel's receive stamp (SO_TIMESTAMPNS) and the
 * clock after recvmsg() returned; both in 10 us buckets.
 *
 * Results: "result DELIVERED FAILED CLOSED MAX_APP_MS MAX_SOCK_MS" followed by
 * " a BUCKET COUNT" and " k BUCKET COUNT" pairs for every non-empty bucket.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUCKETS 1000000 /* 10 us each: 10 s */
#define RECV (1 << 16)
#define KEEP 64

static uint32_t hist_app[BUCKETS], hist_sock[BUCKETS];

struct conn {
    int fd, live;
    size_t head_len, left_len;
    char head[1024];
    char left[KEEP];
};

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void record(uint32_t *hist, double *max, double lat) {
    if (lat < 0) lat = 0;
    long b = (long)(lat * 100.0);
    if (b >= BUCKETS) b = BUCKETS - 1;
    hist[b]++;
    if (lat > *max) *max = lat;
}

static void abort_close(int fd) {
    struct linger lg = {1, 0}; /* RST: no TIME_WAIT left behind */
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: latsub PORT N DEADLINE_S REQUEST\n");
        return 2;
    }
    int port = atoi(argv[1]), n = atoi(argv[2]);
    double limit = atof(argv[3]);
    const char *request = argv[4];
    size_t request_len = strlen(request);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int ep = epoll_create1(0);
    struct conn *conns = calloc((size_t)n, sizeof *conns);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.u64 = (uint64_t)n; /* stdin */
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
    long delivered = 0, failed = 0, closed = 0;
    int connected = 0, handshaking = 0;
    double max_app = 0, max_sock = 0;
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        conns[i].fd = -1;
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
            send(fd, request, request_len, 0) != (ssize_t)request_len) {
            failed++;
            if (fd >= 0) close(fd);
            continue;
        }
        fcntl(fd, F_SETFL, O_NONBLOCK);
        conns[i].fd = fd;
        handshaking++;
        ev.events = EPOLLIN;
        ev.data.u64 = (uint64_t)i;
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    static char buf[RECV + KEEP];
    char control[CMSG_SPACE(sizeof(struct timespec))];
    struct epoll_event events[256];
    int recording = 0, ready_said = 0;
    double deadline = mono() + 60.0 + limit;
    static const char pong[] = "\x8a\x80\x00\x00\x00\x00";
    for (;;) {
        if (!ready_said && handshaking == 0) {
            printf("ready %d\n", connected);
            fflush(stdout);
            ready_said = 1;
        }
        if (mono() > deadline) break;
        int got = epoll_wait(ep, events, 256, 100);
        if (got < 0 && errno != EINTR) break;
        for (int e = 0; e < got; e++) {
            uint64_t idx = events[e].data.u64;
            if (idx == (uint64_t)n) { /* a command */
                char cmd[64];
                ssize_t r = read(0, cmd, sizeof cmd - 1);
                if (r <= 0) goto done;
                cmd[r] = 0;
                if (strstr(cmd, "stop")) goto done;
                if (strstr(cmd, "start") && !recording) {
                    int on = 1;
                    for (int i = 0; i < n; i++)
                        if (conns[i].fd >= 0)
                            setsockopt(conns[i].fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on);
                    recording = 1;
                    delivered = 0;
                    deadline = mono() + limit;
                }
                continue;
            }
            struct conn *c = &conns[idx];
            struct iovec iov = {.iov_base = buf + KEEP, .iov_len = RECV};
            struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                                 .msg_control = control, .msg_controllen = sizeof control};
            ssize_t r = recvmsg(c->fd, &msg, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (r <= 0) {
                if (c->live) { closed++; connected--; } else { failed++; handshaking--; }
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                abort_close(c->fd);
                c->fd = -1;
                continue;
            }
            double app = now_ms();
            char *data = buf + KEEP;
            size_t len = (size_t)r;
            if (!c->live) { /* response head */
                size_t take = len < sizeof c->head - c->head_len - 1 ? len : sizeof c->head - c->head_len - 1;
                memcpy(c->head + c->head_len, data, take);
                c->head_len += take;
                c->head[c->head_len] = 0;
                char *end = strstr(c->head, "\r\n\r\n");
                if (!end) continue;
                handshaking--;
                if (strncmp(c->head + 8, " 200", 4) != 0 && strncmp(c->head + 8, " 101", 4) != 0) {
                    failed++;
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    abort_close(c->fd);
                    c->fd = -1;
                    continue;
                }
                c->live = 1;
                connected++;
                size_t body = (size_t)(end + 4 - c->head);
                if (body >= c->head_len) continue;
                /* bytes after the head: the start of the stream (history) */
                len = c->head_len - body;
                memmove(data, c->head + body, len);
            }
            if (memchr(data, 0x89, len)) send(c->fd, pong, 6, MSG_NOSIGNAL);
            if (!recording) continue;
            double sock = app;
            for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
                if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SO_TIMESTAMPNS) {
                    struct timespec ts;
                    memcpy(&ts, CMSG_DATA(cm), sizeof ts);
                    sock = ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
                }
            /* prepend what the last read left unfinished */
            char *start = data - c->left_len;
            memcpy(start, c->left, c->left_len);
            char *stop = data + len, *p = start, *keep = start;
            for (;;) {
                char *m = memmem(p, (size_t)(stop - p), "\"t0\":", 5);
                if (!m) { keep = stop - (stop - p < 5 ? stop - p : 4); break; }
                char *q = m + 5;
                while (q < stop && *q != '}') q++;
                if (q >= stop) { keep = m; break; } /* number cut by the read */
                double t0 = strtod(m + 5, NULL);
                record(hist_app, &max_app, app - t0);
                record(hist_sock, &max_sock, sock - t0);
                delivered++;
                p = q + 1;
                keep = p;
            }
            size_t rest = (size_t)(stop - keep);
            if (rest > KEEP) rest = KEEP, keep = stop - KEEP;
            memcpy(c->left, keep, rest);
            c->left_len = rest;
        }
    }
done:
    printf("result %ld %ld %ld %.3f %.3f", delivered, failed, closed, max_app, max_sock);
    for (long b = 0; b < BUCKETS; b++)
        if (hist_app[b]) printf(" a %ld %u", b, hist_app[b]);
    for (long b = 0; b < BUCKETS; b++)
        if (hist_sock[b]) printf(" k %ld %u", b, hist_sock[b]);
    printf("\n");
    fflush(stdout);
    for (int i = 0; i < n; i++)
        if (conns[i].fd >= 0) abort_close(conns[i].fd);
    return 0;
}
