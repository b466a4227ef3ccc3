# invariant: the last visitor to leave unlinks and frees the marked nodes
# file: src/vlist.c
# killer: vlist
# build: gcc
/^void moor_vlist_visit_end(/,/^}/s/list->dirty ? sweep_locked(list) : NULL;/NULL;/
