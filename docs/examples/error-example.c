/* SPDX-License-Identifier: MIT */
/*
 * error-example.c - the example of docs/error.md: a function that fails with
 * -errno and, if asked, says why; a caller that adds context.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <moor/error.h>

static int parse_port(const char *text, int *port, moor_error *err)
{
    int value = 0;

    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9')
            return moor_error_set(err, -EINVAL, "port '%s': '%c' is not a digit", text, *p);
        value = value * 10 + (*p - '0');
        if (value > 65535)
            return moor_error_set(err, -ERANGE, "port '%s' is above 65535", text);
    }
    *port = value; /* only written on success */
    return 0;
}

int main(void)
{
    moor_error err = MOOR_ERROR_INIT;
    int port = -1;

    if (parse_port("80a", &port, &err) < 0) {
        moor_error_prefix(&err, "reading config: ");
        printf("%s (code %d, port untouched: %d)\n", moor_error_message(&err), err.code, port);
    }
    moor_error_clear(&err);
    if (parse_port("8080", &port, NULL) == 0) /* NULL: only the code matters */
        printf("port %d\n", port);
    return strcmp(moor_error_message(&err), "") == 0 ? 0 : 1;
}
