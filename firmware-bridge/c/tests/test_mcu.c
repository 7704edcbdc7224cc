/* The MCU's receive path and commands: identify, sequence numbers, acks and NAKs, bad
 * messages, configuration and its CRC, and every runtime command's answer. */
#include <string.h>

#include "../sp_crc.h"
#include "harness.h"
#include "tests.h"

static struct harness H;

static void boot_state(void)
{
    struct sp_mcu m;

    sp_mcu_init(&m, 0xCAFEu, 0, NULL, NULL); /* no write callback: fine */
    CHECK_EQ(m.last_event_id, 1);
    CHECK_EQ(m.ring[0].kind, SP_EV_BOOT);
    CHECK_EQ(sp_mcu_outputs(&m)->relays, 0xFF);
    CHECK_EQ(sp_mcu_outputs(&m)->level, 100);
    CHECK_EQ(sp_mcu_outputs(&m)->source, SP_SRC_FALLBACK_LEVEL);
    CHECK_EQ(sp_mcu_flags(&m), 0);
    CHECK_EQ(m.active.trip_ua, 30000);
    CHECK_EQ(m.active.trip_mask, 0xFF);
    CHECK_EQ(m.active.tilt_cdeg, 500);
    CHECK_EQ(m.active.impact_mg, 0);
}

static void boot_event_frame(void)
{
    h_init(&H, 0xCAFEu, 0);
    sp_mcu_init(&H.mcu, 0xCAFEu, 0, H.mcu.write, H.mcu.write_ctx);
    CHECK_EQ(h_collect(&H), 1);
    CHECK_EQ(H.r[0].seq, 0);
    CHECK_EQ(H.r[0].nak, 0);
    CHECK_EQ(h_id(&H.r[0]), SP_ID_EVENT);
    CHECK_EQ(h_arg(&H.r[0], "tag"), 0);
    CHECK_EQ(h_arg(&H.r[0], "id"), 1);
    CHECK_EQ(h_arg(&H.r[0], "kind"), SP_EV_BOOT);
    CHECK_EQ(h_arg(&H.r[0], "unix_time"), 0);
}

static void identify_serves_the_dictionary(void)
{
    uint8_t dict[2048];
    size_t got = 0;
    uint32_t offset = 0;

    h_init(&H, 1, 0);
    for (;;) {
        CHECK_EQ(h_cmd(&H, "identify", (const uint32_t[]){offset, 48}), 1);
        CHECK_EQ(h_id(&H.r[0]), SP_ID_IDENTIFY_RESPONSE);
        CHECK_EQ(h_arg(&H.r[0], "offset"), offset);
        CHECK(got + H.r[0].msg.v[1] <= sizeof dict);
        if (H.r[0].msg.v[1])
            memcpy(dict + got, H.r[0].msg.data, H.r[0].msg.v[1]);
        got += H.r[0].msg.v[1];
        offset += H.r[0].msg.v[1];
        if (H.r[0].msg.v[1] < 48)
            break;
    }
    CHECK_EQ(got, SP_DICT_JSON_LEN);
    CHECK(memcmp(dict, sp_dict_json, got) == 0);
    /* Far past the end: empty data. */
    CHECK_EQ(h_cmd(&H, "identify", (const uint32_t[]){0xFFFFFFFFu, 1}), 1);
    CHECK_EQ(h_arg(&H.r[0], "data"), 0);
    CHECK_EQ(h_arg(&H.r[0], "offset"), 0xFFFFFFFFu);
}

static void identify_count_limits(void)
{
    h_init(&H, 1, 0);
    CHECK_EQ(h_cmd(&H, "identify", (const uint32_t[]){0, 0}), 1);
    CHECK_EQ(h_id(&H.r[0]), SP_ID_ERROR);
    CHECK_EQ(h_arg(&H.r[0], "tag"), 0);
    CHECK_EQ(h_arg(&H.r[0], "code"), SP_ERR_BAD_ARGUMENT);
    CHECK_EQ(h_cmd(&H, "identify", (const uint32_t[]){0, 49}), 1);
    CHECK_EQ(h_arg(&H.r[0], "code"), SP_ERR_BAD_ARGUMENT);
    CHECK_EQ(h_cmd(&H, "identify", (const uint32_t[]){0, 1}), 1);
    CHECK_EQ(h_arg(&H.r[0], "data"), 1);
    CHECK_EQ(H.r[0].msg.data[0], '{');
}

static void ack_and_nak(void)
{
    uint8_t p[SP_MAX_PAYLOAD];
    size_t n;
    struct sp_stats s;

    h_init(&H, 1, 0);
    /* An empty frame in sequence: a bare ack naming the next seq. */
    CHECK_EQ(h_send(&H, NULL, 0), 1);
    CHECK_EQ(H.r[0].seq, 1);
    CHECK_EQ(H.r[0].nak, 0);
    CHECK_EQ(H.r[0].len, 0);
    /* Out of sequence: NAK naming expected, not processed. */
    n = h_msg(p, "get_stats", (const uint32_t[]){9}, NULL);
    CHECK_EQ(h_send_seq(&H, 5, p, n), 1);
    CHECK_EQ(H.r[0].seq, 1);
    CHECK_EQ(H.r[0].nak, 1);
    CHECK_EQ(H.r[0].len, 0);
    /* A repeat of an already processed frame is NAKed too (seq 0 again). */
    CHECK_EQ(h_send_seq(&H, 0, p, n), 1);
    CHECK_EQ(H.r[0].nak, 1);
    CHECK_EQ(H.r[0].seq, 1);
    /* In sequence again. */
    CHECK_EQ(h_send(&H, p, n), 1);
    CHECK_EQ(H.r[0].seq, 2);
    CHECK_EQ(H.r[0].nak, 0);
    CHECK_EQ(h_id(&H.r[0]), SP_ID_STATS);
    CHECK_EQ(h_arg(&H.r[0], "rx_frames"), 4);
    CHECK_EQ(h_arg(&H.r[0], "naks"), 2);
    sp_mcu_get_stats(&H.mcu, &s);
    CHECK_EQ(s.naks, 2);
}

static void seq_wraps_modulo_16(void)
{
    unsigned i;

    h_init(&H, 1, 0);
    for (i = 0; i < 40; i++) {
        CHECK_EQ(h_send(&H, NULL, 0), 1);
        CHECK_EQ(H.r[0].seq, (i + 1) % 16);
        CHECK_EQ(H.r[0].nak, 0);
    }
}

static void one_frame_per_response(void)
{
    uint8_t p[SP_MAX_PAYLOAD];
    size_t n = 0;

    h_init(&H, 1, 0);
    n += h_msg(p + n, "get_stats", (const uint32_t[]){1}, NULL);
    n += h_msg(p + n, "get_config", (const uint32_t[]){2}, NULL);
    n += h_msg(p + n, "config_alarms", (const uint32_t[]){400, 0}, NULL); /* no answer */
    n += h_msg(p + n, "get_inputs", (const uint32_t[]){3}, NULL);
    CHECK_EQ(h_send(&H, p, n), 3);
    CHECK_EQ(h_id(&H.r[0]), SP_ID_STATS);
    CHECK_EQ(h_id(&H.r[1]), SP_ID_CONFIG_STATE);
    CHECK_EQ(h_id(&H.r[2]), SP_ID_INPUTS);
    CHECK_EQ(H.r[0].seq, 1);
    CHECK_EQ(H.r[1].seq, 1);
    CHECK_EQ(H.r[2].seq, 1);
    CHECK_EQ(h_arg(&H.r[2], "tag"), 3);
    /* A config message alone: a bare ack. */
    n = h_msg(p, "config_alarms", (const uint32_t[]){400, 0}, NULL);
    CHECK_EQ(h_send(&H, p, n), 1);
    CHECK_EQ(H.r[0].len, 0);
    CHECK_EQ(H.r[0].seq, 2);
}

static void unknown_and_malformed_stop_the_frame(void)
{
    uint8_t p[SP_MAX_PAYLOAD];
    size_t n = 0;

    h_init(&H, 1, 0);
    n += h_msg(p + n, "get_config", (const uint32_t[]){1}, NULL);
    p[n++] = 0x33; /* unknown id 51 */
    n += h_msg(p + n, "get_config", (const uint32_t[]){2}, NULL);
    CHECK_EQ(h_send(&H, p, n), 2);
    CHECK_EQ(h_id(&H.r[0]), SP_ID_CONFIG_STATE);
    CHECK_EQ(h_id(&H.r[1]), SP_ID_ERROR);
    CHECK_EQ(h_arg(&H.r[1], "tag"), 0);
    CHECK_EQ(h_arg(&H.r[1], "code"), SP_ERR_UNKNOWN_COMMAND);
    /* A response id is not a command. */
    n = h_msg(p, "error", (const uint32_t[]){1, 1}, NULL);
    CHECK_EQ(h_send(&H, p, n), 1);
    CHECK_EQ(h_arg(&H.r[0], "code"), SP_ERR_UNKNOWN_COMMAND);
    /* Malformed: non-canonical LEB128 tag, out of range, truncated. */
    CHECK_EQ(h_send(&H, (const uint8_t[]){2, 0x81, 0x00}, 3), 1);
    CHECK_EQ(h_arg(&H.r[0], "code"), SP_ERR_MALFORMED);
    CHECK_EQ(h_send(&H, (const uint8_t[]){2, 0x80, 0x02}, 3), 1);
    CHECK_EQ(h_arg(&H.r[0], "code"), SP_ERR_MALFORMED);
    CHECK_EQ(h_send(&H, (const uint8_t[]){11, 1, 1}, 3), 1);
    CHECK_EQ(h_arg(&H.r[0], "code"), SP_ERR_MALFORMED);
    CHECK_EQ(H.r[0].seq, 5);
    CHECK_EQ(h_cmd(&H, "get_stats", (const uint32_t[]){7}), 1);
    CHECK_EQ(h_arg(&H.r[0], "bad_messages"), 5);
    CHECK_EQ(h_arg(&H.r[0], "rx_frames"), 6);
    CHECK_EQ(h_arg(&H.r[0], "rx_errors"), 0);
}

static void configure_with_crc(void)
{
    uint8_t cfg[128];
    size_t n = 0;
    uint32_t crc;

    h_init(&H, 0xB007u, 0);
    CHECK_EQ(h_cmd(&H, "config_reset", (const uint32_t[]){1}), 1);
    CHECK_EQ(h_id(&H.r[0]), SP_ID_CONFIG_STATE);
    CHECK_EQ(h_arg(&H.r[0], "is_config"), 0);
    CHECK_EQ(h_arg(&H.r[0], "boot_id"), 0xB007u);
    n += h_msg(cfg + n, "config_relay", (const uint32_t[]){3, 0, 60000}, NULL);
    n += h_msg(cfg + n, "config_schedule", (const uint32_t[]){0, 1080, 80}, NULL);
    n += h_msg(cfg + n, "config_fallback", (const uint32_t[]){2000, 60, 30000}, NULL);
    crc = sp_crc32(0, cfg, n);
    /* All three in one frame: no answer, a bare ack. */
    CHECK_EQ(h_send(&H, cfg, n), 1);
    CHECK_EQ(H.r[0].len, 0);
    /* Wrong CRC: crc_mismatch, still unconfigured. */
    CHECK_EQ(h_cmd(&H, "finalize_config", (const uint32_t[]){4, crc ^ 1u}), 1);
    CHECK_EQ(h_id(&H.r[0]), SP_ID_ERROR);
    CHECK_EQ(h_arg(&H.r[0], "tag"), 4);
    CHECK_EQ(h_arg(&H.r[0], "code"), SP_ERR_CRC_MISMATCH);
    CHECK_EQ(H.mcu.configured, 0);
    CHECK_EQ(h_cmd(&H, "finalize_config", (const uint32_t[]){5, crc}), 1);
    CHECK_EQ(h_id(&H.r[0]), SP_ID_CONFIG_STATE);
    CHECK_EQ(h_arg(&H.r[0], "tag"), 5);
    CHECK_EQ(h_arg(&H.r[0], "is_config"), 1);
    CHECK_EQ(h_arg(&H.r[0], "crc"), crc);
    CHECK_EQ(H.mcu.active.heartbeat_ms, 2000);
    CHECK_EQ(H.mcu.active.relay_default, 0xFB);
    CHECK_EQ(H.mcu.out.relays, 0xFF); /* finalize switches no relay */
    /* Idempotent finalize; a different CRC now is a mismatch, and stays configured. */
    CHECK_EQ(h_cmd(&H, "finalize_config", (const uint32_t[]){6, crc}), 1);
    CHECK_EQ(h_arg(&H.r[0], "is_config"), 1);
    CHECK_EQ(h_cmd(&H, "finalize_config", (const uint32_t[]){7, crc + 1u}), 1);
    CHECK_EQ(h_arg(&H.r[0], "code"), SP_ERR_CRC_MISMATCH);
    CHECK_EQ(H.mcu.configured, 1);
    /* get_config and status carry the CRC. */
    CHECK_EQ(h_cmd(&H, "get_config", (const uint32_t[]){8}), 1);
    CHECK_EQ(h_arg(&H.r[0], "crc"), crc);
    CHECK_EQ(h_cmd(&H, "heartbeat", (const uint32_t[]){9, 0, 0}), 1);
    CHECK_EQ(h_arg(&H.r[0], "config_crc"), crc);
    CHECK_EQ(h_arg(&H.r[0], "flags"), SP_FLAG_CONFIGURED);
    /* config_* now: already_configured with tag 0, no CRC change. */
    CHECK_EQ(h_cmd(&H, "config_alarms", (const uint32_t[]){1, 1}), 1);
    CHECK_EQ(h_arg(&H.r[0], "tag"), 0);
    CHECK_EQ(h_arg(&H.r[0], "code"), SP_ERR_ALREADY_CONFIGURED);
}

static void config_bad_arguments_change_nothing(void)
{
    static const struct {
        const char *name;
        uint32_t a[3];
    } bad[] = {
        {"config_relay", {0, 1, 0}},
        {"config_relay", {9, 1, 0}},
        {"config_relay", {1, 1, 86400001u}},
        {"config_fallback", {99, 50, 1000}},
        {"config_fallback", {600001u, 50, 1000}},
        {"config_fallback", {1000, 101, 1000}},
        {"config_fallback", {1000, 50, 99}},
        {"config_fallback", {1000, 50, 86400001u}},
        {"config_schedule", {8, 0, 0}},
        {"config_schedule", {0, 1440, 0}},
        {"config_schedule", {0, 0, 101}},
    };
    uint8_t cfg[64];
    size_t i, n;

    h_init(&H, 1, 0);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ(h_cmd(&H, bad[i].name, bad[i].a), 1);
        CHECK_EQ(h_id(&H.r[0]), SP_ID_ERROR);
        CHECK_EQ(h_arg(&H.r[0], "tag"), 0);
        CHECK_EQ(h_arg(&H.r[0], "code"), SP_ERR_BAD_ARGUMENT);
    }
    CHECK_EQ(H.mcu.config_crc, 0);
    /* The limits themselves are accepted. */
    n = 0;
    n += h_msg(cfg + n, "config_relay", (const uint32_t[]){8, 1, 86400000u}, NULL);
    n += h_msg(cfg + n, "config_fallback", (const uint32_t[]){100, 100, 100}, NULL);
    n += h_msg(cfg + n, "config_fallback", (const uint32_t[]){600000u, 0, 86400000u}, NULL);
    n += h_msg(cfg + n, "config_schedule", (const uint32_t[]){7, 1439, 100}, NULL);
    n += h_msg(cfg + n, "config_leakage", (const uint32_t[]){0, 0xFF}, NULL);
    CHECK_EQ(h_send(&H, cfg, n), 1);
    CHECK_EQ(H.r[0].len, 0);
    CHECK_EQ(H.mcu.config_crc, sp_crc32(0, cfg, n));
    /* config_state reports the running CRC; config_reset restarts it. */
    CHECK_EQ(h_cmd(&H, "get_config", (const uint32_t[]){1}), 1);
    CHECK_EQ(h_arg(&H.r[0], "crc"), sp_crc32(0, cfg, n));
    CHECK_EQ(h_arg(&H.r[0], "is_config"), 0);
    h_cmd(&H, "config_reset", (const uint32_t[]){1});
    CHECK_EQ(H.mcu.config_crc, 0);
    CHECK_EQ(h_cmd(&H, "finalize_config", (const uint32_t[]){2, 0}), 1);
    CHECK_EQ(h_arg(&H.r[0], "is_config"), 1); /* an empty configuration is one */
}

static void set_commands_need_configuration(void)
{
    h_init(&H, 1, 0);
    CHECK_EQ(h_cmd(&H, "set_relay", (const uint32_t[]){3, 1, 0}), 1);
    CHECK_EQ(h_arg(&H.r[0], "tag"), 3);
    CHECK_EQ(h_arg(&H.r[0], "code"), SP_ERR_NOT_CONFIGURED);
    CHECK_EQ(h_cmd(&H, "set_level", (const uint32_t[]){4, 10}), 1);
    CHECK_EQ(h_arg(&H.r[0], "code"), SP_ERR_NOT_CONFIGURED);
    CHECK_EQ(H.mcu.out.relays, 0xFF);
}

static void set_relay_and_level(void)
{
    h_init(&H, 1, 0);
    h_configure_typical(&H);
    CHECK_EQ(H.mcu.configured, 1);
    /* Relays stay as they were; the level follows the new policy from the next tick. */
    CHECK_EQ(H.mcu.out.relays, 0xFF);
    CHECK_EQ(H.mcu.out.level, 100);
    h_tick(&H, 10);
    CHECK_EQ(H.mcu.out.relays, 0xFF);
    CHECK_EQ(H.mcu.out.level, 40);
    CHECK_EQ(H.mcu.out.source, SP_SRC_FALLBACK_LEVEL);
    CHECK_EQ(h_cmd(&H, "set_relay", (const uint32_t[]){5, 1, 0}), 1);
    CHECK_EQ(h_id(&H.r[0]), SP_ID_RELAY_STATE);
    CHECK_EQ(h_arg(&H.r[0], "tag"), 5);
    CHECK_EQ(h_arg(&H.r[0], "relays"), 0xFE);
    CHECK_EQ(h_arg(&H.r[0], "tripped"), 0);
    CHECK_EQ(h_cmd(&H, "set_relay", (const uint32_t[]){6, 2, 0}), 1);
    CHECK_EQ(h_arg(&H.r[0], "relays"), 0xFC);
    CHECK_EQ(h_cmd(&H, "set_relay", (const uint32_t[]){6, 2, 7}), 1); /* non-zero: on */
    CHECK_EQ(h_arg(&H.r[0], "relays"), 0xFE);
    CHECK_EQ(h_cmd(&H, "set_relay", (const uint32_t[]){7, 0, 1}), 1);
    CHECK_EQ(h_arg(&H.r[0], "code"), SP_ERR_BAD_ARGUMENT);
    CHECK_EQ(h_cmd(&H, "set_relay", (const uint32_t[]){7, 9, 1}), 1);
    CHECK_EQ(h_arg(&H.r[0], "code"), SP_ERR_BAD_ARGUMENT);
    CHECK_EQ(h_cmd(&H, "set_level", (const uint32_t[]){8, 75}), 1);
    CHECK_EQ(h_id(&H.r[0]), SP_ID_LEVEL_STATE);
    CHECK_EQ(h_arg(&H.r[0], "level"), 75);
    CHECK_EQ(h_arg(&H.r[0], "source"), SP_SRC_HOST);
    CHECK_EQ(h_cmd(&H, "set_level", (const uint32_t[]){9, 101}), 1);
    CHECK_EQ(h_arg(&H.r[0], "code"), SP_ERR_BAD_ARGUMENT);
    CHECK_EQ(H.mcu.out.level, 75);
    /* Idempotent: the same command again, the same answer. */
    CHECK_EQ(h_cmd(&H, "set_level", (const uint32_t[]){8, 75}), 1);
    CHECK_EQ(h_arg(&H.r[0], "level"), 75);
}

static void get_inputs_answer(void)
{
    struct sp_inputs *in;

    h_init(&H, 1, 1000);
    in = sp_mcu_inputs(&H.mcu);
    in->door = 1;
    in->water = 0;
    in->photocell = 1;
    in->tilt_x = -250;
    in->tilt_y = 30;
    in->leakage_ua = 1234;
    in->temp_cdeg = -1050;
    in->supply_mv = 23950;
    H.now = 3500;
    CHECK_EQ(h_cmd(&H, "get_inputs", (const uint32_t[]){44}), 1);
    CHECK_EQ(h_id(&H.r[0]), SP_ID_INPUTS);
    CHECK_EQ(h_arg(&H.r[0], "tag"), 44);
    CHECK_EQ(h_arg(&H.r[0], "door"), 1);
    CHECK_EQ(h_arg(&H.r[0], "photocell"), 1);
    CHECK_EQ(sp_i32(h_arg(&H.r[0], "tilt_x")), -250);
    CHECK_EQ(sp_i32(h_arg(&H.r[0], "tilt_y")), 30);
    CHECK_EQ(h_arg(&H.r[0], "leakage_ua"), 1234);
    CHECK_EQ(sp_i32(h_arg(&H.r[0], "temp_cdeg")), -1050);
    CHECK_EQ(h_arg(&H.r[0], "supply_mv"), 23950);
    CHECK_EQ(h_arg(&H.r[0], "uptime_ms"), 2500);
}

static void heartbeat_status_and_clock(void)
{
    h_init(&H, 0xABCDEF01u, 0);
    H.now = 1500;
    CHECK_EQ(h_cmd(&H, "heartbeat", (const uint32_t[]){11, 1700000000u, (uint32_t)-300}), 1);
    CHECK_EQ(h_id(&H.r[0]), SP_ID_STATUS);
    CHECK_EQ(h_arg(&H.r[0], "tag"), 11);
    CHECK_EQ(h_arg(&H.r[0], "flags"), SP_FLAG_CLOCK);
    CHECK_EQ(h_arg(&H.r[0], "config_crc"), 0);
    CHECK_EQ(h_arg(&H.r[0], "boot_id"), 0xABCDEF01u);
    CHECK_EQ(h_arg(&H.r[0], "uptime_ms"), 1500);
    CHECK_EQ(h_arg(&H.r[0], "last_event"), 1);
    CHECK_EQ(h_arg(&H.r[0], "level"), 100);
    CHECK_EQ(h_arg(&H.r[0], "relays"), 0xFF);
    CHECK_EQ(H.mcu.utc_offset_min, -300);
    /* unix_time 0: the clock is unknown again. */
    CHECK_EQ(h_cmd(&H, "heartbeat", (const uint32_t[]){12, 0, 0}), 1);
    CHECK_EQ(h_arg(&H.r[0], "flags"), 0);
}

const struct tt_case mcu_tests[] = {
    TT_CASE(boot_state),
    TT_CASE(boot_event_frame),
    TT_CASE(identify_serves_the_dictionary),
    TT_CASE(identify_count_limits),
    TT_CASE(ack_and_nak),
    TT_CASE(seq_wraps_modulo_16),
    TT_CASE(one_frame_per_response),
    TT_CASE(unknown_and_malformed_stop_the_frame),
    TT_CASE(configure_with_crc),
    TT_CASE(config_bad_arguments_change_nothing),
    TT_CASE(set_commands_need_configuration),
    TT_CASE(set_relay_and_level),
    TT_CASE(get_inputs_answer),
    TT_CASE(heartbeat_status_and_clock),
};
const size_t mcu_tests_n = sizeof mcu_tests / sizeof mcu_tests[0];
