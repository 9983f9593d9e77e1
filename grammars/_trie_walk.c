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
 *               lexemes and start new ones); every token's end state and splits.
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

/* walk_lexer(trie, trans, best, start_state, restart_state, out_state, out_splits,
 *            out_n_splits, out_alive, out_slow, max_splits)
 * From lexer state ``start_state``, every token's walk under longest match: when a byte
 * cannot extend the open lexeme, the lexeme ends (its terminal ``best[p]`` must be >= 0)
 * and the byte starts a new one from ``restart_state``. Per token row (the trie's
 * tok_rows values index these arrays, which the caller zeroes / fills with -1):
 * the state left open, the terminals ended (int16, up to max_splits), their count,
 * whether it lives, and whether it ends more than max_splits lexemes (then not alive:
 * the caller walks those few in Python). */
static PyObject *walk_lexer(PyObject *self, PyObject *args) {
    PyObject *trie_obj;
    Py_buffer trans = {0}, best = {0}, o_state = {0}, o_splits = {0}, o_n = {0}, o_alive = {0},
              o_slow = {0};
    int q0, restart, max_splits;
    Trie t;
    (void)self;
    if (!PyArg_ParseTuple(args, "Oy*y*iiw*w*w*w*w*i", &trie_obj, &trans, &best, &q0, &restart, &o_state,
                          &o_splits, &o_n, &o_alive, &o_slow, &max_splits))
        return NULL;
    Py_buffer views[7] = {trans, best, o_state, o_splits, o_n, o_alive, o_slow};
    if (parse_trie(trie_obj, &t) < 0) {
        release(views, 7);
        return NULL;
    }
    const uint8_t *byte = t.byte.buf;
    const int16_t *depth = t.depth.buf;
    const int32_t *end = t.end.buf, *tok_start = t.tok_start.buf, *tok_rows = t.tok_rows.buf;
    const int32_t *tr = trans.buf, *bs = best.buf;
    Py_ssize_t n_states = best.len / 4, nodes = t.byte.len, n_rows = o_state.len / 4;
    int32_t *st = o_state.buf, *ns = o_n.buf;
    int16_t *sp = o_splits.buf;
    uint8_t *alive = o_alive.buf, *slow = o_slow.buf;
    PyObject *res = NULL;
    int bad = 0;
    if (trans.len != n_states * 256 * 4 || q0 <= 0 || q0 >= n_states || restart <= 0 ||
        restart >= n_states || max_splits < 1 || max_splits > 64 || o_splits.len != n_rows * max_splits * 2 ||
        o_n.len != n_rows * 4 || o_alive.len != n_rows || o_slow.len != n_rows) {
        PyErr_SetString(PyExc_ValueError, "walk_lexer: inconsistent buffers or states");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS;
    int32_t stack[MAX_DEPTH + 1];
    int32_t n_split[MAX_DEPTH + 1];
    int16_t seq[MAX_DEPTH + 1];
    stack[0] = q0;
    n_split[0] = 0;
    Py_ssize_t k = 0;
    while (k < nodes) {
        int d = depth[k];
        int32_t p = stack[d - 1];
        int32_t m = n_split[d - 1];
        uint8_t b = byte[k];
        int32_t q = tr[(Py_ssize_t)p * 256 + b];
        int full = 0;
        if (q == 0) {
            int32_t term = bs[p];
            int32_t again = tr[(Py_ssize_t)restart * 256 + b];
            if (term < 0 || again == 0) {
                k = end[k];
                continue;
            }
            if (m >= max_splits) {
                full = 1;
            } else {
                seq[m++] = (int16_t)term;
                q = again;
            }
        }
        if (full) { /* ends too many lexemes: the caller walks this subtree's tokens */
            for (Py_ssize_t i = tok_start[k]; i < tok_start[end[k]]; i++) {
                int32_t r = tok_rows[i];
                if (r < 0 || r >= n_rows) {
                    bad = 1;
                    break;
                }
                slow[r] = 1;
            }
            k = end[k];
            continue;
        }
        for (Py_ssize_t i = tok_start[k]; i < tok_start[k + 1]; i++) {
            int32_t r = tok_rows[i];
            if (r < 0 || r >= n_rows) {
                bad = 1;
                break;
            }
            st[r] = q;
            ns[r] = m;
            alive[r] = 1;
            memcpy(sp + (Py_ssize_t)r * max_splits, seq, sizeof(int16_t) * m);
        }
        if (bad) break;
        stack[d] = q;
        n_split[d] = m;
        k++;
    }
    Py_END_ALLOW_THREADS;
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "walk_lexer: token row out of range");
        goto done;
    }
    res = Py_None;
    Py_INCREF(res);
done:
    release(views, 7);
    release((Py_buffer *)&t, 6);
    return res;
}

static PyMethodDef methods[] = {
    {"build", build, METH_VARARGS, "Lay out a token trie in preorder (see module doc)."},
    {"walk_dfa", walk_dfa, METH_VARARGS, "Tokens a lazily built DFA accepts from a state."},
    {"walk_lexer", walk_lexer, METH_VARARGS, "Every token's longest-match walk from a lexer state."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_trie_walk", "Stencil's compiled core: token-trie walks over byte automata.",
    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__trie_walk(void) { return PyModule_Create(&module); }
