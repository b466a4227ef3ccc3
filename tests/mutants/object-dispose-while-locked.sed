# invariant: a last unref that finds the object's mutex held leaks and reports it instead of disposing a locked object
# file: src/object.c
# killer: object
# build: gcc
s/^    if (disposed_while_locked(o))$/    if (false \&\& disposed_while_locked(o))/
