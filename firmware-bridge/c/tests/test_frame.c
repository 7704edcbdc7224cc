/* CRCs, frame encoding, check_frame and the receiver (resync, idle drop). */
#include <string.h>

#include "../sp_crc.h"
#include "../sp_frame.h"
#include "tests.h"

static const uint8_t check_str[] = "123456789";

static void crc_check_values(void)
{
    CHECK_EQ(sp_crc16(check_str, 9), 0x29B1);
    CHECK_EQ(sp_crc32(0, check_str, 9), 0xCBF43926u);
    CHECK_EQ(sp_crc32(sp_crc32(0, check_str, 4), check_str + 4, 5), 0xCBF43926u);
    CHECK_EQ(sp_crc16(check_str, 0), 0xFFFF);
    CHECK_EQ(sp_crc32(0, check_str, 0), 0);
}

static void encode_empty_frame(void)
{
    uint8_t f[SP_MAX_FRAME];
    size_t n = sp_frame_encode(f, 3, 1, NULL, 0);
    uint16_t crc = sp_crc16((const uint8_t[]){0x05, 0x33}, 2);

    CHECK_EQ(n, 5);
    CHECK_EQ(f[0], 5);
    CHECK_EQ(f[1], 0x33);
    CHECK_EQ(f[2], crc >> 8);
    CHECK_EQ(f[3], crc & 0xFF);
    CHECK_EQ(f[4], 0x7E);
}

static void encode_limits(void)
{
    uint8_t f[SP_MAX_FRAME], p[SP_MAX_PAYLOAD + 1];
    size_t n;

    memset(p, 0x7E, sizeof p);
    CHECK_EQ(sp_frame_encode(f, 0, 0, p, SP_MAX_PAYLOAD + 1), 0);
    n = sp_frame_encode(f, 17, 0, p, SP_MAX_PAYLOAD);
    CHECK_EQ(n, 64);
    CHECK_EQ(f[1], 0x11); /* seq modulo 16 */
    CHECK_EQ(f[63], 0x7E);
}

static void check_basic(void)
{
    uint8_t f[SP_MAX_FRAME];
    size_t n = sp_frame_encode(f, 0, 0, (const uint8_t[]){1, 2, 3}, 3), k = 99;

    CHECK_EQ(sp_frame_check(f, 0, 0, &k), SP_CHECK_MORE);
    for (k = 1; k < n; k++) {
        size_t m = 0;
        CHECK_EQ(sp_frame_check(f, k, 0, &m), SP_CHECK_MORE);
    }
    CHECK_EQ(sp_frame_check(f, n, 0, &k), SP_CHECK_FRAME);
    CHECK_EQ(k, n);
    CHECK_EQ(sp_frame_check(f, n, 1, &k), SP_CHECK_FRAME);
}

static void check_bad_len_discards_through_sync(void)
{
    const uint8_t b1[] = {0x04, 0x10, 0x00, 0x7E, 0x05};
    const uint8_t b2[] = {0x41, 0x10};
    const uint8_t b3[] = {0x7E, 0x7E};
    size_t n = 0;

    CHECK_EQ(sp_frame_check(b1, sizeof b1, 0, &n), SP_CHECK_DISCARD);
    CHECK_EQ(n, 4);
    CHECK_EQ(sp_frame_check(b2, sizeof b2, 0, &n), SP_CHECK_DISCARD);
    CHECK_EQ(n, 2); /* no 0x7E: everything */
    CHECK_EQ(sp_frame_check(b3, sizeof b3, 0, &n), SP_CHECK_DISCARD);
    CHECK_EQ(n, 1); /* a stray 0x7E at index 0 goes alone */
}

static void check_seq_byte_rules(void)
{
    size_t n = 0;
    const uint8_t nak[] = {0x05, 0x30};
    const uint8_t bit6[] = {0x05, 0x50};
    const uint8_t bit7[] = {0x05, 0x90};
    const uint8_t no4[] = {0x05, 0x00};

    CHECK_EQ(sp_frame_check(nak, 2, 0, &n), SP_CHECK_DISCARD); /* host may not NAK */
    CHECK_EQ(sp_frame_check(nak, 2, 1, &n), SP_CHECK_MORE);
    CHECK_EQ(sp_frame_check(bit6, 2, 1, &n), SP_CHECK_DISCARD);
    CHECK_EQ(sp_frame_check(bit7, 2, 1, &n), SP_CHECK_DISCARD);
    CHECK_EQ(sp_frame_check(no4, 2, 1, &n), SP_CHECK_DISCARD);
    CHECK(sp_frame_seq_ok(0x1F, 0));
    CHECK(!sp_frame_seq_ok(0x3F, 0));
    CHECK(sp_frame_seq_ok(0x3F, 1));
}

static void check_bad_sync_and_crc(void)
{
    uint8_t f[SP_MAX_FRAME + 3];
    size_t n = sp_frame_encode(f, 2, 0, (const uint8_t[]){9, 9}, 2), k = 0;

    f[n - 1] = 0x00;
    f[n] = 0x7E;
    CHECK_EQ(sp_frame_check(f, n + 1, 0, &k), SP_CHECK_DISCARD);
    CHECK_EQ(k, n + 1);
    n = sp_frame_encode(f, 2, 0, (const uint8_t[]){9, 9}, 2);
    f[2] ^= 1; /* payload hit: CRC fails */
    CHECK_EQ(sp_frame_check(f, n, 0, &k), SP_CHECK_DISCARD);
    CHECK_EQ(k, n);
}

struct got {
    size_t n;
    size_t lens[16];
    uint8_t seqs[16];
};

static void on_frame(void *ctx, const uint8_t *frame, size_t len)
{
    struct got *g = ctx;

    if (g->n < 16) {
        g->lens[g->n] = len;
        g->seqs[g->n] = frame[1];
    }
    g->n++;
}

static void rx_resync_after_garbage(void)
{
    uint8_t stream[200];
    size_t n = 0;
    struct sp_rx rx;
    struct got g = {0};

    stream[n++] = 0x33; /* garbage */
    stream[n++] = 0x7E;
    n += sp_frame_encode(stream + n, 1, 0, (const uint8_t[]){1}, 1);
    stream[n++] = 0x7E; /* stray sync */
    stream[n++] = 0x06; /* a length with a bad seq byte */
    stream[n++] = 0x70;
    stream[n++] = 0x7E;
    n += sp_frame_encode(stream + n, 2, 0, NULL, 0);
    sp_rx_init(&rx, 0);
    sp_rx_feed(&rx, stream, n, 0, on_frame, &g);
    CHECK_EQ(g.n, 2);
    CHECK_EQ(g.seqs[0], 0x11);
    CHECK_EQ(g.seqs[1], 0x12);
    CHECK_EQ(rx.discards, 3);
    CHECK_EQ(rx.discarded_bytes, 6);
    CHECK_EQ(rx.len, 0);
}

static void rx_byte_by_byte_and_max_frames(void)
{
    uint8_t stream[3 * SP_MAX_FRAME], p[SP_MAX_PAYLOAD];
    size_t n = 0, i;
    struct sp_rx rx;
    struct got g = {0};

    memset(p, 0x7E, sizeof p); /* sync bytes inside a payload are fine */
    n += sp_frame_encode(stream + n, 5, 0, p, sizeof p);
    n += sp_frame_encode(stream + n, 6, 0, p, sizeof p);
    n += sp_frame_encode(stream + n, 7, 0, p, 3);
    sp_rx_init(&rx, 0);
    for (i = 0; i < n; i++)
        sp_rx_feed(&rx, stream + i, 1, (uint32_t)i, on_frame, &g);
    CHECK_EQ(g.n, 3);
    CHECK_EQ(g.lens[0], 64);
    CHECK_EQ(g.lens[2], 8);
    CHECK_EQ(rx.discards, 0);
    g.n = 0;
    sp_rx_feed(&rx, stream, n, 1000, on_frame, &g); /* all at once */
    CHECK_EQ(g.n, 3);
}

static void rx_idle_drop(void)
{
    uint8_t f[SP_MAX_FRAME];
    size_t n = sp_frame_encode(f, 0, 0, (const uint8_t[]){1, 2, 3, 4}, 4);
    struct sp_rx rx;
    struct got g = {0};

    sp_rx_init(&rx, 0);
    sp_rx_feed(&rx, f, 3, 100, on_frame, &g);
    CHECK_EQ(sp_rx_idle(&rx, 100 + SP_RX_IDLE_MS), 0); /* more than 20 ms drops */
    CHECK_EQ(rx.len, 3);
    /* The rest arrives after the idle time: the start was dropped, the rest is garbage
     * up to its 0x7E; then a whole frame goes through. */
    sp_rx_feed(&rx, f + 3, n - 3, 100 + SP_RX_IDLE_MS + 1, on_frame, &g);
    CHECK_EQ(rx.idle_drops, 1);
    CHECK_EQ(g.n, 0);
    CHECK_EQ(rx.len, 0);
    sp_rx_feed(&rx, f, n, 200, on_frame, &g);
    CHECK_EQ(g.n, 1);
    /* A partial frame that keeps trickling in is not dropped. */
    sp_rx_feed(&rx, f, 1, 300, on_frame, &g);
    sp_rx_feed(&rx, f + 1, 1, 315, on_frame, &g);
    CHECK_EQ(sp_rx_idle(&rx, 335), 0);
    CHECK_EQ(sp_rx_idle(&rx, 336), 1);
    CHECK_EQ(rx.idle_drops, 2);
    CHECK_EQ(sp_rx_idle(&rx, 400), 0); /* nothing held */
}

static void rx_idle_across_clock_wrap(void)
{
    uint8_t f[SP_MAX_FRAME];
    size_t n = sp_frame_encode(f, 0, 0, NULL, 0);
    struct sp_rx rx;
    struct got g = {0};

    sp_rx_init(&rx, 0);
    sp_rx_feed(&rx, f, 2, 0xFFFFFFF0u, on_frame, &g);
    CHECK_EQ(sp_rx_idle(&rx, 0x00000004u), 0); /* 20 ms later */
    sp_rx_feed(&rx, f + 2, n - 2, 0x00000004u, on_frame, &g);
    CHECK_EQ(g.n, 1);
}

const struct tt_case frame_tests[] = {
    TT_CASE(crc_check_values),
    TT_CASE(encode_empty_frame),
    TT_CASE(encode_limits),
    TT_CASE(check_basic),
    TT_CASE(check_bad_len_discards_through_sync),
    TT_CASE(check_seq_byte_rules),
    TT_CASE(check_bad_sync_and_crc),
    TT_CASE(rx_resync_after_garbage),
    TT_CASE(rx_byte_by_byte_and_max_frames),
    TT_CASE(rx_idle_drop),
    TT_CASE(rx_idle_across_clock_wrap),
};
const size_t frame_tests_n = sizeof frame_tests / sizeof frame_tests[0];
