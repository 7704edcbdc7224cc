/* LEB128, zigzag and the message codec over the generated dictionary. */
#include <string.h>

#include "../sp_codec.h"
#include "../sp_frame.h"
#include "tests.h"

static int leb(const uint8_t *b, size_t n, uint32_t *v)
{
    const uint8_t *p = b;
    int r = sp_leb_get(&p, b + n, v);

    return r == 0 && (size_t)(p - b) == n ? 0 : -1;
}

static void leb_canonical_values(void)
{
    static const struct {
        uint32_t v;
        uint8_t n;
        uint8_t b[5];
    } cases[] = {
        {0, 1, {0x00}},
        {1, 1, {0x01}},
        {127, 1, {0x7F}},
        {128, 2, {0x80, 0x01}},
        {300, 2, {0xAC, 0x02}},
        {16383, 2, {0xFF, 0x7F}},
        {16384, 3, {0x80, 0x80, 0x01}},
        {0x0FFFFFFFu, 4, {0xFF, 0xFF, 0xFF, 0x7F}},
        {0x10000000u, 5, {0x80, 0x80, 0x80, 0x80, 0x01}},
        {0xFFFFFFFFu, 5, {0xFF, 0xFF, 0xFF, 0xFF, 0x0F}},
    };
    size_t i;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t out[5];
        uint32_t v = 0;

        CHECK_EQ(sp_leb_put(out, cases[i].v), cases[i].n);
        CHECK(memcmp(out, cases[i].b, cases[i].n) == 0);
        CHECK_EQ(leb(cases[i].b, cases[i].n, &v), 0);
        CHECK_EQ(v, cases[i].v);
    }
}

static void leb_rejects_non_canonical(void)
{
    uint32_t v;

    CHECK_EQ(leb((const uint8_t[]){0x80, 0x00}, 2, &v), -1);            /* padded 0 */
    CHECK_EQ(leb((const uint8_t[]){0x81, 0x80, 0x00}, 3, &v), -1);      /* padded 1 */
    CHECK_EQ(leb((const uint8_t[]){0xFF, 0xFF, 0xFF, 0xFF, 0x10}, 5, &v), -1); /* > 32 bits */
    CHECK_EQ(leb((const uint8_t[]){0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, 6, &v), -1);
    CHECK_EQ(leb((const uint8_t[]){0x80, 0x80, 0x80, 0x80, 0x00}, 5, &v), -1);
    CHECK_EQ(leb((const uint8_t[]){0x80}, 1, &v), -1);                  /* truncated */
    CHECK_EQ(leb((const uint8_t[]){0}, 0, &v), -1);
}

static void zigzag_values(void)
{
    CHECK_EQ(sp_zigzag(0), 0);
    CHECK_EQ(sp_zigzag(-1), 1);
    CHECK_EQ(sp_zigzag(1), 2);
    CHECK_EQ(sp_zigzag(-2), 3);
    CHECK_EQ(sp_zigzag(2147483647), 0xFFFFFFFEu);
    CHECK_EQ(sp_zigzag(-2147483647 - 1), 0xFFFFFFFFu);
    CHECK_EQ(sp_unzigzag(0xFFFFFFFFu), -2147483647LL - 1);
    CHECK_EQ(sp_unzigzag(0xFFFFFFFEu), 2147483647);
    CHECK_EQ(sp_unzigzag(3), -2);
    CHECK_EQ(sp_i32(0x80000000u), -2147483647LL - 1);
    CHECK_EQ(sp_i32(0xFFFFFFFFu), -1);
}

static void dictionary_table(void)
{
    const struct sp_msg_def *d = sp_msg_by_name("set_relay");

    CHECK(d != NULL);
    CHECK_EQ(d->id, SP_ID_SET_RELAY);
    CHECK_EQ(d->nargs, 3);
    CHECK_EQ(d->types[SP_A_SET_RELAY_CHANNEL], SP_T_U8);
    CHECK(strcmp(d->arg_names[SP_A_SET_RELAY_ON], "on") == 0);
    CHECK_EQ(sp_msg_by_id(0)->id, 0);
    CHECK(strcmp(sp_msg_by_id(1)->name, "identify_response") == 0);
    CHECK(sp_msg_by_id(99) == NULL);
    CHECK(sp_msg_by_name("nope") == NULL);
    CHECK_EQ(SP_N_INPUTS, SP_DICT_MAX_ARGS);
}

static void encode_decode_heartbeat(void)
{
    uint8_t b[SP_MAX_PAYLOAD];
    const uint32_t args[] = {7, 1700000000u, (uint32_t)-60};
    struct sp_msg m;
    size_t n = sp_msg_encode(b, sizeof b, &sp_dict_messages[SP_M_HEARTBEAT], args, NULL);
    size_t used = 0;

    /* id 10, tag 7, 1700000000 = 0x6553F100, -60 zigzag 119 */
    CHECK_EQ(n, 1 + 1 + 5 + 1);
    CHECK_EQ(b[0], 10);
    CHECK_EQ(b[1], 7);
    CHECK_EQ(b[2], 0x80);
    CHECK_EQ(b[7], 119);
    CHECK_EQ(sp_msg_decode(b, n, SP_DIR_ANY, &used, &m), SP_DEC_OK);
    CHECK_EQ(used, n);
    CHECK_EQ(m.v[2], (uint32_t)-60);
    CHECK_EQ(sp_i32(m.v[2]), -60);
}

static void decode_range_checks(void)
{
    struct sp_msg m;
    size_t used = 0;
    /* set_level tag=%c: 256 does not fit */
    const uint8_t tag256[] = {12, 0x80, 0x02, 5};
    const uint8_t tag255[] = {12, 0xFF, 0x01, 5};
    /* config_schedule minute=%hu: 65536 does not fit, 65535 does */
    const uint8_t min65536[] = {6, 0, 0x80, 0x80, 0x04, 0};
    const uint8_t min65535[] = {6, 0, 0xFF, 0xFF, 0x03, 0};

    CHECK_EQ(sp_msg_decode(tag256, sizeof tag256, SP_DIR_ANY, &used, &m), SP_DEC_MALFORMED);
    CHECK_EQ(sp_msg_decode(tag255, sizeof tag255, SP_DIR_ANY, &used, &m), SP_DEC_OK);
    CHECK_EQ(sp_msg_decode(min65536, sizeof min65536, SP_DIR_ANY, &used, &m), SP_DEC_MALFORMED);
    CHECK_EQ(sp_msg_decode(min65535, sizeof min65535, SP_DIR_ANY, &used, &m), SP_DEC_OK);
    CHECK_EQ(m.v[1], 65535);
}

static void decode_truncated_and_unknown(void)
{
    struct sp_msg m;
    size_t used = 0;
    const uint8_t short_args[] = {11, 1, 2};          /* set_relay missing "on" */
    const uint8_t bytes_past[] = {1, 0, 5, 'a', 'b'}; /* identify_response data */
    const uint8_t unknown[] = {0x7F, 1, 2};
    const uint8_t bad_id[] = {0x80, 0x00};

    CHECK_EQ(sp_msg_decode(short_args, sizeof short_args, SP_DIR_ANY, &used, &m), SP_DEC_MALFORMED);
    CHECK_EQ(sp_msg_decode(bytes_past, sizeof bytes_past, SP_DIR_ANY, &used, &m), SP_DEC_MALFORMED);
    CHECK_EQ(sp_msg_decode(unknown, sizeof unknown, SP_DIR_ANY, &used, &m), SP_DEC_UNKNOWN);
    CHECK_EQ(m.v[0], 0x7F);
    CHECK_EQ(sp_msg_decode(bad_id, sizeof bad_id, SP_DIR_ANY, &used, &m), SP_DEC_MALFORMED);
    CHECK_EQ(sp_msg_decode(bad_id, 0, SP_DIR_ANY, &used, &m), SP_DEC_MALFORMED);
}

static void decode_direction(void)
{
    struct sp_msg m;
    size_t used = 0;
    const uint8_t status_trunc[] = {0x21, 0x00}; /* a response, truncated */
    const uint8_t heartbeat[] = {0x0A, 0x01, 0x00, 0x01};

    /* The wrong direction is unknown, before its arguments are looked at. */
    CHECK_EQ(sp_msg_decode(status_trunc, 2, SP_DIR_HOST, &used, &m), SP_DEC_UNKNOWN);
    CHECK_EQ(m.v[0], 0x21);
    CHECK_EQ(sp_msg_decode(status_trunc, 2, SP_DIR_MCU, &used, &m), SP_DEC_MALFORMED);
    CHECK_EQ(sp_msg_decode(heartbeat, 4, SP_DIR_MCU, &used, &m), SP_DEC_UNKNOWN);
    CHECK_EQ(sp_msg_decode(heartbeat, 4, SP_DIR_HOST, &used, &m), SP_DEC_OK);
}

static void bytes_argument(void)
{
    uint8_t b[SP_MAX_PAYLOAD];
    const uint8_t data[] = {'{', '"', 'a'};
    const uint32_t args[] = {1000, 3};
    struct sp_msg m;
    size_t used = 0;
    size_t n = sp_msg_encode(b, sizeof b, &sp_dict_messages[SP_M_IDENTIFY_RESPONSE], args,
                             data);

    CHECK_EQ(n, 1 + 2 + 1 + 3);
    CHECK_EQ(sp_msg_decode(b, n, SP_DIR_ANY, &used, &m), SP_DEC_OK);
    CHECK_EQ(m.v[1], 3);
    CHECK(m.data == b + 4);
    CHECK(memcmp(m.data, data, 3) == 0);
}

static void encode_limits(void)
{
    uint8_t b[8];
    const uint32_t too_big[] = {256, 1};
    const uint32_t ok[] = {0xFFFFFFFFu, 3};

    CHECK_EQ(sp_msg_encode(b, sizeof b, &sp_dict_messages[SP_M_SET_LEVEL], too_big, NULL), 0);
    /* identify: 1 + 5 + 1 bytes fits 8, not 6 */
    CHECK_EQ(sp_msg_encode(b, sizeof b, &sp_dict_messages[SP_M_IDENTIFY], ok, NULL), 7);
    CHECK_EQ(sp_msg_encode(b, 6, &sp_dict_messages[SP_M_IDENTIFY], ok, NULL), 0);
    CHECK_EQ(sp_msg_encode(b, 0, &sp_dict_messages[SP_M_IDENTIFY], ok, NULL), 0);
    /* identify_response: the %*s bytes must fit too. */
    CHECK_EQ(sp_msg_encode(b, sizeof b, &sp_dict_messages[SP_M_IDENTIFY_RESPONSE],
                           (const uint32_t[]){0, 6}, (const uint8_t *)"abcdef"), 0);
    CHECK_EQ(sp_msg_encode(b, sizeof b, &sp_dict_messages[SP_M_IDENTIFY_RESPONSE],
                           (const uint32_t[]){0, 5}, (const uint8_t *)"abcde"), 8);
}

static void round_trip_every_message(void)
{
    size_t i, j;

    for (i = 0; i < SP_DICT_MESSAGES; i++) {
        const struct sp_msg_def *d = &sp_dict_messages[i];
        uint32_t v[SP_DICT_MAX_ARGS];
        const uint8_t data[4] = {1, 2, 3, 4};
        uint8_t b[SP_MAX_PAYLOAD];
        struct sp_msg m;
        size_t n, used = 0;

        for (j = 0; j < d->nargs; j++)
            v[j] = d->types[j] == SP_T_U8 ? 200u
                 : d->types[j] == SP_T_U16 ? 60000u
                 : d->types[j] == SP_T_BYTES ? 4u
                 : d->types[j] == SP_T_I32 ? (uint32_t)-123456 : 4000000000u;
        n = sp_msg_encode(b, sizeof b, d, v, data);
        CHECK(n > 0);
        CHECK_EQ(sp_msg_decode(b, n, SP_DIR_ANY, &used, &m), SP_DEC_OK);
        CHECK_EQ(used, n);
        CHECK(m.def == d);
        for (j = 0; j < d->nargs; j++)
            CHECK_EQ(m.v[j], v[j]);
    }
}

const struct tt_case codec_tests[] = {
    TT_CASE(leb_canonical_values),
    TT_CASE(leb_rejects_non_canonical),
    TT_CASE(zigzag_values),
    TT_CASE(dictionary_table),
    TT_CASE(encode_decode_heartbeat),
    TT_CASE(decode_range_checks),
    TT_CASE(decode_truncated_and_unknown),
    TT_CASE(decode_direction),
    TT_CASE(bytes_argument),
    TT_CASE(encode_limits),
    TT_CASE(round_trip_every_message),
};
const size_t codec_tests_n = sizeof codec_tests / sizeof codec_tests[0];
