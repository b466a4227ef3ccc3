# invariant: DESTROY jumps the queue: the DESTROY waiters are granted before the ticket queue
# file: src/job.c
# killer: job
# build: gcc
/^static void grant_pass(/,/^}/s/if (grant_queue(job, job->destroy_head))/if (grant_queue(job, job->head))/
/^static void grant_pass(/,/^}/s/        grant_queue(job, job->head);/        grant_queue(job, job->destroy_head);/
