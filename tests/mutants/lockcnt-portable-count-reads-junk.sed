# invariant: a portable counter's count is pcount; the junk in its marker word is never read as a count (issue 16's blind inc)
# file: include/moor/lockcnt.h
# killer: lockcnt
# build: gcc
/^static inline unsigned moor_lockcnt_count(/,/^}/s/return atomic_load_explicit((_Atomic uint32_t \*)&lc->pcount, memory_order_acquire);/return (v \& ~MOOR__LOCKCNT_LIMIT) >> MOOR__LOCKCNT_SHIFT;/
