# invariant: dec_and_lock returns true only with the lock taken (the last visitor frees under the lock, no new visit can start)
# file: src/lockcnt.c
# killer: lockcnt
# build: gcc
/^static bool futex_dec_and_lock(/,/^}/s/&v, (v - ONE) | LOCKED | CLOSED,/\&v, (v - ONE),/
