/* Frames of the pole-MCU bridge protocol (PROTOCOL.md section 1).
 *
 *   LEN SEQ PAYLOAD(0..59) CRC_HI CRC_LO 0x7E
 *
 * sp_frame_check() is the spec's check_frame; struct sp_rx is a receiver built on it
 * (fixed 64-byte buffer, resync after the next 0x7E, RX_IDLE_MS drop of a partial frame). */
#ifndef SP_FRAME_H
#define SP_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define SP_MAX_FRAME 64u
#define SP_MIN_FRAME 5u
#define SP_MAX_PAYLOAD (SP_MAX_FRAME - SP_MIN_FRAME)
#define SP_SYNC 0x7Eu
#define SP_SEQ_BASE 0x10u
#define SP_SEQ_NAK 0x20u
#define SP_SEQ_MASK 0x0Fu
#define SP_RX_IDLE_MS 20u

enum sp_check {
    SP_CHECK_MORE,    /* need more bytes */
    SP_CHECK_FRAME,   /* the buffer starts with a frame of *n bytes */
    SP_CHECK_DISCARD  /* drop the first *n bytes */
};

/* Whether b is a valid SEQ byte for frames sent by the MCU (from_mcu != 0: the NAK bit is
 * allowed) or by the host (from_mcu == 0). */
int sp_frame_seq_ok(uint8_t b, int from_mcu);

/* What buf[0..len) starts with. *n is set for SP_CHECK_FRAME and SP_CHECK_DISCARD. */
enum sp_check sp_frame_check(const uint8_t *buf, size_t len, int from_mcu, size_t *n);

/* Writes the frame around payload into out (room for SP_MAX_FRAME bytes); returns its
 * length, or 0 if the payload is longer than SP_MAX_PAYLOAD. seq is taken modulo 16. */
size_t sp_frame_encode(uint8_t *out, uint8_t seq, int nak, const uint8_t *payload, size_t len);

/* Called for each complete frame; frame points into the receiver's buffer and is valid
 * only during the call. The payload is frame[2 .. len-3). */
typedef void (*sp_frame_fn)(void *ctx, const uint8_t *frame, size_t len);

struct sp_rx {
    uint8_t buf[SP_MAX_FRAME];
    size_t len;        /* bytes held: always a prefix of a possible frame */
    uint32_t last_ms;  /* when the last byte arrived */
    int from_mcu;      /* which direction's frames this receiver takes */
    uint32_t frames;          /* valid frames delivered */
    uint32_t discards;        /* discard decisions */
    uint32_t discarded_bytes; /* bytes dropped by discards and idle drops */
    uint32_t idle_drops;      /* partial frames dropped after RX_IDLE_MS of silence */
};

void sp_rx_init(struct sp_rx *rx, int from_mcu);

/* Drops a held partial frame if nothing arrived for more than RX_IDLE_MS; returns 1 if it
 * did. sp_rx_feed() runs it before taking new bytes. */
int sp_rx_idle(struct sp_rx *rx, uint32_t now_ms);

/* Takes received bytes (any amount) and calls fn for every frame completed, in order. */
void sp_rx_feed(struct sp_rx *rx, const uint8_t *data, size_t len, uint32_t now_ms,
                sp_frame_fn fn, void *ctx);

#endif /* SP_FRAME_H */
