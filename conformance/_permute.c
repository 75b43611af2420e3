/* The copy loop of conformance.blockcopy, compiled: a strided N-d permutation, tile by tile.
 *
 * Why C: NumPy copies a transposed tile element by element through its generic strided loop, and
 * the Python loop over tiles adds a call per tile; together they kept the layout change at 3.5-5x
 * a memcpy of the same bytes on the AVX-512 development machine. The planning (which tile shape
 * touches the fewest pages, how the tiles split between threads) stays in Python, where it is
 * measured and tested; this file only walks tiles and moves bytes, and releases the GIL while it
 * does, so that two threads copy at once.
 *
 * permute(src, dst, itemsize, shape, src_strides, dst_strides, blocks, first, last)
 *   src, dst     addresses (int) of element 0 of the two arrays; the caller keeps both alive
 *   itemsize     1, 2, 4 or 8 bytes
 *   shape        extents of the source axes (rank <= 16)
 *   *_strides    byte strides of each source axis in the source, and in the destination
 *   blocks       tile extent per axis; the tile grid is walked in row-major order
 *   first, last  the half-open range of tile numbers this call copies
 * Inside a tile, the innermost loop runs along the destination's contiguous axis (whole cache
 * lines written in order) and the next along the source's contiguous axis (each source line is
 * read while it is still in L1).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_RANK 16

/* A 16 x 16 block of 4-byte items: ``dst_rows[r][q] = src_rows[q][r]``, each row 16 contiguous
 * items (one cache line). SSE2's 4 x 4 register transpose everywhere on x86-64, AVX2's 8 x 8 where
 * the CPU has it (chosen once, at import); elsewhere a scalar loop. */
typedef void (*Block32)(const uint32_t *const *, uint32_t *const *);

static void block32_scalar(const uint32_t *const *src_rows, uint32_t *const *dst_rows) {
    uint32_t block[16][16];
    for (int q = 0; q < 16; q++) memcpy(block[q], src_rows[q], 64);
    for (int r = 0; r < 16; r++) {
        for (int q = 0; q < 16; q++) dst_rows[r][q] = block[q][r];
    }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_X86_BLOCKS 1

static void block32_sse2(const uint32_t *const *src_rows, uint32_t *const *dst_rows) {
    for (int r = 0; r < 16; r += 4) {
        for (int q = 0; q < 16; q += 4) {
            __m128 r0 = _mm_loadu_ps((const float *)(src_rows[q] + r));
            __m128 r1 = _mm_loadu_ps((const float *)(src_rows[q + 1] + r));
            __m128 r2 = _mm_loadu_ps((const float *)(src_rows[q + 2] + r));
            __m128 r3 = _mm_loadu_ps((const float *)(src_rows[q + 3] + r));
            _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
            _mm_storeu_ps((float *)(dst_rows[r] + q), r0);
            _mm_storeu_ps((float *)(dst_rows[r + 1] + q), r1);
            _mm_storeu_ps((float *)(dst_rows[r + 2] + q), r2);
            _mm_storeu_ps((float *)(dst_rows[r + 3] + q), r3);
        }
    }
}

__attribute__((target("avx2"))) static inline void eight32_avx2(const uint32_t *const *src_rows,
                                                                uint32_t *const *dst_rows, int r, int q) {
    __m256 x[8], t[8], u[8];
    for (int k = 0; k < 8; k++) x[k] = _mm256_loadu_ps((const float *)(src_rows[q + k] + r));
    for (int k = 0; k < 8; k += 2) {
        t[k] = _mm256_unpacklo_ps(x[k], x[k + 1]);
        t[k + 1] = _mm256_unpackhi_ps(x[k], x[k + 1]);
    }
    for (int k = 0; k < 8; k += 4) {
        u[k] = _mm256_shuffle_ps(t[k], t[k + 2], 0x44);
        u[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], 0xEE);
        u[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0x44);
        u[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0xEE);
    }
    for (int k = 0; k < 4; k++) {
        _mm256_storeu_ps((float *)(dst_rows[r + k] + q), _mm256_permute2f128_ps(u[k], u[k + 4], 0x20));
        _mm256_storeu_ps((float *)(dst_rows[r + k + 4] + q), _mm256_permute2f128_ps(u[k], u[k + 4], 0x31));
    }
}

__attribute__((target("avx2"))) static void block32_avx2(const uint32_t *const *src_rows, uint32_t *const *dst_rows) {
    eight32_avx2(src_rows, dst_rows, 0, 0);
    eight32_avx2(src_rows, dst_rows, 0, 8);
    eight32_avx2(src_rows, dst_rows, 8, 0);
    eight32_avx2(src_rows, dst_rows, 8, 8);
}
#endif

static Block32 block32 = block32_scalar;
static const char *block32_name = "scalar";

/* One tile. Its axes fall in three groups, chosen by the caller: R, whose joint index runs
 * through the source in order (the source's contiguous axis, and the axes just outside it while
 * they are short); Q, likewise for the destination; and the rest, looped over outside. The tile
 * then moves as 16 x 16 blocks of (R, Q): each block reads 16 runs of 16 items from the source and
 * writes 16 runs of 16 items to the destination, whatever the shape, so that a 3 x 3 kernel's nine
 * taps (short on one side) still move in whole runs. Blocks whose runs are not contiguous, and the
 * ragged edges, take a scalar loop. */
enum { B = 16 };
#ifndef PREFETCH_BLOCKS
#define PREFETCH_BLOCKS 2     /* a block prefetches its source rows this many blocks of R ahead (1-2 best, see blockcopy) */
#endif

typedef struct {
    int rank, itemsize;
    Py_ssize_t shape[MAX_RANK], sst[MAX_RANK], dst[MAX_RANK], blocks[MAX_RANK], tiles[MAX_RANK];
    int group[MAX_RANK];              /* 0 outside, 1 R, 2 Q */
    int r_axes[MAX_RANK], nr_axes;    /* R's axes, fastest first */
    int q_axes[MAX_RANK], nq_axes;
    int o_axes[MAX_RANK], no_axes;    /* the rest, fastest (innermost in the source) first */
} Plan;

/* One step of an odometer over ``axes`` (fastest first) of a tile of extents ``ext``: the source and
 * destination byte offsets move by one index. */
static void advance(const Plan *pl, const int *axes, int n, const Py_ssize_t *ext, Py_ssize_t *counter,
                    Py_ssize_t *so, Py_ssize_t *d) {
    for (int k = 0; k < n; k++) {
        int a = axes[k];
        *so += pl->sst[a];
        *d += pl->dst[a];
        if (++counter[k] < ext[a]) return;
        *so -= ext[a] * pl->sst[a];
        *d -= ext[a] * pl->dst[a];
        counter[k] = 0;
    }
}

/* Offsets of every joint index of a group, fastest axis first: src[i] and dst[i] in bytes. */
static void offsets(const Plan *pl, const int *axes, int n, const Py_ssize_t *ext, Py_ssize_t *src,
                    Py_ssize_t *dst) {
    Py_ssize_t count = 1, counter[MAX_RANK] = {0}, so = 0, d = 0;
    for (int k = 0; k < n; k++) count *= ext[axes[k]];
    for (Py_ssize_t i = 0; i < count; i++) {
        src[i] = so;
        dst[i] = d;
        advance(pl, axes, n, ext, counter, &so, &d);
    }
}

/* Whether each block of B consecutive indices steps by exactly one item on ``side``. */
static void runs(const Py_ssize_t *side, Py_ssize_t count, int itemsize, char *whole) {
    for (Py_ssize_t b0 = 0, k = 0; b0 < count; b0 += B, k++) {
        int ok = count - b0 >= B;
        for (Py_ssize_t i = b0 + 1; ok && i < b0 + B; i++) ok = side[i] - side[i - 1] == itemsize;
        whole[k] = (char)ok;
    }
}

#define DEFINE_SCALAR(NAME, T)                                                                   \
    static void NAME(const char *s, char *d, const Py_ssize_t *rs, const Py_ssize_t *rd,         \
                     Py_ssize_t rm, const Py_ssize_t *qs, const Py_ssize_t *qd, Py_ssize_t qm) {  \
        for (Py_ssize_t i = 0; i < rm; i++) {                                                    \
            for (Py_ssize_t j = 0; j < qm; j++) {                                                \
                *(T *)(d + rd[i] + qd[j]) = *(const T *)(s + rs[i] + qs[j]);                     \
            }                                                                                    \
        }                                                                                        \
    }
DEFINE_SCALAR(scalar8, uint8_t)
DEFINE_SCALAR(scalar16, uint16_t)
DEFINE_SCALAR(scalar32, uint32_t)
DEFINE_SCALAR(scalar64, uint64_t)

typedef void (*Scalar)(const char *, char *, const Py_ssize_t *, const Py_ssize_t *, Py_ssize_t,
                       const Py_ssize_t *, const Py_ssize_t *, Py_ssize_t);

static void copy_tile(const Plan *pl, Scalar scalar, const char *s, char *d, const Py_ssize_t *ext,
                      Py_ssize_t *scratch, char *whole) {
    Py_ssize_t nr = 1, nq = 1, outer = 1;
    for (int k = 0; k < pl->nr_axes; k++) nr *= ext[pl->r_axes[k]];
    for (int k = 0; k < pl->nq_axes; k++) nq *= ext[pl->q_axes[k]];
    for (int k = 0; k < pl->no_axes; k++) outer *= ext[pl->o_axes[k]];
    Py_ssize_t *rs = scratch, *rd = rs + nr, *qs = rd + nr, *qd = qs + nq;
    offsets(pl, pl->r_axes, pl->nr_axes, ext, rs, rd);
    offsets(pl, pl->q_axes, pl->nq_axes, ext, qs, qd);
    char *r_whole = whole, *q_whole = whole + (nr + B - 1) / B;
    runs(rs, nr, pl->itemsize, r_whole);
    runs(qd, nq, pl->itemsize, q_whole);
    Py_ssize_t counter[MAX_RANK] = {0}, os = 0, od = 0;
    for (Py_ssize_t o = 0; o < outer; o++) {
        const char *so = s + os;
        char *dd = d + od;
        for (Py_ssize_t r0 = 0, rb = 0; r0 < nr; r0 += B, rb++) {
            Py_ssize_t rm = nr - r0 < B ? nr - r0 : B, ahead = r0 + PREFETCH_BLOCKS * B;
            for (Py_ssize_t q0 = 0, qb = 0; q0 < nq; q0 += B, qb++) {
                Py_ssize_t qm = nq - q0 < B ? nq - q0 : B;
                if (pl->itemsize == 4 && r_whole[rb] && q_whole[qb]) {
                    const uint32_t *src_rows[B];
                    uint32_t *dst_rows[B];
                    for (int k = 0; k < B; k++) {
                        src_rows[k] = (const uint32_t *)(so + rs[r0] + qs[q0 + k]);
                        dst_rows[k] = (uint32_t *)(dd + rd[r0 + k] + qd[q0]);
                    }
                    if (ahead < nr) {       /* the lines this block's rows will need a few sweeps from now */
                        for (int k = 0; k < B; k++) __builtin_prefetch(so + rs[ahead] + qs[q0 + k], 0, 3);
                    }
                    block32(src_rows, dst_rows);
                } else {
                    scalar(so, dd, rs + r0, rd + r0, rm, qs + q0, qd + q0, qm);
                }
            }
        }
        advance(pl, pl->o_axes, pl->no_axes, ext, counter, &os, &od);
    }
}

static int read_sizes(PyObject *seq, Py_ssize_t *out, int rank, const char *what) {
    PyObject *fast = PySequence_Fast(seq, what);
    if (fast == NULL) return -1;
    if (PySequence_Fast_GET_SIZE(fast) != rank) {
        Py_DECREF(fast);
        PyErr_Format(PyExc_ValueError, "_permute: %s has the wrong length", what);
        return -1;
    }
    for (int i = 0; i < rank; i++) {
        out[i] = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(fast, i));
        if (out[i] == -1 && PyErr_Occurred()) {
            Py_DECREF(fast);
            return -1;
        }
    }
    Py_DECREF(fast);
    return 0;
}

static PyObject *permute(PyObject *Py_UNUSED(self), PyObject *args) {
    unsigned long long src_address, dst_address;
    Py_ssize_t first, last;
    PyObject *shape_obj, *sst_obj, *dst_obj, *blocks_obj, *groups_obj;
    Plan pl;
    if (!PyArg_ParseTuple(args, "KKiOOOOOnn", &src_address, &dst_address, &pl.itemsize, &shape_obj, &sst_obj,
                          &dst_obj, &blocks_obj, &groups_obj, &first, &last)) {
        return NULL;
    }
    Py_ssize_t rank_long = PySequence_Size(shape_obj);
    if (rank_long < 1 || rank_long > MAX_RANK) {
        if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "_permute: rank %zd is outside 1..%d", rank_long, MAX_RANK);
        return NULL;
    }
    pl.rank = (int)rank_long;
    Py_ssize_t groups[MAX_RANK];
    if (read_sizes(shape_obj, pl.shape, pl.rank, "shape") || read_sizes(sst_obj, pl.sst, pl.rank, "source strides")
        || read_sizes(dst_obj, pl.dst, pl.rank, "destination strides")
        || read_sizes(blocks_obj, pl.blocks, pl.rank, "blocks") || read_sizes(groups_obj, groups, pl.rank, "groups")) {
        return NULL;
    }
    Scalar scalar;
    switch (pl.itemsize) {
        case 1: scalar = scalar8; break;
        case 2: scalar = scalar16; break;
        case 4: scalar = scalar32; break;
        case 8: scalar = scalar64; break;
        default:
            PyErr_Format(PyExc_ValueError, "_permute: item size %d is not 1, 2, 4 or 8", pl.itemsize);
            return NULL;
    }
    Py_ssize_t count = 1, tile_r = 1, tile_q = 1;
    pl.nr_axes = pl.nq_axes = pl.no_axes = 0;
    for (int a = 0; a < pl.rank; a++) {
        if (pl.shape[a] < 1 || pl.blocks[a] < 1 || groups[a] < 0 || groups[a] > 2) {
            PyErr_SetString(PyExc_ValueError, "_permute: extents and blocks must be >= 1, groups 0, 1 or 2");
            return NULL;
        }
        pl.group[a] = (int)groups[a];
        pl.tiles[a] = (pl.shape[a] + pl.blocks[a] - 1) / pl.blocks[a];
        count *= pl.tiles[a];
        if (pl.group[a] == 0) {           /* fastest first: insert at the front */
            memmove(pl.o_axes + 1, pl.o_axes, (size_t)pl.no_axes * sizeof(int));
            pl.o_axes[0] = a;
            pl.no_axes++;
        }
        if (pl.group[a] == 1) tile_r *= pl.blocks[a];
        if (pl.group[a] == 2) tile_q *= pl.blocks[a];
    }
    /* R fastest first by source stride, Q by destination stride (insertion sort: rank <= 16). */
    for (int a = 0; a < pl.rank; a++) {
        if (pl.group[a] == 0) continue;
        int *axes = pl.group[a] == 1 ? pl.r_axes : pl.q_axes;
        int *n = pl.group[a] == 1 ? &pl.nr_axes : &pl.nq_axes;
        const Py_ssize_t *key = pl.group[a] == 1 ? pl.sst : pl.dst;
        int k = (*n)++;
        while (k > 0 && llabs((long long)key[axes[k - 1]]) > llabs((long long)key[a])) {
            axes[k] = axes[k - 1];
            k--;
        }
        axes[k] = a;
    }
    if (first < 0 || last > count || first > last) {
        PyErr_Format(PyExc_ValueError, "_permute: tiles %zd..%zd outside 0..%zd", first, last, count);
        return NULL;
    }
    Py_ssize_t *scratch = PyMem_RawMalloc((size_t)(2 * tile_r + 2 * tile_q) * sizeof(Py_ssize_t));
    char *whole = PyMem_RawMalloc((size_t)((tile_r + B - 1) / B + (tile_q + B - 1) / B));
    if (scratch == NULL || whole == NULL) {
        PyMem_RawFree(scratch);
        PyMem_RawFree(whole);
        return PyErr_NoMemory();
    }
    const char *src = (const char *)(uintptr_t)src_address;
    char *dst = (char *)(uintptr_t)dst_address;
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t ext[MAX_RANK];
    for (Py_ssize_t number = first; number < last; number++) {
        Py_ssize_t rest = number, s_off = 0, d_off = 0;
        for (int a = pl.rank - 1; a >= 0; a--) {
            Py_ssize_t start = rest % pl.tiles[a] * pl.blocks[a];
            rest /= pl.tiles[a];
            ext[a] = pl.shape[a] - start < pl.blocks[a] ? pl.shape[a] - start : pl.blocks[a];
            s_off += start * pl.sst[a];
            d_off += start * pl.dst[a];
        }
        copy_tile(&pl, scalar, src + s_off, dst + d_off, ext, scratch, whole);
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(scratch);
    PyMem_RawFree(whole);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"permute", permute, METH_VARARGS, "Copy tiles first..last of a strided permutation (see the file's comment)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_permute", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__permute(void) {
#ifdef HAVE_X86_BLOCKS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) {
        block32 = block32_avx2;
        block32_name = "avx2";
    } else {
        block32 = block32_sse2;
        block32_name = "sse2";
    }
#endif
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddStringConstant(m, "KERNEL", block32_name) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
