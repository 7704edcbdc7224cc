/* Runs the unit test suites; also checks the generated dictionary against dictionary.json
 * (DICTIONARY_JSON is its path, given by the Makefile). */
#include <stdio.h>
#include <string.h>

#include "../sp_dictionary.h"
#include "tests.h"

#ifndef DICTIONARY_JSON
#define DICTIONARY_JSON "../dictionary.json"
#endif

static void generated_dictionary_is_current(void)
{
    static unsigned char buf[SP_DICT_JSON_LEN + 1];
    FILE *f = fopen(DICTIONARY_JSON, "rb");
    size_t n;

    CHECK(f != NULL);
    n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    CHECK_EQ(n, SP_DICT_JSON_LEN);
    CHECK(memcmp(buf, sp_dict_json, n) == 0);
}

static const struct tt_case main_tests[] = {
    TT_CASE(generated_dictionary_is_current),
};

int main(void)
{
    int failed = 0;

    failed |= tt_run("dictionary", main_tests, sizeof main_tests / sizeof main_tests[0]);
    failed |= tt_run("frame", frame_tests, frame_tests_n);
    failed |= tt_run("codec", codec_tests, codec_tests_n);
    failed |= tt_run("mcu", mcu_tests, mcu_tests_n);
    failed |= tt_run("logic", logic_tests, logic_tests_n);
    return failed;
}
