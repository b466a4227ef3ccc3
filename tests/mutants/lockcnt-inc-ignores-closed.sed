# invariant: a visit does not begin while the futex word is closed (rule 2; the model's BROKEN_INC)
# file: include/moor/lockcnt.h
# killer: lockcnt stress-lockcnt-futex
# build: gcc
/^static inline void moor_lockcnt_inc(/,/^}/s/!(old & (MOOR__LOCKCNT_CLOSED | MOOR__LOCKCNT_LIMIT))/!(old \& MOOR__LOCKCNT_LIMIT)/
