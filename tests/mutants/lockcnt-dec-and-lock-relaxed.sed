# invariant: an ordinary end of visit in the futex dec_and_lock is a release (the last visitor's free must see every visitor's reads); x86 cannot show it, TSan can
# file: src/lockcnt.c
# killer: stress-vlist-futex
# build: tsan
/^static bool futex_dec_and_lock(/,/^}/{/if (atomic_compare_exchange_weak_explicit(&lc->word, &v, v - ONE, memory_order_release,/s/memory_order_release,/memory_order_relaxed,/}
