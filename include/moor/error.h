/* SPDX-License-Identifier: MIT */
/*
 * moor/error.h - optional, caller-owned error details.
 *
 * Every moor call that can fail returns a negative errno. Callers that want
 * to know *why* pass a moor_error; callers that do not pass NULL. The struct
 * is plain storage (no allocation, nothing to free), so it can live on the
 * stack and be reused.
 */
#ifndef MOOR_ERROR_H
#define MOOR_ERROR_H

#include <stdbool.h>
#include <stddef.h>

#include <moor/export.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Long enough for "which op, which object, which holder, for how long". */
#define MOOR_ERROR_MESSAGE_SIZE 256

typedef struct moor_error {
    int code;                              /* 0, or a negative errno */
    char message[MOOR_ERROR_MESSAGE_SIZE]; /* NUL-terminated, may be "" */
} moor_error;

#define MOOR_ERROR_INIT                                                                            \
    {                                                                                              \
        0, ""                                                                                      \
    }

/*
 * moor_error_set - record a failure and return its code.
 *
 * Lets a function fail in one line: `return moor_error_set(err, -EINVAL, ...)`.
 * An earlier error in @err is replaced. Messages longer than the buffer are
 * cut and end in "...".
 *
 * Ownership: @err stays the caller's; nothing is allocated.
 * Locks: none. Blocks: never. Context: any thread.
 * Returns: @code unchanged. @code must be a negative errno; a non-negative
 *   code is a programmer error and is recorded (and returned) as -EINVAL.
 */
MOOR_EXPORT int moor_error_set(moor_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * moor_error_prefix - put context in front of an error already recorded.
 *
 * For a caller that adds "while starting vm1: " to a callee's message.
 * Does nothing when @err is NULL or holds no error.
 *
 * Ownership, locks, blocking: as moor_error_set().
 * Returns: the code already in @err (0 when none, or @err is NULL).
 * Locks: none. Blocks: never.
 */
MOOR_EXPORT int moor_error_prefix(moor_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * moor_error_clear - forget a recorded error so @err can be reused.
 * NULL-safe. Locks: none. Blocks: never. Returns: nothing.
 */
MOOR_EXPORT void moor_error_clear(moor_error *err);

/*
 * moor_error_is_set - whether @err holds a failure. NULL gives false.
 * Locks: none. Blocks: never. Returns: the answer.
 */
MOOR_EXPORT bool moor_error_is_set(const moor_error *err);

/*
 * moor_error_message - the text of the error in @err.
 *
 * Ownership: the string lives in @err (or is static) and stays valid until
 * @err is changed. Locks: none. Blocks: never.
 * Returns, never NULL: "" when nothing is recorded; the strerror() text
 * when a code was recorded without a message.
 */
MOOR_EXPORT const char *moor_error_message(const moor_error *err);

#ifdef __cplusplus
}
#endif

#endif /* MOOR_ERROR_H */
