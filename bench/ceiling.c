/*
 * ceiling: the smallest SSE fan-out server, as a ceiling for what a broker on this
 * machine could reach. One thread, epoll, no framework. A publish encodes its
 * frame once and hands it to every subscriber of the channel with one write each.
 *
 *   GET  /<anything>/{channel}   subscribe: 200 text/event-stream, body until close
 *   POST /<anything>/{channel}   publish the body; a {"data": X} JSON body sends X
 *                                as sse-cluster would, any other body is sent as is
 *
 * The channel is the last path segment (a query string is ignored), so the same
 * URL templates as sse-cluster's (/channel/{channel}) or nchan's work unchanged.
 * A subscriber whose socket buffer is full is dropped (and counted on stderr):
 * the ceiling does no buffering.
 *
 * Build: gcc -O2 -o ceiling ceiling.c     Run: ./ceiling PORT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_REQUEST 65536
#define MAX_CHANNELS 4096
#define MAX_NAME 128

struct conn {
    int fd;
    int channel;     /* subscribers: index into channels, else -1 */
    int slot;        /* subscribers: position in the channel's list */
    size_t len;      /* bytes buffered in req */
    size_t cap;      /* size of req: starts small, grows to MAX_REQUEST */
    char *req;       /* request bytes not yet handled (publishers) */
};

struct channel {
    char name[MAX_NAME + 1];
    int *subs;       /* fds */
    int count, cap;
};

static struct conn **conns;   /* indexed by fd */
static int max_fds;
static struct channel channels[MAX_CHANNELS];
static int channel_count;
static unsigned long dropped;
static int epfd;

static int channel_index(const char *name, size_t len) {
    if (len == 0 || len > MAX_NAME) return -1;
    for (int i = 0; i < channel_count; i++)
        if (strlen(channels[i].name) == len && memcmp(channels[i].name, name, len) == 0)
            return i;
    if (channel_count == MAX_CHANNELS) return -1;
    memcpy(channels[channel_count].name, name, len);
    channels[channel_count].name[len] = 0;
    return channel_count++;
}

static void close_conn(struct conn *c) {
    if (c->channel >= 0) {
        struct channel *ch = &channels[c->channel];
        int last = ch->subs[--ch->count];
        ch->subs[c->slot] = last;
        conns[last]->slot = c->slot;
    }
    conns[c->fd] = NULL;
    close(c->fd);
    free(c->req);
    free(c);
}

static int write_all_now(int fd, const char *buf, size_t len) {
    ssize_t n = write(fd, buf, len);
    return n == (ssize_t)len ? 0 : -1;
}

/* The channel name: the last path segment, without a query string. */
static int path_channel(const char *path, size_t len) {
    const char *q = memchr(path, '?', len);
    if (q) len = (size_t)(q - path);
    const char *slash = path;
    for (size_t i = 0; i < len; i++)
        if (path[i] == '/') slash = path + i;
    const char *name = slash + 1;
    return channel_index(name, (size_t)(path + len - name));
}

static void subscribe(struct conn *c, int ch) {
    static const char head[] =
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        "Connection: close\r\n\r\n: ok\n\n";
    struct channel *chan = &channels[ch];
    if (chan->count == chan->cap) {
        int cap = chan->cap ? chan->cap * 2 : 64;
        int *subs = realloc(chan->subs, (size_t)cap * sizeof(int));
        if (!subs) { close_conn(c); return; }
        chan->subs = subs;
        chan->cap = cap;
    }
    if (write_all_now(c->fd, head, sizeof head - 1) < 0) { close_conn(c); return; }
    c->channel = ch;
    c->slot = chan->count;
    chan->subs[chan->count++] = c->fd;
    free(c->req);
    c->req = NULL;
    c->len = 0;
}

/* Frames the body as one SSE event and writes it once to each subscriber. */
static int publish(int ch, const char *body, size_t len) {
    static char frame[MAX_REQUEST + 16];
    static const char prefix[] = "{\"data\":";
    if (len > sizeof prefix - 1 && memcmp(body, prefix, sizeof prefix - 1) == 0 &&
        body[len - 1] == '}') {
        body += sizeof prefix - 1;
        len -= sizeof prefix;
    }
    for (size_t i = 0; i < len; i++)
        if (body[i] == '\n' || body[i] == '\r') return -1;
    memcpy(frame, "data: ", 6);
    memcpy(frame + 6, body, len);
    memcpy(frame + 6 + len, "\n\n", 2);
    size_t frame_len = len + 8;
    struct channel *chan = &channels[ch];
    int delivered = 0;
    for (int i = 0; i < chan->count;) {
        int fd = chan->subs[i];
        if (write_all_now(fd, frame, frame_len) == 0) {
            delivered++;
            i++;
        } else {
            dropped++;
            fprintf(stderr, "ceiling: dropped a subscriber that could not take a write (%lu)\n", dropped);
            close_conn(conns[fd]); /* moves the last subscriber into slot i */
        }
    }
    return delivered;
}

static void respond(struct conn *c, int status, const char *text) {
    char buf[256];
    int n = snprintf(buf, sizeof buf,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     status, status == 200 ? "OK" : "Bad Request", strlen(text), text);
    if (write_all_now(c->fd, buf, (size_t)n) < 0) close_conn(c);
}

/* Makes room in a full request buffer. Returns -1 if c was closed. */
static int grow(struct conn *c) {
    if (c->len < c->cap) return 0;
    size_t cap = c->cap * 2 > MAX_REQUEST ? MAX_REQUEST : c->cap * 2;
    char *req = realloc(c->req, cap);
    if (!req) { close_conn(c); return -1; }
    c->req = req;
    c->cap = cap;
    return 0;
}

/* Handles every complete request in c->req. Returns -1 if c was closed. */
static int handle_requests(struct conn *c) {
    for (;;) {
        char *end = memmem(c->req, c->len, "\r\n\r\n", 4);
        if (!end) {
            if (c->len == MAX_REQUEST) { close_conn(c); return -1; }
            return grow(c);
        }
        size_t head_len = (size_t)(end - c->req) + 4;
        char *sp1 = memchr(c->req, ' ', head_len);
        char *sp2 = sp1 ? memchr(sp1 + 1, ' ', head_len - (size_t)(sp1 + 1 - c->req)) : NULL;
        if (!sp2) { close_conn(c); return -1; }
        int ch = path_channel(sp1 + 1, (size_t)(sp2 - sp1 - 1));
        if (ch < 0) { close_conn(c); return -1; }
        if (sp1 - c->req == 3 && memcmp(c->req, "GET", 3) == 0) {
            subscribe(c, ch);
            return -1; /* no longer a request reader either way */
        }
        size_t body_len = 0;
        for (char *line = memchr(c->req, '\n', head_len); line && line < end;
             line = memchr(line + 1, '\n', (size_t)(end - line))) {
            if (strncasecmp(line + 1, "content-length:", 15) == 0)
                body_len = strtoul(line + 16, NULL, 10);
        }
        if (head_len + body_len > MAX_REQUEST) { close_conn(c); return -1; }
        if (c->len < head_len + body_len) {
            while (c->cap < head_len + body_len)
                if (grow(c) < 0) return -1;
            return 0;
        }
        int delivered = publish(ch, c->req + head_len, body_len);
        if (conns[c->fd] != c) return -1;
        char answer[64];
        if (delivered < 0) {
            snprintf(answer, sizeof answer, "{\"error\":\"line break in data\"}");
            respond(c, 400, answer);
        } else {
            snprintf(answer, sizeof answer, "{\"delivered\":%d}", delivered);
            respond(c, 200, answer);
        }
        if (conns[c->fd] != c) return -1;
        size_t used = head_len + body_len;
        memmove(c->req, c->req + used, c->len - used);
        c->len -= used;
    }
}

static void on_readable(struct conn *c) {
    if (c->channel >= 0) {
        /* Subscribers never send anything we use: drain, and notice the close. */
        char sink[512];
        ssize_t n = read(c->fd, sink, sizeof sink);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) close_conn(c);
        return;
    }
    for (;;) {
        ssize_t n = read(c->fd, c->req + c->len, c->cap - c->len);
        if (n > 0) {
            c->len += (size_t)n;
            if (handle_requests(c) < 0) return;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        close_conn(c);
        return;
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    max_fds = (int)rl.rlim_cur;
    conns = calloc((size_t)max_fds, sizeof *conns);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (!conns || bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 4096) < 0) {
        perror("ceiling: listen");
        return 1;
    }
    epfd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
    fprintf(stderr, "ceiling: listening on 127.0.0.1:%s\n", argv[1]);

    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(epfd, events, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd) {
                int cfd;
                while ((cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    struct conn *c = calloc(1, sizeof *c);
                    char *req = malloc(1024);
                    if (cfd >= max_fds || !c || !req) { close(cfd); free(c); free(req); continue; }
                    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c->fd = cfd;
                    c->channel = -1;
                    c->req = req;
                    c->cap = 1024;
                    conns[cfd] = c;
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = cfd};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, cfd, &cev);
                }
            } else if (conns[fd]) {
                on_readable(conns[fd]);
            }
        }
    }
}
