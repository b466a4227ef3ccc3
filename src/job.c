/* SPDX-License-Identifier: MIT */
/*
 * job.c - per-object jobs.
 *
 * Theory of operation.
 *
 * Everything in a moor_job is guarded by the mutex of the object it is
 * embedded in; no field is atomic. The other atomics in this file: the
 * process-wide table of kinds, two values computed once (the clock
 * function, the CPU count), and a waiter's state, which the waiter polls
 * without the mutex while it spins (see Waiting).
 *
 * Holders. Sync holders sit packed at the front of an array of records
 * (MOOR_JOB_INLINE of them inside the struct, a heap array beyond that);
 * a thread holds at most one sync job per object, so moor_job_end() finds
 * its record by thread id and moves the last record into the gap. The
 * async job has its own slot in the struct.
 *
 * Waiters. A begin that cannot start at once puts a waiter record on its
 * own stack into a queue. DESTROY waiters have a queue of their own that
 * is always served first: that is how DESTROY jumps the line. The other
 * waiters queue in ticket order (a counter bumped per enqueue). Each
 * waiter has its own condition variable (CLOCK_MONOTONIC, bound to the
 * object mutex, set up only when it really sleeps), so a wake-up reaches
 * exactly the thread it is for.
 *
 * Waiting. A queued waiter at the front of its queue first spins for a
 * few microseconds with the mutex dropped, polling its own state, then
 * retakes the mutex and, if still waiting, sleeps on its condvar (the
 * others sleep at once). A job held only for a moment is thus handed over
 * without a futex sleep and wake-up (tens of microseconds each, and every
 * later caller queues behind a waiter still waking up: a convoy). The
 * spin changes nothing about who is granted when: the waiter stays queued
 * and only the walk below grants, under the mutex. A grant signals a
 * waiter only if it sleeps, so the waiter re-checks its state under the
 * mutex before it goes to sleep; that re-check is what keeps a grant made
 * during the spin from being lost (models/job.pml checks it; its
 * BROKEN_SLEEP_UNCHECKED variant loses it).
 *
 * Granting. Whoever changes what may run (an end, an async end, a mask
 * change, a waiter leaving) runs grant_pass(): it walks the DESTROY queue
 * and then the ticket queue from the front and, for each waiter,
 *   - grants it if it is compatible with the holders (the ones granted a
 *     moment ago in the same walk included): the granter records it as a
 *     holder on the waiter's behalf, unlinks it and signals its condvar,
 *     so no later arrival can slip in between the wake-up and the waiter
 *     running;
 *   - skips it if it is "parked": held back only by the async job's mask
 *     (or by the async slot being taken), which no sync end can change, so
 *     it must not hold back the waiters behind it;
 *   - otherwise stops: this waiter waits for holders to leave, and
 *     granting anyone behind it would make it wait longer. That stop is
 *     the fairness guarantee: a MODIFY at the front is never overtaken by a
 *     QUERY queued after it.
 * A newcomer takes the fast path (no queueing) only when both queues are
 * empty and it is compatible; otherwise it is queued and the same walk
 * decides, so a newcomer can never overtake a waiter the walk would stop
 * at. Every grant happens inside a walk or the fast path, under the mutex.
 *
 * Holder records never need to be allocated at grant time: a waiter
 * reserves room for its record before it queues (capacity >= holders +
 * waiters at all times), so granting cannot fail.
 *
 * The uncontended begin and end (an idle object; the only holder, nobody
 * waiting) are short inline sequences of tests; anything else takes the
 * general path.
 *
 * Clocks. Holder start times use CLOCK_MONOTONIC_COARSE, exact to one
 * kernel tick (see "the start-time clock" below); deadlines and the spin
 * use CLOCK_MONOTONIC.
 */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <time.h>
#include <unistd.h>

#include <moor/debug.h>
#include <moor/job.h>
#include <moor/object.h>

#include "debug-internal.h"
#include "lockdep-internal.h"
#include "introspect-internal.h"
#include "object-internal.h"

#define ASYNC_KIND UINT32_MAX /* a waiter for the async slot */
#define ALL_MASK   UINT32_MAX

enum { WAITING, GRANTED, FAILED };
enum { RUN, BLOCKED, PARKED };

struct moor__job_waiter {
    moor__job_waiter *prev, *next;
    uint64_t ticket;
    unsigned kind; /* a sync kind, or ASYNC_KIND */
    int thread;
    const char *api;
    const char *name;    /* async: the caller's string, copied on grant */
    uint32_t allowed;    /* async: the mask it will install */
    atomic_int state;    /* WAITING, GRANTED, FAILED; read unlocked while spinning */
    int64_t since_ns;    /* queued at (coarse clock); for introspection */
    uint32_t timeout_ms; /* how long it waits at most */
    const char *why;     /* FAILED: "removed" or "marked inactive" */
    bool sleeping;       /* @cond is initialised */
    pthread_cond_t cond;
};

/* ---- kinds ---------------------------------------------------------------- */

static pthread_mutex_t kinds_lock = PTHREAD_MUTEX_INITIALIZER; /* leaf */
static char kind_names[MOOR_JOB_KINDS_MAX][MOOR_JOB_NAME_SIZE] = {"QUERY", "MODIFY", "DESTROY",
                                                                  "ABORT"};
static atomic_uint nkinds = 4;
static atomic_uint exclusive_kinds =
    (1u << MOOR_JOB_MODIFY) | (1u << MOOR_JOB_DESTROY) | (1u << MOOR_JOB_ABORT);

/* Initial-exec TLS (as cached_tid below): no __tls_get_addr call for a
 * begin that takes the current API. */
static __thread const char *current_api __attribute__((tls_model("initial-exec")));

/* The calling thread's id: moor__tid, initial-exec TLS (debug-internal.h),
 * so no __tls_get_addr call on the fast path. */
#define cached_tid moor__tid

/* A thread's first call: out of line, so that the callers' fast paths
 * need no stack frame for it. */
static __attribute__((noinline, cold)) int self_id_first(void)
{
    cached_tid = moor__thread_id();
    return cached_tid;
}

static inline int self_id(void)
{
    int tid = cached_tid;

    return MOOR_LIKELY(tid) ? tid : self_id_first();
}

static bool kind_valid(unsigned kind)
{
    /* acquire: pairs with the release in moor_job_kind_register(), so the
     * name and mode bit of a kind are seen once the kind is. */
    return kind < atomic_load_explicit(&nkinds, memory_order_acquire);
}

static bool kind_exclusive(unsigned kind)
{
    /* relaxed: the bit was published before the kind (see kind_valid). */
    return (atomic_load_explicit(&exclusive_kinds, memory_order_relaxed) >> kind) & 1u;
}

const char *moor_job_kind_name(unsigned kind)
{
    return kind_valid(kind) ? kind_names[kind] : "?";
}

static int kind_find_locked(const char *name)
{
    /* relaxed: under kinds_lock, which orders every registration. */
    unsigned n = atomic_load_explicit(&nkinds, memory_order_relaxed);

    for (unsigned k = 0; k < n; k++)
        if (!strcmp(kind_names[k], name))
            return (int)k;
    return -1;
}

int moor_job_kind_register(const char *name, moor_job_mode mode, moor_error *err)
{
    unsigned n;

    if (!name || !*name || strlen(name) >= MOOR_JOB_NAME_SIZE)
        return moor_error_set(err, -EINVAL, "moor_job_kind_register: name empty or longer than %d",
                              MOOR_JOB_NAME_SIZE - 1);
    if (mode != MOOR_JOB_SHARED && mode != MOOR_JOB_EXCLUSIVE)
        return moor_error_set(err, -EINVAL, "moor_job_kind_register(%s): bad mode %d", name,
                              (int)mode);
    pthread_mutex_lock(&kinds_lock);
    /* relaxed: under kinds_lock. */
    n = atomic_load_explicit(&nkinds, memory_order_relaxed);
    if (kind_find_locked(name) >= 0) {
        pthread_mutex_unlock(&kinds_lock);
        return moor_error_set(err, -EEXIST, "moor_job_kind_register: kind '%s' exists", name);
    }
    if (n == MOOR_JOB_KINDS_MAX) {
        pthread_mutex_unlock(&kinds_lock);
        return moor_error_set(err, -ENOSPC, "moor_job_kind_register(%s): all %u kinds taken", name,
                              MOOR_JOB_KINDS_MAX);
    }
    memcpy(kind_names[n], name, strlen(name) + 1);
    if (mode == MOOR_JOB_EXCLUSIVE) /* relaxed: published by the release below */
        atomic_fetch_or_explicit(&exclusive_kinds, 1u << n, memory_order_relaxed);
    /* release: the name and mode bit above before the kind becomes valid. */
    atomic_store_explicit(&nkinds, n + 1, memory_order_release);
    pthread_mutex_unlock(&kinds_lock);
    return (int)n;
}

const char *moor_job_set_current_api(const char *api)
{
    const char *old = current_api;

    current_api = api;
    return old;
}

/* ---- the start-time clock ------------------------------------------------- */

/*
 * Holder start times come from CLOCK_MONOTONIC_COARSE: the time of the
 * last kernel tick, read from memory the kernel shares with the process
 * (no system call). Its resolution is one tick, clock_getres() of that
 * clock: 1 to 10 ms, 4 ms on a HZ=250 kernel. A held-for time is the
 * difference of two such readings, so it is exact to one tick.
 *
 * The read is the biggest part of an uncontended begin, and half of it is
 * libc's clock_gettime() wrapper (its PLT entry, then an indirect call
 * into the vDSO, then error handling). So the vDSO's own clock_gettime is
 * called directly: the kernel maps the vDSO, an ELF shared object, into
 * every process and passes the address of its ELF header in the auxiliary
 * vector (AT_SYSINFO_EHDR); its symbols are found the usual ELF way (the
 * kernel documents this in Documentation/ABI/stable/vdso). Where there is
 * no vDSO (under valgrind), no such symbol, or an architecture not listed
 * below, libc's clock_gettime() is used.
 */
#if defined(__x86_64__) && !defined(__ILP32__)
#define VDSO_CLOCK_GETTIME "__vdso_clock_gettime"
#elif defined(__aarch64__) && !defined(__ILP32__)
#define VDSO_CLOCK_GETTIME "__kernel_clock_gettime"
#endif

typedef int (*clock_fn)(clockid_t, struct timespec *);

#ifdef VDSO_CLOCK_GETTIME
/* The address of function @name in the vDSO (a 64-bit image on both
 * architectures above), or NULL. Only reads memory the kernel mapped
 * before the process started: no lock, no allocation. */
static clock_fn vdso_function(const char *name)
{
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)getauxval(AT_SYSINFO_EHDR);
    const Elf64_Phdr *ph;
    const Elf64_Dyn *dyn = NULL;
    const Elf64_Sym *syms = NULL;
    const Elf64_Word *hash = NULL; /* DT_HASH: nbucket, nchain (= the symbol count), ... */
    const char *strs = NULL;
    uintptr_t bias = 0;
    bool loaded = false;

    if (!eh || memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64)
        return NULL;
    ph = (const Elf64_Phdr *)((const char *)eh + eh->e_phoff);
    for (unsigned i = 0; i < eh->e_phnum; i++) {
        if (ph[i].p_type == PT_LOAD && !loaded) {
            /* The image is mapped whole, so address = bias + link address. */
            bias = (uintptr_t)eh + ph[i].p_offset - ph[i].p_vaddr;
            loaded = true;
        } else if (ph[i].p_type == PT_DYNAMIC) {
            dyn = (const Elf64_Dyn *)((const char *)eh + ph[i].p_offset);
        }
    }
    for (; loaded && dyn && dyn->d_tag != DT_NULL; dyn++) {
        if (dyn->d_tag == DT_SYMTAB)
            syms = (const Elf64_Sym *)(bias + dyn->d_un.d_ptr);
        else if (dyn->d_tag == DT_STRTAB)
            strs = (const char *)(bias + dyn->d_un.d_ptr);
        else if (dyn->d_tag == DT_HASH)
            hash = (const Elf64_Word *)(bias + dyn->d_un.d_ptr);
    }
    if (!syms || !strs || !hash)
        return NULL;
    for (Elf64_Word i = 0; i < hash[1]; i++)
        if (ELF64_ST_TYPE(syms[i].st_info) == STT_FUNC && syms[i].st_shndx != SHN_UNDEF &&
            !strcmp(strs + syms[i].st_name, name))
            return (clock_fn)(bias + syms[i].st_value);
    return NULL;
}
#endif

static int clock_first_call(clockid_t id, struct timespec *ts);

/* The function coarse_ns() calls; the first call finds the real one. */
static _Atomic(clock_fn) coarse_clock = clock_first_call;

static int clock_first_call(clockid_t id, struct timespec *ts)
{
    clock_fn fn = clock_gettime;

#ifdef VDSO_CLOCK_GETTIME
    clock_fn vdso = vdso_function(VDSO_CLOCK_GETTIME);

    if (vdso)
        fn = vdso;
#endif
    /* relaxed: the pointer is the only thing published (the code it points
     * to was mapped before the process started); racing first calls all
     * store the same value. */
    atomic_store_explicit(&coarse_clock, fn, memory_order_relaxed);
    return fn(id, ts);
}

static int64_t timespec_ns(const struct timespec *ts)
{
    return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

/* The vDSO answers every valid clock; should it ever decline, libc knows
 * the fallbacks (a system call). Out of line: not on the fast path. */
static __attribute__((noinline, cold)) int64_t coarse_fallback_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return timespec_ns(&ts);
}

/* Inlined: begin's fast path calls the vDSO straight from its own frame. */
static inline __attribute__((always_inline)) int64_t coarse_ns(void)
{
    /* relaxed: see clock_first_call(). */
    clock_fn fn = atomic_load_explicit(&coarse_clock, memory_order_relaxed);
    struct timespec ts;

    if (MOOR_UNLIKELY(fn(CLOCK_MONOTONIC_COARSE, &ts) != 0))
        return coarse_fallback_ns();
    return timespec_ns(&ts);
}

/* ---- small helpers ----------------------------------------------------------- */

static double seconds_since(int64_t start, int64_t now)
{
    return now > start ? (double)(now - start) / 1e9 : 0.0;
}

static void copy_str(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src ? src : "");
}

/* The calling thread holds @job's object mutex (see object.c: only the
 * holder writes the owner field, so this relaxed read is exact for us). */
static bool mutex_held(const moor_job *job, int self)
{
    const moor_lockable *l = job->obj;

    /* relaxed: exact for the calling thread's own id (see object.c). */
    return atomic_load_explicit(&l->owner, memory_order_relaxed) == self;
}

/* "class 'label'" or "class 0x..." */
static void describe_object(const moor_job *job, char *buf, size_t size)
{
    const char *cls = moor_class_name(moor_object_get_class(job->obj));

    if (job->label[0])
        snprintf(buf, size, "%s '%s'", cls, job->label);
    else
        snprintf(buf, size, "%s %p", cls, job->obj);
}

/* Report misuse of @job by @op and return -EINVAL. */
__attribute__((format(printf, 4, 5))) static int misuse(const moor_job *job, moor_misuse kind,
                                                        const char *op, const char *fmt, ...)
{
    char what[160], obj[MOOR_JOB_LABEL_SIZE + 40];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (job)
        describe_object(job, obj, sizeof(obj));
    else
        snprintf(obj, sizeof(obj), "(null job)");
    moor_debug_report(kind, job ? job->obj : NULL, "%s on %s by thread %d: %s", op, obj, self_id(),
                      what);
    return -EINVAL;
}

/* The entry check of every call made under the mutex. */
static int check_locked(const moor_job *job, const char *op, int self)
{
    if (!job || !job->obj)
        return misuse(NULL, MOOR_MISUSE_BAD_ARGUMENT, op, "NULL or uninitialised job");
    if (!mutex_held(job, self))
        return misuse(job, MOOR_MISUSE_NOT_LOCKED, op, "the object's mutex is not held");
    return 0;
}

static long holder_index(const moor_job *job, int thread)
{
    for (unsigned i = 0; i < job->nholders; i++)
        if (job->holders[i].thread == thread)
            return (long)i;
    return -1;
}

/* ---- the live list (introspect.h) ------------------------------------------- */

/* Every job between init and destroy. A leaf: nothing is locked while it
 * is held but object mutexes by trylock (moor__job_collect), and it is
 * taken with no lock of the job's own, so either order is deadlock-free. */
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static moor__live_node *live_first;

#define JOB_OF(node) MOOR__LIVE_ENTRY(node, moor_job, live)

__attribute__((constructor)) static void live_fork_init(void)
{
    moor__live_lock_across_fork(&live_lock);
}

void moor__job_forget(void *obj, size_t size)
{
    const char *lo = obj, *hi = lo + size;

    pthread_mutex_lock(&live_lock);
    for (moor__live_node *n = live_first, *next; n; n = next) {
        next = n->next;
        if ((const char *)n >= lo && (const char *)n < hi)
            moor__live_del(&live_first, n);
    }
    pthread_mutex_unlock(&live_lock);
}

/* ---- set-up ---------------------------------------------------------------- */

int moor_job_init(moor_job *job, void *obj, const char *label)
{
    if (!job || !moor__lockable_mutex(obj))
        return misuse(NULL, MOOR_MISUSE_BAD_ARGUMENT, "moor_job_init",
                      "needs a job and a lockable object (got %p, %p)", (void *)job, obj);
    if (!moor__object_contains(obj, job, sizeof(*job)))
        return misuse(NULL, MOOR_MISUSE_BAD_ARGUMENT, "moor_job_init",
                      "job %p is not inside object %p (class '%s'): a job is embedded in "
                      "the object it guards",
                      (void *)job, obj, moor_class_name(moor_object_get_class(obj)));
    moor__lockable_embed(obj, +1);
    memset(job, 0, sizeof(*job));
    job->obj = obj;
    job->holders = job->inline_holders;
    job->capacity = MOOR_JOB_INLINE;
    job->default_timeout_ms = MOOR_JOB_DEFAULT_TIMEOUT_MS;
    copy_str(job->label, sizeof(job->label), label);
    moor__live_register(&live_lock, &live_first, &job->live);
    return 0;
}

void moor_job_destroy(moor_job *job)
{
    if (!job || !job->obj)
        return;
    if (job->nholders || job->nwaiters || job->async.active)
        misuse(job, MOOR_MISUSE_BAD_ARGUMENT, "moor_job_destroy",
               "%u holder(s), %u waiter(s), async %s: a holder did not own a reference",
               job->nholders, job->nwaiters, job->async.active ? "active" : "idle");
    moor__live_unregister(&live_lock, &live_first, &job->live);
    if (job->holders != job->inline_holders)
        moor__free(job->holders);
    job->holders = job->inline_holders;
    /* Only a job inside its object was counted by init (a copy elsewhere,
     * which the header forbids anyway, was not). */
    if (moor__object_contains(job->obj, job, sizeof(*job)))
        moor__lockable_embed(job->obj, -1);
    job->obj = NULL;
}

int moor_job_set_label(moor_job *job, const char *label)
{
    int rc = check_locked(job, "moor_job_set_label", self_id());

    if (rc == 0)
        copy_str(job->label, sizeof(job->label), label);
    return rc;
}

int moor_job_set_default_timeout(moor_job *job, uint32_t timeout_ms)
{
    int rc = check_locked(job, "moor_job_set_default_timeout", self_id());

    if (rc == 0 && timeout_ms != MOOR_JOB_TIMEOUT_DEFAULT)
        job->default_timeout_ms = timeout_ms;
    return rc;
}

int moor_job_set_max_waiters(moor_job *job, unsigned max)
{
    int rc = check_locked(job, "moor_job_set_max_waiters", self_id());

    if (rc == 0)
        job->max_waiters = max;
    return rc;
}

/* ---- compatibility ---------------------------------------------------------- */

static int sync_check(const moor_job *job, unsigned kind, int thread)
{
    if (job->async.active && job->async.owner != thread &&
        !(job->async.allowed & MOOR_JOB_MASK(kind)))
        return PARKED;
    if (kind_exclusive(kind) ? job->nholders != 0 : job->nexclusive != 0)
        return BLOCKED;
    return RUN;
}

static int async_check(const moor_job *job, uint32_t allowed)
{
    if (job->async.active)
        return PARKED;
    if (job->nexclusive) /* an exclusive sync job excludes everything */
        return BLOCKED;
    for (unsigned i = 0; i < job->nholders; i++)
        if (!(allowed & MOOR_JOB_MASK(job->holders[i].kind)))
            return BLOCKED;
    return RUN;
}

static int waiter_check(const moor_job *job, const moor__job_waiter *w)
{
    return w->kind == ASYNC_KIND ? async_check(job, w->allowed)
                                 : sync_check(job, w->kind, w->thread);
}

/* ---- granting ------------------------------------------------------------------ */

static void add_holder(moor_job *job, unsigned kind, int thread, const char *api)
{
    /* Room is guaranteed: see "Holder records" in the theory above. */
    job->holders[job->nholders++] = (moor_job_holder){api, coarse_ns(), thread, kind};
    if (kind_exclusive(kind))
        job->nexclusive++;
    if (kind == MOOR_JOB_ABORT && job->async.active)
        job->async.abort_requested = true;
}

/* Remove holder record @i (0 <= @i < nholders). */
static void drop_holder(moor_job *job, long i)
{
    if (kind_exclusive(job->holders[i].kind))
        job->nexclusive--;
    /* The last record moves into the gap; usually it is the gap (and a copy
     * of a record stored a moment ago would stall on store forwarding). */
    if ((unsigned)i != --job->nholders)
        job->holders[i] = job->holders[job->nholders];
}

static void start_async(moor_job *job, const moor__job_waiter *w)
{
    job->async.active = true;
    job->async.abort_requested = false;
    job->async.owner = w->thread;
    job->async.allowed = w->allowed | MOOR_JOB_MASK(MOOR_JOB_DESTROY);
    job->async.api = w->api;
    job->async.start_ns = coarse_ns();
    job->async.done = job->async.total = 0;
    copy_str(job->async.name, sizeof(job->async.name), w->name);
    job->async.phase[0] = job->async.stage[0] = '\0';
}

static moor__job_waiter **queue_head(moor_job *job, const moor__job_waiter *w)
{
    return w->kind == MOOR_JOB_DESTROY ? &job->destroy_head : &job->head;
}

static moor__job_waiter **queue_tail(moor_job *job, const moor__job_waiter *w)
{
    return w->kind == MOOR_JOB_DESTROY ? &job->destroy_tail : &job->tail;
}

static void enqueue(moor_job *job, moor__job_waiter *w)
{
    moor__job_waiter **tail = queue_tail(job, w);

    w->ticket = job->next_ticket++;
    w->next = NULL;
    w->prev = *tail;
    if (*tail)
        (*tail)->next = w;
    else
        *queue_head(job, w) = w;
    *tail = w;
    job->nwaiters++;
}

static void dequeue(moor_job *job, moor__job_waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        *queue_head(job, w) = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        *queue_tail(job, w) = w->prev;
    w->prev = w->next = NULL;
    job->nwaiters--;
}

/* Unlink @w with its outcome and wake it if it sleeps. */
static void settle(moor_job *job, moor__job_waiter *w, int state, const char *why)
{
    dequeue(job, w);
    if (state == GRANTED) {
        if (w->kind == ASYNC_KIND)
            start_async(job, w);
        else
            add_holder(job, w->kind, w->thread, w->api);
    }
    w->why = why;
    /* relaxed: a spinning waiter only takes it as a hint to retake the
     * mutex, which we hold until done with @w (see spin_settled()). */
    atomic_store_explicit(&w->state, state, memory_order_relaxed);
    if (w->sleeping)
        pthread_cond_signal(&w->cond);
}

/* Walk one queue; false when it stopped at a waiter that must wait for
 * holders (nothing behind that waiter may be granted). */
static bool grant_queue(moor_job *job, moor__job_waiter *w)
{
    while (w) {
        moor__job_waiter *next = w->next;

        switch (waiter_check(job, w)) {
        case RUN:
            settle(job, w, GRANTED, NULL);
            break;
        case BLOCKED:
            return false;
        default: /* PARKED: skip, it does not hold back the others */
            break;
        }
        w = next;
    }
    return true;
}

static void grant_pass(moor_job *job)
{
    if (grant_queue(job, job->destroy_head))
        grant_queue(job, job->head);
}

/* Fail every waiter (DESTROY ones too when @destroy_too); returns how many. */
static int fail_waiters(moor_job *job, bool destroy_too, const char *why)
{
    int n = 0;

    for (moor__job_waiter *w = job->head, *next; w; w = next) {
        next = w->next;
        settle(job, w, FAILED, why);
        n++;
    }
    for (moor__job_waiter *w = destroy_too ? job->destroy_head : NULL, *next; w; w = next) {
        next = w->next;
        settle(job, w, FAILED, why);
        n++;
    }
    return n;
}

/* ---- messages -------------------------------------------------------------------- */

/* "QUERY (api a, thread 1, for 0.010 s), ..." into @buf; returns @buf. */
static const char *describe_holders(const moor_job *job, char *buf, size_t size)
{
    int64_t now = coarse_ns();
    size_t used = 0;
    int n;

    buf[0] = '\0';
    if (job->async.active) {
        n = snprintf(buf, size,
                     "async job '%s' (api %s, thread %d, for %.3f s, phase '%s', allows 0x%" PRIx32
                     ")",
                     job->async.name, job->async.api, job->async.owner,
                     seconds_since(job->async.start_ns, now), job->async.phase, job->async.allowed);
        used = n > 0 ? (size_t)n : 0;
    }
    for (unsigned i = 0; i < job->nholders && used < size; i++) {
        const moor_job_holder *h = &job->holders[i];

        n = snprintf(buf + used, size - used, "%s%s (api %s, thread %d, for %.3f s)",
                     used ? ", " : "", moor_job_kind_name(h->kind), h->api, h->thread,
                     seconds_since(h->start_ns, now));
        used += n > 0 ? (size_t)n : 0;
    }
    if (!buf[0])
        snprintf(buf, size, "no holder");
    return buf;
}

static void describe_wanted(const moor__job_waiter *w, char *buf, size_t size)
{
    if (w->kind == ASYNC_KIND)
        snprintf(buf, size, "async job '%s' (api %s)", w->name, w->api);
    else
        snprintf(buf, size, "job %s (api %s)", moor_job_kind_name(w->kind), w->api);
}

/* Fail a begin with @code; @reason says why ("timed out after 0.050 s"). */
__attribute__((format(printf, 5, 6))) static int fail_begin(const moor_job *job,
                                                            const moor__job_waiter *w,
                                                            moor_error *err, int code,
                                                            const char *fmt, ...)
{
    char wanted[96], obj[MOOR_JOB_LABEL_SIZE + 40], reason[96], holders[512];
    va_list ap;

    if (!err)
        return code;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    describe_wanted(w, wanted, sizeof(wanted));
    describe_object(job, obj, sizeof(obj));
    if (code == -ESRCH || code == -EDEADLK)
        return moor_error_set(err, code, "%s on %s: %s", wanted, obj, reason);
    return moor_error_set(err, code, "%s on %s: %s; %u waiting; held by %s", wanted, obj, reason,
                          job->nwaiters, describe_holders(job, holders, sizeof(holders)));
}

/* ---- waiting ------------------------------------------------------------------------ */

/* @w's state; under the mutex, or unlocked as a hint (spin_settled). */
static int waiter_state(const moor__job_waiter *w)
{
    /* relaxed: see settle(). */
    return atomic_load_explicit(&w->state, memory_order_relaxed);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

static uint64_t monotonic_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)timespec_ns(&ts);
}

/* Whether spinning can pay: more than one CPU online (else the holder
 * cannot run while we spin). Computed once; racing first calls agree. */
static bool spin_worthwhile(void)
{
    static atomic_int cpus; /* 0: not known yet */
    /* relaxed: a plain cached number, nothing else published with it. */
    int n = atomic_load_explicit(&cpus, memory_order_relaxed);

    if (!n) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);

        n = online > 1 ? (int)online : 1;
        atomic_store_explicit(&cpus, n, memory_order_relaxed); /* relaxed: as above */
    }
    return n > 1;
}

/* How long a waiter spins before it sleeps: about what a futex sleep and
 * wake-up cost (8 to 20 us on the machine measured), so that a waiter that
 * spins in vain loses at most about what sleeping at once would have cost
 * it. */
#define SPIN_NS 20000u

/* Whether @stop has passed; reads the clock every 32nd call (@i). */
static bool spin_over(unsigned i, uint64_t stop)
{
    return i % 32 == 31 && monotonic_ns() >= stop;
}

/*
 * Spin for up to SPIN_NS with the mutex dropped, polling @w's state. Once
 * granted, retake the mutex spinning too, within the same time (the
 * granter holds it a moment longer), rather than sleep in
 * pthread_mutex_lock at once. The waiter stays queued all along: the
 * spin only notices a grant made under the mutex. Returns with the mutex
 * held again.
 */
static void spin_settled(moor_job *job, moor__job_waiter *w)
{
    pthread_mutex_t *mutex = moor__lockable_mutex(job->obj);
    uint64_t stop;
    unsigned i = 0;

    moor__lockable_owner_release(job->obj);
    pthread_mutex_unlock(mutex);
    stop = monotonic_ns() + SPIN_NS;
    while (waiter_state(w) == WAITING && !spin_over(i++, stop))
        cpu_relax();
    if (waiter_state(w) == WAITING) { /* in vain: off to sleep */
        pthread_mutex_lock(mutex);
    } else {
        while (pthread_mutex_trylock(mutex) != 0) {
            if (spin_over(i++, stop)) {
                pthread_mutex_lock(mutex);
                break;
            }
            cpu_relax();
        }
    }
    moor__lockable_owner_reacquire(job->obj);
}

/* Wait until @w is settled or the deadline passes: spin briefly, then
 * sleep on @w's own condvar. True if settled. */
static bool wait_settled(moor_job *job, moor__job_waiter *w, uint32_t ms)
{
    struct timespec deadline = moor__deadline_after_ms(ms);
    pthread_mutex_t *mutex = moor__lockable_mutex(job->obj);
    pthread_condattr_t attr;
    bool settled;

    if (moor__debug_on(MOOR_DEBUG_LOCKS))
        moor__lockdep_job_wait(job->obj, w->api);

    /* Only the waiter at the front of its queue spins: the next end is
     * for it, while those behind it would only take CPUs from holders
     * (with more threads than CPUs, spinning by every waiter cost the
     * stress test half its throughput). A waiter parked behind an async
     * job waits for that job's end, which is not coming soon: no spin. */
    if (*queue_head(job, w) == w && waiter_check(job, w) != PARKED && spin_worthwhile()) {
        spin_settled(job, w);
        /* Under the mutex again: a grant made while we spun is seen here,
         * before we sleep (nobody would signal us for it: we were not
         * sleeping). */
        if (waiter_state(w) != WAITING)
            return true;
    }
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &attr);
    pthread_condattr_destroy(&attr);
    w->sleeping = true;
    for (;;) {
        int rc;

        moor__lockable_owner_release(job->obj);
        rc = pthread_cond_timedwait(&w->cond, mutex, &deadline);
        moor__lockable_owner_reacquire(job->obj);
        if (waiter_state(w) != WAITING || rc == ETIMEDOUT)
            break;
    }
    settled = waiter_state(w) != WAITING;
    w->sleeping = false;
    pthread_cond_destroy(&w->cond);
    return settled;
}

/* Room for one more holder or waiter record. */
static int reserve(moor_job *job)
{
    unsigned need = job->nholders + job->nwaiters + 1;
    moor_job_holder *grown;

    if (need <= job->capacity)
        return 0;
    grown = moor__malloc(sizeof(*grown) * job->capacity * 2);
    if (!grown)
        return -ENOMEM;
    memcpy(grown, job->holders, sizeof(*grown) * job->nholders);
    if (job->holders != job->inline_holders)
        moor__free(job->holders);
    job->holders = grown;
    job->capacity *= 2;
    return 0;
}

/*
 * Hand back a grant that @w received while it waited but cannot use: the
 * object was marked removed between the grant (made by another thread's
 * end, under the mutex) and @w retaking the mutex. The grant made @w a
 * holder, so moor_job_mark_removed() did not count it among the waiters
 * it failed; this undoes the holder record (or the async slot) as an end
 * would, so that begin keeps its contract: it never returns 0 on a
 * removed object. An ABORT's request to the async job stays set (the
 * object is going away anyway).
 */
static void revoke_grant(moor_job *job, const moor__job_waiter *w)
{
    if (w->kind == ASYNC_KIND) {
        job->async.active = false;
        job->async.owner = 0;
        job->async.abort_requested = false;
    } else {
        drop_holder(job, holder_index(job, w->thread));
    }
    if (job->nwaiters)
        grant_pass(job);
}

/* Remove a waiter that gives up; those behind it may now run. */
static void give_up(moor_job *job, moor__job_waiter *w)
{
    dequeue(job, w);
    grant_pass(job);
}

/* The slow path: queue @w, let the walk decide, wait if allowed. */
static int queue_and_wait(moor_job *job, moor__job_waiter *w, uint32_t ms, moor_error *err)
{
    unsigned ahead = job->nwaiters;
    int64_t t0;

    if (reserve(job) < 0)
        return fail_begin(job, w, err, -ENOMEM, "out of memory for a holder record");
    w->since_ns = coarse_ns();
    w->timeout_ms = ms;
    enqueue(job, w);
    grant_pass(job);
    if (waiter_state(w) == GRANTED)
        return 0;
    if (ms == 0) {
        give_up(job, w);
        return fail_begin(job, w, err, -EBUSY, "busy and not waiting");
    }
    if (job->max_waiters && ahead >= job->max_waiters && w->kind != MOOR_JOB_DESTROY) {
        give_up(job, w);
        return fail_begin(job, w, err, -EBUSY, "%u waiters queued already (cap %u)", ahead,
                          job->max_waiters);
    }
    t0 = w->since_ns;
    if (!wait_settled(job, w, ms)) {
        give_up(job, w);
        return fail_begin(job, w, err, -ETIMEDOUT, "timed out after %.3f s",
                          seconds_since(t0, coarse_ns()));
    }
    if (waiter_state(w) == FAILED)
        return fail_begin(job, w, err, -ESRCH, "the object was %s while waiting", w->why);
    if (job->removed) {
        revoke_grant(job, w);
        return fail_begin(job, w, err, -ESRCH,
                          "the object was removed after the job was granted, before it ran");
    }
    return 0;
}

/* ---- sync jobs ------------------------------------------------------------------------ */

static const char *api_or_current(const char *api)
{
    if (api)
        return api;
    return current_api ? current_api : "(unknown)";
}

static uint32_t effective_timeout(const moor_job *job, uint32_t ms)
{
    return ms == MOOR_JOB_TIMEOUT_DEFAULT ? job->default_timeout_ms : ms;
}

/* Everything but the fast path of a sync begin: checks that need a
 * message, then queueing. */
static __attribute__((noinline)) int begin_slow(moor_job *job, unsigned kind, const char *api,
                                                uint32_t timeout_ms, moor_error *err)
{
    int self = self_id();
    int rc = check_locked(job, "moor_job_begin", self);
    moor__job_waiter w;
    long held;

    if (rc < 0)
        return moor_error_set(err, rc, "moor_job_begin: misuse (see the report)");
    if (!kind_valid(kind))
        return moor_error_set(err, -EINVAL, "moor_job_begin: unknown kind %u", kind);
    w = (moor__job_waiter){.kind = kind, .thread = self, .api = api_or_current(api)};
    if (job->removed)
        return fail_begin(job, &w, err, -ESRCH, "the object was removed");
    held = holder_index(job, self);
    if (held >= 0) {
        misuse(job, MOOR_MISUSE_BAD_ARGUMENT, "moor_job_begin",
               "job %s while already holding %s: a second sync job would deadlock",
               moor_job_kind_name(kind), moor_job_kind_name(job->holders[held].kind));
        return fail_begin(job, &w, err, -EDEADLK, "this thread already holds a job here");
    }
    if (!job->head && !job->destroy_head && sync_check(job, kind, self) == RUN) {
        /* Only a full holder array brings a free-to-start job here. */
        if (reserve(job) < 0)
            return fail_begin(job, &w, err, -ENOMEM, "out of memory for a holder record");
        add_holder(job, kind, self, w.api);
        return 0;
    }
    return queue_and_wait(job, &w, effective_timeout(job, timeout_ms), err);
}

/* The uncontended begin: the calling thread holds the mutex, the kind is
 * valid and the object is idle (no holder, no waiter, no async job, not
 * removed), so the job is compatible, the thread holds nothing here and
 * record 0 is free. One straight sequence of well-predicted tests; any
 * other state goes to begin_slow(), which decides in general. */
static inline __attribute__((always_inline)) int
begin_sync(moor_job *job, unsigned kind, const char *api, uint32_t timeout_ms, moor_error *err)
{
    int self = self_id();

    if (MOOR_LIKELY(job && job->obj && mutex_held(job, self) && kind_valid(kind) &&
                    !job->nholders && !job->nwaiters && !job->async.active && !job->removed)) {
        moor_job_holder *h = job->holders;

        h->api = api_or_current(api);
        h->thread = self;
        h->kind = kind;
        job->nholders = 1;
        job->nexclusive = kind_exclusive(kind);
        /* Last, so that only @h lives across the clock call. */
        h->start_ns = coarse_ns();
        return 0;
    }
    return begin_slow(job, kind, api, timeout_ms, err);
}

int moor_job_begin_timeout(moor_job *job, unsigned kind, const char *api, uint32_t timeout_ms,
                           moor_error *err)
{
    return begin_sync(job, kind, api, timeout_ms, err);
}

int moor_job_begin(moor_job *job, unsigned kind, const char *api, moor_error *err)
{
    return begin_sync(job, kind, api, MOOR_JOB_TIMEOUT_DEFAULT, err);
}

int moor_job_begin_try(moor_job *job, unsigned kind, const char *api, moor_error *err)
{
    return begin_sync(job, kind, api, 0, err);
}

static __attribute__((noinline)) int end_misuse(moor_job *job, int self)
{
    int rc = check_locked(job, "moor_job_end", self);

    if (rc < 0)
        return rc;
    return misuse(job, MOOR_MISUSE_BAD_ARGUMENT, "moor_job_end",
                  "end without begin: this thread holds no sync job here%s",
                  job->async.active && job->async.owner == self
                      ? " (it owns the async job: moor_job_end_async?)"
                      : "");
}

/* Any end but the uncontended one: find the record, then grant. */
static __attribute__((noinline)) int end_slow(moor_job *job, int self)
{
    long i;

    if (!job || !job->obj || !mutex_held(job, self))
        return end_misuse(job, self);
    i = holder_index(job, self);
    if (i < 0)
        return end_misuse(job, self);
    drop_holder(job, i);
    if (job->nwaiters)
        grant_pass(job);
    return 0;
}

int moor_job_end(moor_job *job)
{
    int self = self_id();

    /* The uncontended end: the thread holds the mutex and the only record,
     * and nobody waits. */
    if (MOOR_LIKELY(job && job->obj && mutex_held(job, self) && job->nholders == 1 &&
                    job->holders[0].thread == self && !job->nwaiters)) {
        job->nholders = 0;
        job->nexclusive = 0;
        return 0;
    }
    return end_slow(job, self);
}

bool moor_job_held(const moor_job *job)
{
    return job && holder_index(job, self_id()) >= 0;
}

/* ---- async jobs ------------------------------------------------------------------------ */

int moor_job_begin_async(moor_job *job, const char *name, uint32_t allowed, const char *api,
                         uint32_t timeout_ms, moor_error *err)
{
    int self = self_id();
    int rc = check_locked(job, "moor_job_begin_async", self);
    moor__job_waiter w;

    if (rc < 0)
        return moor_error_set(err, rc, "moor_job_begin_async: misuse (see the report)");
    if (!name || !*name)
        return moor_error_set(err, -EINVAL, "moor_job_begin_async: empty name");
    w = (moor__job_waiter){.kind = ASYNC_KIND,
                           .thread = self,
                           .api = api_or_current(api),
                           .name = name,
                           .allowed = allowed | MOOR_JOB_MASK(MOOR_JOB_DESTROY)};
    if (job->removed)
        return fail_begin(job, &w, err, -ESRCH, "the object was removed");
    if (holder_index(job, self) >= 0 || (job->async.active && job->async.owner == self)) {
        misuse(job, MOOR_MISUSE_BAD_ARGUMENT, "moor_job_begin_async",
               "async job '%s' while this thread holds a job here: would deadlock", name);
        return fail_begin(job, &w, err, -EDEADLK, "this thread already holds a job here");
    }
    if (!job->head && !job->destroy_head && async_check(job, w.allowed) == RUN) {
        start_async(job, &w);
        return 0;
    }
    return queue_and_wait(job, &w, effective_timeout(job, timeout_ms), err);
}

/* The entry check of calls only the async owner may make. */
static int check_owner(const moor_job *job, const char *op)
{
    int self = self_id();
    int rc = check_locked(job, op, self);

    if (rc < 0)
        return rc;
    if (!job->async.active)
        return misuse(job, MOOR_MISUSE_BAD_ARGUMENT, op, "no async job runs");
    if (job->async.owner != self)
        return misuse(job, MOOR_MISUSE_BAD_ARGUMENT, op, "async job '%s' is owned by thread %d",
                      job->async.name, job->async.owner);
    return 0;
}

int moor_job_end_async(moor_job *job)
{
    int rc = check_owner(job, "moor_job_end_async");

    if (rc < 0)
        return rc;
    job->async.active = false;
    job->async.owner = 0;
    job->async.abort_requested = false;
    grant_pass(job);
    return 0;
}

int moor_job_async_set_phase(moor_job *job, const char *phase)
{
    int rc = check_owner(job, "moor_job_async_set_phase");

    if (rc == 0)
        copy_str(job->async.phase, sizeof(job->async.phase), phase);
    return rc;
}

int moor_job_async_set_progress(moor_job *job, uint64_t done, uint64_t total, const char *stage)
{
    int rc = check_owner(job, "moor_job_async_set_progress");

    if (rc < 0)
        return rc;
    job->async.done = done;
    job->async.total = total;
    if (stage)
        copy_str(job->async.stage, sizeof(job->async.stage), stage);
    return 0;
}

int moor_job_async_set_mask(moor_job *job, uint32_t allowed)
{
    int rc = check_owner(job, "moor_job_async_set_mask");

    if (rc < 0)
        return rc;
    job->async.allowed = allowed | MOOR_JOB_MASK(MOOR_JOB_DESTROY);
    grant_pass(job);
    return 0;
}

bool moor_job_abort_requested(const moor_job *job)
{
    return job && job->async.active && job->async.abort_requested;
}

int moor_job_async_release(moor_job *job)
{
    int rc = check_owner(job, "moor_job_async_release");

    if (rc == 0)
        job->async.owner = 0;
    return rc;
}

int moor_job_async_adopt(moor_job *job)
{
    int self = self_id();
    int rc = check_locked(job, "moor_job_async_adopt", self);

    if (rc < 0)
        return rc;
    if (!job->async.active || job->async.owner != 0)
        return misuse(job, MOOR_MISUSE_BAD_ARGUMENT, "moor_job_async_adopt",
                      "no released async job (%s, owner thread %d)",
                      job->async.active ? job->async.name : "none", job->async.owner);
    job->async.owner = self;
    return 0;
}

/* ---- the object going away ------------------------------------------------------------- */

int moor_job_mark_inactive(moor_job *job)
{
    int rc = check_locked(job, "moor_job_mark_inactive", self_id());

    return rc < 0 ? rc : fail_waiters(job, false, "marked inactive");
}

int moor_job_mark_removed(moor_job *job)
{
    int rc = check_locked(job, "moor_job_mark_removed", self_id());

    if (rc < 0)
        return rc;
    job->removed = true;
    return fail_waiters(job, true, "removed");
}

bool moor_job_is_removed(const moor_job *job)
{
    /* Without the mutex the answer could be stale the moment it is given;
     * a misuse answers "removed", which makes the caller back out. */
    if (check_locked(job, "moor_job_is_removed", self_id()) < 0)
        return true;
    return job->removed;
}

/* ---- introspection ---------------------------------------------------------------------- */

int moor_job_info(const moor_job *job, moor_job_snapshot *out)
{
    int rc = check_locked(job, "moor_job_info", self_id());
    int64_t now = coarse_ns();

    if (rc < 0 || !out)
        return rc < 0 ? rc : misuse(job, MOOR_MISUSE_BAD_ARGUMENT, "moor_job_info", "NULL out");
    memset(out, 0, sizeof(*out));
    describe_object(job, out->object, sizeof(out->object));
    out->removed = job->removed;
    out->holders = job->nholders;
    out->exclusive = job->nexclusive;
    for (unsigned i = 0; i < job->nholders && i < MOOR_JOB_INFO_HOLDERS; i++) {
        const moor_job_holder *h = &job->holders[i];

        out->holder[i] = (moor_job_holder_info){h->kind, moor_job_kind_name(h->kind), h->api,
                                                h->thread, (uint64_t)(now - h->start_ns)};
    }
    out->waiters = job->nwaiters;
    for (const moor__job_waiter *w = job->destroy_head; w; w = w->next)
        out->destroy_waiters++;
    if (job->async.active) {
        out->async.active = true;
        out->async.abort_requested = job->async.abort_requested;
        out->async.owner = job->async.owner;
        out->async.allowed = job->async.allowed;
        out->async.api = job->async.api;
        out->async.held_ns = (uint64_t)(now - job->async.start_ns);
        out->async.done = job->async.done;
        out->async.total = job->async.total;
        memcpy(out->async.name, job->async.name, sizeof(out->async.name));
        memcpy(out->async.phase, job->async.phase, sizeof(out->async.phase));
        memcpy(out->async.stage, job->async.stage, sizeof(out->async.stage));
    }
    return 0;
}

/* ---- introspection ------------------------------------------------------------------ */

#define TRYLOCK_ROUNDS   50     /* then the object counts as busy */
#define TRYLOCK_PAUSE_NS 200000 /* between two tries: 50 x 0.2 ms = 10 ms */

static int64_t ms_between(int64_t from_ns, int64_t to_ns)
{
    return to_ns > from_ns ? (to_ns - from_ns) / 1000000 : 0;
}

/* A new entry for @job with the object's names filled in; NULL: no memory. */
static moor_debug_job *entry_new(struct moor__vec *v, const moor_job *job, moor_debug_job_role role)
{
    moor_debug_job *e = moor__vec_push(v);

    if (!e)
        return NULL;
    e->job = job;
    e->object = job->obj;
    copy_str(e->object_class, sizeof(e->object_class),
             moor_class_name(moor_object_get_class(job->obj)));
    copy_str(e->label, sizeof(e->label), job->label);
    e->role = role;
    e->left_ms = -1;
    return e;
}

static int collect_async(const moor_job *job, struct moor__vec *v, int64_t now)
{
    moor_debug_job *e = entry_new(v, job, MOOR_DEBUG_JOB_ASYNC);

    if (!e)
        return -ENOMEM;
    copy_str(e->kind, sizeof(e->kind), job->async.name);
    copy_str(e->api, sizeof(e->api), job->async.api);
    e->thread = job->async.owner;
    e->since_ns = job->async.start_ns;
    e->age_ms = ms_between(job->async.start_ns, now);
    return 0;
}

static int collect_waiter(const moor_job *job, const moor__job_waiter *w, struct moor__vec *v,
                          int64_t now)
{
    moor_debug_job *e = entry_new(v, job, MOOR_DEBUG_JOB_WAITS);
    int64_t age;

    if (!e)
        return -ENOMEM;
    copy_str(e->kind, sizeof(e->kind),
             w->kind == ASYNC_KIND ? w->name : moor_job_kind_name(w->kind));
    copy_str(e->api, sizeof(e->api), w->api);
    e->thread = w->thread;
    e->ticket = w->ticket;
    e->since_ns = w->since_ns;
    age = ms_between(w->since_ns, now);
    e->age_ms = age;
    e->left_ms = age < (int64_t)w->timeout_ms ? (int64_t)w->timeout_ms - age : 0;
    return 0;
}

/* @job's state; the caller holds the object's mutex. */
static int collect_locked(const moor_job *job, struct moor__vec *v)
{
    int64_t now = coarse_ns();

    if (job->async.active && collect_async(job, v, now) < 0)
        return -ENOMEM;
    for (unsigned i = 0; i < job->nholders; i++) {
        const moor_job_holder *h = &job->holders[i];
        moor_debug_job *e = entry_new(v, job, MOOR_DEBUG_JOB_HOLDS);

        if (!e)
            return -ENOMEM;
        copy_str(e->kind, sizeof(e->kind), moor_job_kind_name(h->kind));
        copy_str(e->api, sizeof(e->api), h->api);
        e->thread = h->thread;
        e->since_ns = h->start_ns;
        e->age_ms = ms_between(h->start_ns, now);
    }
    for (int pass = 0; pass < 2; pass++)
        for (const moor__job_waiter *w = pass ? job->head : job->destroy_head; w; w = w->next)
            if (collect_waiter(job, w, v, now) < 0)
                return -ENOMEM;
    return 0;
}

/* trylock, retried for a while: never waits on a mutex while live_lock is
 * held (a thread holding the object mutex may be about to take live_lock
 * to set up or tear down another job). */
static bool trylock_for_a_while(pthread_mutex_t *m)
{
    const struct timespec pause = {0, TRYLOCK_PAUSE_NS};

    for (int i = 0; i < TRYLOCK_ROUNDS; i++) {
        if (pthread_mutex_trylock(m) == 0)
            return true;
        nanosleep(&pause, NULL);
    }
    return false;
}

static int collect_job(moor_job *job, struct moor__vec *v)
{
    pthread_mutex_t *m = moor__lockable_mutex(job->obj);
    const moor_lockable *l = job->obj;
    int rc;

    if (!m)
        return 0; /* being freed: its destroy waits for live_lock */
    /* relaxed: exact when it is our own id (see mutex_held). */
    if (atomic_load_explicit(&l->owner, memory_order_relaxed) == self_id())
        return collect_locked(job, v);
    if (!trylock_for_a_while(m))
        return entry_new(v, job, MOOR_DEBUG_JOB_BUSY) ? 0 : -ENOMEM;
    rc = collect_locked(job, v);
    pthread_mutex_unlock(m);
    return rc;
}

int moor__job_collect(struct moor__vec *jobs)
{
    int rc = 0;

    pthread_mutex_lock(&live_lock);
    for (moor__live_node *n = live_first; n && rc == 0; n = n->next)
        rc = collect_job(JOB_OF(n), jobs);
    pthread_mutex_unlock(&live_lock);
    return rc;
}
