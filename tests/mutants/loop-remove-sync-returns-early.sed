# invariant: remove_sync from another thread returns only once the handler's callback is no longer running
# file: src/loop.c
# killer: loop
# build: gcc
/^static int wait_not_running_locked(/,/^}/s/while (atomic_load(&h->running) != 0)/while (false \&\& atomic_load(\&h->running) != 0)/
