# invariant: a node removed while the list is visited is only marked; the last visitor frees it
# file: src/vlist.c
# killer: vlist
# build: gcc
/^int moor_vlist_remove(/,/^}/s/if (moor_lockcnt_count(&list->lc) == 0)/if (true)/
