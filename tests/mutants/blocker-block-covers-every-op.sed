# invariant: a block refuses only the operations in its mask
# file: src/blocker.c
# killer: blocker
# build: gcc
/^int moor_blocker_check(/,/^}/{/if (!(r->ops & bit))/{N;/continue;/d}}
