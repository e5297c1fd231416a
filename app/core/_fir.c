/* The polyphase FIR of app/core/resample.py, one C call per frame each way.
 *
 * The numpy kernel (app/core/resample.py) costs about ten numpy calls per 20 ms frame, each a few hundred
 * nanoseconds of overhead around 2.7 us of arithmetic; this does the same arithmetic in one call, about
 * 2 us for a caller frame (scripts/bench_codec.py). Built at install where a C compiler is found. The
 * filter itself (its taps) is designed in Python and handed over once, at import, by set_taps(); the
 * state of a stream lives in a bytearray the Python object owns, so this module keeps no state of its own
 * beyond the taps.
 *
 *   up(state, pcm8)    state: bytearray of UP_HIST floats (the last inputs, oldest first);
 *                      pcm8: int16 samples at 8 kHz (native byte order); returns 3x as many at 24 kHz.
 *   down(state, pcm24) state: bytearray of DOWN_STATE bytes (see struct down_state); pcm24: int16 at
 *                      24 kHz; returns int16 at 8 kHz: a third of what is held plus pcm24, the filter's
 *                      lead-in trimmed off the start of a stream.
 *
 * Output samples are rounded to nearest (ties to even, as numpy's rint) and saturated to int16. A stray
 * last byte of an odd-length input is not a sample and is ignored (the agent's audio path keeps it).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define RATIO 3
#define TAPS 93
#define PHASE_TAPS (TAPS / RATIO) /* 31 */
#define UP_HIST (PHASE_TAPS - 1)  /* 30 */
#define DOWN_HIST (TAPS - 1)      /* 92 */
#define STACK_FLOATS 4096
#define BLOCK 64
#define LANES 8

/* up_taps[p][k]: the tap that multiplies the k-th oldest of the 31 inputs in a window, for output phase p */
static float up_taps[RATIO][PHASE_TAPS];
/* down_taps[j]: the tap that multiplies the j-th oldest of the 93 inputs in a window */
static float down_taps[TAPS];
static int have_taps = 0;

struct down_state {
    float held[DOWN_HIST + RATIO - 1]; /* the last 92 inputs, plus up to 2 not yet a whole output */
    int32_t count;                     /* samples in held: 92 to 94 */
    int32_t skip;                      /* outputs still to trim off the start (the filter's lead-in) */
};

static inline int16_t to_int16(float v) {
    if (v > 32767.0f) return 32767;
    if (v < -32768.0f) return -32768;
    return (int16_t)lrintf(v);
}

/* The two arguments of up() and down(): the stream's state (writable, exactly state_size bytes) and its input.
 * On success both buffers are held and must be released; on failure none is, and an exception is set. */
static int open_args(PyObject *const *args, Py_ssize_t nargs, const char *usage, Py_ssize_t state_size,
                     Py_buffer *st, Py_buffer *in) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    if (!have_taps) {
        PyErr_SetString(PyExc_RuntimeError, "set_taps() first");
        return -1;
    }
    if (PyObject_GetBuffer(args[0], st, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (st->len != state_size) {
        PyErr_Format(PyExc_ValueError, "%s: the state must be %zd bytes, not %zd", usage, state_size, st->len);
        PyBuffer_Release(st);
        return -1;
    }
    if (PyObject_GetBuffer(args[1], in, PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(st);
        return -1;
    }
    return 0;
}

static PyObject *set_taps(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "set_taps(taps): float64 taps, 93 of them");
        return NULL;
    }
    Py_buffer taps;
    if (PyObject_GetBuffer(args[0], &taps, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (taps.len != (Py_ssize_t)(TAPS * sizeof(double))) {
        PyBuffer_Release(&taps);
        PyErr_SetString(PyExc_ValueError, "set_taps(taps): float64 taps, 93 of them");
        return NULL;
    }
    const double *h = (const double *)taps.buf;
    /* Up: y[3n + p] = 3 * sum_k h[3k + p] x[n - k]; window index i = 30 - k (oldest first). */
    for (int p = 0; p < RATIO; p++)
        for (int i = 0; i < PHASE_TAPS; i++) up_taps[p][i] = (float)(RATIO * h[RATIO * (PHASE_TAPS - 1 - i) + p]);
    /* Down: y[n] = sum_j h[j] x[3n - j]; window index i = 92 - j. */
    for (int i = 0; i < TAPS; i++) down_taps[i] = (float)h[TAPS - 1 - i];
    have_taps = 1;
    PyBuffer_Release(&taps);
    Py_RETURN_NONE;
}

static PyObject *up(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer st, in;
    if (open_args(args, nargs, "up(state, pcm8)", UP_HIST * sizeof(float), &st, &in) < 0) return NULL;
    Py_ssize_t n = in.len / 2;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * RATIO * 2);
    if (out == NULL) goto done;
    float stack[STACK_FLOATS];
    float *buf = stack;
    if (UP_HIST + n > STACK_FLOATS) {
        buf = PyMem_Malloc((UP_HIST + n) * sizeof(float));
        if (buf == NULL) {
            Py_CLEAR(out);
            PyErr_NoMemory();
            goto done;
        }
    }
    float *hist = (float *)st.buf;
    const int16_t *x = (const int16_t *)in.buf;
    memcpy(buf, hist, UP_HIST * sizeof(float));
    for (Py_ssize_t i = 0; i < n; i++) buf[UP_HIST + i] = (float)x[i];
    int16_t *y = (int16_t *)PyBytes_AS_STRING(out);
    /* Blocks of outputs, each accumulated tap by tap: the inner loop runs across independent outputs,
     * which the compiler vectorizes without reordering any one output's sum. */
    for (Py_ssize_t b = 0; b < n; b += BLOCK) {
        int len = (int)(n - b < BLOCK ? n - b : BLOCK);
        for (int p = 0; p < RATIO; p++) {
            const float *c = up_taps[p];
            float acc[BLOCK] = {0};
            for (int k = 0; k < PHASE_TAPS; k++) {
                const float *w = buf + b + k;
                const float ck = c[k];
                for (int i = 0; i < len; i++) acc[i] += w[i] * ck;
            }
            for (int i = 0; i < len; i++) y[RATIO * (b + i) + p] = to_int16(acc[i]);
        }
    }
    memcpy(hist, buf + n, UP_HIST * sizeof(float));
    if (buf != stack) PyMem_Free(buf);
done:
    PyBuffer_Release(&in);
    PyBuffer_Release(&st);
    return out;
}

static PyObject *down(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer st, in;
    if (open_args(args, nargs, "down(state, pcm24)", sizeof(struct down_state), &st, &in) < 0) return NULL;
    struct down_state *s = (struct down_state *)st.buf;
    PyObject *out = NULL;
    if (s->count < DOWN_HIST || s->count > DOWN_HIST + RATIO - 1 || s->skip < 0) {
        PyErr_SetString(PyExc_ValueError, "down: not a down state");
        goto done;
    }
    Py_ssize_t n = in.len / 2;
    Py_ssize_t total = s->count + n;
    Py_ssize_t n_out = (total - DOWN_HIST) / RATIO;
    Py_ssize_t skip = s->skip < n_out ? s->skip : n_out;
    out = PyBytes_FromStringAndSize(NULL, (n_out - skip) * 2);
    if (out == NULL) goto done;
    float stack[STACK_FLOATS];
    float *buf = stack;
    if (total > STACK_FLOATS) {
        buf = PyMem_Malloc(total * sizeof(float));
        if (buf == NULL) {
            Py_CLEAR(out);
            PyErr_NoMemory();
            goto done;
        }
    }
    const int16_t *x = (const int16_t *)in.buf;
    memcpy(buf, s->held, s->count * sizeof(float));
    for (Py_ssize_t i = 0; i < n; i++) buf[s->count + i] = (float)x[i];
    int16_t *y = (int16_t *)PyBytes_AS_STRING(out);
    /* Each output's 93-tap sum in LANES partial sums (tap j in lane j % LANES), added up in a fixed order at
     * the end: the compiler vectorizes across lanes, and the result does not depend on how a stream is cut. */
    for (Py_ssize_t o = skip; o < n_out; o++) {
        const float *w = buf + RATIO * o;
        float part[LANES] = {0};
        int j = 0;
        for (; j + LANES <= TAPS; j += LANES)
            for (int l = 0; l < LANES; l++) part[l] += w[j + l] * down_taps[j + l];
        for (int l = 0; j < TAPS; j++, l++) part[l] += w[j] * down_taps[j];
        float acc = 0.0f;
        for (int l = 0; l < LANES; l++) acc += part[l];
        y[o - skip] = to_int16(acc);
    }
    Py_ssize_t keep = total - RATIO * n_out; /* 92 to 94 */
    memcpy(s->held, buf + RATIO * n_out, keep * sizeof(float));
    s->count = (int32_t)keep;
    s->skip -= (int32_t)skip;
    if (buf != stack) PyMem_Free(buf);
done:
    PyBuffer_Release(&in);
    PyBuffer_Release(&st);
    return out;
}

static PyMethodDef methods[] = {
    {"set_taps", (PyCFunction)(void (*)(void))set_taps, METH_FASTCALL, "set_taps(taps): the 93 float64 taps"},
    {"up", (PyCFunction)(void (*)(void))up, METH_FASTCALL, "up(state, pcm8) -> pcm24"},
    {"down", (PyCFunction)(void (*)(void))down, METH_FASTCALL, "down(state, pcm24) -> pcm8"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fir", "The resampler's FIR, one call per frame (app/core/resample.py).", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fir(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "UP_STATE", UP_HIST * sizeof(float)) < 0 ||
        PyModule_AddIntConstant(m, "DOWN_STATE", sizeof(struct down_state)) < 0 ||
        PyModule_AddIntConstant(m, "DOWN_HIST", DOWN_HIST) < 0 || PyModule_AddIntConstant(m, "TAPS", TAPS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
