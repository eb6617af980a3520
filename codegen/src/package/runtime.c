/* oar packaged runtime: runs the Program tables generated beside this file (model.c) with
 * the kernels from the object file. It keeps oar-runtime's executor contract
 * (runtime/src/program/exec.rs, checked against it by codegen/tests/executor_suite.rs):
 * buffers from the program's memory plan, temporaries poisoned with NaN except the
 * program's zeroed ones, the prologue run once at load, kernel calls in order, each split
 * over a thread pool whose workers spin briefly, then sleep. A compiled model needs nothing
 * but libc, libm and pthreads. Every table size is checked when packaging
 * (codegen/src/package/check.rs); nothing here has a fixed cap. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef void (*oar_kernel)(void **args, int64_t begin, int64_t end, void *scratch);

/* OAR_TEMP starts as NaN (all bits set), OAR_ZEROED as zero: the program's `zeroed` list. */
enum { OAR_TEMP = 0, OAR_INPUT = 1, OAR_WEIGHT = 2, OAR_CONST = 3, OAR_ZEROED = 4 };

typedef struct {
    int64_t bytes; /* of memory owned: 0 for a buffer that uses `owner`'s */
    int role;
    int64_t offset; /* into the weights or constants blob */
    int owner;      /* the buffer whose memory this one uses (the memory plan) */
} oar_buffer;

typedef struct {
    int kernel;
    int nargs;
    int args_at;
    int64_t extent;
    int64_t grain;
} oar_step;

typedef struct {
    int buffer;
    int dtype; /* 0 f32, 1 i64, 2 bool */
    int rank;
    const int64_t *dims;
    const char *name;
    const unsigned char *npy_header; /* the whole .npy header (v1) an output file starts with */
    int npy_header_len;
} oar_io;

/* Generated tables (model.c). */
extern const oar_buffer OAR_BUFFERS[];
extern const int OAR_NUM_BUFFERS;
extern const oar_step OAR_STEPS[];
extern const int OAR_NUM_STEPS;
extern const int OAR_PROLOGUE_STEPS;
extern const int OAR_STEP_ARGS[];
extern const int OAR_NUM_STEP_ARGS;
extern const oar_kernel OAR_KERNELS[];
extern const oar_io OAR_INPUTS[];
extern const int OAR_NUM_INPUTS;
extern const oar_io OAR_OUTPUTS[];
extern const int OAR_NUM_OUTPUTS;
extern const int64_t OAR_SCRATCH_BYTES;
extern const int64_t OAR_WEIGHT_BYTES;
extern const unsigned char OAR_CONSTS[];
extern const unsigned char *const OAR_EMBEDDED_WEIGHTS; /* NULL when weights are a file */
extern const char OAR_WEIGHTS_FILE[];

/* Spins before a worker sleeps (as oar-runtime's pool): kernels follow each other within
 * microseconds, so a worker that slept between them would add a wake-up to every step. */
#define OAR_WORKER_SPINS (1 << 14)
#define OAR_CALLER_SPINS (1 << 16)
#if defined(__x86_64__) || defined(__i386__)
#define OAR_PAUSE() __builtin_ia32_pause()
#else
#define OAR_PAUSE() ((void)0)
#endif

typedef struct oar_model oar_model;

typedef struct {
    oar_model *m;
    int index;
} oar_worker_arg;

struct oar_model {
    void **buffers;
    void **step_args; /* OAR_STEP_ARGS resolved to buffer memory, once at load */
    void **scratch;
    int threads;
    int started; /* workers running: 1..started */
    pthread_t *workers;
    oar_worker_arg *worker_args;
    pthread_mutex_t lock; /* guards sleeping: `generation` changes and `sleepers` under it */
    pthread_cond_t wake;
    int sleepers;
    atomic_long generation;
    atomic_int pending;
    atomic_int stop;
    /* The job being run. */
    oar_kernel job_fn;
    void **job_args;
    int64_t job_extent;
    int job_parts;
};

static _Thread_local char oar_error[256];

const char *oar_model_last_error(void) { return oar_error; }

/* 64-byte aligned memory, every byte `fill`. */
static void *oar_alloc(int64_t bytes, int fill) {
    size_t n = (size_t)((bytes + 63) / 64 * 64);
    void *p = aligned_alloc(64, n ? n : 64);
    if (p) memset(p, fill, n ? n : 64);
    return p;
}

static void oar_run_part(oar_model *m, int t) {
    if (t >= m->job_parts) return;
    int64_t begin = m->job_extent * t / m->job_parts;
    int64_t end = m->job_extent * (t + 1) / m->job_parts;
    m->job_fn(m->job_args, begin, end, m->scratch[t]);
}

static void *oar_worker(void *p) {
    oar_worker_arg *a = (oar_worker_arg *)p;
    oar_model *m = a->m;
    long seen = 0;
    for (;;) {
        int spins = 0;
        while (atomic_load(&m->generation) == seen && !atomic_load(&m->stop) && ++spins < OAR_WORKER_SPINS) OAR_PAUSE();
        if (atomic_load(&m->generation) == seen) {
            pthread_mutex_lock(&m->lock);
            m->sleepers++;
            while (atomic_load(&m->generation) == seen && !atomic_load(&m->stop)) pthread_cond_wait(&m->wake, &m->lock);
            m->sleepers--;
            pthread_mutex_unlock(&m->lock);
        }
        if (atomic_load(&m->stop)) return NULL;
        seen = atomic_load(&m->generation);
        oar_run_part(m, a->index);
        atomic_fetch_sub(&m->pending, 1);
    }
}

int oar_model_num_inputs(void) { return OAR_NUM_INPUTS; }
int oar_model_num_outputs(void) { return OAR_NUM_OUTPUTS; }
const int64_t *oar_model_input_shape(int i, int *rank) {
    if (i < 0 || i >= OAR_NUM_INPUTS) return NULL;
    if (rank) *rank = OAR_INPUTS[i].rank;
    return OAR_INPUTS[i].dims;
}
const int64_t *oar_model_output_shape(int i, int *rank) {
    if (i < 0 || i >= OAR_NUM_OUTPUTS) return NULL;
    if (rank) *rank = OAR_OUTPUTS[i].rank;
    return OAR_OUTPUTS[i].dims;
}

static int64_t oar_io_bytes(const oar_io *io) {
    int64_t n = io->dtype == 0 ? 4 : io->dtype == 1 ? 8 : 1;
    for (int d = 0; d < io->rank; d++) n *= io->dims[d];
    return n;
}

/* Runs steps [from, to), each split across the threads. */
static void oar_run_steps(oar_model *m, int from, int to) {
    for (int s = from; s < to; s++) {
        const oar_step *st = &OAR_STEPS[s];
        void **args = m->step_args + st->args_at;
        int64_t grain = st->grain < 1 ? 1 : st->grain;
        int parts = 1;
        if (m->threads > 1 && st->extent >= 2 * grain) {
            parts = m->threads;
            if (st->extent / grain < parts) parts = (int)(st->extent / grain);
        }
        if (parts <= 1) {
            OAR_KERNELS[st->kernel](args, 0, st->extent, m->scratch[0]);
            continue;
        }
        m->job_fn = OAR_KERNELS[st->kernel];
        m->job_args = args;
        m->job_extent = st->extent;
        m->job_parts = parts;
        atomic_store(&m->pending, m->threads - 1);
        pthread_mutex_lock(&m->lock);
        atomic_fetch_add(&m->generation, 1);
        int wake = m->sleepers > 0;
        pthread_mutex_unlock(&m->lock);
        if (wake) pthread_cond_broadcast(&m->wake);
        oar_run_part(m, 0);
        int spins = 0;
        while (atomic_load(&m->pending) != 0) {
            if (++spins < OAR_CALLER_SPINS) OAR_PAUSE();
            else sched_yield();
        }
    }
}

void oar_model_destroy(oar_model *m) {
    if (!m) return;
    pthread_mutex_lock(&m->lock);
    atomic_store(&m->stop, 1);
    pthread_mutex_unlock(&m->lock);
    pthread_cond_broadcast(&m->wake);
    for (int t = 1; t <= m->started; t++) pthread_join(m->workers[t], NULL);
    pthread_cond_destroy(&m->wake);
    pthread_mutex_destroy(&m->lock);
    if (m->buffers)
        for (int b = 0; b < OAR_NUM_BUFFERS; b++)
            if (OAR_BUFFERS[b].owner == b) free(m->buffers[b]);
    if (m->scratch)
        for (int t = 0; t < m->threads; t++) free(m->scratch[t]);
    free(m->buffers);
    free(m->step_args);
    free(m->scratch);
    free(m->workers);
    free(m->worker_args);
    free(m);
}

/* Fails creation: the message for oar_model_last_error, everything allocated freed. */
static oar_model *oar_create_failed(oar_model *m, const char *what) {
    snprintf(oar_error, sizeof oar_error, "%s", what);
    oar_model_destroy(m);
    return NULL;
}

oar_model *oar_model_create_threads(const char *weights_path, int threads) {
    oar_model *m = calloc(1, sizeof(oar_model));
    if (!m) {
        snprintf(oar_error, sizeof oar_error, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->wake, NULL);
    m->threads = threads < 1 ? 1 : threads;
    const unsigned char *weights = OAR_EMBEDDED_WEIGHTS;
    unsigned char *loaded = NULL;
    if (!weights && OAR_WEIGHT_BYTES > 0) {
        const char *path = weights_path ? weights_path : OAR_WEIGHTS_FILE;
        FILE *f = fopen(path, "rb");
        if (!f) {
            snprintf(oar_error, sizeof oar_error, "cannot open weights %s", path);
            oar_model_destroy(m);
            return NULL;
        }
        loaded = malloc((size_t)OAR_WEIGHT_BYTES);
        size_t got = loaded ? fread(loaded, 1, (size_t)OAR_WEIGHT_BYTES, f) : 0;
        int extra = fgetc(f);
        fclose(f);
        if (got != (size_t)OAR_WEIGHT_BYTES || extra != EOF) {
            snprintf(oar_error, sizeof oar_error, "weights %s: expected %lld bytes", path, (long long)OAR_WEIGHT_BYTES);
            free(loaded);
            oar_model_destroy(m);
            return NULL;
        }
        weights = loaded;
    }
    m->buffers = calloc((size_t)OAR_NUM_BUFFERS + 1, sizeof(void *));
    m->step_args = calloc((size_t)OAR_NUM_STEP_ARGS + 1, sizeof(void *));
    m->scratch = calloc((size_t)m->threads, sizeof(void *));
    m->workers = calloc((size_t)m->threads, sizeof(pthread_t));
    m->worker_args = calloc((size_t)m->threads, sizeof(oar_worker_arg));
    if (!m->buffers || !m->step_args || !m->scratch || !m->workers || !m->worker_args) {
        free(loaded);
        return oar_create_failed(m, "out of memory (thread or buffer tables)");
    }
    for (int b = 0; b < OAR_NUM_BUFFERS; b++) {
        const oar_buffer *d = &OAR_BUFFERS[b];
        if (d->owner != b) continue;
        /* Temporaries start as NaN, not zero, as in oar-runtime: shared storage holds an
         * earlier value's data, so a kernel that read a temporary before writing it would
         * be wrong; poisoning makes such a bug fail every comparison. */
        m->buffers[b] = oar_alloc(d->bytes, d->role == OAR_TEMP ? 0xff : 0);
        if (!m->buffers[b]) {
            free(loaded);
            return oar_create_failed(m, "out of memory (buffers)");
        }
        if (d->role == OAR_WEIGHT) memcpy(m->buffers[b], weights + d->offset, (size_t)d->bytes);
        if (d->role == OAR_CONST) memcpy(m->buffers[b], OAR_CONSTS + d->offset, (size_t)d->bytes);
    }
    free(loaded);
    for (int b = 0; b < OAR_NUM_BUFFERS; b++)
        if (OAR_BUFFERS[b].owner != b) m->buffers[b] = m->buffers[OAR_BUFFERS[b].owner];
    for (int a = 0; a < OAR_NUM_STEP_ARGS; a++) m->step_args[a] = m->buffers[OAR_STEP_ARGS[a]];
    for (int t = 0; t < m->threads; t++) {
        m->scratch[t] = oar_alloc(OAR_SCRATCH_BYTES, 0);
        if (!m->scratch[t]) return oar_create_failed(m, "out of memory (thread scratch)");
    }
    for (int t = 1; t < m->threads; t++) {
        m->worker_args[t].m = m;
        m->worker_args[t].index = t;
        if (pthread_create(&m->workers[t], NULL, oar_worker, &m->worker_args[t]) != 0) {
            char msg[96];
            snprintf(msg, sizeof msg, "cannot start worker thread %d of %d", t, m->threads);
            return oar_create_failed(m, msg);
        }
        m->started = t;
    }
    /* Steps that read only weights and constants run once, here. */
    oar_run_steps(m, 0, OAR_PROLOGUE_STEPS);
    return m;
}

oar_model *oar_model_create(const char *weights_path) {
    const char *env = getenv("OAR_THREADS");
    int threads = env ? atoi(env) : 2;
    return oar_model_create_threads(weights_path, threads);
}

int oar_model_run(oar_model *m, const void *const *inputs, void *const *outputs) {
    for (int i = 0; i < OAR_NUM_INPUTS; i++)
        memcpy(m->buffers[OAR_INPUTS[i].buffer], inputs[i], (size_t)oar_io_bytes(&OAR_INPUTS[i]));
    oar_run_steps(m, OAR_PROLOGUE_STEPS, OAR_NUM_STEPS);
    for (int i = 0; i < OAR_NUM_OUTPUTS; i++)
        memcpy(outputs[i], m->buffers[OAR_OUTPUTS[i].buffer], (size_t)oar_io_bytes(&OAR_OUTPUTS[i]));
    return 0;
}
