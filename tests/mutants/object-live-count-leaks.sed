# invariant: the per-class live count drops when an object is freed (the census and MOOR_DEBUG=leaks rely on it)
# file: src/object.c
# killer: object
# build: gcc
/^void moor__object_last_unref(/,/^}/{/atomic_fetch_sub_explicit(&klass->live, 1, memory_order_relaxed);/d}
