/* The executor suite's caller of a packaged shared library, through its C API only:
 *   driver THREADS IN0.bin ... OUT0.bin BYTES0 ...
 * reads each input's raw bytes, runs the model twice (the second run must not depend on
 * what the first left in the buffers) and writes run r's output k to OUTk.bin.r. */
#include "libmodel.h"
#include <stdio.h>
#include <stdlib.h>

static void *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc((size_t)n + 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) { free(p); p = NULL; }
    fclose(f);
    return p;
}

int main(int argc, char **argv) {
    int ni = oar_model_num_inputs(), no = oar_model_num_outputs();
    if (argc != 2 + ni + 2 * no) { fprintf(stderr, "driver: want %d inputs and %d outputs\n", ni, no); return 2; }
    oar_model *m = oar_model_create_threads(NULL, atoi(argv[1]));
    if (!m) { fprintf(stderr, "driver: %s\n", oar_model_last_error()); return 3; }
    const void **ins = calloc((size_t)ni + 1, sizeof(void *));
    void **outs = calloc((size_t)no + 1, sizeof(void *));
    for (int i = 0; i < ni; i++)
        if (!(ins[i] = read_all(argv[2 + i]))) { fprintf(stderr, "driver: cannot read %s\n", argv[2 + i]); return 4; }
    for (int k = 0; k < no; k++) outs[k] = malloc((size_t)atol(argv[3 + ni + 2 * k]) + 1);
    for (int r = 1; r <= 2; r++) {
        if (oar_model_run(m, ins, outs) != 0) { fprintf(stderr, "driver: run %d failed\n", r); return 5; }
        for (int k = 0; k < no; k++) {
            char path[4096];
            snprintf(path, sizeof path, "%s.%d", argv[2 + ni + 2 * k], r);
            FILE *f = fopen(path, "wb");
            if (!f || fwrite(outs[k], 1, (size_t)atol(argv[3 + ni + 2 * k]), f) != (size_t)atol(argv[3 + ni + 2 * k])) return 6;
            fclose(f);
        }
    }
    oar_model_destroy(m);
    return 0;
}
