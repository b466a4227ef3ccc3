# invariant: moor_monitor_exit fails with -ESRCH when the peer went away while the object was unlocked
# file: src/monitor.c
# killer: monitor
# build: gcc
/^int moor_monitor_exit(/,/^}/s/    return open ? 0 : -ESRCH;/    return (void)open, 0;/
