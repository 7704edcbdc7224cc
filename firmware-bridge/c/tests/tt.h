/* A tiny test runner: TEST functions, CHECK macros that end the test at the first failure,
 * and tt_run() that prints one line per failure and "N passed, N failed" at the end. */
#ifndef TT_H
#define TT_H

#include <stddef.h>

struct tt_case {
    const char *name;
    void (*fn)(void);
};

void tt_fail(const char *file, int line, const char *what, long long a, long long b);
int tt_failed_now(void);
int tt_run(const char *suite, const struct tt_case *cases, size_t n);

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            tt_fail(__FILE__, __LINE__, #cond, 0, 0);                                  \
            return;                                                                    \
        }                                                                              \
    } while (0)

#define CHECK_EQ(a, b)                                                                 \
    do {                                                                               \
        long long tt_a_ = (long long)(a), tt_b_ = (long long)(b);                      \
        if (tt_a_ != tt_b_) {                                                          \
            tt_fail(__FILE__, __LINE__, #a " == " #b, tt_a_, tt_b_);                   \
            return;                                                                    \
        }                                                                              \
    } while (0)

/* For helpers that CHECK: return from the caller too if the helper failed. */
#define CHECK_OK(call)                                                                 \
    do {                                                                               \
        call;                                                                          \
        if (tt_failed_now())                                                           \
            return;                                                                    \
    } while (0)

#define TT_CASE(fn) { #fn, fn }

#endif /* TT_H */
