/* SPDX-License-Identifier: MIT */
/*
 * registry.pml - Promela model of rename against lookups by name in
 * src/registry.c.
 *
 * One member is renamed X -> Y -> X (ROUNDS times round the cycle) while
 * two readers look up X and Y, LOOKUPS times each. Each
 * name it has had lives in its own name node: node 0 is the first name
 * (X), node 1 the name Y, node 2 the name X again; with ROUNDS = 2 the
 * cycle goes on with nodes 3 (Y) and 4 (X). A node is "linked" while it is
 * in the name table and "trusted" while its state byte says a lookup may
 * accept it without reading entry->name. `cur` is entry->name.
 *
 * Rename (under the registry mutex, so renames never overlap), from node o
 * to a new node m, in the order of rename_locked():
 *   1. link m (untrusted: set before publication);
 *   2. mark o untrusted;
 *   3. cur = m: the switch-over instant;
 *   4. mark m trusted;
 *   5. unlink o.
 *
 * A lookup of name k (lookup_name_rcu()): find a linked node named k - an
 * atomic pick here; cds_lfht_lookup() may return a node that is unlinked
 * right after, which the model allows because every later step reads the
 * node again - then accept it if it is trusted, else only if cur is it.
 * A lookup that finds no node fails; the pick of "no node" is allowed only
 * at an instant when no node named k is linked. (A real lookup can also
 * miss a node added during its scan; every node named k is added only
 * after the previous one was unlinked, so such a miss also spans an
 * instant with none linked, and the model's atomic pick covers it.)
 *
 * Property: each lookup is linearisable against the name the member has.
 * Ghost state records, per reader, whether k was the member's name at some
 * instant of its lookup (saw_yes) and whether it was not (saw_no); both are
 * updated at the lookup's start and at every switch-over while it runs. A
 * lookup that succeeds must have saw_yes, one that fails saw_no. This is
 * the contract's "no instant at which both names, or neither, resolve":
 * two lookups of X and Y cannot both succeed, or both fail, unless the
 * name changed while they ran.
 *
 * Memory ordering. Spin explores sequentially consistent interleavings
 * only, so the model checks the order of the steps, not the C11 orders;
 * the C code gets the orders the model relies on as follows. Step 2 is
 * ordered before the switch by the switch's release store; a reader that
 * saw the switch (cur == m, or m trusted, which step 4's release store
 * publishes after the switch) and then - in any happens-before order -
 * reads o's state sees step 2 by coherence. Every read of a state byte or
 * of cur is an acquire load.
 *
 * Deliberately broken variants (each must FAIL an assertion):
 *   BROKEN_MARK_LATE    o is marked untrusted after the switch: a lookup
 *                       that starts after the switch still accepts the old
 *                       name through o;
 *   BROKEN_TRUST_EARLY  m is trusted before the switch: a lookup of the
 *                       new name succeeds before the old one stops;
 *   BROKEN_NO_CHECK     a lookup accepts any node it finds (no state byte,
 *                       no entry->name): an old node still linked after
 *                       the switch resolves the old name;
 *   BROKEN_NO_FALLBACK  a lookup rejects every untrusted node instead of
 *                       reading entry->name: during a rename neither name
 *                       resolves (this one trips the other assertion).
 */

#ifndef ROUNDS
#define ROUNDS 1
#endif
#ifndef LOOKUPS
#define LOOKUPS 2 /* per reader */
#endif

#define X 0
#define Y 1
#define NNODES (2 * ROUNDS + 1)
#define NREADERS 2
#define NONE 255

bool linked[NNODES];
bool trusted[NNODES];
byte cur = 0;

/* ghost */
bool in_lookup[NREADERS];
byte want[NREADERS];
bool saw_yes[NREADERS];
bool saw_no[NREADERS];

/* Node i's name: X for even nodes, Y for odd ones. */
#define NAME(i) ((i) % 2)

/* Record the member's name for every lookup in progress. */
inline observe()
{
    r = 0;
    do
    :: r < NREADERS ->
        if
        :: in_lookup[r] && NAME(cur) == want[r] -> saw_yes[r] = true
        :: in_lookup[r] && NAME(cur) != want[r] -> saw_no[r] = true
        :: else -> skip
        fi;
        r++
    :: else -> break
    od
}

proctype renamer()
{
    byte o = 0, m, r;

    do
    :: o + 1 < NNODES ->
        m = o + 1;
        linked[m] = true;
#ifdef BROKEN_TRUST_EARLY
        trusted[m] = true;
#endif
#ifndef BROKEN_MARK_LATE
        trusted[o] = false;
#endif
        d_step { cur = m; observe() };
#ifdef BROKEN_MARK_LATE
        trusted[o] = false;
#endif
        trusted[m] = true;
        linked[o] = false;
        o = m
    :: else -> break
    od
}

/* The linked node named @k, or NONE. Names are unique in the table (each
 * rename links its new node after the last one of that name was
 * unlinked), so there is at most one; that is checked here too. */
inline pick(k, p)
{
    atomic {
        p = NONE;
        i = 0;
        do
        :: i < NNODES ->
            if
            :: linked[i] && NAME(i) == k -> assert(p == NONE); p = i
            :: else -> skip
            fi;
            i++
        :: else -> break
        od
    }
}

proctype reader(byte id; byte k)
{
    byte p, i, n = 0;
    bool found;

    do
    :: n < LOOKUPS ->
        d_step {
            want[id] = k;
            in_lookup[id] = true;
            saw_yes[id] = NAME(cur) == k;
            saw_no[id] = NAME(cur) != k
        };
        pick(k, p);
        if
        :: p == NONE -> found = false
#ifdef BROKEN_NO_CHECK
        :: p != NONE -> found = true
#elif defined(BROKEN_NO_FALLBACK)
        :: p != NONE -> found = trusted[p]
#else
        :: p != NONE && trusted[p] -> found = true
        :: p != NONE && !trusted[p] -> found = (cur == p)
#endif
        fi;
        d_step {
            assert(!found || saw_yes[id]);
            assert(found || saw_no[id]);
            in_lookup[id] = false
        };
        n++
    :: else -> break
    od
}

init
{
    atomic {
        linked[0] = true;
        trusted[0] = true;
        run renamer();
        run reader(0, X);
        run reader(1, Y)
    }
}
