/* Stencil's compiled LR core: the grammar engine's parser side, in C.
 *
 * Why: a mask of the grammar engine needs, for a parser state never seen before, the
 * walk of its lexer state's split trie (grammars/token_tables.py) with one parser feed
 * per trie edge: 2,392 edges from Python's start state. In Python each feed cost about
 * 1.7 us (hash-consed stack objects, dicts, tuples); a first visit spent 4 ms there,
 * 80% of the Python grammar's mask time. Here a feed is a few hash probes.
 *
 * What it keeps (all of it owned by one Parser object, freed with it):
 *   stacks      LR stacks as hash-consed nodes (state, parent): a node id *is* the
 *               whole stack, so equal stacks are equal ints, and feeds are memoised
 *               per (node, terminal) as they were on the Python objects;
 *   accepted    per node, the set of parser terminals it takes, terminals sharing a
 *               reduction followed together;
 *   Python      (optional) the indentation layer of grammars/python_indent.py: a
 *               syntactic state is (stack, bracket depth, indent columns, at file
 *               start), interned to an int; indent columns are a hash-consed list;
 *   ok keys     per syntactic state, a small int naming its row of accepted lexer
 *               terminals (equal rows, equal key): the Python side turns a key into
 *               its ok_states array once;
 *   signature   the split-trie walk of grammars/cfg.py (CompiledGrammar._signature).
 *
 * The semantics are those of the Python modules it replaced (grammars/lalr.py,
 * grammars/syntax.py, grammars/python_indent.py); their docstrings say why each rule
 * is so. The calls hold the GIL (they are short, and the maps are not thread-safe).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define IGNORED (-1)
#define UNUSED (-2)
#define MAXW 32             /* bit-set words: at most 2,048 parser or lexer terminals */
#define MAX_REDUCE_DEPTH 10000
#define MAX_ACCEPTED_DEPTH 512 /* nested reductions followed for an accepted set (C stack) */
#define EMPTY UINT64_MAX

/* ---------------------------------------------------------------- growable arrays */

typedef struct {
    int32_t *a;
    size_t n, cap;
} Vec;

static int vec_push(Vec *v, int32_t x) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 256;
        int32_t *a = PyMem_Realloc(v->a, cap * sizeof(int32_t));
        if (!a) return -1;
        v->a = a;
        v->cap = cap;
    }
    v->a[v->n++] = x;
    return 0;
}

/* Room for row `n` in a pool of `words`-word bit-set rows (doubling); -1 on no memory. */
static int pool_reserve(uint64_t **pool, size_t *cap, size_t n, int words) {
    if (n < *cap) return 0;
    size_t grown = *cap ? 2 * *cap : 64;
    uint64_t *bigger = PyMem_Realloc(*pool, grown * words * sizeof(uint64_t));
    if (!bigger) return -1;
    *pool = bigger;
    *cap = grown;
    return 0;
}

/* ---------------------------------------------------------------- uint64 -> int32 map */

typedef struct {
    uint64_t *keys;
    int32_t *vals;
    size_t cap, n; /* cap: a power of two */
} Map;

static inline uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static inline uint64_t pair(int64_t a, int64_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

static int map_get(const Map *m, uint64_t key, int32_t *out) {
    if (!m->cap) return 0;
    size_t mask = m->cap - 1, i = mix(key) & mask;
    while (m->keys[i] != EMPTY) {
        if (m->keys[i] == key) {
            *out = m->vals[i];
            return 1;
        }
        i = (i + 1) & mask;
    }
    return 0;
}

static int map_put(Map *m, uint64_t key, int32_t val);

static int map_grow(Map *m) {
    size_t cap = m->cap ? 2 * m->cap : 1024;
    uint64_t *keys = PyMem_Malloc(cap * sizeof(uint64_t));
    int32_t *vals = PyMem_Malloc(cap * sizeof(int32_t));
    if (!keys || !vals) {
        PyMem_Free(keys);
        PyMem_Free(vals);
        return -1;
    }
    memset(keys, 0xff, cap * sizeof(uint64_t));
    Map old = *m;
    m->keys = keys;
    m->vals = vals;
    m->cap = cap;
    m->n = 0;
    for (size_t i = 0; i < old.cap; i++)
        if (old.keys[i] != EMPTY) map_put(m, old.keys[i], old.vals[i]);
    PyMem_Free(old.keys);
    PyMem_Free(old.vals);
    return 0;
}

static int map_put(Map *m, uint64_t key, int32_t val) {
    if (2 * (m->n + 1) > m->cap && map_grow(m) < 0) return -1;
    size_t mask = m->cap - 1, i = mix(key) & mask;
    while (m->keys[i] != EMPTY && m->keys[i] != key) i = (i + 1) & mask;
    if (m->keys[i] == EMPTY) m->n++;
    m->keys[i] = key;
    m->vals[i] = val;
    return 0;
}

static void map_free(Map *m) {
    PyMem_Free(m->keys);
    PyMem_Free(m->vals);
}

/* ---------------------------------------------------------------- the parser object */

typedef struct {
    PyObject_HEAD
    int n_states, n_terms, n_nts, W; /* W: words of a parser-terminal set */
    int8_t *akind;                   /* [state * n_terms + term]: 0 none, 1 shift, 2 reduce */
    int32_t *aarg, *ant, *go;        /* shift target or pop count; reduced nonterminal; gotos */
    int start_state, end_state, end_term;
    uint64_t *shifts;                /* per state: shifted terminals */
    int32_t *red_start, *red_pop, *red_nt; /* per state: its reductions (pop, nonterminal) */
    uint64_t *red_terms;             /* ... and the terminals that trigger each */
    int n_lt, LW;                    /* lexer terminals; words of a lexer-terminal set */
    int32_t *pt;                     /* lexer terminal -> parser terminal, IGNORED, UNUSED */
    /* accept rows from accepted sets: lexer terminals per parser terminal, and the sets
     * the Python layer adjusts (whitespace, closers, newlines, newlines deeper than a
     * column), each LW words */
    uint64_t *term_mask, *ign_mask, *ws_mask, *close_mask, *nl_mask, *deeper_mask;
    int32_t *nl_of_col;              /* newline column -> its lexer terminal, or -1 */
    /* stacks */
    Vec nstate, nparent, nacc;       /* per node; nacc: index into accpool or -1 */
    uint64_t *accpool;
    size_t accn, acccap;
    Map kids, fed;
    /* the Python layer */
    int python, deep;
    int32_t *column;                 /* lexer terminal -> newline column, or -1 */
    uint8_t *ws, *opening, *closing;
    int t_newline, t_indent, t_dedent;
    Vec ind_parent, ind_col;
    Map ind_map;
    Vec ctx_ind, ctx_depth, ctx_start;
    Map ctx_map;
    Vec ps_node, ps_ctx;
    Map ps_map, pyfed;
    /* ok keys */
    Vec syn_key;                     /* per syntactic state: its key or -1 */
    uint64_t *rows;                  /* per key: LW words */
    size_t nkeys, rowcap;
    int32_t *rtab;                   /* open addressing over key ids */
    size_t rcap;
} Parser;

static int fail_memory(void) {
    PyErr_NoMemory();
    return -2;
}

/* ---- stacks */

static int32_t new_node(Parser *p, int32_t state, int32_t parent) {
    int32_t id = (int32_t)p->nstate.n;
    if (vec_push(&p->nstate, state) < 0 || vec_push(&p->nparent, parent) < 0 || vec_push(&p->nacc, -1) < 0)
        return fail_memory();
    return id;
}

/* The one node for stack (parent, state); -2 on a memory error. */
static int32_t push(Parser *p, int32_t parent, int32_t state) {
    uint64_t key = pair(parent + 1, state);
    int32_t got;
    if (map_get(&p->kids, key, &got)) return got;
    got = new_node(p, state, parent);
    if (got < 0) return got;
    if (map_put(&p->kids, key, got) < 0) return fail_memory();
    return got;
}

/* The stack after shifting parser terminal `term` with its reductions; -1 refused. */
static int32_t tfeed(Parser *p, int32_t node, int32_t term) {
    uint64_t key = pair(node, term);
    int32_t got;
    if (map_get(&p->fed, key, &got)) return got;
    int32_t cur = node, result = -1;
    for (int guard = 0; guard < MAX_REDUCE_DEPTH; guard++) {
        int32_t s = p->nstate.a[cur];
        size_t at = (size_t)s * p->n_terms + term;
        int kind = p->akind[at];
        if (kind == 0) break;
        if (kind == 1) {
            result = push(p, cur, p->aarg[at]);
            break;
        }
        for (int32_t i = 0; i < p->aarg[at] && cur >= 0; i++) cur = p->nparent.a[cur];
        if (cur < 0) break;
        int32_t g = p->go[(size_t)p->nstate.a[cur] * p->n_nts + p->ant[at]];
        if (g < 0) break;
        cur = push(p, cur, g);
        if (cur < 0) return cur;
    }
    if (result < -1) return result;
    if (map_put(&p->fed, key, result) < 0) return fail_memory();
    return result;
}

static int accepted_among(Parser *p, int32_t node, const uint64_t *among, uint64_t *out, int depth) {
    int W = p->W;
    int32_t ai = p->nacc.a[node];
    if (ai >= 0) {
        for (int w = 0; w < W; w++) out[w] = p->accpool[(size_t)ai * W + w] & among[w];
        return 0;
    }
    if (depth > MAX_ACCEPTED_DEPTH) {
        PyErr_SetString(PyExc_RecursionError, "LR core: a cycle of reductions in the parse tables");
        return -1;
    }
    int32_t s = p->nstate.a[node];
    for (int w = 0; w < W; w++) out[w] = p->shifts[(size_t)s * W + w] & among[w];
    for (int32_t r = p->red_start[s]; r < p->red_start[s + 1]; r++) {
        uint64_t terms[MAXW], sub[MAXW], any = 0;
        for (int w = 0; w < W; w++) any |= terms[w] = p->red_terms[(size_t)r * W + w] & among[w];
        if (!any) continue;
        int32_t cur = node;
        for (int32_t i = 0; i < p->red_pop[r] && cur >= 0; i++) cur = p->nparent.a[cur];
        if (cur < 0) continue;
        int32_t g = p->go[(size_t)p->nstate.a[cur] * p->n_nts + p->red_nt[r]];
        if (g < 0) continue;
        cur = push(p, cur, g);
        if (cur < 0) return -1;
        if (accepted_among(p, cur, terms, sub, depth + 1) < 0) return -1;
        for (int w = 0; w < W; w++) out[w] |= sub[w];
    }
    return 0;
}

/* The parser terminals `node` takes, memoised on the node. */
static int accepted(Parser *p, int32_t node, uint64_t *out) {
    int W = p->W;
    int32_t ai = p->nacc.a[node];
    if (ai < 0) {
        uint64_t all[MAXW];
        for (int w = 0; w < W; w++) all[w] = ~0ULL;
        if (accepted_among(p, node, all, out, 0) < 0) return -1;
        if (pool_reserve(&p->accpool, &p->acccap, p->accn, W) < 0) return fail_memory();
        memcpy(p->accpool + p->accn * W, out, W * sizeof(uint64_t));
        p->nacc.a[node] = (int32_t)p->accn++;
        return 0;
    }
    memcpy(out, p->accpool + (size_t)ai * W, W * sizeof(uint64_t));
    return 0;
}

/* 1 if `node` takes some terminal other than $END, 0 if not, <0 on error. */
static int takes_more(Parser *p, int32_t node) {
    uint64_t acc[MAXW];
    if (accepted(p, node, acc) < 0) return -1;
    acc[p->end_term >> 6] &= ~(1ULL << (p->end_term & 63));
    for (int w = 0; w < p->W; w++)
        if (acc[w]) return 1;
    return 0;
}

/* Whether the input may end at `node` ($END reduces to the start symbol). */
static int accepts_end(Parser *p, int32_t node) {
    int32_t cur = node;
    for (int guard = 0; guard < MAX_REDUCE_DEPTH && cur >= 0; guard++) {
        int32_t s = p->nstate.a[cur];
        if (s == p->end_state) return 1;
        size_t at = (size_t)s * p->n_terms + p->end_term;
        if (p->akind[at] != 2) return 0;
        for (int32_t i = 0; i < p->aarg[at] && cur >= 0; i++) cur = p->nparent.a[cur];
        if (cur < 0) return 0;
        int32_t g = p->go[(size_t)p->nstate.a[cur] * p->n_nts + p->ant[at]];
        if (g < 0) return 0;
        cur = push(p, cur, g);
        if (cur < -1) return -1;
    }
    return 0;
}

/* ---- the Python layer: interned (stack, depth, indents, at_start) */

static int32_t indents_push(Parser *p, int32_t parent, int32_t col) {
    uint64_t key = pair(parent + 1, col);
    int32_t got;
    if (map_get(&p->ind_map, key, &got)) return got;
    got = (int32_t)p->ind_col.n;
    if (vec_push(&p->ind_parent, parent) < 0 || vec_push(&p->ind_col, col) < 0) return fail_memory();
    if (map_put(&p->ind_map, key, got) < 0) return fail_memory();
    return got;
}

static int32_t pystate(Parser *p, int32_t node, int32_t depth, int32_t ind, int at_start) {
    uint64_t ckey = pair(ind, ((int64_t)depth << 1) | (at_start ? 1 : 0));
    int32_t ctx;
    if (!map_get(&p->ctx_map, ckey, &ctx)) {
        ctx = (int32_t)p->ctx_ind.n;
        if (vec_push(&p->ctx_ind, ind) < 0 || vec_push(&p->ctx_depth, depth) < 0 ||
            vec_push(&p->ctx_start, at_start ? 1 : 0) < 0 || map_put(&p->ctx_map, ckey, ctx) < 0)
            return fail_memory();
    }
    uint64_t key = pair(node, ctx);
    int32_t got;
    if (map_get(&p->ps_map, key, &got)) return got;
    got = (int32_t)p->ps_node.n;
    if (vec_push(&p->ps_node, node) < 0 || vec_push(&p->ps_ctx, ctx) < 0 || map_put(&p->ps_map, key, got) < 0)
        return fail_memory();
    return got;
}

static int32_t newline(Parser *p, int32_t node, int32_t ind, int32_t col) {
    if (col == p->deep) return -1;
    int32_t cur = tfeed(p, node, p->t_newline);
    if (cur < 0) return cur;
    if (col > p->ind_col.a[ind]) {
        cur = tfeed(p, cur, p->t_indent);
        if (cur < 0) return cur;
        int32_t deeper = indents_push(p, ind, col);
        if (deeper < 0) return deeper;
        return pystate(p, cur, 0, deeper, 0);
    }
    while (col < p->ind_col.a[ind]) {
        cur = tfeed(p, cur, p->t_dedent);
        if (cur < 0) return cur;
        ind = p->ind_parent.a[ind];
    }
    if (col != p->ind_col.a[ind]) return -1;
    return pystate(p, cur, 0, ind, 0);
}

static int32_t py_feed_now(Parser *p, int32_t syn, int32_t lt, int last) {
    int32_t node = p->ps_node.a[syn], ctx = p->ps_ctx.a[syn];
    int32_t depth = p->ctx_depth.a[ctx], ind = p->ctx_ind.a[ctx];
    int at_start = p->ctx_start.a[ctx];
    int32_t col = p->column[lt];
    if (col >= 0) {
        if (depth > 0) return pystate(p, node, depth, ind, 0); /* implicit line joining */
        return newline(p, node, ind, last ? 0 : col);
    }
    int32_t pp = p->pt[lt];
    if (pp == IGNORED) {
        if (at_start && p->ws[lt]) return -1; /* CPython: "unexpected indent" */
        int more = takes_more(p, node);
        if (more < 0) return -2;
        return more ? pystate(p, node, depth, ind, 0) : -1;
    }
    if (pp == UNUSED) return -1;
    if (p->opening[lt]) {
        depth++;
    } else if (p->closing[lt]) {
        if (depth == 0) return -1;
        depth--;
    }
    int32_t nxt = tfeed(p, node, pp);
    return nxt < 0 ? nxt : pystate(p, nxt, depth, ind, 0);
}

/* ---- the syntactic state, plain or Python */

static int32_t syn_feed(Parser *p, int32_t syn, int32_t lt) {
    if (p->python) return py_feed_now(p, syn, lt, 0);
    int32_t pp = p->pt[lt];
    if (pp == IGNORED) {
        int more = takes_more(p, syn);
        return more < 0 ? -2 : (more ? syn : -1);
    }
    if (pp == UNUSED) return -1;
    return tfeed(p, syn, pp);
}

static int syn_finish(Parser *p, int32_t syn) {
    if (!p->python) return accepts_end(p, syn);
    int32_t node = p->ps_node.a[syn], ctx = p->ps_ctx.a[syn];
    if (p->ctx_depth.a[ctx]) return 0;
    int32_t cur = tfeed(p, node, p->t_newline);
    if (cur < -1) return -1;
    if (cur < 0) cur = node;
    for (int32_t ind = p->ctx_ind.a[ctx]; p->ind_parent.a[ind] >= 0; ind = p->ind_parent.a[ind]) {
        cur = tfeed(p, cur, p->t_dedent);
        if (cur < 0) return cur < -1 ? -1 : 0;
    }
    return accepts_end(p, cur);
}

static inline void bit_set(uint64_t *row, int i, int on) {
    if (on)
        row[i >> 6] |= 1ULL << (i & 63);
    else
        row[i >> 6] &= ~(1ULL << (i & 63));
}

/* The lexer terminals `syn` takes as its next complete lexeme. */
static int accept_row(Parser *p, int32_t syn, uint64_t *row) {
    int32_t node = p->python ? p->ps_node.a[syn] : syn;
    int W = p->W, LW = p->LW;
    uint64_t acc[MAXW];
    if (accepted(p, node, acc) < 0) return -1;
    memset(row, 0, LW * sizeof(uint64_t));
    int more = 0;
    for (int w = 0; w < W; w++) {
        uint64_t x = acc[w];
        while (x) {
            int t = w * 64 + __builtin_ctzll(x);
            x &= x - 1;
            if (t != p->end_term) more = 1;
            const uint64_t *m = p->term_mask + (size_t)t * LW;
            for (int v = 0; v < LW; v++) row[v] |= m[v];
        }
    }
    if (more)
        for (int v = 0; v < LW; v++) row[v] |= p->ign_mask[v];
    if (!p->python) return 0;
    int32_t ctx = p->ps_ctx.a[syn];
    int32_t depth = p->ctx_depth.a[ctx], ind = p->ctx_ind.a[ctx];
    for (int v = 0; v < LW; v++) {
        if (p->ctx_start.a[ctx]) row[v] &= ~p->ws_mask[v];
        if (depth == 0) row[v] &= ~p->close_mask[v];
        row[v] = depth > 0 ? row[v] | p->nl_mask[v] : row[v] & ~p->nl_mask[v];
    }
    if (depth > 0) return 0; /* implicit line joining: every newline is dropped */
    int32_t top = p->ind_col.a[ind];
    if (top < p->deep - 1 && p->nl_of_col[top + 1] >= 0) { /* deeper: the same for every column */
        int32_t got = syn_feed(p, syn, p->nl_of_col[top + 1]);
        if (got < -1) return -1;
        if (got >= 0)
            for (int v = 0; v < LW; v++) row[v] |= p->deeper_mask[(size_t)top * LW + v];
    }
    for (int32_t i = ind; i >= 0; i = p->ind_parent.a[i]) { /* a line at an open block's column */
        int32_t lt = p->nl_of_col[p->ind_col.a[i]];
        if (lt < 0) continue;
        int32_t got = syn_feed(p, syn, lt);
        if (got < -1) return -1;
        if (got >= 0) bit_set(row, lt, 1);
    }
    return 0;
}

static uint64_t row_hash(const uint64_t *row, int LW) {
    uint64_t h = 0x12345;
    for (int w = 0; w < LW; w++) h = mix(h ^ row[w]);
    return h;
}

static int rtab_grow(Parser *p) {
    size_t cap = p->rcap ? 2 * p->rcap : 256;
    int32_t *tab = PyMem_Malloc(cap * sizeof(int32_t));
    if (!tab) return fail_memory();
    memset(tab, 0xff, cap * sizeof(int32_t));
    for (size_t k = 0; k < p->nkeys; k++) {
        size_t i = row_hash(p->rows + k * p->LW, p->LW) & (cap - 1);
        while (tab[i] >= 0) i = (i + 1) & (cap - 1);
        tab[i] = (int32_t)k;
    }
    PyMem_Free(p->rtab);
    p->rtab = tab;
    p->rcap = cap;
    return 0;
}

/* The ok key of `syn`: its accept row's number among the rows seen so far. */
static int32_t ok_key(Parser *p, int32_t syn) {
    while (p->syn_key.n <= (size_t)syn)
        if (vec_push(&p->syn_key, -1) < 0) return fail_memory();
    if (p->syn_key.a[syn] >= 0) return p->syn_key.a[syn];
    uint64_t row[MAXW];
    if (accept_row(p, syn, row) < 0) return -2;
    int LW = p->LW;
    if (2 * (p->nkeys + 1) > p->rcap && rtab_grow(p) < 0) return -2;
    size_t mask = p->rcap - 1, i = row_hash(row, LW) & mask;
    int32_t key = -1;
    while (p->rtab[i] >= 0) {
        if (!memcmp(p->rows + (size_t)p->rtab[i] * LW, row, LW * sizeof(uint64_t))) {
            key = p->rtab[i];
            break;
        }
        i = (i + 1) & mask;
    }
    if (key < 0) {
        if (pool_reserve(&p->rows, &p->rowcap, p->nkeys, LW) < 0) return fail_memory();
        key = (int32_t)p->nkeys++;
        memcpy(p->rows + (size_t)key * LW, row, LW * sizeof(uint64_t));
        p->rtab[i] = key;
    }
    p->syn_key.a[syn] = key;
    return key;
}

/* ---------------------------------------------------------------- Python methods */

static int check_syn(Parser *p, long syn) {
    size_t n = p->python ? p->ps_node.n : p->nstate.n;
    if (syn < 0 || (size_t)syn >= n) {
        PyErr_Format(PyExc_ValueError, "LR core: %ld is not a syntactic state of this parser", syn);
        return -1;
    }
    return 0;
}

static int check_lt(Parser *p, long lt) {
    if (lt < 0 || lt >= p->n_lt) {
        PyErr_Format(PyExc_ValueError, "LR core: %ld is not a lexer terminal (there are %d)", lt, p->n_lt);
        return -1;
    }
    return 0;
}

static PyObject *m_initial(Parser *p, PyObject *unused) {
    (void)unused;
    int32_t root = push(p, -1, p->start_state);
    if (root < 0) return NULL;
    if (!p->python) return PyLong_FromLong(root);
    int32_t got = pystate(p, root, 0, 0, 1);
    return got < 0 ? NULL : PyLong_FromLong(got);
}

static PyObject *m_feed(Parser *p, PyObject *args) {
    long syn, lt;
    int last = 0;
    if (!PyArg_ParseTuple(args, "ll|p", &syn, &lt, &last) || check_syn(p, syn) < 0 || check_lt(p, lt) < 0)
        return NULL;
    int32_t got = last && p->python ? py_feed_now(p, (int32_t)syn, (int32_t)lt, 1) : syn_feed(p, (int32_t)syn, (int32_t)lt);
    return got < -1 ? NULL : PyLong_FromLong(got);
}

static PyObject *m_finish(Parser *p, PyObject *arg) {
    long syn = PyLong_AsLong(arg);
    if ((syn == -1 && PyErr_Occurred()) || check_syn(p, syn) < 0) return NULL;
    int got = syn_finish(p, (int32_t)syn);
    return got < 0 ? NULL : PyBool_FromLong(got);
}

static PyObject *m_ok_key(Parser *p, PyObject *arg) {
    long syn = PyLong_AsLong(arg);
    if ((syn == -1 && PyErr_Occurred()) || check_syn(p, syn) < 0) return NULL;
    int32_t got = ok_key(p, (int32_t)syn);
    return got < 0 ? NULL : PyLong_FromLong(got);
}

static PyObject *row_bytes(Parser *p, const uint64_t *row) {
    PyObject *out = PyBytes_FromStringAndSize(NULL, p->n_lt);
    if (!out) return NULL;
    char *s = PyBytes_AS_STRING(out);
    for (int lt = 0; lt < p->n_lt; lt++) s[lt] = (char)((row[lt >> 6] >> (lt & 63)) & 1);
    return out;
}

static PyObject *m_key_row(Parser *p, PyObject *arg) {
    long key = PyLong_AsLong(arg);
    if (key == -1 && PyErr_Occurred()) return NULL;
    if (key < 0 || (size_t)key >= p->nkeys) {
        PyErr_Format(PyExc_ValueError, "LR core: no ok key %ld", key);
        return NULL;
    }
    return row_bytes(p, p->rows + (size_t)key * p->LW);
}

static PyObject *m_accept_row(Parser *p, PyObject *arg) {
    long syn = PyLong_AsLong(arg);
    if ((syn == -1 && PyErr_Occurred()) || check_syn(p, syn) < 0) return NULL;
    uint64_t row[MAXW];
    if (accept_row(p, (int32_t)syn, row) < 0) return NULL;
    return row_bytes(p, row);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* signature(syn, cstart, cterm, cseq, gstart, groups) -> bytes of int32 pairs
 * (group, ok key), sorted: the split trie (see split_trie) walked from `syn`, one feed
 * per edge, a refused terminal dropping its subtree. */
static PyObject *m_signature(Parser *p, PyObject *args) {
    long syn;
    Py_buffer b[5] = {{0}};
    if (!PyArg_ParseTuple(args, "ly*y*y*y*y*", &syn, &b[0], &b[1], &b[2], &b[3], &b[4])) return NULL;
    PyObject *result = NULL;
    uint64_t *out = NULL;
    int32_t *todo = NULL;
    if (check_syn(p, syn) < 0) goto done;
    const int32_t *cstart = b[0].buf, *cterm = b[1].buf, *cseq = b[2].buf, *gstart = b[3].buf,
                  *groups = b[4].buf;
    Py_ssize_t n_seq = b[0].len / 4 - 1, n_edges = b[1].len / 4, n_groups = b[4].len / 4;
    if (n_seq < 1 || b[2].len != b[1].len || b[3].len != b[0].len || cstart[n_seq] != n_edges ||
        gstart[n_seq] != n_groups) {
        PyErr_SetString(PyExc_ValueError, "LR core: inconsistent split trie buffers");
        goto done;
    }
    out = PyMem_Malloc((n_groups + 1) * sizeof(uint64_t));
    todo = PyMem_Malloc(2 * (n_seq + 1) * sizeof(int32_t));
    if (!out || !todo) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t n_out = 0, n_todo = 0;
    todo[n_todo++] = 0;
    todo[n_todo++] = (int32_t)syn;
    while (n_todo) {
        int32_t s = todo[--n_todo], seq = todo[--n_todo];
        if (gstart[seq] < gstart[seq + 1]) {
            int32_t key = ok_key(p, s);
            if (key < 0) goto done;
            for (int32_t g = gstart[seq]; g < gstart[seq + 1]; g++) out[n_out++] = pair(groups[g], key);
        }
        for (int32_t e = cstart[seq]; e < cstart[seq + 1]; e++) {
            int32_t nxt = syn_feed(p, s, cterm[e]);
            if (nxt < -1) goto done;
            if (nxt >= 0) {
                todo[n_todo++] = cseq[e];
                todo[n_todo++] = nxt;
            }
        }
    }
    qsort(out, n_out, sizeof(uint64_t), cmp_u64);
    result = PyBytes_FromStringAndSize(NULL, n_out * 8);
    if (result) {
        int32_t *w = (int32_t *)PyBytes_AS_STRING(result);
        for (Py_ssize_t i = 0; i < n_out; i++) {
            w[2 * i] = (int32_t)(out[i] >> 32);
            w[2 * i + 1] = (int32_t)(out[i] & 0xffffffffu);
        }
    }
done:
    PyMem_Free(out);
    PyMem_Free(todo);
    for (int i = 0; i < 5; i++)
        if (b[i].obj) PyBuffer_Release(&b[i]);
    return result;
}

static PyObject *m_key_count(Parser *p, PyObject *unused) {
    (void)unused;
    return PyLong_FromSize_t(p->nkeys);
}

static PyObject *m_sizes(Parser *p, PyObject *unused) {
    (void)unused;
    return Py_BuildValue("{s:n,s:n,s:n,s:n}", "stacks", (Py_ssize_t)p->nstate.n, "states",
                         (Py_ssize_t)(p->python ? p->ps_node.n : p->nstate.n), "ok_keys",
                         (Py_ssize_t)p->nkeys, "feeds", (Py_ssize_t)(p->fed.n + p->pyfed.n));
}

/* ---------------------------------------------------------------- construction */

static void *copy_buf(Py_buffer *b, Py_ssize_t want, Py_ssize_t item, const char *name) {
    if (b->len != want * item) {
        PyErr_Format(PyExc_ValueError, "LR core: %s has %zd bytes, expected %zd", name, b->len, want * item);
        return NULL;
    }
    void *out = PyMem_Malloc(want * item + 1);
    if (!out) {
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(out, b->buf, want * item);
    return out;
}

static void parser_dealloc(Parser *p) {
    void *owned[] = {p->akind, p->aarg, p->ant, p->go, p->shifts, p->red_start, p->red_pop, p->red_nt,
                     p->red_terms, p->pt, p->accpool, p->column, p->ws, p->opening, p->closing,
                     p->rows, p->rtab, p->term_mask, p->ign_mask, p->ws_mask, p->close_mask,
                     p->nl_mask, p->deeper_mask, p->nl_of_col};
    for (size_t i = 0; i < sizeof(owned) / sizeof(owned[0]); i++) PyMem_Free(owned[i]);
    Vec *vecs[] = {&p->nstate, &p->nparent, &p->nacc, &p->ind_parent, &p->ind_col, &p->ctx_ind,
                   &p->ctx_depth, &p->ctx_start, &p->ps_node, &p->ps_ctx, &p->syn_key};
    for (size_t i = 0; i < sizeof(vecs) / sizeof(vecs[0]); i++) PyMem_Free(vecs[i]->a);
    Map *maps[] = {&p->kids, &p->fed, &p->ind_map, &p->ctx_map, &p->ps_map, &p->pyfed};
    for (size_t i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) map_free(maps[i]);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static int build_masks(Parser *p) {
    int LW = p->LW, cols = p->python ? p->deep + 1 : 1;
    p->term_mask = PyMem_Calloc((size_t)p->n_terms * LW, sizeof(uint64_t));
    p->ign_mask = PyMem_Calloc(LW, sizeof(uint64_t));
    p->ws_mask = PyMem_Calloc(LW, sizeof(uint64_t));
    p->close_mask = PyMem_Calloc(LW, sizeof(uint64_t));
    p->nl_mask = PyMem_Calloc(LW, sizeof(uint64_t));
    p->deeper_mask = PyMem_Calloc((size_t)cols * LW, sizeof(uint64_t));
    p->nl_of_col = PyMem_Malloc(cols * sizeof(int32_t));
    if (!p->term_mask || !p->ign_mask || !p->ws_mask || !p->close_mask || !p->nl_mask || !p->deeper_mask ||
        !p->nl_of_col)
        return fail_memory();
    for (int c = 0; c < cols; c++) p->nl_of_col[c] = -1;
    for (int lt = 0; lt < p->n_lt; lt++) {
        int32_t pp = p->pt[lt], col = p->column[lt];
        if (pp >= 0) bit_set(p->term_mask + (size_t)pp * LW, lt, 1);
        if (pp == IGNORED) bit_set(p->ign_mask, lt, 1);
        if (p->ws[lt]) bit_set(p->ws_mask, lt, 1);
        if (p->closing[lt]) bit_set(p->close_mask, lt, 1);
        if (col < 0) continue;
        if (col >= cols) {
            PyErr_Format(PyExc_ValueError, "LR core: newline column %d is past the deep column %d", col, p->deep);
            return -1;
        }
        bit_set(p->nl_mask, lt, 1);
        if (p->nl_of_col[col] < 0) p->nl_of_col[col] = lt;
        if (col == p->deep) continue;
        for (int top = 0; top < col; top++) bit_set(p->deeper_mask + (size_t)top * LW, lt, 1);
    }
    return 0;
}

/* Parser(n_states, n_terms, n_nts, kind, arg, nt, goto, start, end_state, end_term, pt,
 *        python) with python None or (column, ws, opening, closing, newline, indent,
 *        dedent, deep): dense int8/int32 tables (see grammars/syntax.py, which builds
 *        them from grammars.lalr.ParseTables). */
static PyObject *parser_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    (void)kw;
    int n_states, n_terms, n_nts, start, end_state, end_term;
    Py_buffer kind = {0}, arg = {0}, nt = {0}, go = {0}, pt = {0};
    PyObject *python = Py_None;
    if (!PyArg_ParseTuple(args, "iiiy*y*y*y*iiiy*|O", &n_states, &n_terms, &n_nts, &kind, &arg, &nt, &go,
                          &start, &end_state, &end_term, &pt, &python))
        return NULL;
    Parser *p = (Parser *)type->tp_alloc(type, 0);
    PyObject *result = NULL;
    Py_buffer pyb[4] = {{0}};
    if (!p) goto fail;
    if (n_states < 1 || n_terms < 1 || n_terms > 64 * MAXW || end_term < 0 || end_term >= n_terms ||
        start < 0 || start >= n_states) {
        PyErr_Format(PyExc_ValueError,
                     "LR core: a grammar may have at most %d terminals (this one has %d), "
                     "with its start and end inside the tables",
                     64 * MAXW, n_terms);
        goto fail;
    }
    p->n_states = n_states;
    p->n_terms = n_terms;
    p->n_nts = n_nts > 0 ? n_nts : 1;
    p->W = (n_terms + 63) / 64;
    p->start_state = start;
    p->end_state = end_state;
    p->end_term = end_term;
    p->n_lt = (int)(pt.len / 4);
    p->LW = (p->n_lt + 63) / 64;
    if (p->n_lt < 1 || p->n_lt > 64 * MAXW) {
        PyErr_Format(PyExc_ValueError, "LR core: a grammar may have at most %d lexer terminals", 64 * MAXW);
        goto fail;
    }
    size_t cells = (size_t)n_states * n_terms;
    if (!(p->akind = copy_buf(&kind, cells, 1, "kind")) || !(p->aarg = copy_buf(&arg, cells, 4, "arg")) ||
        !(p->ant = copy_buf(&nt, cells, 4, "nt")) ||
        !(p->go = copy_buf(&go, (size_t)n_states * p->n_nts, 4, "goto")) ||
        !(p->pt = copy_buf(&pt, p->n_lt, 4, "pt")))
        goto fail;
    for (int lt = 0; lt < p->n_lt; lt++)
        if (p->pt[lt] >= n_terms || p->pt[lt] < UNUSED) {
            PyErr_Format(PyExc_ValueError, "LR core: lexer terminal %d names parser terminal %d", lt, p->pt[lt]);
            goto fail;
        }
    /* per state: the shifted terminals and the reductions grouped by (pop, nonterminal) */
    int W = p->W;
    p->shifts = PyMem_Calloc((size_t)n_states * W + 1, sizeof(uint64_t));
    p->red_start = PyMem_Calloc(n_states + 1, sizeof(int32_t));
    size_t n_red = 0, red_cap = 1024;
    p->red_pop = PyMem_Malloc(red_cap * sizeof(int32_t));
    p->red_nt = PyMem_Malloc(red_cap * sizeof(int32_t));
    p->red_terms = PyMem_Malloc(red_cap * W * sizeof(uint64_t));
    if (!p->shifts || !p->red_start || !p->red_pop || !p->red_nt || !p->red_terms) {
        PyErr_NoMemory();
        goto fail;
    }
    for (int s = 0; s < n_states; s++) {
        p->red_start[s] = (int32_t)n_red;
        for (int t = 0; t < n_terms; t++) {
            size_t at = (size_t)s * n_terms + t;
            int k = p->akind[at];
            if (k == 1) {
                p->shifts[(size_t)s * W + (t >> 6)] |= 1ULL << (t & 63);
                if (p->aarg[at] < 0 || p->aarg[at] >= n_states) {
                    PyErr_Format(PyExc_ValueError, "LR core: state %d shifts to %d", s, p->aarg[at]);
                    goto fail;
                }
            } else if (k == 2) {
                if (p->ant[at] < 0 || p->ant[at] >= p->n_nts) {
                    PyErr_Format(PyExc_ValueError, "LR core: state %d reduces to nonterminal %d", s, p->ant[at]);
                    goto fail;
                }
                size_t r = p->red_start[s];
                while (r < n_red && !(p->red_pop[r] == p->aarg[at] && p->red_nt[r] == p->ant[at])) r++;
                if (r == n_red) {
                    if (n_red == red_cap) {
                        red_cap *= 2;
                        int32_t *a = PyMem_Realloc(p->red_pop, red_cap * sizeof(int32_t));
                        if (a) p->red_pop = a;
                        int32_t *b2 = PyMem_Realloc(p->red_nt, red_cap * sizeof(int32_t));
                        if (b2) p->red_nt = b2;
                        uint64_t *c = PyMem_Realloc(p->red_terms, red_cap * W * sizeof(uint64_t));
                        if (c) p->red_terms = c;
                        if (!a || !b2 || !c) {
                            PyErr_NoMemory();
                            goto fail;
                        }
                    }
                    p->red_pop[n_red] = p->aarg[at];
                    p->red_nt[n_red] = p->ant[at];
                    memset(p->red_terms + n_red * W, 0, W * sizeof(uint64_t));
                    n_red++;
                }
                p->red_terms[r * W + (t >> 6)] |= 1ULL << (t & 63);
            }
        }
    }
    p->red_start[n_states] = (int32_t)n_red;
    for (size_t i = 0; i < (size_t)n_states * p->n_nts; i++)
        if (p->go[i] >= n_states) {
            PyErr_Format(PyExc_ValueError, "LR core: a goto leads to state %d", p->go[i]);
            goto fail;
        }
    if (python != Py_None) {
        int deep;
        if (!PyArg_ParseTuple(python, "y*y*y*y*iiii", &pyb[0], &pyb[1], &pyb[2], &pyb[3], &p->t_newline,
                              &p->t_indent, &p->t_dedent, &deep))
            goto fail;
        p->python = 1;
        p->deep = deep;
        if (!(p->column = copy_buf(&pyb[0], p->n_lt, 4, "column")) ||
            !(p->ws = copy_buf(&pyb[1], p->n_lt, 1, "ws")) ||
            !(p->opening = copy_buf(&pyb[2], p->n_lt, 1, "opening")) ||
            !(p->closing = copy_buf(&pyb[3], p->n_lt, 1, "closing")))
            goto fail;
        int terms[3] = {p->t_newline, p->t_indent, p->t_dedent};
        for (int i = 0; i < 3; i++)
            if (terms[i] < 0 || terms[i] >= n_terms) {
                PyErr_SetString(PyExc_ValueError, "LR core: newline, indent or dedent terminal out of range");
                goto fail;
            }
        if (indents_push(p, -1, 0) != 0) goto fail; /* the file's indentation: (0,) is id 0 */
    } else {
        p->column = PyMem_Malloc(p->n_lt * sizeof(int32_t) + 1);
        p->ws = PyMem_Calloc(p->n_lt + 1, 1);
        p->opening = PyMem_Calloc(p->n_lt + 1, 1);
        p->closing = PyMem_Calloc(p->n_lt + 1, 1);
        if (!p->column || !p->ws || !p->opening || !p->closing) {
            PyErr_NoMemory();
            goto fail;
        }
        for (int lt = 0; lt < p->n_lt; lt++) p->column[lt] = -1;
    }
    if (build_masks(p) < 0) goto fail;
    result = (PyObject *)p;
    p = NULL;
fail: /* and success: the buffers are released either way */
    for (int i = 0; i < 4; i++)
        if (pyb[i].obj) PyBuffer_Release(&pyb[i]);
    PyBuffer_Release(&kind);
    PyBuffer_Release(&arg);
    PyBuffer_Release(&nt);
    PyBuffer_Release(&go);
    PyBuffer_Release(&pt);
    Py_XDECREF(p);
    return result;
}

static PyMethodDef parser_methods[] = {
    {"initial", (PyCFunction)m_initial, METH_NOARGS, "The start state: the empty stack (and the file's start)."},
    {"feed", (PyCFunction)m_feed, METH_VARARGS,
     "feed(syn, lexer_term, last=False) -> the state after that complete lexeme, or -1."},
    {"finish", (PyCFunction)m_finish, METH_O, "Whether the input may end in this state."},
    {"ok_key", (PyCFunction)m_ok_key, METH_O, "The number of this state's accept row (equal rows, equal number)."},
    {"key_row", (PyCFunction)m_key_row, METH_O, "The accept row an ok key names: one byte (0/1) per lexer terminal."},
    {"accept_row", (PyCFunction)m_accept_row, METH_O, "The lexer terminals this state takes: a byte each."},
    {"signature", (PyCFunction)m_signature, METH_VARARGS,
     "signature(syn, cstart, cterm, cseq, gstart, groups) -> sorted int32 (group, ok key) pairs."},
    {"key_count", (PyCFunction)m_key_count, METH_NOARGS, "How many ok keys there are so far."},
    {"sizes", (PyCFunction)m_sizes, METH_NOARGS, "How many stacks, states, ok keys and feeds are kept."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ParserType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "grammars._lr_core.Parser",
    .tp_basicsize = sizeof(Parser),
    .tp_dealloc = (destructor)parser_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "LR tables run over hash-consed stacks, with the optional Python indentation layer.",
    .tp_methods = parser_methods,
    .tp_new = parser_new,
};

/* split_trie(group_seq, seq_parent, seq_term) -> (cstart, cterm, cseq, gstart, groups):
 * the split sequences some group extends, as CSR arrays of int32: the children of
 * sequence i are edges cstart[i]..cstart[i+1] (terminal cterm, sequence cseq), the
 * groups ending at i are groups[gstart[i]..gstart[i+1]], in increasing order. */
static PyObject *split_trie(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer gs = {0}, par = {0}, term = {0};
    if (!PyArg_ParseTuple(args, "y*y*y*", &gs, &par, &term)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t G = gs.len / 4, S = par.len / 4;
    const int32_t *group_seq = gs.buf, *parent = par.buf, *tm = term.buf;
    uint8_t *needed = NULL;
    int32_t *cstart = NULL, *cterm = NULL, *cseq = NULL, *gstart = NULL, *groups = NULL, *fill = NULL;
    if (term.len != par.len || S < 1) {
        PyErr_SetString(PyExc_ValueError, "split_trie: seq_parent and seq_term differ or are empty");
        goto done;
    }
    needed = PyMem_Calloc(S + 1, 1);
    cstart = PyMem_Calloc(S + 1, sizeof(int32_t));
    gstart = PyMem_Calloc(S + 1, sizeof(int32_t));
    fill = PyMem_Calloc(S + 1, sizeof(int32_t));
    cterm = PyMem_Malloc((S + 1) * sizeof(int32_t));
    cseq = PyMem_Malloc((S + 1) * sizeof(int32_t));
    groups = PyMem_Malloc((G + 1) * sizeof(int32_t));
    if (!needed || !cstart || !gstart || !fill || !cterm || !cseq || !groups) {
        PyErr_NoMemory();
        goto done;
    }
    needed[0] = 1;
    for (Py_ssize_t g = 0; g < G; g++) {
        int32_t seq = group_seq[g];
        if (seq < 0 || seq >= S) {
            PyErr_Format(PyExc_ValueError, "split_trie: group %zd names sequence %d", g, seq);
            goto done;
        }
        gstart[seq + 1]++;
        for (int guard = 0; !needed[seq] && guard <= S; guard++) {
            needed[seq] = 1;
            seq = parent[seq];
            if (seq < 0 || seq >= S) {
                PyErr_SetString(PyExc_ValueError, "split_trie: a sequence's parent is out of range");
                goto done;
            }
        }
    }
    for (Py_ssize_t s = 1; s < S; s++)
        if (needed[s]) cstart[parent[s] + 1]++;
    for (Py_ssize_t s = 0; s < S; s++) {
        cstart[s + 1] += cstart[s];
        gstart[s + 1] += gstart[s];
    }
    for (Py_ssize_t s = 1; s < S; s++)
        if (needed[s]) {
            int32_t at = cstart[parent[s]] + fill[parent[s]]++;
            cterm[at] = tm[s];
            cseq[at] = (int32_t)s;
        }
    memset(fill, 0, (S + 1) * sizeof(int32_t));
    for (Py_ssize_t g = 0; g < G; g++) {
        int32_t seq = group_seq[g];
        groups[gstart[seq] + fill[seq]++] = (int32_t)g;
    }
    result = Py_BuildValue("(y#y#y#y#y#)", (char *)cstart, (Py_ssize_t)(S + 1) * 4, (char *)cterm,
                           (Py_ssize_t)cstart[S] * 4, (char *)cseq, (Py_ssize_t)cstart[S] * 4, (char *)gstart,
                           (Py_ssize_t)(S + 1) * 4, (char *)groups, (Py_ssize_t)G * 4);
done:
    PyMem_Free(needed);
    PyMem_Free(cstart);
    PyMem_Free(gstart);
    PyMem_Free(fill);
    PyMem_Free(cterm);
    PyMem_Free(cseq);
    PyMem_Free(groups);
    PyBuffer_Release(&gs);
    PyBuffer_Release(&par);
    PyBuffer_Release(&term);
    return result;
}

/* group_mask(signature, ids, ends, offsets, ok, out): set out[ids[i]] for every token i
 * of every (group, ok key) pair of `signature` whose open lexer state ends[i] is ok under
 * the key (ok: uint8 [keys, lexer states], C order; out: uint8 [vocabulary]). The mask
 * of a signature in one pass over its groups' tokens. */
static PyObject *group_mask(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer b[6] = {{0}};
    Py_ssize_t n_states;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*nw*", &b[0], &b[1], &b[2], &b[3], &b[4], &n_states, &b[5])) return NULL;
    PyObject *result = NULL;
    const int32_t *sig = b[0].buf, *ends = b[2].buf;
    const int64_t *ids = b[1].buf, *offsets = b[3].buf;
    const uint8_t *ok = b[4].buf;
    uint8_t *out = b[5].buf;
    Py_ssize_t n_pairs = b[0].len / 8, n_tok = b[1].len / 8, n_groups = b[3].len / 8 - 1;
    Py_ssize_t n_keys = n_states > 0 ? b[4].len / n_states : 0;
    if (b[2].len != n_tok * 4 || n_groups < 0 || n_states <= 0 || b[4].len != n_keys * n_states) {
        PyErr_SetString(PyExc_ValueError, "group_mask: inconsistent table buffers");
        goto done;
    }
    for (Py_ssize_t i = 0; i < n_pairs; i++) {
        int32_t g = sig[2 * i], key = sig[2 * i + 1];
        if (g < 0 || g >= n_groups || key < 0 || key >= n_keys || offsets[g] < 0 || offsets[g + 1] > n_tok) {
            PyErr_Format(PyExc_ValueError, "group_mask: pair (%d, %d) is outside the table", g, key);
            goto done;
        }
        const uint8_t *row = ok + (size_t)key * n_states;
        for (int64_t t = offsets[g]; t < offsets[g + 1]; t++) {
            int32_t e = ends[t];
            int64_t id = ids[t];
            if (e < 0 || e >= n_states || id < 0 || id >= b[5].len) {
                PyErr_SetString(PyExc_ValueError, "group_mask: a token's state or id is out of range");
                goto done;
            }
            out[id] |= row[e];
        }
    }
    result = Py_NewRef(Py_None);
done:
    for (int i = 0; i < 6; i++)
        if (b[i].obj) PyBuffer_Release(&b[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"split_trie", split_trie, METH_VARARGS, "A token table's split sequences as CSR arrays (see source)."},
    {"group_mask", group_mask, METH_VARARGS, "Set the mask of a signature's token groups (see source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_lr_core", "Stencil's compiled LR core (see grammars/_lr_core.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__lr_core(void) {
    if (PyType_Ready(&ParserType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&ParserType);
    if (PyModule_AddObject(m, "Parser", (PyObject *)&ParserType) < 0) {
        Py_DECREF(&ParserType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
