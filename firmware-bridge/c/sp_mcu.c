/* Boot, the receive path (sequence numbers, acks, NAKs) and the transmit helpers. */
#include "sp_mcu.h"

#include <string.h>

#include "sp_codec.h"
#include "sp_internal.h"

#if SP_DICT_RELAYS != 8 || SP_DICT_EVENTS != 16 || SP_DICT_MAX_FRAME != 64
#error "dictionary.json declares limits this implementation does not have"
#endif

static void send_frame(struct sp_mcu *m, const uint8_t *payload, size_t len, int nak)
{
    uint8_t frame[SP_MAX_FRAME];
    size_t n = sp_frame_encode(frame, m->expected, nak, payload, len);

    m->sent = 1;
    if (n && m->write)
        m->write(m->write_ctx, frame, n);
}

void spi_send_msg(struct sp_mcu *m, int msg_index, const uint32_t *v, const uint8_t *data)
{
    uint8_t payload[SP_MAX_PAYLOAD];
    size_t n = sp_msg_encode(payload, sizeof payload, &sp_dict_messages[msg_index], v, data);

    /* Every response of the dictionary fits a frame (identify_response with 48 bytes is
     * the longest); n == 0 would be a bug, and sends nothing. */
    if (n)
        send_frame(m, payload, n, 0);
}

void spi_send_error(struct sp_mcu *m, uint32_t tag, uint32_t code)
{
    uint32_t v[SP_N_ERROR];

    v[SP_A_ERROR_TAG] = tag;
    v[SP_A_ERROR_CODE] = code;
    spi_send_msg(m, SP_M_ERROR, v, NULL);
}

void spi_send_status(struct sp_mcu *m, uint32_t tag)
{
    uint32_t v[SP_N_STATUS];

    v[SP_A_STATUS_TAG] = tag;
    v[SP_A_STATUS_FLAGS] = sp_mcu_flags(m);
    v[SP_A_STATUS_CONFIG_CRC] = m->config_crc;
    v[SP_A_STATUS_BOOT_ID] = m->boot_id;
    v[SP_A_STATUS_UPTIME_MS] = spi_uptime(m);
    v[SP_A_STATUS_LAST_EVENT] = m->last_event_id;
    v[SP_A_STATUS_LEVEL] = m->out.level;
    v[SP_A_STATUS_RELAYS] = m->out.relays;
    spi_send_msg(m, SP_M_STATUS, v, NULL);
}

uint32_t spi_uptime(const struct sp_mcu *m)
{
    return m->now_ms - m->boot_ms;
}

void sp_mcu_init(struct sp_mcu *m, uint32_t boot_id, uint32_t now_ms, sp_write_fn write,
                 void *write_ctx)
{
    memset(m, 0, sizeof *m);
    m->write = write;
    m->write_ctx = write_ctx;
    m->boot_id = boot_id;
    m->boot_ms = now_ms;
    m->now_ms = now_ms;
    sp_rx_init(&m->rx, 0);
    spi_config_defaults(&m->active);
    spi_config_defaults(&m->pending);
    m->in.photocell = SP_PHOTOCELL_NONE;
    m->tilt_armed = 1;
    m->out.relays = m->active.relay_default;
    spi_level_policy(m);
    spi_event(m, SP_EV_BOOT, 0);
}

/* One frame that passed check_frame. */
static void on_frame(void *ctx, const uint8_t *frame, size_t len)
{
    struct sp_mcu *m = ctx;
    uint8_t seq = (uint8_t)(frame[1] & SP_SEQ_MASK);

    m->stats.rx_frames++;
    if (seq != m->expected) {
        m->stats.naks++;
        send_frame(m, NULL, 0, 1);
        return;
    }
    m->expected = (uint8_t)((m->expected + 1u) & SP_SEQ_MASK);
    m->sent = 0;
    spi_run_payload(m, frame + 2, len - SP_MIN_FRAME);
    if (!m->sent)
        send_frame(m, NULL, 0, 0); /* bare acknowledgement */
}

void sp_mcu_rx(struct sp_mcu *m, const uint8_t *data, size_t len, uint32_t now_ms)
{
    m->now_ms = now_ms;
    sp_rx_feed(&m->rx, data, len, now_ms, on_frame, m);
}

struct sp_inputs *sp_mcu_inputs(struct sp_mcu *m)
{
    return &m->in;
}

const struct sp_outputs *sp_mcu_outputs(const struct sp_mcu *m)
{
    return &m->out;
}

uint8_t sp_mcu_flags(const struct sp_mcu *m)
{
    uint8_t f = 0;

    if (m->configured)
        f |= SP_FLAG_CONFIGURED;
    if (m->fallback)
        f |= SP_FLAG_FALLBACK;
    if (m->clock_valid)
        f |= SP_FLAG_CLOCK;
    if (m->tripped)
        f |= SP_FLAG_TRIPPED;
    return f;
}

void sp_mcu_get_stats(const struct sp_mcu *m, struct sp_stats *s)
{
    *s = m->stats;
    s->rx_errors = m->rx.discards + m->rx.idle_drops;
}
