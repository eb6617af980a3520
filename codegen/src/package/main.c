/* The standalone executable's front end: `--input [NAME=]x.npy ... -o y.npy ... [--bench N]
 * [--threads T] [--weights FILE]`, the same flags as `oar run`. */
#ifdef OAR_MAIN
#include <limits.h>
static int oar_fail(const char *msg, const char *arg) {
    fprintf(stderr, "error: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    return 2;
}

/* Reads a .npy of the expected dtype and shape into dst. */
static int oar_read_npy(const char *path, const oar_io *io, void *dst) {
    FILE *f = fopen(path, "rb");
    if (!f) return oar_fail("cannot open", path);
    unsigned char magic[10];
    if (fread(magic, 1, 10, f) != 10 || memcmp(magic, "\x93NUMPY", 6) != 0) { fclose(f); return oar_fail("not a .npy file", path); }
    unsigned long hlen = magic[8] | (magic[9] << 8);
    if (magic[6] >= 2) {
        unsigned char more[2];
        if (fread(more, 1, 2, f) != 2) { fclose(f); return oar_fail("truncated .npy header", path); }
        hlen |= ((unsigned long)more[0] << 16) | ((unsigned long)more[1] << 24);
    }
    char *h = calloc(hlen + 1, 1);
    if (!h || fread(h, 1, hlen, f) != hlen) { free(h); fclose(f); return oar_fail("truncated .npy header", path); }
    const char *want = io->dtype == 0 ? "<f4" : io->dtype == 1 ? "<i8" : "|b1";
    if (!strstr(h, want)) { fclose(f); free(h); return oar_fail("wrong dtype (expected f32/i64/bool as the model was compiled)", path); }
    if (strstr(h, "'fortran_order': True")) { fclose(f); free(h); return oar_fail("fortran-order arrays are not supported", path); }
    /* Compared dimension by dimension as they are read: no fixed rank cap. */
    const char *s = strstr(h, "'shape': (");
    int rank = 0, ok = s != NULL;
    if (s) {
        s += 10;
        while (*s && *s != ')') {
            while (*s == ' ' || *s == ',') s++;
            if (*s == ')' || !*s) break;
            char *after;
            long long d = strtoll(s, &after, 10);
            if (after == s) { ok = 0; break; }
            s = after;
            if (rank >= io->rank || d != io->dims[rank]) ok = 0;
            rank++;
        }
    }
    free(h);
    ok = ok && rank == io->rank;
    if (!ok) {
        fclose(f);
        fprintf(stderr, "error: %s: shape does not match input `%s` [", path, io->name);
        for (int d = 0; d < io->rank; d++) fprintf(stderr, "%s%lld", d ? ", " : "", (long long)io->dims[d]);
        fprintf(stderr, "] (the model was compiled for this shape)\n");
        return 2;
    }
    int64_t bytes = oar_io_bytes(io);
    size_t got = fread(dst, 1, (size_t)bytes, f);
    fclose(f);
    return got == (size_t)bytes ? 0 : oar_fail("truncated data", path);
}

/* The header was written when packaging (the same encoder as oar's own .npy files). */
static int oar_write_npy(const char *path, const oar_io *io, const void *src) {
    FILE *f = fopen(path, "wb");
    if (!f) return oar_fail("cannot write", path);
    fwrite(io->npy_header, 1, (size_t)io->npy_header_len, f);
    fwrite(src, 1, (size_t)oar_io_bytes(io), f);
    return fclose(f) == 0 ? 0 : oar_fail("cannot write", path);
}

static int oar_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    /* argc bounds how many files can be named: no fixed cap. */
    const char **inputs = calloc((size_t)OAR_NUM_INPUTS + 1, sizeof(char *));
    const char **outputs = calloc((size_t)argc, sizeof(char *));
    void **in_data = calloc((size_t)OAR_NUM_INPUTS + 1, sizeof(void *));
    void **out_data = calloc((size_t)OAR_NUM_OUTPUTS + 1, sizeof(void *));
    if (!inputs || !outputs || !in_data || !out_data) return oar_fail("out of memory", NULL);
    const char *weights = NULL;
    int n_in = 0, n_out = 0, bench = 0, threads = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if ((!strcmp(a, "--input") || !strcmp(a, "-i")) && v) {
            const char *eq = strchr(v, '=');
            int slot = n_in++;
            if (eq) {
                for (int k = 0; k < OAR_NUM_INPUTS; k++)
                    if (strlen(OAR_INPUTS[k].name) == (size_t)(eq - v) && !strncmp(OAR_INPUTS[k].name, v, (size_t)(eq - v))) slot = k;
                v = eq + 1;
            }
            if (slot >= OAR_NUM_INPUTS) {
                fprintf(stderr, "error: more --input files than the model's %d inputs\n", OAR_NUM_INPUTS);
                return 2;
            }
            inputs[slot] = v;
            i++;
        } else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && v) {
            outputs[n_out++] = v;
            i++;
        } else if (!strcmp(a, "--bench") && v) {
            bench = atoi(v);
            i++;
        } else if (!strcmp(a, "--threads") && v) {
            char *end;
            long t = strtol(v, &end, 10);
            if (*end || t < 1 || t > INT_MAX) return oar_fail("--threads wants a positive integer", v);
            threads = (int)t;
            i++;
        } else if (!strcmp(a, "--weights") && v) {
            weights = v;
            i++;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: %s --input [NAME=]x.npy ... [-o y.npy ...] [--bench N] [--threads T] [--weights FILE]\ninputs:", argv[0]);
            for (int k = 0; k < OAR_NUM_INPUTS; k++) printf(" %s", OAR_INPUTS[k].name);
            printf("\n");
            return 0;
        } else {
            return oar_fail("unknown argument", a);
        }
    }
    for (int k = 0; k < OAR_NUM_INPUTS; k++) {
        if (!inputs[k]) {
            fprintf(stderr, "error: no value for input `%s` (pass --input %s=FILE.npy)\n", OAR_INPUTS[k].name, OAR_INPUTS[k].name);
            return 2;
        }
        in_data[k] = malloc((size_t)oar_io_bytes(&OAR_INPUTS[k]) + 1);
        if (!in_data[k]) return oar_fail("out of memory", OAR_INPUTS[k].name);
        int rc = oar_read_npy(inputs[k], &OAR_INPUTS[k], in_data[k]);
        if (rc) return rc;
    }
    if (n_out && n_out != OAR_NUM_OUTPUTS) {
        fprintf(stderr, "error: the model has %d outputs but %d -o files were given\n", OAR_NUM_OUTPUTS, n_out);
        return 2;
    }
    for (int k = 0; k < OAR_NUM_OUTPUTS; k++) {
        out_data[k] = malloc((size_t)oar_io_bytes(&OAR_OUTPUTS[k]) + 1);
        if (!out_data[k]) return oar_fail("out of memory", OAR_OUTPUTS[k].name);
    }
    oar_model *m = oar_model_create_threads(weights, threads);
    if (!m) return oar_fail(oar_model_last_error(), NULL);
    oar_model_run(m, (const void *const *)in_data, out_data);
    if (bench > 0) {
        double *ms = malloc(sizeof(double) * (size_t)bench);
        for (int r = 0; r < bench; r++) {
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            oar_model_run(m, (const void *const *)in_data, out_data);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            ms[r] = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
        }
        qsort(ms, (size_t)bench, sizeof(double), oar_cmp_double);
        printf("latency over %d runs (%d threads): p50 %.3f ms  p90 %.3f ms  p99 %.3f ms\n", bench, threads, ms[bench / 2],
               ms[(int)(bench * 0.9)], ms[(int)(bench * 0.99)]);
        free(ms);
    }
    for (int k = 0; k < OAR_NUM_OUTPUTS; k++) {
        if (n_out) {
            int rc = oar_write_npy(outputs[k], &OAR_OUTPUTS[k], out_data[k]);
            if (rc) return rc;
        } else if (!bench) {
            const oar_io *io = &OAR_OUTPUTS[k];
            printf("output %d (%s):", k, io->name);
            int64_t n = oar_io_bytes(io) / (io->dtype == 0 ? 4 : io->dtype == 1 ? 8 : 1);
            for (int64_t i = 0; i < n && i < 6; i++) {
                if (io->dtype == 0) printf(" %.6f", ((float *)out_data[k])[i]);
                else if (io->dtype == 1) printf(" %lld", (long long)((int64_t *)out_data[k])[i]);
            }
            printf("%s\n", n > 6 ? " ..." : "");
        }
    }
    oar_model_destroy(m);
    return 0;
}
#endif
