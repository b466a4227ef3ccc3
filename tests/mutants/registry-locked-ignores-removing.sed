# invariant: a _locked lookup that found the object, then waited for its mutex while it was removed, returns NULL (the removing flag)
# file: src/registry.c
# killer: registry
# build: gcc
s/^    removed = e->removing; \/\* written under the mutex we now hold \*\//    removed = false;/
