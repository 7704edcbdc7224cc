/* Runs the shared vectors (the JSON files in firmware-bridge/vectors/, turned into
 * vectors.h by tools/gen_c_vectors.py) against the C library: CRCs, frame encoding,
 * check_frame on whole streams and the receiver fed byte by byte, message encoding and
 * decoding, and whole MCU sessions compared byte for byte. */
#include <stdio.h>
#include <string.h>

#include "../sp_codec.h"
#include "../sp_crc.h"
#include "../sp_frame.h"
#include "../sp_mcu.h"
#include "vectors.h"

static size_t passed, failed;
static const char *current;

static void fail(const char *what)
{
    printf("FAIL %s: %s\n", current, what);
}

static void hex(const char *label, const uint8_t *b, size_t n)
{
    size_t i;

    printf("    %s (%zu):", label, n);
    for (i = 0; i < n; i++)
        printf("%s%02x", i % 32 == 0 ? "\n      " : "", b[i]);
    printf("\n");
}

static int same(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

static void tally(int ok)
{
    if (ok)
        passed++;
    else
        failed++;
}

/* ---- crc.json ---- */

static void run_crcs(void)
{
    size_t i;

    for (i = 0; i < v_crcs_n; i++) {
        const struct v_crc *v = &v_crcs[i];
        int ok = sp_crc16(v->data, v->len) == v->crc16 &&
                 sp_crc32(0, v->data, v->len) == v->crc32;

        current = "crc.json";
        if (!ok)
            hex("crc mismatch for", v->data, v->len);
        tally(ok);
    }
}

/* ---- frames.json ---- */

static void run_encodes(void)
{
    size_t i;

    for (i = 0; i < v_encodes_n; i++) {
        const struct v_encode *v = &v_encodes[i];
        uint8_t f[SP_MAX_FRAME];
        size_t n = sp_frame_encode(f, v->seq, v->nak, v->payload, v->payload_len), k = 0;
        int ok = same(f, n, v->frame, v->frame_len) &&
                 sp_frame_check(v->frame, v->frame_len, v->from_mcu, &k) == SP_CHECK_FRAME &&
                 k == v->frame_len;

        current = v->name;
        if (!ok) {
            fail("frames.json encode");
            hex("expected", v->frame, v->frame_len);
            hex("got", f, n);
        }
        tally(ok);
    }
}

struct got {
    struct v_frame frames[32];
    uint8_t store[32][SP_MAX_FRAME];
    size_t n;
    uint32_t discarded, discards, remainder;
};

static void got_frame(struct got *g, const uint8_t *frame, size_t len)
{
    if (g->n < 32) {
        memcpy(g->store[g->n], frame + 2, len - SP_MIN_FRAME);
        g->frames[g->n].payload = g->store[g->n];
        g->frames[g->n].len = len - SP_MIN_FRAME;
        g->frames[g->n].seq = (uint8_t)(frame[1] & SP_SEQ_MASK);
        g->frames[g->n].nak = (frame[1] & SP_SEQ_NAK) ? 1 : 0;
    }
    g->n++;
}

static void on_frame(void *ctx, const uint8_t *frame, size_t len)
{
    got_frame(ctx, frame, len);
}

static int result_matches(const struct got *g, const struct v_result *r)
{
    size_t i;

    if (g->n != r->n || g->discarded != r->discarded || g->discards != r->discards ||
        g->remainder != r->remainder)
        return 0;
    for (i = 0; i < r->n; i++)
        if (!same(g->frames[i].payload, g->frames[i].len, r->frames[i].payload,
                  r->frames[i].len) ||
            g->frames[i].seq != r->frames[i].seq || g->frames[i].nak != r->frames[i].nak)
            return 0;
    return 1;
}

static void report_result(const char *mode, const struct got *g, const struct v_result *r)
{
    printf("    %s: frames %zu/%zu discarded %u/%u discards %u/%u remainder %u/%u"
           " (got/expected)\n",
           mode, g->n, r->n, (unsigned)g->discarded, (unsigned)r->discarded,
           (unsigned)g->discards, (unsigned)r->discards, (unsigned)g->remainder,
           (unsigned)r->remainder);
}

/* check_frame itself, on the whole stream as one buffer of any size. */
static void whole_stream(const struct v_stream *v, struct got *g)
{
    size_t pos = 0, n = 0;

    memset(g, 0, sizeof *g);
    while (pos < v->len) {
        enum sp_check c = sp_frame_check(v->stream + pos, v->len - pos, v->from_mcu, &n);

        if (c == SP_CHECK_MORE)
            break;
        if (c == SP_CHECK_FRAME) {
            got_frame(g, v->stream + pos, n);
        } else {
            g->discards++;
            g->discarded += (uint32_t)n;
        }
        pos += n;
    }
    g->remainder = (uint32_t)(v->len - pos);
}

/* The receiver (struct sp_rx) fed all at once or one byte at a time. */
static void receiver(const struct v_stream *v, struct got *g, int bytewise)
{
    struct sp_rx rx;
    size_t i;

    memset(g, 0, sizeof *g);
    sp_rx_init(&rx, v->from_mcu);
    if (bytewise) {
        for (i = 0; i < v->len; i++)
            sp_rx_feed(&rx, v->stream + i, 1, 0, on_frame, g);
    } else {
        sp_rx_feed(&rx, v->stream, v->len, 0, on_frame, g);
    }
    g->discarded = rx.discarded_bytes;
    g->discards = rx.discards;
    g->remainder = (uint32_t)rx.len;
}

static void run_streams(void)
{
    static struct got g;
    size_t i;

    for (i = 0; i < v_streams_n; i++) {
        const struct v_stream *v = &v_streams[i];
        int ok;

        current = v->name;
        whole_stream(v, &g);
        ok = result_matches(&g, &v->whole);
        if (!ok) {
            fail("frames.json stream, check_frame on the whole stream");
            report_result("whole", &g, &v->whole);
        }
        tally(ok);
        /* The MCU's 64-byte receiver sees the same as one buffer while the stream fits. */
        if (v->len <= SP_MAX_FRAME) {
            receiver(v, &g, 0);
            ok = result_matches(&g, &v->whole);
            if (!ok) {
                fail("frames.json stream, receiver fed the whole stream");
                report_result("receiver", &g, &v->whole);
            }
            tally(ok);
        }
        receiver(v, &g, 1);
        ok = result_matches(&g, &v->bytewise);
        if (!ok) {
            fail("frames.json stream, receiver fed byte by byte");
            report_result("bytewise", &g, &v->bytewise);
        }
        tally(ok);
    }
}

/* ---- messages.json ---- */

static int run_valid(const struct v_valid *v)
{
    const struct sp_msg_def *def = sp_msg_by_name(v->name);
    uint32_t args[SP_DICT_MAX_ARGS] = {0};
    const uint8_t *data = NULL;
    uint8_t out[SP_MAX_PAYLOAD];
    struct sp_msg msg;
    size_t i, j, n, used = 0;

    if (!def || def->is_response != v->from_mcu || def->nargs != v->nargs)
        return 0;
    for (i = 0; i < v->nargs; i++) {
        for (j = 0; j < def->nargs; j++)
            if (strcmp(def->arg_names[j], v->args[i].name) == 0)
                break;
        if (j == def->nargs)
            return 0;
        args[j] = v->args[i].value;
        if (v->args[i].is_bytes)
            data = v->args[i].data;
    }
    n = sp_msg_encode(out, sizeof out, def, args, data);
    if (!same(out, n, v->bytes, v->len)) {
        hex("expected", v->bytes, v->len);
        hex("got", out, n);
        return 0;
    }
    if (sp_msg_decode(v->bytes, v->len, v->from_mcu ? SP_DIR_MCU : SP_DIR_HOST, &used,
                      &msg) != SP_DEC_OK ||
        used != v->len || msg.def != def)
        return 0;
    for (j = 0; j < def->nargs; j++)
        if (msg.v[j] != args[j])
            return 0;
    return data == NULL || memcmp(msg.data, data, args[def->nargs - 1]) == 0 ||
           msg.data == NULL;
}

static int run_invalid(const struct v_invalid *v)
{
    size_t pos = 0, used = 0;
    unsigned decoded = 0;
    struct sp_msg msg;

    for (;;) {
        enum sp_dec d = sp_msg_decode(v->bytes + pos, v->len - pos,
                                      v->from_mcu ? SP_DIR_MCU : SP_DIR_HOST, &used, &msg);

        if (d != SP_DEC_OK) {
            if (decoded != v->decoded ||
                d != (v->unknown ? SP_DEC_UNKNOWN : SP_DEC_MALFORMED)) {
                printf("    got %s after %u message(s)\n",
                       d == SP_DEC_UNKNOWN ? "unknown" : "malformed", decoded);
                return 0;
            }
            return 1;
        }
        decoded++;
        pos += used;
        if (pos >= v->len) {
            printf("    decoded all %u message(s)\n", decoded);
            return 0;
        }
    }
}

static void run_messages(void)
{
    size_t i;

    for (i = 0; i < v_valids_n; i++) {
        int ok;

        current = v_valids[i].name;
        ok = run_valid(&v_valids[i]);
        if (!ok)
            fail("messages.json valid");
        tally(ok);
    }
    for (i = 0; i < v_invalids_n; i++) {
        int ok;

        current = v_invalids[i].name;
        ok = run_invalid(&v_invalids[i]);
        if (!ok)
            fail("messages.json invalid");
        tally(ok);
    }
}

/* ---- sessions.json ---- */

struct txbuf {
    uint8_t b[4096];
    size_t n;
    int overflow;
};

static void tx_write(void *ctx, const uint8_t *frame, size_t len)
{
    struct txbuf *t = ctx;

    if (t->n + len > sizeof t->b) {
        t->overflow = 1;
        return;
    }
    memcpy(t->b + t->n, frame, len);
    t->n += len;
}

static void set_inputs(struct sp_inputs *in, const struct v_step *s)
{
    const long long *v = s->inputs;

    if (s->mask & 0x001u)
        in->door = (uint8_t)v[0];
    if (s->mask & 0x002u)
        in->water = (uint8_t)v[1];
    if (s->mask & 0x004u)
        in->photocell = (uint8_t)v[2];
    if (s->mask & 0x008u)
        in->tilt_x = (int32_t)v[3];
    if (s->mask & 0x010u)
        in->tilt_y = (int32_t)v[4];
    if (s->mask & 0x020u)
        in->leakage_ua = (uint32_t)v[5];
    if (s->mask & 0x040u)
        in->temp_cdeg = (int32_t)v[6];
    if (s->mask & 0x080u)
        in->supply_mv = (uint32_t)v[7];
    if (s->mask & 0x100u)
        in->accel_peak_mg = (uint32_t)v[8];
}

static int check_expect(const struct sp_mcu *m, const struct v_step *s)
{
    const struct sp_outputs *o = sp_mcu_outputs(m);
    uint8_t flags = sp_mcu_flags(m);
    long long got[V_EXPECT_FIELDS];
    static const char *const names[V_EXPECT_FIELDS] = {"level",    "relays",  "source",
                                                       "fallback", "tripped", "configured"};
    int ok = 1;
    unsigned i;

    got[0] = o->level;
    got[1] = o->relays;
    got[2] = o->source;
    got[3] = (flags & SP_FLAG_FALLBACK) ? 1 : 0;
    got[4] = (flags & SP_FLAG_TRIPPED) ? 1 : 0;
    got[5] = (flags & SP_FLAG_CONFIGURED) ? 1 : 0;
    for (i = 0; i < V_EXPECT_FIELDS; i++) {
        if ((s->mask & (1u << i)) && got[i] != s->expect[i]) {
            printf("    expect %s: got %lld, expected %lld\n", names[i], got[i], s->expect[i]);
            ok = 0;
        }
    }
    return ok;
}

static int run_session(const struct v_session *v)
{
    static struct sp_mcu mcu;
    static struct txbuf tx;
    size_t i;

    memset(&tx, 0, sizeof tx);
    /* What the MCU sends at boot (the boot event) belongs to its first transmission. */
    sp_mcu_init(&mcu, v->boot_id, 0, tx_write, &tx);
    for (i = 0; i < v->n; i++) {
        const struct v_step *s = &v->steps[i];

        switch (s->kind) {
        case V_INPUTS:
            set_inputs(sp_mcu_inputs(&mcu), s);
            continue;
        case V_EXPECT:
            if (!check_expect(&mcu, s)) {
                printf("    at step %zu\n", i);
                return 0;
            }
            continue;
        case V_RX:
            sp_mcu_rx(&mcu, s->rx, s->rx_len, s->t);
            break;
        case V_TICK:
            sp_mcu_tick(&mcu, s->t);
            break;
        default:
            return 0;
        }
        if (tx.overflow || !same(tx.b, tx.n, s->tx, s->tx_len)) {
            printf("    step %zu (%s at t=%u):\n", i, s->kind == V_RX ? "rx" : "tick",
                   (unsigned)s->t);
            if (s->kind == V_RX)
                hex("rx", s->rx, s->rx_len);
            hex("expected tx", s->tx, s->tx_len);
            hex("got tx", tx.b, tx.n);
            return 0;
        }
        tx.n = 0;
    }
    return 1;
}

static void run_sessions(void)
{
    size_t i;

    for (i = 0; i < v_sessions_n; i++) {
        int ok;

        current = v_sessions[i].name;
        ok = run_session(&v_sessions[i]);
        if (!ok)
            fail("sessions.json");
        tally(ok);
    }
}

int main(void)
{
    if (!v_crcs_n || !v_encodes_n || !v_streams_n || !v_valids_n || !v_invalids_n ||
        !v_sessions_n)
        printf("vectors: some vector files are missing or empty\n");
    run_crcs();
    run_encodes();
    run_streams();
    run_messages();
    run_sessions();
    printf("vectors: %zu passed, %zu failed\n", passed, failed);
    return failed || !passed ? 1 : 0;
}
