/* libFuzzer harness for the packaged executable's front end (codegen/src/package): its
 * .npy reader and its argument parser, compiled from the same runtime.c and main.c that
 * every packaged model is built from, against the tables of a small three-input model.
 *
 *   clang-22 -g -O1 -fsanitize=fuzzer,address,undefined -I codegen/src/package fuzz/c/npy_fuzz.c
 *   cc -DOAR_FUZZ_STANDALONE -fsanitize=address,undefined ... (replays files: the regression test)
 *
 * Input: the first byte picks the case. 0-2: the rest is a .npy file read as input 0 (x, f32
 * [2,3]), 1 (ids, i64 [4]) or 2 (flag, bool, rank 0); 3: the rest is an argument vector,
 * NUL-separated, given to the argument parser. */
#define _GNU_SOURCE
#include "runtime.c"

static const int64_t X_DIMS[] = {2, 3};
static const int64_t IDS_DIMS[] = {4};
static const int64_t Y_DIMS[] = {2, 3};
const oar_buffer OAR_BUFFERS[] = {{24, OAR_INPUT, 0, 0}, {32, OAR_INPUT, 0, 1}, {1, OAR_INPUT, 0, 2}, {24, OAR_TEMP, 0, 3}};
const int OAR_NUM_BUFFERS = 4;
const oar_step OAR_STEPS[] = {{0, 0, 0, 0, 1}};
const int OAR_NUM_STEPS = 0;
const int OAR_PROLOGUE_STEPS = 0;
const int OAR_STEP_ARGS[] = {0};
const int OAR_NUM_STEP_ARGS = 0;
const oar_kernel OAR_KERNELS[] = {0};
const oar_io OAR_INPUTS[] = {
    {0, 0, 2, X_DIMS, "x", 0, 0},
    {1, 1, 1, IDS_DIMS, "ids", 0, 0},
    {2, 2, 0, 0, "flag", 0, 0},
};
const int OAR_NUM_INPUTS = 3;
const oar_io OAR_OUTPUTS[] = {{3, 0, 2, Y_DIMS, "y", 0, 0}};
const int OAR_NUM_OUTPUTS = 1;
const int64_t OAR_SCRATCH_BYTES = 0;
const int64_t OAR_WEIGHT_BYTES = 0;
const unsigned char OAR_CONSTS[] = {0};
const unsigned char *const OAR_EMBEDDED_WEIGHTS = 0;
const char OAR_WEIGHTS_FILE[] = "";

#define OAR_MAIN 1
#define main oar_executable_main
#include "main.c"
#undef main

/* More arguments than this add nothing the parser has not seen. */
#define FUZZ_MAX_ARGS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int which = data[0] % 4;
    data++;
    size--;
    if (which < 3) {
        /* An exact-size copy: ASan sees any read past the file's bytes. */
        unsigned char *copy = malloc(size ? size : 1);
        if (!copy) return 0;
        memcpy(copy, data, size);
        FILE *f = fmemopen(copy, size, "rb");
        if (f) {
            const oar_io *io = &OAR_INPUTS[which];
            void *dst = malloc((size_t)oar_io_bytes(io));
            if (dst) oar_read_npy_from(f, "fuzz.npy", io, dst);
            free(dst);
            fclose(f);
        }
        free(copy);
        return 0;
    }
    char *text = malloc(size + 1);
    char *argv[FUZZ_MAX_ARGS + 2];
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    int argc = 0;
    argv[argc++] = "model";
    for (size_t at = 0; at <= size && argc <= FUZZ_MAX_ARGS; at += strlen(text + at) + 1) argv[argc++] = text + at;
    argv[argc] = NULL;
    oar_cli cli = {0};
    cli.threads = 2;
    const char *inputs[4] = {0};
    const char **outputs = calloc((size_t)argc, sizeof(char *));
    cli.inputs = inputs;
    cli.outputs = outputs;
    if (outputs) oar_parse_args(argc, argv, &cli);
    free(outputs);
    free(text);
    return 0;
}

#ifdef OAR_FUZZ_STANDALONE
/* Replays the files named on the command line (no libFuzzer): the regression test. */
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) return oar_fail("cannot open", argv[i]);
        unsigned char *buf = NULL;
        size_t n = 0, cap = 0, got;
        unsigned char chunk[4096];
        while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
            if (n + got > cap) {
                cap = (n + got) * 2;
                unsigned char *more = realloc(buf, cap);
                if (!more) return oar_fail("out of memory", argv[i]);
                buf = more;
            }
            memcpy(buf + n, chunk, got);
            n += got;
        }
        fclose(f);
        LLVMFuzzerTestOneInput(buf, n);
        free(buf);
    }
    printf("replayed %d inputs\n", argc - 1);
    return 0;
}
#endif
