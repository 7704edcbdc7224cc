#include "tt.h"

#include <stdio.h>

static int current_failed;

void tt_fail(const char *file, int line, const char *what, long long a, long long b)
{
    current_failed = 1;
    if (a == b)
        printf("    %s:%d: check failed: %s\n", file, line, what);
    else
        printf("    %s:%d: check failed: %s (%lld != %lld)\n", file, line, what, a, b);
}

int tt_failed_now(void)
{
    return current_failed;
}

int tt_run(const char *suite, const struct tt_case *cases, size_t n)
{
    size_t i, passed = 0, failed = 0;

    for (i = 0; i < n; i++) {
        current_failed = 0;
        cases[i].fn();
        if (current_failed) {
            printf("FAIL %s: %s\n", suite, cases[i].name);
            failed++;
        } else {
            passed++;
        }
    }
    printf("%s: %zu passed, %zu failed\n", suite, passed, failed);
    return failed ? 1 : 0;
}
