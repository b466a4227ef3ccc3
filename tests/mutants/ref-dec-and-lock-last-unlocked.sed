# invariant: dec_and_lock decides the last reference under the mutex (it drops the last one lock-free and never reports it)
# file: src/ref.c
# killer: ref
# build: gcc
/^bool moor_refcnt_dec_and_lock(/,/^}/s/while (old > 1) {/while (old > 0) {/
