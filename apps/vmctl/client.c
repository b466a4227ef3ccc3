/* SPDX-License-Identifier: MIT */
/*
 * client.c - moor-vmd's HTTP client: one libcurl easy handle per client,
 * CURLOPT_UNIX_SOCKET_PATH to reach the daemon, the body collected into a
 * growing buffer and parsed with json-c. libcurl's global state is set up
 * once per process (pthread_once); its share of memory is left to the
 * process's exit, as libcurl recommends for programs that use it to the end.
 */
#include "client.h"

#include <curl/curl.h>
#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

struct vmctl_client {
    CURL *curl;
    char *socket_path;
    long timeout_ms;
    const volatile sig_atomic_t *cancel; /* NULL, or give up once non-zero */
    char curl_error[CURL_ERROR_SIZE];
};

/* A growing buffer for a response body. */
struct body {
    char *data;
    size_t len, cap;
    bool failed; /* out of memory */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void curl_init_once(void)
{
    curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct vmctl_client *vmctl_client_new(const char *socket_path, long timeout_ms, moor_error *err)
{
    struct vmctl_client *c;

    if (!socket_path || !*socket_path ||
        strlen(socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        moor_error_set(err, -EINVAL, "socket path %s", socket_path ? "too long or empty" : "NULL");
        return NULL;
    }
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_result != CURLE_OK) {
        moor_error_set(err, -ENOMEM, "libcurl: %s", curl_easy_strerror(curl_init_result));
        return NULL;
    }
    c = calloc(1, sizeof(*c));
    if (c) {
        c->socket_path = strdup(socket_path);
        c->curl = curl_easy_init();
    }
    if (!c || !c->socket_path || !c->curl) {
        vmctl_client_free(c);
        moor_error_set(err, -ENOMEM, "out of memory creating an HTTP client");
        return NULL;
    }
    c->timeout_ms = timeout_ms;
    return c;
}

void vmctl_client_free(struct vmctl_client *c)
{
    if (!c)
        return;
    if (c->curl)
        curl_easy_cleanup(c->curl);
    free(c->socket_path);
    free(c);
}

void vmctl_client_set_cancel(struct vmctl_client *c, const volatile sig_atomic_t *flag)
{
    c->cancel = flag;
}

/* libcurl's progress callback: non-zero aborts the transfer. */
static int check_cancel(void *opaque, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                        curl_off_t ulnow)
{
    const struct vmctl_client *c = opaque;

    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return *c->cancel != 0;
}

void vmctl_response_clear(struct vmctl_response *r)
{
    if (!r)
        return;
    json_object_put(r->json);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

static size_t collect(char *ptr, size_t size, size_t nmemb, void *opaque)
{
    struct body *b = opaque;
    size_t n = size * nmemb;

    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        char *p;

        while (cap < b->len + n + 1)
            cap *= 2;
        p = realloc(b->data, cap);
        if (!p) {
            b->failed = true;
            return 0; /* makes libcurl fail the transfer */
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

/* The transport error of @rc as -errno with the message set. */
static int transport_error(struct vmctl_client *c, CURLcode rc, moor_error *err)
{
    const char *why = c->curl_error[0] ? c->curl_error : curl_easy_strerror(rc);
    long os_errno = 0;

    switch (rc) {
    case CURLE_COULDNT_CONNECT:
        /* The socket's own errno says more than libcurl's text, which
         * speaks of a TCP port. */
        curl_easy_getinfo(c->curl, CURLINFO_OS_ERRNO, &os_errno);
        if (os_errno == EACCES)
            return moor_error_set(err, -EACCES, "cannot connect to moor-vmd at %s: %s",
                                  c->socket_path, strerror(EACCES));
        return moor_error_set(err, os_errno == ENOENT ? -ENOENT : -ECONNREFUSED,
                              "cannot connect to moor-vmd at %s: is it running? (%s)",
                              c->socket_path, os_errno ? strerror((int)os_errno) : why);
    case CURLE_ABORTED_BY_CALLBACK:
        return moor_error_set(err, -ECANCELED, "request to moor-vmd interrupted");
    case CURLE_OPERATION_TIMEDOUT:
        return moor_error_set(err, -ETIMEDOUT, "moor-vmd at %s did not answer within %ld ms",
                              c->socket_path, c->timeout_ms);
    case CURLE_OUT_OF_MEMORY:
        return moor_error_set(err, -ENOMEM, "out of memory talking to moor-vmd");
    default:
        return moor_error_set(err, -EIO, "talking to moor-vmd at %s: %s", c->socket_path, why);
    }
}

/* Set up the handle for one request; @headers is the caller's to free. */
static void prepare(struct vmctl_client *c, const char *method, const char *path, const char *body,
                    struct curl_slist **headers)
{
    char url[1024];

    curl_easy_reset(c->curl);
    snprintf(url, sizeof(url), "http://localhost%s", path);
    c->curl_error[0] = '\0';
    curl_easy_setopt(c->curl, CURLOPT_UNIX_SOCKET_PATH, c->socket_path);
    curl_easy_setopt(c->curl, CURLOPT_URL, url);
    /* The path as given: "." and ".." segments are names to the daemon. */
    curl_easy_setopt(c->curl, CURLOPT_PATH_AS_IS, 1L);
    if (c->cancel) {
        curl_easy_setopt(c->curl, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c->curl, CURLOPT_XFERINFOFUNCTION, check_cancel);
        curl_easy_setopt(c->curl, CURLOPT_XFERINFODATA, c);
    }
    curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, c->curl_error);
    curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
    if (c->timeout_ms > 0)
        curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(c->curl, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        *headers = curl_slist_append(NULL, "Content-Type: application/json");
        curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, *headers);
        curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(c->curl, CURLOPT_HTTPGET, 1L);
    }
}

/* Fill the parsed parts of @r from its raw body. */
static void parse_body(struct vmctl_response *r)
{
    struct json_object *e, *v;

    if (r->body_len == 0)
        return;
    r->json = json_tokener_parse(r->body);
    if (r->status >= 300 && r->json && json_object_object_get_ex(r->json, "error", &e)) {
        if (json_object_object_get_ex(e, "code", &v))
            r->error_code = json_object_get_string(v);
        if (json_object_object_get_ex(e, "message", &v))
            r->error_message = json_object_get_string(v);
    }
}

int vmctl_request(struct vmctl_client *c, const char *method, const char *path, const char *body,
                  struct vmctl_response *out, moor_error *err)
{
    struct curl_slist *headers = NULL;
    struct body b = {0};
    CURLcode rc;

    if (!c || !method || !path || path[0] != '/' || !out)
        return moor_error_set(err, -EINVAL, "vmctl_request: bad arguments");
    prepare(c, method, path, body, &headers);
    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &b);
    rc = curl_easy_perform(c->curl);
    curl_slist_free_all(headers);
    if (rc == CURLE_OK && !b.data && !(b.data = calloc(1, 1)))
        b.failed = true;
    if (rc != CURLE_OK || b.failed) {
        free(b.data);
        return transport_error(c, b.failed ? CURLE_OUT_OF_MEMORY : rc, err);
    }
    memset(out, 0, sizeof(*out));
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &out->status);
    out->body = b.data;
    out->body_len = b.len;
    parse_body(out);
    return 0;
}

/* Streaming: lines are cut out of the buffer as they complete. An error
 * answer (non-2xx) is not a stream: its body is kept whole for the message. */
struct stream {
    struct body buf;
    CURL *curl;
    bool (*on_line)(const char *line, size_t len, void *opaque);
    void *opaque;
    bool stopped;
    long status; /* 0 until the first body bytes */
};

static size_t stream_collect(char *ptr, size_t size, size_t nmemb, void *opaque)
{
    struct stream *s = opaque;
    size_t n = size * nmemb, start = 0;
    char *nl;

    if (!s->status)
        curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &s->status);
    if (collect(ptr, size, nmemb, &s->buf) != n)
        return 0;
    if (s->status < 200 || s->status >= 300)
        return n;
    while ((nl = memchr(s->buf.data + start, '\n', s->buf.len - start))) {
        size_t len = (size_t)(nl - (s->buf.data + start));

        *nl = '\0';
        if (!s->on_line(s->buf.data + start, len, s->opaque)) {
            s->stopped = true;
            return 0;
        }
        start += len + 1;
    }
    memmove(s->buf.data, s->buf.data + start, s->buf.len - start + 1);
    s->buf.len -= start;
    return n;
}

/* The message of a non-2xx answer to a stream request, into @err. */
static void stream_error(struct stream *s, long status, moor_error *err)
{
    struct vmctl_response r = {.status = status, .body = s->buf.data, .body_len = s->buf.len};

    if (r.body)
        parse_body(&r);
    if (r.error_message && *r.error_message)
        moor_error_set(err, -EIO, "%s", r.error_message);
    else
        moor_error_set(err, -EIO, "moor-vmd answered HTTP %ld", status);
    json_object_put(r.json);
}

long vmctl_stream(struct vmctl_client *c, const char *path,
                  bool (*on_line)(const char *line, size_t len, void *opaque), void *opaque,
                  moor_error *err)
{
    struct curl_slist *headers = NULL;
    struct stream s = {.curl = c ? c->curl : NULL, .on_line = on_line, .opaque = opaque};
    long status = 0;
    CURLcode rc;

    if (!c || !path || path[0] != '/' || !on_line)
        return moor_error_set(err, -EINVAL, "vmctl_stream: bad arguments");
    prepare(c, "GET", path, NULL, &headers);
    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, stream_collect);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &s);
    rc = curl_easy_perform(c->curl);
    if (rc == CURLE_ABORTED_BY_CALLBACK)
        s.stopped = true; /* the cancel flag */
    if (rc != CURLE_OK &&
        !(s.stopped && (rc == CURLE_WRITE_ERROR || rc == CURLE_ABORTED_BY_CALLBACK))) {
        free(s.buf.data);
        return transport_error(c, s.buf.failed ? CURLE_OUT_OF_MEMORY : rc, err);
    }
    /* A transfer stopped by its write callback: libcurl closes that
     * connection, so the next request starts on a fresh one. */
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status >= 300)
        stream_error(&s, status, err);
    free(s.buf.data);
    return status;
}
