# invariant: peer death (EOF, error) fails every pending call at once with -EPIPE
# file: src/monitor.c
# killer: monitor stress-monitor
# build: gcc
/^static void break_locked(/,/^}/{/fail_pending_locked(mon, why);/d}
