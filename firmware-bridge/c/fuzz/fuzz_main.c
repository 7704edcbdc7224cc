/* A standalone main for the fuzz target: runs LLVMFuzzerTestOneInput once for every file
 * named on the command line (the corpus replay, for compilers without libFuzzer). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_INPUT (1u << 20)

int main(int argc, char **argv)
{
    static uint8_t buf[MAX_INPUT];
    int i, runs = 0;

    for (i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        size_t n;

        if (!f) {
            fprintf(stderr, "fuzz-replay: cannot open %s\n", argv[i]);
            return 1;
        }
        n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, n);
        runs++;
    }
    printf("fuzz-replay: %d passed, 0 failed\n", runs);
    return 0;
}
