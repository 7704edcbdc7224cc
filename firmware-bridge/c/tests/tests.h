/* The unit test suites, run by test_main.c. */
#ifndef TESTS_H
#define TESTS_H

#include <stddef.h>

#include "tt.h"

extern const struct tt_case frame_tests[];
extern const size_t frame_tests_n;
extern const struct tt_case codec_tests[];
extern const size_t codec_tests_n;
extern const struct tt_case mcu_tests[];
extern const size_t mcu_tests_n;
extern const struct tt_case logic_tests[];
extern const size_t logic_tests_n;

#endif /* TESTS_H */
