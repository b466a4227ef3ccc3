# invariant: marking the object removed fails every queued begin with -ESRCH (nobody waits on a removed object)
# file: src/job.c
# killer: job
# build: gcc
/^int moor_job_mark_removed(/,/^}/s/return fail_waiters(job, true, "removed");/return 0;/
