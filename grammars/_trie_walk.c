/* Stencil's compiled core: walks of a vocabulary's token trie over a byte automaton.
 *
 * Why: a constraint's first visit of an automaton state needs the tokens whose bytes
 * the automaton accepts from that state. Walking every token column by column (numpy)
 * costs milliseconds per state on a 128k vocabulary; walking the token trie instead
 * visits each shared prefix once (llguidance's approach), and in C it costs a few ns
 * per trie node, with whole subtrees skipped when their first byte dies.
 *
 * The trie is laid out in preorder (see grammars/native.py, which owns the Python
 * side): node k has a byte, a depth (1 = a child of the root), the index one past its
 * subtree, the index of its first token in the token list (tokens are listed in
 * preorder of the node their bytes end at), and the set of bytes below it (4 x 64 bits)
 * so a subtree whose every byte loops on the current state is settled at once.
 *
 * Two walks, both releasing the GIL:
 *   walk_dfa:   a lazily built DFA (rows built on demand in Python). A node whose
 *               parent state has no row yet is handed back as pending work.
 *   walk_lexer: a grammar's lexer DFA with longest-match splits (a token may end
 *               lexemes and start new ones); live tokens grouped by the lexemes
 *               they end, with the state each leaves open.
 * and set_row, the bool row of the tokens a walk found.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 4096
#define LOOP_CACHE 256 /* a power of two */
#define SHORTCUT_MIN 4 /* subtrees of fewer nodes are walked: the check would cost more */

typedef struct {
    Py_buffer byte, depth, end, tok_start, tok_rows, sub;
} Trie;

static void release(Py_buffer *views, int n) {
    for (int i = 0; i < n; i++)
        if (views[i].obj) PyBuffer_Release(&views[i]);
}

static int check_len(Py_buffer *view, Py_ssize_t itemsize, Py_ssize_t want, const char *name) {
    if (view->len != want * itemsize) {
        PyErr_Format(PyExc_ValueError, "trie walk: buffer %s has %zd bytes, expected %zd", name,
                     view->len, want * itemsize);
        return -1;
    }
    return 0;
}

/* build(sorted_bytes, offsets) -> (byte, depth, end, tok_start, sub) as bytes objects.
 * sorted_bytes: the token byte strings concatenated in sorted order; offsets: int64
 * [n + 1]. Equal strings (two ids, one spelling) share a node. */
static PyObject *build(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer data = {0}, offs = {0};
    if (!PyArg_ParseTuple(args, "y*y*", &data, &offs)) return NULL;
    const uint8_t *s = data.buf;
    const int64_t *off = offs.buf;
    Py_ssize_t n = offs.len / 8 - 1;
    Py_ssize_t cap = data.len;  /* nodes <= total bytes */
    uint8_t *byte = PyMem_Malloc(cap + 1);
    int16_t *depth = PyMem_Malloc(sizeof(int16_t) * (cap + 1));
    int32_t *end = PyMem_Malloc(sizeof(int32_t) * (cap + 1));
    int32_t *tok_start = PyMem_Malloc(sizeof(int32_t) * (cap + 1));
    int32_t *parent = PyMem_Malloc(sizeof(int32_t) * (cap + 1));
    int32_t open[MAX_DEPTH + 1];
    PyObject *result = NULL;
    if (!byte || !depth || !end || !tok_start || !parent) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t nodes = 0, prev_start = 0, prev_len = 0;
    int open_depth = 0; /* open[1..open_depth]: the nodes on the current path */
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t a = off[i], len = off[i + 1] - a;
        if (len > MAX_DEPTH) {
            PyErr_Format(PyExc_ValueError, "token of %zd bytes is longer than %d", len, MAX_DEPTH);
            goto done;
        }
        Py_ssize_t lcp = 0, m = len < prev_len ? len : prev_len;
        while (lcp < m && s[a + lcp] == s[prev_start + lcp]) lcp++;
        for (int d = open_depth; d > lcp; d--) end[open[d]] = (int32_t)nodes;
        open_depth = (int)lcp;
        for (Py_ssize_t d = lcp; d < len; d++) {
            byte[nodes] = s[a + d];
            depth[nodes] = (int16_t)(d + 1);
            tok_start[nodes] = (int32_t)i;
            parent[nodes] = d ? open[d] : -1;
            open[d + 1] = (int32_t)nodes;
            nodes++;
        }
        open_depth = (int)len;
        prev_start = a;
        prev_len = len;
    }
    for (int d = open_depth; d >= 1; d--) end[open[d]] = (int32_t)nodes;
    tok_start[nodes] = (int32_t)n;
    /* a node's tokens start where it was created; a later equal string joins it, and
     * tok_start of the next node already counts it (it is created after) */
    uint64_t *sub = PyMem_Calloc(nodes ? nodes * 4 : 1, sizeof(uint64_t));
    if (!sub) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = nodes - 1; k >= 0; k--) {
        int32_t p = parent[k];
        if (p < 0) continue;
        uint8_t b = byte[k];
        sub[p * 4 + (b >> 6)] |= (uint64_t)1 << (b & 63);
        for (int w = 0; w < 4; w++) sub[p * 4 + w] |= sub[k * 4 + w];
    }
    result = Py_BuildValue("(y#y#y#y#y#)", (char *)byte, nodes, (char *)depth, nodes * 2, (char *)end,
                           nodes * 4, (char *)tok_start, (nodes + 1) * 4, (char *)sub, nodes * 32);
    PyMem_Free(sub);
done:
    PyMem_Free(byte);
    PyMem_Free(depth);
    PyMem_Free(end);
    PyMem_Free(tok_start);
    PyMem_Free(parent);
    PyBuffer_Release(&data);
    PyBuffer_Release(&offs);
    return result;
}

static int parse_trie(PyObject *trie, Trie *t) {
    memset(t, 0, sizeof(*t));
    if (!PyArg_ParseTuple(trie, "y*y*y*y*y*y*", &t->byte, &t->depth, &t->end, &t->tok_start,
                          &t->tok_rows, &t->sub))
        return -1;
    Py_ssize_t nodes = t->byte.len;
    if (check_len(&t->depth, 2, nodes, "depth") || check_len(&t->end, 4, nodes, "end") ||
        check_len(&t->tok_start, 4, nodes + 1, "tok_start") || check_len(&t->sub, 32, nodes, "sub")) {
        release((Py_buffer *)t, 6);
        return -1;
    }
    return 0;
}

/* The bytes that lead state q back to itself, as 4 x 64 bits. */
static void loop_set(const int32_t *row, int32_t q, uint64_t out[4]) {
    out[0] = out[1] = out[2] = out[3] = 0;
    for (int b = 0; b < 256; b++)
        if (row[b] == q) out[b >> 6] |= (uint64_t)1 << (b & 63);
}

/* walk_dfa(trie, trans, built, work, out_rows, out_states, n_out) -> (n_out, pending)
 * ``work``: int32 triples (start, stop, base): walk trie nodes [start, stop) (one run of
 * siblings and their subtrees, or the whole trie), the parent of ``start`` being in DFA
 * state ``base`` (state 0 is dead). Each token whose bytes the DFA reads to a live state
 * is written to out_rows/out_states from n_out on. A node whose parent state has no row
 * yet (built[p] == 0) is not walked: its run of siblings is returned in ``pending`` (bytes
 * of int32 triples, the same form as ``work``) for the caller to build those rows and
 * walk again; one call per round, however many runs a round holds. */
static PyObject *walk_dfa(PyObject *self, PyObject *args) {
    PyObject *trie_obj;
    Py_buffer trans = {0}, built = {0}, work = {0}, out_rows = {0}, out_states = {0};
    Py_ssize_t n_out;
    Trie t;
    (void)self;
    if (!PyArg_ParseTuple(args, "Oy*y*y*w*w*n", &trie_obj, &trans, &built, &work, &out_rows, &out_states,
                          &n_out))
        return NULL;
    Py_buffer views[5] = {trans, built, work, out_rows, out_states};
    if (parse_trie(trie_obj, &t) < 0) {
        release(views, 5);
        return NULL;
    }
    const uint8_t *byte = t.byte.buf;
    const int16_t *depth = t.depth.buf;
    const int32_t *end = t.end.buf, *tok_start = t.tok_start.buf, *tok_rows = t.tok_rows.buf;
    const uint64_t *sub = t.sub.buf;
    const int32_t *tr = trans.buf, *jobs = work.buf;
    const uint8_t *bt = built.buf;
    Py_ssize_t n_states = built.len, nodes = t.byte.len, n_jobs = work.len / 12;
    Py_ssize_t cap = out_rows.len / 4;
    int32_t *orow = out_rows.buf, *ostate = out_states.buf;
    PyObject *result = NULL;
    int32_t *pend = NULL; /* triples */
    Py_ssize_t n_pend = 0, pend_cap = 0;
    int bad = 0;
    if (trans.len != n_states * 256 * 4 || out_states.len < out_rows.len || work.len % 12 || n_out < 0 ||
        n_out > cap) {
        PyErr_SetString(PyExc_ValueError, "walk_dfa: inconsistent buffers");
        goto done;
    }
    for (Py_ssize_t j = 0; j < n_jobs; j++) {
        int32_t start = jobs[3 * j], stop = jobs[3 * j + 1], base = jobs[3 * j + 2];
        if (start < 0 || stop > nodes || start > stop || base < 0 || base >= n_states) {
            PyErr_Format(PyExc_ValueError, "walk_dfa: work item %zd out of range", j);
            goto done;
        }
    }
    Py_BEGIN_ALLOW_THREADS;
    int32_t stack[MAX_DEPTH + 1];
    /* loop sets of recently met states, direct-mapped (a free-text walk alternates
     * between the string state and the states inside multi-byte characters) */
    int32_t loop_tag[LOOP_CACHE];
    uint64_t loop_bits[LOOP_CACHE][4];
    for (int i = 0; i < LOOP_CACHE; i++) loop_tag[i] = -1;
    for (Py_ssize_t j = 0; j < n_jobs && !bad; j++) {
        Py_ssize_t k = jobs[3 * j], stop = jobs[3 * j + 1];
        if (k < stop) stack[depth[k] - 1] = jobs[3 * j + 2];
        while (k < stop) {
            int d = depth[k];
            int32_t p = stack[d - 1];
            if (!bt[p]) {
                Py_ssize_t next = end[k];
                if (n_pend && pend[3 * (n_pend - 1) + 1] == k && pend[3 * (n_pend - 1) + 2] == p) {
                    pend[3 * (n_pend - 1) + 1] = (int32_t)next; /* a sibling: extend the run */
                } else {
                    if (n_pend == pend_cap) {
                        pend_cap = pend_cap ? pend_cap * 2 : 64;
                        int32_t *grown = PyMem_RawRealloc(pend, sizeof(int32_t) * 3 * pend_cap);
                        if (!grown) {
                            bad = 1;
                            break;
                        }
                        pend = grown;
                    }
                    pend[3 * n_pend] = (int32_t)k;
                    pend[3 * n_pend + 1] = (int32_t)next;
                    pend[3 * n_pend + 2] = p;
                    n_pend++;
                }
                k = next;
                continue;
            }
            int32_t q = tr[(Py_ssize_t)p * 256 + byte[k]];
            if (q == 0) {
                k = end[k];
                continue;
            }
            Py_ssize_t t0 = tok_start[k], t1 = tok_start[k + 1];
            Py_ssize_t next = end[k];
            int settle = 0;
            if (next > k + SHORTCUT_MIN && bt[q]) {
                /* settle the subtree at once when every byte below loops on q */
                int slot = q & (LOOP_CACHE - 1);
                if (loop_tag[slot] != q) {
                    loop_set(tr + (Py_ssize_t)q * 256, q, loop_bits[slot]);
                    loop_tag[slot] = q;
                }
                const uint64_t *loops = loop_bits[slot], *below = sub + 4 * k;
                settle = !(below[0] & ~loops[0]) && !(below[1] & ~loops[1]) && !(below[2] & ~loops[2]) &&
                         !(below[3] & ~loops[3]);
                if (settle) t1 = tok_start[next];
            }
            if (n_out + (t1 - t0) > cap) {
                bad = 2;
                break;
            }
            for (Py_ssize_t i = t0; i < t1; i++) {
                orow[n_out] = tok_rows[i];
                ostate[n_out++] = q;
            }
            if (settle) {
                k = next;
            } else {
                stack[d] = q;
                k++;
            }
        }
    }
    Py_END_ALLOW_THREADS;
    if (bad == 1) {
        PyErr_NoMemory();
        goto done;
    }
    if (bad == 2) {
        PyErr_SetString(PyExc_ValueError, "walk_dfa: output buffers too small");
        goto done;
    }
    result = Py_BuildValue("(ny#)", n_out, pend ? (char *)pend : "", n_pend * 12);
done:
    PyMem_RawFree(pend);
    release(views, 5);
    release((Py_buffer *)&t, 6);
    return result;
}

/* Split sequences interned as a trie of their own: id 0 is the empty sequence, and
 * (parent id, terminal) -> child id through an open-addressing table that grows. */
typedef struct {
    int64_t *slot_key; /* parent * 65536 + terminal, or -1 */
    int32_t *slot_id;
    Py_ssize_t slots, used;
    int32_t *parent, *term;
    Py_ssize_t n, cap;
} SeqTable;

static int seq_grow_slots(SeqTable *st) {
    Py_ssize_t slots = st->slots ? st->slots * 2 : 1024;
    int64_t *keys = PyMem_RawMalloc(sizeof(int64_t) * slots);
    int32_t *ids = PyMem_RawMalloc(sizeof(int32_t) * slots);
    if (!keys || !ids) {
        PyMem_RawFree(keys);
        PyMem_RawFree(ids);
        return -1;
    }
    for (Py_ssize_t i = 0; i < slots; i++) keys[i] = -1;
    for (Py_ssize_t i = 0; i < st->slots; i++) {
        if (st->slot_key[i] < 0) continue;
        uint64_t h = ((uint64_t)st->slot_key[i] * 0x9E3779B97F4A7C15ull) >> 17;
        Py_ssize_t s = (Py_ssize_t)(h & (uint64_t)(slots - 1));
        while (keys[s] >= 0) s = (s + 1) & (slots - 1);
        keys[s] = st->slot_key[i];
        ids[s] = st->slot_id[i];
    }
    PyMem_RawFree(st->slot_key);
    PyMem_RawFree(st->slot_id);
    st->slot_key = keys;
    st->slot_id = ids;
    st->slots = slots;
    return 0;
}

/* The id of sequence ``parent`` + ``term``; -1 when out of memory. */
static int32_t seq_child(SeqTable *st, int32_t parent, int32_t term) {
    if (2 * (st->used + 1) > st->slots && seq_grow_slots(st) < 0) return -1;
    int64_t key = (int64_t)parent * 65536 + term;
    uint64_t h = ((uint64_t)key * 0x9E3779B97F4A7C15ull) >> 17;
    Py_ssize_t s = (Py_ssize_t)(h & (uint64_t)(st->slots - 1));
    while (st->slot_key[s] >= 0) {
        if (st->slot_key[s] == key) return st->slot_id[s];
        s = (s + 1) & (st->slots - 1);
    }
    if (st->n == st->cap) {
        Py_ssize_t cap = st->cap * 2;
        int32_t *p = PyMem_RawRealloc(st->parent, sizeof(int32_t) * cap);
        if (!p) return -1;
        st->parent = p;
        int32_t *t = PyMem_RawRealloc(st->term, sizeof(int32_t) * cap);
        if (!t) return -1;
        st->term = t;
        st->cap = cap;
    }
    int32_t id = (int32_t)st->n++;
    st->parent[id] = parent;
    st->term[id] = term;
    st->slot_key[s] = key;
    st->slot_id[s] = id;
    st->used++;
    return id;
}

/* walk_lexer(trie, trans, best, start_state, restart_state)
 *   -> (rows, ends, offsets, group_seq, seq_parent, seq_term), all bytes
 * From lexer state ``start_state``, every token's walk under longest match: when a byte
 * cannot extend the open lexeme, the lexeme ends (its terminal ``best[p]`` must be >= 0)
 * and the byte starts a new one from ``restart_state``. The terminals a token ends form
 * its split sequence; live tokens are grouped by it. rows (int32, TokenBytes rows) and
 * ends (int32, the lexer state each leaves open) list them group after group, group g
 * being [offsets[g], offsets[g + 1]) (int64) with sequence id group_seq[g] (int32).
 * Sequence i (i > 0) is sequence seq_parent[i] followed by terminal seq_term[i]; 0 is
 * empty. Groups come in order of first appearance. */
static PyObject *walk_lexer(PyObject *self, PyObject *args) {
    PyObject *trie_obj;
    Py_buffer trans = {0}, best = {0};
    int q0, restart;
    Trie t;
    (void)self;
    if (!PyArg_ParseTuple(args, "Oy*y*ii", &trie_obj, &trans, &best, &q0, &restart)) return NULL;
    Py_buffer views[2] = {trans, best};
    if (parse_trie(trie_obj, &t) < 0) {
        release(views, 2);
        return NULL;
    }
    const uint8_t *byte = t.byte.buf;
    const int16_t *depth = t.depth.buf;
    const int32_t *end = t.end.buf, *tok_start = t.tok_start.buf, *tok_rows = t.tok_rows.buf;
    const int32_t *tr = trans.buf, *bs = best.buf;
    Py_ssize_t n_states = best.len / 4, nodes = t.byte.len, n_rows = t.tok_rows.len / 4;
    PyObject *res = NULL;
    int32_t *tmp_row = NULL, *tmp_state = NULL, *tmp_group = NULL, *group_of = NULL, *group_seq = NULL;
    int32_t *orow = NULL, *ostate = NULL;
    int64_t *ooff = NULL;
    SeqTable st = {0};
    Py_ssize_t n_alive = 0, n_groups = 0, group_cap = 0;
    int bad = 0;
    if (trans.len != n_states * 256 * 4 || q0 <= 0 || q0 >= n_states || restart <= 0 || restart >= n_states) {
        PyErr_SetString(PyExc_ValueError, "walk_lexer: inconsistent buffers or states");
        goto done;
    }
    for (Py_ssize_t i = 0; i < n_states; i++) {
        if (bs[i] >= 65536) {
            PyErr_SetString(PyExc_ValueError, "walk_lexer: more than 65536 terminals");
            goto done;
        }
    }
    tmp_row = PyMem_RawMalloc(sizeof(int32_t) * (n_rows + 1));
    tmp_state = PyMem_RawMalloc(sizeof(int32_t) * (n_rows + 1));
    tmp_group = PyMem_RawMalloc(sizeof(int32_t) * (n_rows + 1));
    orow = PyMem_RawMalloc(sizeof(int32_t) * (n_rows + 1));
    ostate = PyMem_RawMalloc(sizeof(int32_t) * (n_rows + 1));
    st.cap = 1024;
    st.parent = PyMem_RawMalloc(sizeof(int32_t) * st.cap);
    st.term = PyMem_RawMalloc(sizeof(int32_t) * st.cap);
    if (!tmp_row || !tmp_state || !tmp_group || !orow || !ostate || !st.parent || !st.term ||
        seq_grow_slots(&st) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    st.parent[0] = -1;
    st.term[0] = -1;
    st.n = 1;
    Py_BEGIN_ALLOW_THREADS;
    int32_t stack[MAX_DEPTH + 1], seqs[MAX_DEPTH + 1];
    stack[0] = q0;
    seqs[0] = 0;
    Py_ssize_t k = 0;
    while (k < nodes && !bad) {
        int d = depth[k];
        int32_t p = stack[d - 1], sq = seqs[d - 1];
        uint8_t b = byte[k];
        int32_t q = tr[(Py_ssize_t)p * 256 + b];
        if (q == 0) {
            int32_t term = bs[p];
            int32_t again = tr[(Py_ssize_t)restart * 256 + b];
            if (term < 0 || again == 0) {
                k = end[k];
                continue;
            }
            sq = seq_child(&st, sq, term);
            if (sq < 0) {
                bad = 1;
                break;
            }
            q = again;
        }
        Py_ssize_t t0 = tok_start[k], t1 = tok_start[k + 1];
        if (t0 < t1) {
            if (sq >= group_cap) { /* group_of is indexed by sequence id */
                Py_ssize_t cap = group_cap ? group_cap : 256;
                while (cap <= sq) cap *= 2;
                int32_t *g2 = PyMem_RawRealloc(group_of, sizeof(int32_t) * cap);
                if (!g2) {
                    bad = 1;
                    break;
                }
                for (Py_ssize_t i = group_cap; i < cap; i++) g2[i] = -1;
                group_of = g2;
                group_cap = cap;
            }
            if (group_of[sq] < 0) group_of[sq] = (int32_t)n_groups++;
            int32_t g = group_of[sq];
            for (Py_ssize_t i = t0; i < t1 && n_alive < n_rows; i++) {
                tmp_row[n_alive] = tok_rows[i];
                tmp_state[n_alive] = q;
                tmp_group[n_alive++] = g;
            }
        }
        stack[d] = q;
        seqs[d] = sq;
        k++;
    }
    if (!bad) {
        ooff = PyMem_RawCalloc(n_groups + 1, sizeof(int64_t));
        group_seq = PyMem_RawMalloc(sizeof(int32_t) * (n_groups + 1));
        if (!ooff || !group_seq) bad = 1;
    }
    if (!bad) { /* counting sort by group, stable */
        for (Py_ssize_t i = 0; i < group_cap; i++)
            if (group_of[i] >= 0) group_seq[group_of[i]] = (int32_t)i;
        for (Py_ssize_t i = 0; i < n_alive; i++) ooff[tmp_group[i] + 1]++;
        for (Py_ssize_t g = 0; g < n_groups; g++) ooff[g + 1] += ooff[g];
        for (Py_ssize_t i = 0; i < n_alive; i++) {
            int64_t at = ooff[tmp_group[i]]++;
            orow[at] = tmp_row[i];
            ostate[at] = tmp_state[i];
        }
        for (Py_ssize_t g = n_groups; g > 0; g--) ooff[g] = ooff[g - 1]; /* back to starts */
        ooff[0] = 0;
    }
    Py_END_ALLOW_THREADS;
    if (bad) {
        PyErr_NoMemory();
        goto done;
    }
    res = Py_BuildValue("(y#y#y#y#y#y#)", (char *)orow, n_alive * 4, (char *)ostate, n_alive * 4, (char *)ooff,
                        (n_groups + 1) * 8, (char *)group_seq, n_groups * 4, (char *)st.parent, st.n * 4,
                        (char *)st.term, st.n * 4);
done:
    PyMem_RawFree(tmp_row);
    PyMem_RawFree(tmp_state);
    PyMem_RawFree(tmp_group);
    PyMem_RawFree(orow);
    PyMem_RawFree(ostate);
    PyMem_RawFree(ooff);
    PyMem_RawFree(group_of);
    PyMem_RawFree(group_seq);
    PyMem_RawFree(st.parent);
    PyMem_RawFree(st.term);
    PyMem_RawFree(st.slot_key);
    PyMem_RawFree(st.slot_id);
    release(views, 2);
    release((Py_buffer *)&t, 6);
    return res;
}

/* set_row(ids, row) -> None: row[id] = 1 for each id in ``ids`` (int64), ``row`` being
 * a uint8 buffer over the vocabulary. The bool row of a state allowing many tokens. */
static PyObject *set_row(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer ids = {0}, row = {0};
    if (!PyArg_ParseTuple(args, "y*w*", &ids, &row)) return NULL;
    PyObject *result = NULL;
    const int64_t *id = ids.buf;
    uint8_t *out = row.buf;
    Py_ssize_t n = ids.len / 8, size = row.len;
    if (ids.len % 8) {
        PyErr_SetString(PyExc_ValueError, "set_row: ids must be int64");
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (id[i] < 0 || id[i] >= size) {
            PyErr_Format(PyExc_ValueError, "set_row: id %lld out of range", (long long)id[i]);
            goto done;
        }
    for (Py_ssize_t i = 0; i < n; i++) out[id[i]] = 1;
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&ids);
    PyBuffer_Release(&row);
    return result;
}

static PyMethodDef methods[] = {
    {"build", build, METH_VARARGS, "Lay out a token trie in preorder (see module doc)."},
    {"walk_dfa", walk_dfa, METH_VARARGS, "Tokens a lazily built DFA accepts from a state."},
    {"walk_lexer", walk_lexer, METH_VARARGS, "Every token's longest-match walk from a lexer state."},
    {"set_row", set_row, METH_VARARGS, "Set the bool row of a list of token ids."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_trie_walk", "Stencil's compiled core: token-trie walks over byte automata.",
    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__trie_walk(void) { return PyModule_Create(&module); }
