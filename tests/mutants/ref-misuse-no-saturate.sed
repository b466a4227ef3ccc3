# invariant: a misused counter saturates (the object leaks instead of being freed twice)
# file: src/ref.c
# killer: ref
# build: gcc
/^void moor__refcnt_misuse(/,/^}/{/atomic_store_explicit(&r->count, MOOR_REFCNT_SATURATED, memory_order_relaxed);/d}
