# invariant: fairness: the grant walk stops at a waiter that waits for holders, so a QUERY queued behind a waiting MODIFY never overtakes it
# file: src/job.c
# killer: job stress-job
# build: gcc
/^static bool grant_queue(/,/^}/{/case BLOCKED:/{n;s/return false;/break;/}}
