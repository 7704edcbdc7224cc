/* One fuzz target for the frame decoder, the message decoder and the MCU's whole receive
 * path. libFuzzer calls LLVMFuzzerTestOneInput (make fuzz, with clang); fuzz_main.c calls
 * it for each corpus file (the replay, with gcc). Any broken invariant aborts.
 *
 * The input is used three ways:
 *  1. as a byte stream for check_frame (both directions): every frame found must encode
 *     back to the same bytes;
 *  2. as a payload for the message decoder (every direction): every message decoded must
 *     encode back to the same bytes (LEB128 is canonical);
 *  3. as a script for an MCU, so that mutations get past the frame CRC: records of
 *       op = b & 7
 *       0, 7  payload: n = next % 60, then n bytes, sent in a frame with the expected seq
 *       1     the same with seq = b >> 4 (out of sequence, usually)
 *       2     tick after next * 4 ms
 *       3     input field (b >> 3) % 9 = the next 4 bytes, little-endian
 *       4     raw bytes: n = next % 64, then n bytes, one chunk
 *       5     raw bytes as 4 but one byte per ms
 *       6     tick after (next two bytes) * 100 ms
 *     and finally the whole input once more as raw bytes to a fresh MCU.
 *     Everything the MCU sends must be whole valid MCU frames holding at most one
 *     response message each, and its outputs must stay in range. */
#include <stdlib.h>
#include <string.h>

#include "../sp_codec.h"
#include "../sp_frame.h"
#include "../sp_mcu.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond))                                                                   \
            abort();                                                                   \
    } while (0)

static void frames_round_trip(const uint8_t *data, size_t size, int from_mcu)
{
    size_t pos = 0, n = 0;

    while (pos < size) {
        enum sp_check c = sp_frame_check(data + pos, size - pos, from_mcu, &n);
        uint8_t f[SP_MAX_FRAME];

        if (c == SP_CHECK_MORE)
            break;
        CHECK(n >= 1 && n <= size - pos);
        if (c == SP_CHECK_FRAME) {
            const uint8_t *frame = data + pos;
            size_t k = sp_frame_encode(f, (uint8_t)(frame[1] & SP_SEQ_MASK),
                                       frame[1] & SP_SEQ_NAK, frame + 2, n - SP_MIN_FRAME);

            CHECK(k == n && memcmp(f, frame, n) == 0);
        }
        pos += n;
    }
}

static void messages_round_trip(const uint8_t *data, size_t size, enum sp_dir dir)
{
    size_t pos = 0, used = 0;
    struct sp_msg m;

    while (pos < size && sp_msg_decode(data + pos, size - pos, dir, &used, &m) == SP_DEC_OK) {
        static uint8_t out[1u << 16]; /* a %*s argument can be as long as the input */
        size_t n;

        if (used > sizeof out)
            return;
        n = sp_msg_encode(out, sizeof out, m.def, m.v, m.data);

        CHECK(used > 0 && n == used && memcmp(out, data + pos, n) == 0);
        pos += used;
    }
}

/* ---- the MCU script ---- */

struct tx_check {
    struct sp_rx rx;
};

static void on_tx_frame(void *ctx, const uint8_t *frame, size_t len)
{
    size_t used = 0;
    struct sp_msg m;

    (void)ctx;
    if (len == SP_MIN_FRAME)
        return; /* ack or NAK */
    CHECK(sp_msg_decode(frame + 2, len - SP_MIN_FRAME, SP_DIR_MCU, &used, &m) == SP_DEC_OK);
    CHECK(used == len - SP_MIN_FRAME);
}

static void on_write(void *ctx, const uint8_t *frame, size_t len)
{
    struct tx_check *t = ctx;

    CHECK(len >= SP_MIN_FRAME && len <= SP_MAX_FRAME);
    sp_rx_feed(&t->rx, frame, len, 0, on_tx_frame, NULL);
    CHECK(t->rx.discards == 0 && t->rx.len == 0);
}

static void check_outputs(const struct sp_mcu *m)
{
    const struct sp_outputs *o = sp_mcu_outputs(m);

    CHECK(o->level <= 100 && o->source <= SP_SRC_FALLBACK_LEVEL);
    CHECK(!m->tripped || (o->relays & m->trip_cut) == 0);
    CHECK(m->ring_count <= SP_EVENTS && m->rx.len < SP_MAX_FRAME);
}

static void set_input(struct sp_inputs *in, unsigned field, uint32_t v)
{
    switch (field) {
    case 0: in->door = (uint8_t)v; break;
    case 1: in->water = (uint8_t)v; break;
    case 2: in->photocell = (uint8_t)v; break;
    case 3: in->tilt_x = sp_i32(v); break;
    case 4: in->tilt_y = sp_i32(v); break;
    case 5: in->leakage_ua = v; break;
    case 6: in->temp_cdeg = sp_i32(v); break;
    case 7: in->supply_mv = v; break;
    default: in->accel_peak_mg = v; break;
    }
}

static void run_script(const uint8_t *data, size_t size)
{
    static struct sp_mcu mcu;
    static struct tx_check tx;
    uint32_t now = 0;
    size_t pos = 0;

    sp_rx_init(&tx.rx, 1);
    sp_mcu_init(&mcu, 0x5EED5EEDu, now, on_write, &tx);
    while (pos < size) {
        uint8_t b = data[pos++];
        size_t n, i;

        switch (b & 7u) {
        case 0:
        case 1:
        case 7: {
            uint8_t f[SP_MAX_FRAME];
            uint8_t seq = (b & 7u) == 1 ? (uint8_t)(b >> 4) : mcu.expected;

            if (pos >= size)
                return;
            n = data[pos++] % (SP_MAX_PAYLOAD + 1);
            if (n > size - pos)
                n = size - pos;
            n = sp_frame_encode(f, seq, 0, data + pos, n);
            pos += n - SP_MIN_FRAME;
            sp_mcu_rx(&mcu, f, n, now);
            break;
        }
        case 2:
            if (pos >= size)
                return;
            now += 4u * data[pos++];
            sp_mcu_tick(&mcu, now);
            break;
        case 3: {
            uint32_t v = 0;

            for (i = 0; i < 4 && pos < size; i++)
                v |= (uint32_t)data[pos++] << (8 * i);
            set_input(sp_mcu_inputs(&mcu), (b >> 3) % 9u, v);
            break;
        }
        case 4:
        case 5:
            if (pos >= size)
                return;
            n = data[pos++] % 64u;
            if (n > size - pos)
                n = size - pos;
            if ((b & 7u) == 4) {
                sp_mcu_rx(&mcu, data + pos, n, now);
            } else {
                for (i = 0; i < n; i++)
                    sp_mcu_rx(&mcu, data + pos + i, 1, ++now);
            }
            pos += n;
            break;
        default: /* 6 */
            if (size - pos < 2)
                return;
            now += 100u * (uint32_t)(data[pos] | data[pos + 1] << 8);
            pos += 2;
            sp_mcu_tick(&mcu, now);
            break;
        }
        check_outputs(&mcu);
    }
}

static void run_raw(const uint8_t *data, size_t size)
{
    static struct sp_mcu mcu;
    static struct tx_check tx;

    sp_rx_init(&tx.rx, 1);
    sp_mcu_init(&mcu, 1, 0, on_write, &tx);
    sp_mcu_rx(&mcu, data, size, 1);
    sp_mcu_tick(&mcu, 30);
    check_outputs(&mcu);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    frames_round_trip(data, size, 0);
    frames_round_trip(data, size, 1);
    messages_round_trip(data, size, SP_DIR_HOST);
    messages_round_trip(data, size, SP_DIR_MCU);
    run_script(data, size);
    run_raw(data, size);
    return 0;
}
