/* Subset construction on demand for grammars/lazy_dfa.py (the JSON Schema route).
 *
 * Why C: a first-visit mask walks the vocabulary's trie through the DFA, and every DFA
 * state the walk reaches needs its 256-entry row, one epsilon closure per byte class.
 * In Python that was about 330 us a row and most of MaskBench's time between masks.
 *
 * The NFA stays in Python (grammars/byte_nfa.py: ``edges[s]`` lists of (lo, hi, target),
 * ``eps[s]`` lists of targets) because JSON Schema fragments are built there on demand;
 * this core reads those lists in place, so whatever a fragment builder appends is seen
 * at once. A state registered in ``pending`` (a deferred fragment) is expanded by
 * calling ``expand(state)`` the first time a closure reaches it.
 *
 * DFA states are interned NFA sets (sorted, states with edges plus the accept state),
 * id 0 being the empty set (dead). Closures are memoised by their sorted target sets.
 * The transition table, its built flags and the final flags are numpy arrays owned by
 * the Python side and handed to each call (they grow there); a call that could create
 * states needs room for them and says how far it got when the room runs out.
 *
 * Also here: extend_shifted, the copy of a cached NFA fragment (byte_nfa.fragment),
 * and untrack_rows, which keeps the NFA's rows out of the cyclic collector.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- interned int32 sets: sorted arrays in one pool, open addressing on a hash ---- */

typedef struct {
    int32_t *pool;
    Py_ssize_t pool_len, pool_cap;
    int64_t *off;
    int32_t *len, *value;
    uint64_t *hash;
    Py_ssize_t n, cap;
    int32_t *slots; /* entry index or -1; size a power of two */
    Py_ssize_t n_slots;
} SetTable;

static uint64_t hash_set(const int32_t *a, Py_ssize_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
    for (Py_ssize_t i = 0; i < n; i++) {
        h ^= (uint32_t)a[i];
        h *= 0xBF58476D1CE4E5B9ull;
        h ^= h >> 31;
    }
    return h | 1;
}

static void table_free(SetTable *t) {
    PyMem_Free(t->pool);
    PyMem_Free(t->off);
    PyMem_Free(t->len);
    PyMem_Free(t->value);
    PyMem_Free(t->hash);
    PyMem_Free(t->slots);
    memset(t, 0, sizeof(*t));
}

static Py_ssize_t table_find(const SetTable *t, const int32_t *a, Py_ssize_t n, uint64_t h) {
    if (!t->n_slots) return -1;
    Py_ssize_t mask = t->n_slots - 1;
    for (Py_ssize_t i = (Py_ssize_t)(h & (uint64_t)mask);; i = (i + 1) & mask) {
        int32_t e = t->slots[i];
        if (e < 0) return -1;
        if (t->hash[e] == h && t->len[e] == n && !memcmp(t->pool + t->off[e], a, sizeof(int32_t) * n)) return e;
    }
}

static int table_rehash(SetTable *t, Py_ssize_t n_slots) {
    int32_t *slots = PyMem_Malloc(sizeof(int32_t) * n_slots);
    if (!slots) return -1;
    memset(slots, 0xFF, sizeof(int32_t) * n_slots);
    for (Py_ssize_t e = 0; e < t->n; e++) {
        Py_ssize_t i = (Py_ssize_t)(t->hash[e] & (uint64_t)(n_slots - 1));
        while (slots[i] >= 0) i = (i + 1) & (n_slots - 1);
        slots[i] = (int32_t)e;
    }
    PyMem_Free(t->slots);
    t->slots = slots;
    t->n_slots = n_slots;
    return 0;
}

static int grow(void **p, Py_ssize_t item, Py_ssize_t want) {
    void *q = PyMem_Realloc(*p, item * want);
    if (!q) return -1;
    *p = q;
    return 0;
}

/* Adds a set not in the table (the caller looked); returns its entry index or -1. */
static Py_ssize_t table_add(SetTable *t, const int32_t *a, Py_ssize_t n, uint64_t h, int32_t value) {
    if (t->n == t->cap) {
        Py_ssize_t cap = t->cap ? t->cap * 2 : 256;
        if (grow((void **)&t->off, sizeof(int64_t), cap) || grow((void **)&t->len, sizeof(int32_t), cap) ||
            grow((void **)&t->value, sizeof(int32_t), cap) || grow((void **)&t->hash, sizeof(uint64_t), cap))
            return -1;
        t->cap = cap;
    }
    if (t->pool_len + n > t->pool_cap) {
        Py_ssize_t cap = t->pool_cap ? t->pool_cap : 4096;
        while (cap < t->pool_len + n) cap *= 2;
        if (grow((void **)&t->pool, sizeof(int32_t), cap)) return -1;
        t->pool_cap = cap;
    }
    if ((t->n + 1) * 2 > t->n_slots && table_rehash(t, t->n_slots ? t->n_slots * 2 : 512)) return -1;
    Py_ssize_t e = t->n++;
    memcpy(t->pool + t->pool_len, a, sizeof(int32_t) * n);
    t->off[e] = t->pool_len;
    t->len[e] = (int32_t)n;
    t->value[e] = value;
    t->hash[e] = h;
    t->pool_len += n;
    Py_ssize_t i = (Py_ssize_t)(h & (uint64_t)(t->n_slots - 1));
    while (t->slots[i] >= 0) i = (i + 1) & (t->n_slots - 1);
    t->slots[i] = (int32_t)e;
    return e;
}

/* ---- the core object ---- */

typedef struct {
    PyObject_HEAD
    PyObject *edges, *eps, *pending, *expand, *overflow;
    int32_t accept;
    long max_expansions;
    SetTable cores; /* DFA state id == entry index */
    SetTable memo;  /* sorted closure targets -> DFA state id */
    /* per NFA state: generation mark of the current closure, and whether it is known
     * not to be pending (a state is deferred when created, or never) */
    uint32_t *mark;
    uint8_t *settled;
    Py_ssize_t nfa_cap;
    uint32_t gen;
    int32_t *stack, *seen;
    Py_ssize_t scratch_cap;
} Subsets;

static int cmp_int32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static Py_ssize_t sort_unique(int32_t *a, Py_ssize_t n) {
    if (n < 2) return n;
    qsort(a, n, sizeof(int32_t), cmp_int32);
    Py_ssize_t m = 1;
    for (Py_ssize_t i = 1; i < n; i++)
        if (a[i] != a[m - 1]) a[m++] = a[i];
    return m;
}

static int ensure_nfa(Subsets *s, Py_ssize_t n) {
    if (n <= s->nfa_cap) return 0;
    Py_ssize_t cap = s->nfa_cap ? s->nfa_cap : 1024;
    while (cap < n) cap *= 2;
    if (grow((void **)&s->mark, sizeof(uint32_t), cap) || grow((void **)&s->settled, 1, cap) ||
        grow((void **)&s->stack, sizeof(int32_t), cap) || grow((void **)&s->seen, sizeof(int32_t), cap)) {
        PyErr_NoMemory();
        return -1;
    }
    memset(s->mark + s->nfa_cap, 0, sizeof(uint32_t) * (cap - s->nfa_cap));
    memset(s->settled + s->nfa_cap, 0, cap - s->nfa_cap);
    s->nfa_cap = cap;
    return 0;
}

static int read_int(PyObject *o, int32_t *out, Py_ssize_t limit) {
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (v < 0 || v >= limit) {
        PyErr_Format(PyExc_ValueError, "lazy DFA: NFA state %ld out of range", v);
        return -1;
    }
    *out = (int32_t)v;
    return 0;
}

/* Expands ``state`` if it is a deferred fragment. Returns 0, or -1 with an error set. */
static int settle(Subsets *s, int32_t state, long *expansions) {
    if (s->settled[state]) return 0;
    if (PyDict_GET_SIZE(s->pending)) {
        PyObject *key = PyLong_FromLong(state);
        if (!key) return -1;
        int found = PyDict_Contains(s->pending, key);
        if (found > 0) {
            if (++*expansions > s->max_expansions) {
                Py_DECREF(key);
                PyObject *r = PyObject_CallNoArgs(s->overflow); /* raises */
                Py_XDECREF(r);
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "lazy DFA: too many expansions");
                return -1;
            }
            PyObject *r = PyObject_CallOneArg(s->expand, key);
            Py_DECREF(key);
            if (!r) return -1;
            Py_DECREF(r);
            if (ensure_nfa(s, PyList_GET_SIZE(s->eps)) < 0) return -1;
        } else {
            Py_DECREF(key);
            if (found < 0) return -1;
        }
    }
    s->settled[state] = 1;
    return 0;
}

/* The DFA state of the closure of ``targets`` (sorted, unique); -1 on error. Creates at
 * most one state: the caller has room for it in ``final``. */
static int32_t closure(Subsets *s, const int32_t *targets, Py_ssize_t n, uint8_t *final) {
    uint64_t h = hash_set(targets, n);
    Py_ssize_t e = table_find(&s->memo, targets, n, h);
    if (e >= 0) return s->memo.value[e];
    Py_ssize_t n_nfa = PyList_GET_SIZE(s->eps);
    if (ensure_nfa(s, n_nfa) < 0) return -1;
    if (++s->gen == 0) {
        memset(s->mark, 0, sizeof(uint32_t) * s->nfa_cap);
        s->gen = 1;
    }
    uint32_t gen = s->gen;
    Py_ssize_t top = 0, n_seen = 0;
    long expansions = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (targets[i] >= n_nfa) {
            PyErr_Format(PyExc_ValueError, "lazy DFA: NFA state %d out of range", targets[i]);
            return -1;
        }
        s->mark[targets[i]] = gen;
        s->stack[top++] = targets[i];
        s->seen[n_seen++] = targets[i];
    }
    while (top) {
        int32_t q = s->stack[--top];
        if (settle(s, q, &expansions) < 0) return -1;
        n_nfa = PyList_GET_SIZE(s->eps);
        PyObject *row = PyList_GET_ITEM(s->eps, q);
        Py_ssize_t k = PyList_GET_SIZE(row);
        for (Py_ssize_t i = 0; i < k; i++) {
            int32_t t;
            if (read_int(PyList_GET_ITEM(row, i), &t, n_nfa) < 0) return -1;
            if (s->mark[t] != gen) {
                s->mark[t] = gen;
                s->stack[top++] = t;
                s->seen[n_seen++] = t;
            }
        }
    }
    Py_ssize_t m = 0; /* the core: states that read a byte, and acceptance */
    int is_final = 0;
    for (Py_ssize_t i = 0; i < n_seen; i++) {
        int32_t q = s->seen[i];
        if (q == s->accept) is_final = 1;
        if (q == s->accept || PyList_GET_SIZE(PyList_GET_ITEM(s->edges, q))) s->seen[m++] = q;
    }
    qsort(s->seen, m, sizeof(int32_t), cmp_int32);
    uint64_t hc = hash_set(s->seen, m);
    Py_ssize_t id = table_find(&s->cores, s->seen, m, hc);
    if (id < 0) {
        id = table_add(&s->cores, s->seen, m, hc, (int32_t)s->cores.n);
        if (id < 0) {
            PyErr_NoMemory();
            return -1;
        }
        final[id] = (uint8_t)is_final;
    }
    if (table_add(&s->memo, targets, n, h, (int32_t)id) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return (int32_t)id;
}

typedef struct {
    int32_t lo, hi, t;
} Edge;

/* Fills row ``q`` of ``trans``; -1 on error. Creates at most 256 states. */
static int build_row(Subsets *s, int32_t q, int32_t *trans, uint8_t *final) {
    /* the set's edges, read first: closures below may append to the NFA's lists */
    Py_ssize_t off = s->cores.off[q], n = s->cores.len[q], n_edges = 0, cap = 64;
    Py_ssize_t n_nfa = PyList_GET_SIZE(s->eps);
    Edge *edges = PyMem_Malloc(sizeof(Edge) * cap);
    int32_t *buckets = NULL;
    int rc = -1;
    if (!edges) goto oom;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(s->edges, s->cores.pool[off + i]);
        Py_ssize_t k = PyList_GET_SIZE(row);
        for (Py_ssize_t j = 0; j < k; j++) {
            PyObject *e = PyList_GET_ITEM(row, j);
            if (!PyTuple_Check(e) || PyTuple_GET_SIZE(e) != 3) {
                PyErr_SetString(PyExc_TypeError, "lazy DFA: an NFA edge is not a (lo, hi, target) tuple");
                goto done;
            }
            if (n_edges == cap) {
                cap *= 2;
                if (grow((void **)&edges, sizeof(Edge), cap)) goto oom;
            }
            Edge *d = &edges[n_edges];
            if (read_int(PyTuple_GET_ITEM(e, 0), &d->lo, 256) || read_int(PyTuple_GET_ITEM(e, 1), &d->hi, 256) ||
                read_int(PyTuple_GET_ITEM(e, 2), &d->t, n_nfa))
                goto done;
            if (d->lo > d->hi) continue;
            n_edges++;
        }
    }
    /* byte classes: runs of bytes no edge boundary splits */
    uint8_t cut[257] = {0};
    cut[0] = cut[256] = 1;
    for (Py_ssize_t i = 0; i < n_edges; i++) cut[edges[i].lo] = cut[edges[i].hi + 1] = 1;
    int cls[257], starts[257], n_cls = 0;
    for (int b = 0; b < 256; b++) {
        if (cut[b]) starts[n_cls++] = b;
        cls[b] = n_cls - 1;
    }
    starts[n_cls] = 256;
    Py_ssize_t counts[257] = {0}, firsts[258];
    for (Py_ssize_t i = 0; i < n_edges; i++)
        for (int c = cls[edges[i].lo]; c <= cls[edges[i].hi]; c++) counts[c]++;
    firsts[0] = 0;
    for (int c = 0; c < n_cls; c++) firsts[c + 1] = firsts[c] + counts[c];
    buckets = PyMem_Malloc(sizeof(int32_t) * (firsts[n_cls] ? firsts[n_cls] : 1));
    if (!buckets) goto oom;
    Py_ssize_t fill[257];
    memcpy(fill, firsts, sizeof(Py_ssize_t) * n_cls);
    for (Py_ssize_t i = 0; i < n_edges; i++)
        for (int c = cls[edges[i].lo]; c <= cls[edges[i].hi]; c++) buckets[fill[c]++] = edges[i].t;
    int32_t row[256];
    for (int c = 0; c < n_cls; c++) {
        Py_ssize_t k = sort_unique(buckets + firsts[c], counts[c]);
        int32_t target = 0;
        if (k) {
            target = closure(s, buckets + firsts[c], k, final);
            if (target < 0) goto done;
        }
        for (int b = starts[c]; b < starts[c + 1]; b++) row[b] = target;
    }
    memcpy(trans + (Py_ssize_t)q * 256, row, sizeof(row));
    rc = 0;
    goto done;
oom:
    PyErr_NoMemory();
done:
    PyMem_Free(edges);
    PyMem_Free(buckets);
    return rc;
}

static int Subsets_init(Subsets *self, PyObject *args, PyObject *kw) {
    PyObject *edges, *eps, *pending, *expand, *overflow;
    int accept;
    long max_expansions;
    static char *names[] = {"edges", "eps", "pending", "expand", "overflow", "accept", "max_expansions", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O!O!OOil", names, &PyList_Type, &edges, &PyList_Type, &eps,
                                     &PyDict_Type, &pending, &expand, &overflow, &accept, &max_expansions))
        return -1;
    if (self->edges) {
        PyErr_SetString(PyExc_RuntimeError, "lazy DFA core: already initialised");
        return -1;
    }
    Py_INCREF(edges);
    Py_INCREF(eps);
    Py_INCREF(pending);
    Py_INCREF(expand);
    Py_INCREF(overflow);
    self->edges = edges;
    self->eps = eps;
    self->pending = pending;
    self->expand = expand;
    self->overflow = overflow;
    self->accept = accept;
    self->max_expansions = max_expansions;
    /* state 0: the empty set (dead) */
    int32_t none = 0;
    if (table_add(&self->cores, &none, 0, hash_set(&none, 0), 0) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void Subsets_dealloc(Subsets *self) {
    Py_XDECREF(self->edges);
    Py_XDECREF(self->eps);
    Py_XDECREF(self->pending);
    Py_XDECREF(self->expand);
    Py_XDECREF(self->overflow);
    table_free(&self->cores);
    table_free(&self->memo);
    PyMem_Free(self->mark);
    PyMem_Free(self->settled);
    PyMem_Free(self->stack);
    PyMem_Free(self->seen);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int check_ready(Subsets *self) {
    if (!self->edges) {
        PyErr_SetString(PyExc_RuntimeError, "lazy DFA core: not initialised");
        return -1;
    }
    if (PyList_GET_SIZE(self->edges) != PyList_GET_SIZE(self->eps)) {
        PyErr_SetString(PyExc_ValueError, "lazy DFA: the NFA's edges and eps lists differ in length");
        return -1;
    }
    return 0;
}

/* closure(targets, final) -> state id. ``final``: writable uint8 buffer with room for
 * one more state than the core holds. */
static PyObject *Subsets_closure(Subsets *self, PyObject *args) {
    PyObject *targets;
    Py_buffer final = {0};
    if (!PyArg_ParseTuple(args, "Ow*", &targets, &final)) return NULL;
    PyObject *result = NULL;
    int32_t *a = NULL;
    PyObject *seq = PySequence_Fast(targets, "closure: targets must be a sequence of NFA states");
    if (!seq || check_ready(self) < 0) goto done;
    if (final.len < self->cores.n + 1) {
        PyErr_SetString(PyExc_ValueError, "closure: no room for a new state");
        goto done;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), n_nfa = PyList_GET_SIZE(self->eps);
    a = PyMem_Malloc(sizeof(int32_t) * (n ? n : 1));
    if (!a) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (read_int(PySequence_Fast_GET_ITEM(seq, i), &a[i], n_nfa) < 0) goto done;
    n = sort_unique(a, n);
    int32_t q = closure(self, a, n, final.buf);
    if (q >= 0) result = PyLong_FromLong(q);
done:
    PyMem_Free(a);
    Py_XDECREF(seq);
    PyBuffer_Release(&final);
    return result;
}

/* build_rows(states, trans, built, final) -> how many of ``states`` were handled.
 * Builds the row of each state in ``states`` (int32) whose ``built`` flag is 0. Stops
 * early, before a row, when the buffers have room for fewer than 256 new states: the
 * caller grows them and calls again with the rest. */
static PyObject *Subsets_build_rows(Subsets *self, PyObject *args) {
    Py_buffer states = {0}, trans = {0}, built = {0}, final = {0};
    if (!PyArg_ParseTuple(args, "y*w*w*w*", &states, &trans, &built, &final)) return NULL;
    PyObject *result = NULL;
    if (check_ready(self) < 0) goto done;
    Py_ssize_t cap = built.len, n = states.len / 4, i = 0;
    if (trans.len != cap * 256 * 4 || final.len != cap || states.len % 4 || self->cores.n > cap) {
        PyErr_SetString(PyExc_ValueError, "build_rows: inconsistent buffers");
        goto done;
    }
    const int32_t *qs = states.buf;
    uint8_t *bt = built.buf;
    for (; i < n; i++) {
        int32_t q = qs[i];
        if (q < 0 || q >= self->cores.n) {
            PyErr_Format(PyExc_ValueError, "build_rows: state %d does not exist", q);
            goto done;
        }
        if (bt[q]) continue;
        if (self->cores.n + 256 > cap) break;
        if (build_row(self, q, trans.buf, final.buf) < 0) goto done;
        bt[q] = 1;
    }
    result = PyLong_FromSsize_t(i);
done:
    PyBuffer_Release(&states);
    PyBuffer_Release(&trans);
    PyBuffer_Release(&built);
    PyBuffer_Release(&final);
    return result;
}

/* states_of(q) -> tuple of the NFA states DFA state ``q`` stands for (tests, diagnostics). */
static PyObject *Subsets_states_of(Subsets *self, PyObject *args) {
    Py_ssize_t q;
    if (!PyArg_ParseTuple(args, "n", &q)) return NULL;
    if (q < 0 || q >= self->cores.n) {
        PyErr_Format(PyExc_IndexError, "states_of: state %zd does not exist", q);
        return NULL;
    }
    Py_ssize_t n = self->cores.len[q];
    PyObject *out = PyTuple_New(n);
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromLong(self->cores.pool[self->cores.off[q] + i]);
        if (!v) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, v);
    }
    return out;
}

static PyObject *Subsets_count(Subsets *self, void *closure_) {
    (void)closure_;
    return PyLong_FromSsize_t(self->cores.n);
}

/* ---- fragment templates (grammars/byte_nfa.py: fragment) ---- */

/* extend_shifted(edges, eps, template_edges, template_eps, base) -> None
 * Appends a copy of a fragment template to the NFA's lists, its targets shifted by
 * ``base``: template_edges holds per template state a list of (lo, hi, target)
 * tuples, template_eps a list of targets. Why C: a JSON Schema's automaton copies
 * the same string and whitespace fragments thousands of times while it is decoded. */
static PyObject *extend_shifted(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *edges, *eps, *t_edges, *t_eps;
    long base;
    if (!PyArg_ParseTuple(args, "O!O!O!O!l", &PyList_Type, &edges, &PyList_Type, &eps, &PyList_Type, &t_edges,
                          &PyList_Type, &t_eps, &base))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(t_edges);
    if (PyList_GET_SIZE(t_eps) != n) {
        PyErr_SetString(PyExc_ValueError, "extend_shifted: template edges and eps differ in length");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *src = PyList_GET_ITEM(t_edges, i);
        Py_ssize_t k = PyList_Check(src) ? PyList_GET_SIZE(src) : -1;
        if (k < 0) goto bad;
        PyObject *row = PyList_New(k);
        if (!row) return NULL;
        for (Py_ssize_t j = 0; j < k; j++) {
            PyObject *e = PyList_GET_ITEM(src, j);
            if (!PyTuple_Check(e) || PyTuple_GET_SIZE(e) != 3) {
                Py_DECREF(row);
                goto bad;
            }
            long t = PyLong_AsLong(PyTuple_GET_ITEM(e, 2));
            if (t == -1 && PyErr_Occurred()) {
                Py_DECREF(row);
                return NULL;
            }
            PyObject *target = PyLong_FromLong(t + base);
            PyObject *copy = target ? PyTuple_Pack(3, PyTuple_GET_ITEM(e, 0), PyTuple_GET_ITEM(e, 1), target) : NULL;
            Py_XDECREF(target);
            if (!copy) {
                Py_DECREF(row);
                return NULL;
            }
            PyList_SET_ITEM(row, j, copy);
        }
        int rc = PyList_Append(edges, row);
        Py_DECREF(row);
        if (rc < 0) return NULL;
        src = PyList_GET_ITEM(t_eps, i);
        k = PyList_Check(src) ? PyList_GET_SIZE(src) : -1;
        if (k < 0) goto bad;
        row = PyList_New(k);
        if (!row) return NULL;
        for (Py_ssize_t j = 0; j < k; j++) {
            long t = PyLong_AsLong(PyList_GET_ITEM(src, j));
            PyObject *target = (t == -1 && PyErr_Occurred()) ? NULL : PyLong_FromLong(t + base);
            if (!target) {
                Py_DECREF(row);
                return NULL;
            }
            PyList_SET_ITEM(row, j, target);
        }
        rc = PyList_Append(eps, row);
        Py_DECREF(row);
        if (rc < 0) return NULL;
    }
    Py_RETURN_NONE;
bad:
    PyErr_SetString(PyExc_TypeError, "extend_shifted: a template row is not a list of edges / targets");
    return NULL;
}

/* untrack_rows(edges, eps, start) -> None
 * Takes the NFA's rows from ``start`` on (and their edge tuples) out of the cyclic
 * collector's lists. Why: a JSON Schema's NFA grows to millions of small lists while
 * it is decoded, and every full collection walked them all (a fifth of MaskBench's
 * mask time). Rows hold ints and tuples of ints only, so they cannot be part of a
 * reference cycle; reference counting still frees them. */
static PyObject *untrack_rows(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *lists[2];
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "O!O!n", &PyList_Type, &lists[0], &PyList_Type, &lists[1], &start)) return NULL;
    for (int k = 0; k < 2; k++) {
        Py_ssize_t n = PyList_GET_SIZE(lists[k]);
        for (Py_ssize_t i = start < 0 ? 0 : start; i < n; i++) {
            PyObject *row = PyList_GET_ITEM(lists[k], i);
            if (!PyList_CheckExact(row)) continue;
            for (Py_ssize_t j = 0; j < PyList_GET_SIZE(row); j++) {
                PyObject *e = PyList_GET_ITEM(row, j);
                if (!PyTuple_CheckExact(e) || !PyObject_GC_IsTracked(e)) continue;
                int plain = 1;
                for (Py_ssize_t m = 0; m < PyTuple_GET_SIZE(e); m++)
                    if (!PyLong_CheckExact(PyTuple_GET_ITEM(e, m))) plain = 0;
                if (plain) PyObject_GC_UnTrack(e);
            }
            int plain = 1;
            for (Py_ssize_t j = 0; j < PyList_GET_SIZE(row) && plain; j++) {
                PyObject *e = PyList_GET_ITEM(row, j);
                plain = PyLong_CheckExact(e) || (PyTuple_CheckExact(e) && !PyObject_GC_IsTracked(e));
            }
            if (plain && PyObject_GC_IsTracked(row)) PyObject_GC_UnTrack(row);
        }
    }
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"extend_shifted", extend_shifted, METH_VARARGS, "Append a fragment template, its targets shifted."},
    {"untrack_rows", untrack_rows, METH_VARARGS, "Take NFA rows out of the cyclic collector."},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef Subsets_methods[] = {
    {"closure", (PyCFunction)Subsets_closure, METH_VARARGS, "The DFA state of the closure of NFA states."},
    {"build_rows", (PyCFunction)Subsets_build_rows, METH_VARARGS, "Build the rows of states not built yet."},
    {"states_of", (PyCFunction)Subsets_states_of, METH_VARARGS, "The NFA states of a DFA state."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Subsets_getset[] = {
    {"states", (getter)Subsets_count, NULL, "DFA states made so far (the dead one included)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject SubsetsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "grammars._lazy_dfa.Subsets",
    .tp_basicsize = sizeof(Subsets),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Subset construction on demand over a Python byte NFA (see the module comment).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Subsets_init,
    .tp_dealloc = (destructor)Subsets_dealloc,
    .tp_methods = Subsets_methods,
    .tp_getset = Subsets_getset,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_lazy_dfa", "Subset construction on demand over a Python byte NFA.", -1, module_methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__lazy_dfa(void) {
    if (PyType_Ready(&SubsetsType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&SubsetsType);
    if (PyModule_AddObject(m, "Subsets", (PyObject *)&SubsetsType) < 0) {
        Py_DECREF(&SubsetsType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
