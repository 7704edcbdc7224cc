#include "harness.h"

#include <string.h>

#include "../sp_crc.h"

static void h_write(void *ctx, const uint8_t *frame, size_t len)
{
    struct harness *h = ctx;

    if (h->tx_len + len <= sizeof h->tx) {
        memcpy(h->tx + h->tx_len, frame, len);
        h->tx_len += len;
    }
}

void h_init(struct harness *h, uint32_t boot_id, uint32_t now)
{
    memset(h, 0, sizeof *h);
    h->now = now;
    sp_mcu_init(&h->mcu, boot_id, now, h_write, h);
    h->tx_len = 0;
}

size_t h_msg(uint8_t *out, const char *name, const uint32_t *args, const uint8_t *data)
{
    const struct sp_msg_def *def = sp_msg_by_name(name);

    return def ? sp_msg_encode(out, SP_MAX_PAYLOAD, def, args, data) : 0;
}

static void on_reply(void *ctx, const uint8_t *frame, size_t len)
{
    struct harness *h = ctx;
    struct reply *r;
    size_t used = 0;

    if (h->nr >= H_REPLIES_MAX)
        return;
    r = &h->r[h->nr++];
    memset(r, 0, sizeof *r);
    r->seq = (uint8_t)(frame[1] & SP_SEQ_MASK);
    r->nak = (frame[1] & SP_SEQ_NAK) ? 1 : 0;
    r->len = len - SP_MIN_FRAME;
    memcpy(r->payload, frame + 2, r->len);
    if (r->len && sp_msg_decode(r->payload, r->len, SP_DIR_MCU, &used, &r->msg) == SP_DEC_OK &&
        used == r->len)
        r->has_msg = 1;
}

size_t h_collect(struct harness *h)
{
    struct sp_rx rx;

    sp_rx_init(&rx, 1);
    h->nr = 0;
    sp_rx_feed(&rx, h->tx, h->tx_len, 0, on_reply, h);
    h->tx_len = 0;
    return h->nr;
}

size_t h_send_seq(struct harness *h, uint8_t seq, const uint8_t *payload, size_t len)
{
    uint8_t frame[SP_MAX_FRAME];
    size_t n = sp_frame_encode(frame, seq, 0, payload, len);

    sp_mcu_rx(&h->mcu, frame, n, h->now);
    return h_collect(h);
}

size_t h_send(struct harness *h, const uint8_t *payload, size_t len)
{
    uint8_t seq = h->seq;

    h->seq = (uint8_t)((h->seq + 1u) & 0x0Fu);
    return h_send_seq(h, seq, payload, len);
}

size_t h_cmd(struct harness *h, const char *name, const uint32_t *args)
{
    uint8_t p[SP_MAX_PAYLOAD];
    size_t n = h_msg(p, name, args, NULL);

    return h_send(h, p, n);
}

size_t h_tick(struct harness *h, uint32_t dt)
{
    h->now += dt;
    sp_mcu_tick(&h->mcu, h->now);
    return h_collect(h);
}

void h_configure(struct harness *h, const uint8_t *config, size_t len)
{
    uint32_t crc = sp_crc32(0, config, len);
    size_t pos = 0;

    h_cmd(h, "config_reset", (const uint32_t[]){1});
    while (pos < len) {
        struct sp_msg msg;
        size_t used = 0;

        if (sp_msg_decode(config + pos, len - pos, SP_DIR_HOST, &used, &msg) != SP_DEC_OK)
            return;
        h_send(h, config + pos, used);
        pos += used;
    }
    h_cmd(h, "finalize_config", (const uint32_t[]){2, crc});
}

void h_configure_typical(struct harness *h)
{
    uint8_t cfg[256];
    size_t n = 0;

    n += h_msg(cfg + n, "config_fallback", (const uint32_t[]){1000, 40, 5000}, NULL);
    n += h_msg(cfg + n, "config_relay", (const uint32_t[]){1, 1, 2000}, NULL);
    n += h_msg(cfg + n, "config_relay", (const uint32_t[]){2, 0, 0}, NULL);
    n += h_msg(cfg + n, "config_leakage", (const uint32_t[]){1000, 0x03}, NULL);
    n += h_msg(cfg + n, "config_alarms", (const uint32_t[]){500, 2000}, NULL);
    h_configure(h, cfg, n);
}

uint32_t h_id(const struct reply *r)
{
    return r->has_msg ? r->msg.def->id : 0xFFFFFFFFu;
}

uint32_t h_arg(const struct reply *r, const char *arg)
{
    unsigned i;

    if (!r->has_msg)
        return 0xDEADBEEFu;
    for (i = 0; i < r->msg.def->nargs; i++)
        if (strcmp(r->msg.def->arg_names[i], arg) == 0)
            return r->msg.v[i];
    return 0xDEADBEEFu;
}
