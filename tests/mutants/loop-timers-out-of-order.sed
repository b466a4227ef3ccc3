# invariant: due timers run in deadline order (the timer heap's order)
# file: src/loop.c
# killer: loop
# build: gcc
/^static bool timer_before(/,/^}/s/return a->deadline < b->deadline ||/return a->deadline > b->deadline ||/
