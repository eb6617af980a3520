/* The standalone executable's front end: `--input [NAME=]x.npy ... -o y.npy ... [--bench N]
 * [--threads T] [--weights FILE]`, the same flags as `oar run`. */
#ifdef OAR_MAIN
#include <errno.h>

/* Limits of the front end. A .npy header is a short dictionary: numpy's own writer stays
 * under 64 KiB for any rank this executable can have (checked when packaging), so 1 MiB is
 * a generous cap that keeps a corrupt 32-bit length from allocating 4 GiB. */
#define OAR_NPY_MAX_HEADER (1L << 20)
#define OAR_MAX_BENCH 1000000

static int oar_fail(const char *msg, const char *arg) {
    fprintf(stderr, "error: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    return 2;
}

/* A file's error: the path first, as oar's own reader words it. */
static int oar_file_fail(const char *path, const char *msg) {
    fprintf(stderr, "error: %s: %s\n", path, msg);
    return 2;
}

static const char *oar_dtype_descr(int dtype) { return dtype == 0 ? "<f4" : dtype == 1 ? "<i8" : "|b1"; }
static const char *oar_dtype_name(int dtype) { return dtype == 0 ? "f32" : dtype == 1 ? "i64" : "bool"; }

/* The quoted value of `'key':` in a .npy header dictionary, copied into out (at most cap
 * bytes with the NUL); 0 when the key is missing, the value unquoted or too long. */
static int oar_npy_str_field(const char *h, const char *key, char *out, size_t cap) {
    const char *s = strstr(h, key);
    if (!s) return 0;
    s += strlen(key);
    while (*s == ' ') s++;
    if (*s != ':') return 0;
    s++;
    while (*s == ' ') s++;
    char q = *s;
    if (q != '\'' && q != '"') return 0;
    const char *e = strchr(s + 1, q);
    if (!e || (size_t)(e - s - 1) >= cap) return 0;
    memcpy(out, s + 1, (size_t)(e - s - 1));
    out[e - s - 1] = 0;
    return 1;
}

static void oar_print_shape(const oar_io *io) {
    fprintf(stderr, "[");
    for (int d = 0; d < io->rank; d++) fprintf(stderr, "%s%lld", d ? ", " : "", (long long)io->dims[d]);
    fprintf(stderr, "]");
}

/* Reads a .npy of the expected dtype and shape from f into dst (`path` names it in errors):
 * 0, or 2 after printing what is wrong. Every length read from the file is checked before
 * it is used. */
static int oar_read_npy_from(FILE *f, const char *path, const oar_io *io, void *dst) {
    unsigned char magic[10];
    if (fread(magic, 1, 10, f) != 10 || memcmp(magic, "\x93NUMPY", 6) != 0) return oar_file_fail(path, "not a .npy file (bad magic bytes)");
    if (magic[6] < 1 || magic[6] > 3) {
        fprintf(stderr, "error: %s: unsupported .npy version %d (1, 2 and 3 are read)\n", path, magic[6]);
        return 2;
    }
    unsigned long hlen = magic[8] | ((unsigned long)magic[9] << 8);
    if (magic[6] >= 2) {
        unsigned char more[2];
        if (fread(more, 1, 2, f) != 2) return oar_file_fail(path, "truncated .npy header");
        hlen |= ((unsigned long)more[0] << 16) | ((unsigned long)more[1] << 24);
    }
    if (hlen > (unsigned long)OAR_NPY_MAX_HEADER) {
        fprintf(stderr, "error: %s: .npy header of %lu bytes is over the %ld-byte limit (corrupt file?)\n", path, hlen, OAR_NPY_MAX_HEADER);
        return 2;
    }
    char *h = calloc(hlen + 1, 1);
    if (!h) return oar_file_fail(path, "out of memory");
    if (fread(h, 1, hlen, f) != hlen) {
        free(h);
        return oar_file_fail(path, "truncated .npy header");
    }
    if (strlen(h) != hlen) {
        free(h);
        return oar_file_fail(path, "the .npy header holds a NUL byte");
    }
    char descr[16];
    if (!oar_npy_str_field(h, "'descr'", descr, sizeof descr)) {
        free(h);
        return oar_file_fail(path, "the .npy header has no readable 'descr'");
    }
    if (strcmp(descr, oar_dtype_descr(io->dtype)) != 0) {
        fprintf(stderr, "error: %s: dtype '%s' does not match input `%s`, compiled for %s ('%s')\n", path, descr, io->name,
                oar_dtype_name(io->dtype), oar_dtype_descr(io->dtype));
        free(h);
        return 2;
    }
    const char *fo = strstr(h, "'fortran_order':");
    if (!fo || strncmp(fo + 16 + strspn(fo + 16, " "), "False", 5) != 0) {
        free(h);
        return oar_file_fail(path, "only C-order arrays are read ('fortran_order' must be False)");
    }
    /* Compared dimension by dimension as they are read: no fixed rank cap. */
    const char *s = strstr(h, "'shape':");
    int rank = 0, ok = 0;
    if (s) {
        s += 8;
        s += strspn(s, " ");
        ok = *s == '(';
        if (ok) s++;
        while (ok && *s && *s != ')') {
            s += strspn(s, " ,");
            if (*s == ')' || !*s) break;
            char *after;
            errno = 0;
            long long d = strtoll(s, &after, 10);
            if (after == s || errno == ERANGE) {
                ok = 0;
                break;
            }
            s = after;
            if (rank >= io->rank || d != io->dims[rank]) ok = 0;
            rank++;
        }
        ok = ok && *s == ')';
    }
    free(h);
    if (!ok || rank != io->rank) {
        fprintf(stderr, "error: %s: shape does not match input `%s` ", path, io->name);
        oar_print_shape(io);
        fprintf(stderr, " (the model was compiled for this shape)\n");
        return 2;
    }
    int64_t bytes = oar_io_bytes(io);
    size_t got = fread(dst, 1, (size_t)bytes, f);
    if (got != (size_t)bytes) {
        fprintf(stderr, "error: %s: truncated data: %lld of %lld bytes\n", path, (long long)got, (long long)bytes);
        return 2;
    }
    if (fgetc(f) != EOF) return oar_file_fail(path, "data continues after the array (the header's shape is wrong?)");
    return 0;
}

static int oar_read_npy(const char *path, const oar_io *io, void *dst) {
    FILE *f = fopen(path, "rb");
    if (!f) return oar_file_fail(path, "cannot open");
    int rc = oar_read_npy_from(f, path, io, dst);
    fclose(f);
    return rc;
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

/* The command line, parsed. `inputs` has one slot per model input, `outputs` room for argc. */
typedef struct {
    const char **inputs;
    const char **outputs;
    int n_out, bench, threads, help;
    const char *weights;
} oar_cli;

static int oar_print_input_names(void) {
    for (int k = 0; k < OAR_NUM_INPUTS; k++) fprintf(stderr, "%s%s", k ? ", " : "", OAR_INPUTS[k].name);
    return 0;
}

/* A positive integer flag value in [1, max], or -1. */
static long oar_parse_count(const char *v, long max) {
    char *end;
    errno = 0;
    long t = strtol(v, &end, 10);
    return (*v && !*end && errno == 0 && t >= 1 && t <= max) ? t : -1;
}

/* Parses argv into cli: 0, or 2 after printing what is wrong. Allocates nothing. */
static int oar_parse_args(int argc, char **argv, oar_cli *cli) {
    int next_positional = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int takes_value = !strcmp(a, "--input") || !strcmp(a, "-i") || !strcmp(a, "-o") || !strcmp(a, "--output") ||
                          !strcmp(a, "--bench") || !strcmp(a, "--threads") || !strcmp(a, "--weights");
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            cli->help = 1;
            return 0;
        }
        if (!takes_value) return oar_fail("unknown argument", a);
        if (i + 1 >= argc) {
            fprintf(stderr, "error: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--input") || !strcmp(a, "-i")) {
            const char *eq = strchr(v, '=');
            int slot = -1;
            if (eq) {
                for (int k = 0; k < OAR_NUM_INPUTS; k++)
                    if (strlen(OAR_INPUTS[k].name) == (size_t)(eq - v) && !strncmp(OAR_INPUTS[k].name, v, (size_t)(eq - v))) slot = k;
                if (slot < 0) {
                    fprintf(stderr, "error: the model has no input `%.*s` (its inputs: ", (int)(eq - v), v);
                    oar_print_input_names();
                    fprintf(stderr, ")\n");
                    return 2;
                }
                v = eq + 1;
            } else {
                while (next_positional < OAR_NUM_INPUTS && cli->inputs[next_positional]) next_positional++;
                slot = next_positional;
                if (slot >= OAR_NUM_INPUTS) {
                    fprintf(stderr, "error: more --input files than the model's %d inputs (", OAR_NUM_INPUTS);
                    oar_print_input_names();
                    fprintf(stderr, ")\n");
                    return 2;
                }
            }
            if (cli->inputs[slot]) {
                fprintf(stderr, "error: input `%s` is given twice\n", OAR_INPUTS[slot].name);
                return 2;
            }
            if (!*v) return oar_fail("--input wants a file name", OAR_INPUTS[slot].name);
            cli->inputs[slot] = v;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            cli->outputs[cli->n_out++] = v;
        } else if (!strcmp(a, "--bench")) {
            long n = oar_parse_count(v, OAR_MAX_BENCH);
            if (n < 0) {
                fprintf(stderr, "error: --bench wants a run count from 1 to %d: %s\n", OAR_MAX_BENCH, v);
                return 2;
            }
            cli->bench = (int)n;
        } else if (!strcmp(a, "--threads")) {
            long t = oar_parse_count(v, 4096);
            if (t < 0) return oar_fail("--threads wants an integer from 1 to 4096", v);
            cli->threads = (int)t;
        } else {
            cli->weights = v;
        }
    }
    for (int k = 0; k < OAR_NUM_INPUTS; k++)
        if (!cli->inputs[k]) {
            fprintf(stderr, "error: no value for input `%s` (pass --input %s=FILE.npy)\n", OAR_INPUTS[k].name, OAR_INPUTS[k].name);
            return 2;
        }
    if (cli->n_out && cli->n_out != OAR_NUM_OUTPUTS) {
        fprintf(stderr, "error: the model has %d outputs but %d -o files were given\n", OAR_NUM_OUTPUTS, cli->n_out);
        return 2;
    }
    return 0;
}

int main(int argc, char **argv) {
    /* argc bounds how many files can be named: no fixed cap. */
    oar_cli cli = {0};
    cli.threads = 2;
    cli.inputs = calloc((size_t)OAR_NUM_INPUTS + 1, sizeof(char *));
    cli.outputs = calloc((size_t)argc, sizeof(char *));
    void **in_data = calloc((size_t)OAR_NUM_INPUTS + 1, sizeof(void *));
    void **out_data = calloc((size_t)OAR_NUM_OUTPUTS + 1, sizeof(void *));
    if (!cli.inputs || !cli.outputs || !in_data || !out_data) return oar_fail("out of memory", NULL);
    int rc = oar_parse_args(argc, argv, &cli);
    if (rc) return rc;
    if (cli.help) {
        printf("usage: %s --input [NAME=]x.npy ... [-o y.npy ...] [--bench N] [--threads T] [--weights FILE]\ninputs:", argv[0]);
        for (int k = 0; k < OAR_NUM_INPUTS; k++) printf(" %s", OAR_INPUTS[k].name);
        printf("\n");
        return 0;
    }
    const char **outputs = cli.outputs;
    const char *weights = cli.weights;
    int n_out = cli.n_out, bench = cli.bench, threads = cli.threads;
    for (int k = 0; k < OAR_NUM_INPUTS; k++) {
        in_data[k] = malloc((size_t)oar_io_bytes(&OAR_INPUTS[k]) + 1);
        if (!in_data[k]) return oar_fail("out of memory", OAR_INPUTS[k].name);
        rc = oar_read_npy(cli.inputs[k], &OAR_INPUTS[k], in_data[k]);
        if (rc) return rc;
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
        if (!ms) return oar_fail("out of memory (--bench timings)", NULL);
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
            rc = oar_write_npy(outputs[k], &OAR_OUTPUTS[k], out_data[k]);
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
