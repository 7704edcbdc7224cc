#include "sp_frame.h"

#include <string.h>

#include "sp_crc.h"

int sp_frame_seq_ok(uint8_t b, int from_mcu)
{
    if ((b & 0xD0u) != SP_SEQ_BASE)
        return 0; /* bit 4 set, bits 6 and 7 clear */
    return from_mcu || !(b & SP_SEQ_NAK);
}

/* Drop through the first SYNC at index 0 or later, or everything if there is none. */
static size_t discard_len(const uint8_t *buf, size_t len)
{
    const uint8_t *sync = memchr(buf, (int)SP_SYNC, len);

    return sync ? (size_t)(sync - buf) + 1u : len;
}

enum sp_check sp_frame_check(const uint8_t *buf, size_t len, int from_mcu, size_t *n)
{
    size_t flen;
    uint16_t crc;

    if (len == 0)
        return SP_CHECK_MORE;
    flen = buf[0];
    if (flen < SP_MIN_FRAME || flen > SP_MAX_FRAME)
        goto discard;
    if (len > 1 && !sp_frame_seq_ok(buf[1], from_mcu))
        goto discard;
    if (len < flen)
        return SP_CHECK_MORE;
    if (buf[flen - 1] != SP_SYNC)
        goto discard;
    crc = sp_crc16(buf, flen - 3);
    if (buf[flen - 3] != (uint8_t)(crc >> 8) || buf[flen - 2] != (uint8_t)crc)
        goto discard;
    *n = flen;
    return SP_CHECK_FRAME;
discard:
    *n = discard_len(buf, len);
    return SP_CHECK_DISCARD;
}

size_t sp_frame_encode(uint8_t *out, uint8_t seq, int nak, const uint8_t *payload, size_t len)
{
    uint16_t crc;

    if (len > SP_MAX_PAYLOAD)
        return 0;
    out[0] = (uint8_t)(len + SP_MIN_FRAME);
    out[1] = (uint8_t)(SP_SEQ_BASE | (nak ? SP_SEQ_NAK : 0u) | (seq & SP_SEQ_MASK));
    if (len)
        memmove(out + 2, payload, len);
    crc = sp_crc16(out, len + 2);
    out[len + 2] = (uint8_t)(crc >> 8);
    out[len + 3] = (uint8_t)crc;
    out[len + 4] = (uint8_t)SP_SYNC;
    return len + SP_MIN_FRAME;
}

void sp_rx_init(struct sp_rx *rx, int from_mcu)
{
    memset(rx, 0, sizeof *rx);
    rx->from_mcu = from_mcu;
}

int sp_rx_idle(struct sp_rx *rx, uint32_t now_ms)
{
    if (rx->len == 0 || (uint32_t)(now_ms - rx->last_ms) <= SP_RX_IDLE_MS)
        return 0;
    rx->discarded_bytes += (uint32_t)rx->len;
    rx->idle_drops++;
    rx->len = 0;
    return 1;
}

static void drop_front(struct sp_rx *rx, size_t n)
{
    memmove(rx->buf, rx->buf + n, rx->len - n);
    rx->len -= n;
}

void sp_rx_feed(struct sp_rx *rx, const uint8_t *data, size_t len, uint32_t now_ms,
                sp_frame_fn fn, void *ctx)
{
    sp_rx_idle(rx, now_ms);
    if (len)
        rx->last_ms = now_ms;
    while (len) {
        /* A buffer that needs more bytes is shorter than its LEN (<= 64): room is left. */
        size_t take = sizeof rx->buf - rx->len;
        size_t n = 0;

        if (take > len)
            take = len;
        memcpy(rx->buf + rx->len, data, take);
        rx->len += take;
        data += take;
        len -= take;
        for (;;) {
            enum sp_check c = sp_frame_check(rx->buf, rx->len, rx->from_mcu, &n);

            if (c == SP_CHECK_MORE)
                break;
            if (c == SP_CHECK_DISCARD) {
                rx->discards++;
                rx->discarded_bytes += (uint32_t)n;
            } else {
                rx->frames++;
                if (fn)
                    fn(ctx, rx->buf, n);
            }
            drop_front(rx, n);
        }
    }
}
