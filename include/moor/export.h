/* SPDX-License-Identifier: MIT */
/*
 * moor/export.h - symbol visibility and small compiler helpers shared by the
 * public headers. The library is built with hidden visibility; only what is
 * marked MOOR_EXPORT appears in the shared object's dynamic symbol table.
 */
#ifndef MOOR_EXPORT_H
#define MOOR_EXPORT_H

#if defined(MOOR_BUILDING_LIBRARY)
#define MOOR_EXPORT __attribute__((visibility("default")))
#else
#define MOOR_EXPORT
#endif

#define MOOR_LIKELY(x)   __builtin_expect(!!(x), 1)
#define MOOR_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Defined when the translation unit is built with ThreadSanitizer, which
 * does not model stand-alone fences (see ref.h). */
#if defined(__SANITIZE_THREAD__)
#define MOOR_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MOOR_TSAN 1
#endif
#endif

#endif /* MOOR_EXPORT_H */
