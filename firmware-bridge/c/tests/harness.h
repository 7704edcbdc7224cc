/* Drives one struct sp_mcu the way a host would: builds frames from messages by name,
 * collects what the MCU writes and decodes it back into frames and messages. */
#ifndef HARNESS_H
#define HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include "../sp_codec.h"
#include "../sp_mcu.h"

#define H_TX_MAX 16384u
#define H_REPLIES_MAX 64u

struct reply {
    uint8_t seq;
    uint8_t nak;
    uint8_t payload[SP_MAX_PAYLOAD];
    size_t len;
    int has_msg;      /* payload decoded to exactly one message */
    struct sp_msg msg;
};

struct harness {
    struct sp_mcu mcu;
    uint8_t tx[H_TX_MAX];
    size_t tx_len;
    uint32_t now;
    uint8_t seq; /* the host's next frame number */
    struct reply r[H_REPLIES_MAX];
    size_t nr;
};

/* Boots the MCU at time now and drops the boot event push. */
void h_init(struct harness *h, uint32_t boot_id, uint32_t now);

/* Encodes message name with args (and data for %*s) into out; returns its length. */
size_t h_msg(uint8_t *out, const char *name, const uint32_t *args, const uint8_t *data);

/* Sends payload in a frame numbered seq (not advancing h->seq), then collects replies. */
size_t h_send_seq(struct harness *h, uint8_t seq, const uint8_t *payload, size_t len);

/* Sends payload in the next frame; returns the number of frames the MCU sent. */
size_t h_send(struct harness *h, const uint8_t *payload, size_t len);

/* One message in the next frame. */
size_t h_cmd(struct harness *h, const char *name, const uint32_t *args);

/* Runs a tick at h->now + dt and collects replies. */
size_t h_tick(struct harness *h, uint32_t dt);

/* Decodes and clears what the MCU has written into h->r; returns the count. */
size_t h_collect(struct harness *h);

/* Configures the MCU: config_reset, the given config messages (concatenated payload
 * bytes, each message sent in its own frame), finalize_config with their CRC. */
void h_configure(struct harness *h, const uint8_t *config, size_t len);

/* A typical configuration: heartbeat 1000 ms, fallback level 40, level lease 5000 ms;
 * relay 1 default on with max 2000 ms, relay 2 default off with 0 (until heartbeat lapse);
 * leakage 1000 uA on relays 1 and 2 (mask 0x03); alarms tilt 500, impact 2000 mg. */
void h_configure_typical(struct harness *h);

/* The id of the reply's message, or 0xFFFFFFFF if it has none. */
uint32_t h_id(const struct reply *r);

/* Argument value of a reply message by name. */
uint32_t h_arg(const struct reply *r, const char *arg);

#endif /* HARNESS_H */
