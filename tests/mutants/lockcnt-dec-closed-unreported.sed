# invariant: an unmatched dec while visits wait at count zero under the lock (futex word closed, their increments queued) is reported and undone, so the queued visit's increment is given back (after the undo; the window before it is the misuse's)
# file: src/lockcnt.c
# killer: lockcnt
# build: gcc
/^void moor__lockcnt_dec_slow(/,/^}/s/if (count_bits(old) == 0 || (old & CLOSED))/if (count_bits(old) == 0)/
