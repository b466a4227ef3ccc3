# invariant: add checks both keys: a name already in use fails with -EEXIST naming the clash
# file: src/registry.c
# killer: registry
# build: gcc
/^static int check_free_keys(/,/^}/s/    old = lookup_name_rcu(reg, n->name, n->len, &via);/    old = lookup_name_rcu(reg, n->name, n->len, \&via) ? NULL : NULL;/
