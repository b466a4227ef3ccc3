/* SPDX-License-Identifier: MIT */
/*
 * error.c - moor_error, the optional caller-owned failure record.
 *
 * Theory of operation: a moor_error is a fixed buffer owned by the caller,
 * so reporting an error never allocates and therefore cannot itself fail
 * (important on the out-of-memory paths that use it most). Every function
 * tolerates err == NULL, which is how callers say "I only want the code".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <moor/error.h>

/* Mark a cut message so a reader knows text is missing. */
static void mark_truncated(moor_error *err)
{
    static const char dots[] = "...";
    size_t at = sizeof(err->message) - sizeof(dots);

    memcpy(err->message + at, dots, sizeof(dots));
}

__attribute__((format(printf, 2, 0))) static void format_into(moor_error *err, const char *fmt,
                                                              va_list ap)
{
    int n = vsnprintf(err->message, sizeof(err->message), fmt, ap);

    if (n < 0)
        err->message[0] = '\0';
    else if ((size_t)n >= sizeof(err->message))
        mark_truncated(err);
}

/* strerror() may use a shared buffer; glibc's description table does not. */
static const char *errno_text(int errnum)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 32)
    const char *s = strerrordesc_np(errnum);

    return s ? s : "Unknown error";
#else
    return strerror(errnum);
#endif
}

int moor_error_set(moor_error *err, int code, const char *fmt, ...)
{
    va_list ap;

    if (code >= 0)
        code = -EINVAL;
    if (!err)
        return code;
    err->code = code;
    va_start(ap, fmt);
    format_into(err, fmt, ap);
    va_end(ap);
    return code;
}

int moor_error_prefix(moor_error *err, const char *fmt, ...)
{
    char old[MOOR_ERROR_MESSAGE_SIZE];
    char prefix[MOOR_ERROR_MESSAGE_SIZE];
    va_list ap;
    int n;

    if (!err || err->code == 0)
        return err ? err->code : 0;
    /* Not memcpy: the message may be a short static strerror text. */
    snprintf(old, sizeof(old), "%s", moor_error_message(err));
    va_start(ap, fmt);
    n = vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    if (n < 0)
        prefix[0] = '\0';
    n = snprintf(err->message, sizeof(err->message), "%s%s", prefix, old);
    if (n >= 0 && (size_t)n >= sizeof(err->message))
        mark_truncated(err);
    return err->code;
}

void moor_error_clear(moor_error *err)
{
    if (!err)
        return;
    err->code = 0;
    err->message[0] = '\0';
}

bool moor_error_is_set(const moor_error *err)
{
    return err && err->code != 0;
}

const char *moor_error_message(const moor_error *err)
{
    if (!err || err->code == 0)
        return "";
    if (err->message[0] == '\0')
        return errno_text(-err->code);
    return err->message;
}
