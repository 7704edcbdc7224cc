/* The MCU's own logic: heartbeat fallback, leases, leakage trip, input events, the event
 * ring, the fallback policy, idle drop, and clock wrap-around. */
#include <string.h>

#include "../sp_internal.h"
#include "harness.h"
#include "tests.h"

static struct harness H;

/* Index of the first reply that is an event of this kind, or -1. */
static int find_event(uint8_t kind)
{
    size_t i;

    for (i = 0; i < H.nr; i++)
        if (h_id(&H.r[i]) == SP_ID_EVENT && h_arg(&H.r[i], "kind") == kind)
            return (int)i;
    return -1;
}

static void heartbeat_fallback_and_back(void)
{
    int i;

    h_init(&H, 1, 0);
    h_configure_typical(&H); /* heartbeat_ms 1000 from now */
    h_cmd(&H, "heartbeat", (const uint32_t[]){1, 0, 0});
    h_cmd(&H, "set_relay", (const uint32_t[]){2, 2, 1});
    h_cmd(&H, "set_level", (const uint32_t[]){3, 90});
    CHECK_EQ(H.mcu.out.relays, 0xFF);
    CHECK_EQ(h_tick(&H, 999), 0);
    CHECK_EQ(H.mcu.fallback, 0);
    CHECK_EQ(h_tick(&H, 1), 1);
    CHECK_EQ(H.mcu.fallback, 1);
    i = find_event(SP_EV_FALLBACK_ENTERED);
    CHECK(i == 0);
    CHECK_EQ(H.r[i].seq, H.mcu.expected);
    CHECK_EQ(h_arg(&H.r[i], "tag"), 0);
    /* Setpoints dropped: relay 2 back to default off, level to the fallback level. */
    CHECK_EQ(H.mcu.out.relays, 0xFD);
    CHECK_EQ(H.mcu.out.level, 40);
    CHECK_EQ(H.mcu.out.source, SP_SRC_FALLBACK_LEVEL);
    CHECK_EQ(sp_mcu_flags(&H.mcu), SP_FLAG_CONFIGURED | SP_FLAG_FALLBACK);
    CHECK_EQ(h_tick(&H, 5000), 0); /* entered once */
    CHECK_EQ(h_cmd(&H, "set_relay", (const uint32_t[]){4, 2, 1}), 1);
    CHECK_EQ(h_arg(&H.r[0], "code"), SP_ERR_FALLBACK_ACTIVE);
    CHECK_EQ(h_cmd(&H, "set_level", (const uint32_t[]){5, 1}), 1);
    CHECK_EQ(h_arg(&H.r[0], "code"), SP_ERR_FALLBACK_ACTIVE);
    /* The next heartbeat ends it: the event, then the status. */
    CHECK_EQ(h_cmd(&H, "heartbeat", (const uint32_t[]){6, 0, 0}), 2);
    CHECK_EQ(h_id(&H.r[0]), SP_ID_EVENT);
    CHECK_EQ(h_arg(&H.r[0], "kind"), SP_EV_FALLBACK_LEFT);
    CHECK_EQ(h_id(&H.r[1]), SP_ID_STATUS);
    CHECK_EQ(h_arg(&H.r[1], "flags"), SP_FLAG_CONFIGURED);
    CHECK_EQ(h_arg(&H.r[1], "last_event"), h_arg(&H.r[0], "id"));
    CHECK_EQ(H.mcu.out.relays, 0xFD); /* outputs stay where the fallback put them */
    CHECK_EQ(h_cmd(&H, "set_relay", (const uint32_t[]){7, 2, 1}), 1);
    CHECK_EQ(h_arg(&H.r[0], "relays"), 0xFF);
}

static void no_heartbeat_watch_unconfigured(void)
{
    h_init(&H, 1, 0);
    CHECK_EQ(h_tick(&H, 700000), 0);
    CHECK_EQ(H.mcu.fallback, 0);
}

static void relay_lease_expires(void)
{
    int i;

    h_init(&H, 1, 0);
    h_configure_typical(&H); /* relay 1: default on, 2000 ms */
    h_cmd(&H, "set_relay", (const uint32_t[]){1, 1, 0});
    CHECK_EQ(H.mcu.out.relays & 1, 0);
    h_tick(&H, 900);
    h_cmd(&H, "heartbeat", (const uint32_t[]){2, 0, 0});
    h_tick(&H, 900);
    h_cmd(&H, "heartbeat", (const uint32_t[]){2, 0, 0});
    CHECK_EQ(h_cmd(&H, "set_relay", (const uint32_t[]){3, 1, 0}), 1); /* renewed at 1800 */
    h_tick(&H, 900);
    h_cmd(&H, "heartbeat", (const uint32_t[]){2, 0, 0});
    CHECK_EQ(h_tick(&H, 900), 0); /* 3600: 1800 after the renewal */
    CHECK_EQ(H.mcu.out.relays & 1, 0);
    h_cmd(&H, "heartbeat", (const uint32_t[]){2, 0, 0});
    CHECK_EQ(h_tick(&H, 200), 1); /* 3800: 2000 after */
    i = find_event(SP_EV_LEASE_EXPIRED);
    CHECK(i >= 0);
    CHECK_EQ(sp_i32(h_arg(&H.r[i], "value")), 1);
    CHECK_EQ(H.mcu.out.relays & 1, 1); /* default on */
}

static void relay_without_max_holds_until_heartbeat_lapses(void)
{
    unsigned k;

    h_init(&H, 1, 0);
    h_configure_typical(&H); /* relay 2: default off, max 0 */
    h_cmd(&H, "set_relay", (const uint32_t[]){1, 2, 1});
    for (k = 0; k < 100; k++) {
        h_tick(&H, 500);
        h_cmd(&H, "heartbeat", (const uint32_t[]){2, 0, 0});
        CHECK_EQ(H.mcu.out.relays & 2, 2);
    }
    h_tick(&H, 1000);
    CHECK_EQ(H.mcu.fallback, 1);
    CHECK_EQ(H.mcu.out.relays & 2, 0);
}

static void level_lease_expires(void)
{
    int i;

    h_init(&H, 1, 0);
    h_configure_typical(&H); /* lease 5000 ms, fallback level 40 */
    h_cmd(&H, "set_level", (const uint32_t[]){1, 70});
    for (i = 0; i < 9; i++) {
        h_tick(&H, 500);
        h_cmd(&H, "heartbeat", (const uint32_t[]){2, 0, 0});
    }
    CHECK_EQ(H.mcu.out.level, 70);
    CHECK_EQ(h_tick(&H, 500), 1);
    i = find_event(SP_EV_LEASE_EXPIRED);
    CHECK(i >= 0);
    CHECK_EQ(sp_i32(h_arg(&H.r[i], "value")), 255);
    CHECK_EQ(H.mcu.out.level, 40);
    CHECK_EQ(H.mcu.out.source, SP_SRC_FALLBACK_LEVEL);
}

static void leakage_trip_latches(void)
{
    int i;

    h_init(&H, 1, 0);
    h_configure_typical(&H); /* trip 1000 uA on relays 1 and 2 */
    h_cmd(&H, "set_relay", (const uint32_t[]){1, 2, 1});
    h_cmd(&H, "set_relay", (const uint32_t[]){1, 3, 0});
    CHECK_EQ(H.mcu.out.relays, 0xFB);
    H.mcu.in.leakage_ua = 999;
    CHECK_EQ(h_tick(&H, 10), 0);
    H.mcu.in.leakage_ua = 1000;
    CHECK_EQ(h_tick(&H, 10), 1);
    i = find_event(SP_EV_LEAKAGE_TRIP);
    CHECK(i >= 0);
    CHECK_EQ(sp_i32(h_arg(&H.r[i], "value")), 1000);
    CHECK_EQ(H.mcu.out.relays, 0xF8); /* 1 and 2 cut, 3 still the host's */
    CHECK(sp_mcu_flags(&H.mcu) & SP_FLAG_TRIPPED);
    CHECK_EQ(h_tick(&H, 10), 0); /* latched: one event */
    /* The host cannot switch a cut relay on. */
    CHECK_EQ(h_cmd(&H, "set_relay", (const uint32_t[]){2, 1, 1}), 1);
    CHECK_EQ(h_id(&H.r[0]), SP_ID_RELAY_STATE);
    CHECK_EQ(h_arg(&H.r[0], "relays"), 0xF8);
    CHECK_EQ(h_arg(&H.r[0], "tripped"), 1);
    CHECK_EQ(h_cmd(&H, "set_relay", (const uint32_t[]){2, 3, 1}), 1);
    CHECK_EQ(h_arg(&H.r[0], "relays"), 0xFC);
    /* Still leaking: clear_trip refused. */
    CHECK_EQ(h_cmd(&H, "clear_trip", (const uint32_t[]){3}), 1);
    CHECK_EQ(h_arg(&H.r[0], "tag"), 3);
    CHECK_EQ(h_arg(&H.r[0], "code"), SP_ERR_TRIPPED);
    /* Below the level, even if the current dropped without a clear: still latched. */
    H.mcu.in.leakage_ua = 10;
    h_tick(&H, 10);
    CHECK_EQ(H.mcu.out.relays, 0xFC);
    CHECK_EQ(h_cmd(&H, "clear_trip", (const uint32_t[]){4}), 2);
    CHECK_EQ(h_arg(&H.r[0], "kind"), SP_EV_TRIP_CLEARED);
    CHECK_EQ(h_id(&H.r[1]), SP_ID_STATUS);
    CHECK_EQ(h_arg(&H.r[1], "flags") & SP_FLAG_TRIPPED, 0);
    CHECK_EQ(h_arg(&H.r[1], "relays"), 0xFD); /* back to defaults: 1 on, 2 off */
    /* clear_trip when not tripped: just the status. */
    CHECK_EQ(h_cmd(&H, "clear_trip", (const uint32_t[]){5}), 1);
    CHECK_EQ(h_id(&H.r[0]), SP_ID_STATUS);
}

static void leakage_trip_at_boot_defaults(void)
{
    h_init(&H, 1, 0);
    H.mcu.in.leakage_ua = 30000;
    h_tick(&H, 10);
    CHECK_EQ(H.mcu.out.relays, 0x00);
    CHECK_EQ(H.mcu.tripped, 1);
}

static void door_water_tilt_impact_events(void)
{
    struct sp_inputs *in;

    h_init(&H, 1, 0);
    h_configure_typical(&H); /* tilt 500, impact 2000 */
    in = sp_mcu_inputs(&H.mcu);
    in->door = 1;
    in->water = 1;
    CHECK_EQ(h_tick(&H, 10), 2);
    CHECK_EQ(h_arg(&H.r[0], "kind"), SP_EV_DOOR_OPEN);
    CHECK_EQ(h_arg(&H.r[1], "kind"), SP_EV_WATER_DETECTED);
    CHECK_EQ(h_tick(&H, 10), 0);
    in->door = 0;
    in->water = 0;
    CHECK_EQ(h_tick(&H, 10), 2);
    CHECK_EQ(h_arg(&H.r[0], "kind"), SP_EV_DOOR_CLOSED);
    CHECK_EQ(h_arg(&H.r[1], "kind"), SP_EV_WATER_CLEARED);
    /* Tilt: fires at 500, not again until below 250. */
    in->tilt_y = -499;
    CHECK_EQ(h_tick(&H, 10), 0);
    in->tilt_y = -500;
    CHECK_EQ(h_tick(&H, 10), 1);
    CHECK_EQ(h_arg(&H.r[0], "kind"), SP_EV_TILT);
    CHECK_EQ(sp_i32(h_arg(&H.r[0], "value")), 500);
    in->tilt_y = 250;
    CHECK_EQ(h_tick(&H, 10), 0);
    in->tilt_x = 900;
    CHECK_EQ(h_tick(&H, 10), 0); /* not re-armed */
    in->tilt_x = 249;
    in->tilt_y = 0;
    CHECK_EQ(h_tick(&H, 10), 0); /* re-armed */
    in->tilt_x = 600;
    CHECK_EQ(h_tick(&H, 10), 1);
    CHECK_EQ(sp_i32(h_arg(&H.r[0], "value")), 600);
    /* Impact: a peak at or above the limit, consumed by the tick. */
    in->accel_peak_mg = 1999;
    CHECK_EQ(h_tick(&H, 10), 0);
    CHECK_EQ(in->accel_peak_mg, 0);
    in->accel_peak_mg = 2500;
    CHECK_EQ(h_tick(&H, 10), 1);
    CHECK_EQ(h_arg(&H.r[0], "kind"), SP_EV_IMPACT);
    CHECK_EQ(sp_i32(h_arg(&H.r[0], "value")), 2500);
    CHECK_EQ(h_tick(&H, 10), 0);
}

static void zero_limits_disable_events(void)
{
    uint8_t cfg[16];
    size_t n = h_msg(cfg, "config_alarms", (const uint32_t[]){0, 0}, NULL);

    h_init(&H, 1, 0);
    h_configure(&H, cfg, n);
    H.mcu.in.tilt_x = 9000;
    H.mcu.in.accel_peak_mg = 16000;
    CHECK_EQ(h_tick(&H, 10), 0);
    /* Boot default: impact off, tilt on at 500. */
    h_init(&H, 1, 0);
    H.mcu.in.accel_peak_mg = 16000;
    H.mcu.in.tilt_x = -2147483647 - 1;
    CHECK_EQ(h_tick(&H, 10), 1);
    CHECK_EQ(h_arg(&H.r[0], "kind"), SP_EV_TILT);
    CHECK_EQ(sp_i32(h_arg(&H.r[0], "value")), 2147483647);
}

static void event_ring_and_get_event(void)
{
    unsigned k;

    h_init(&H, 1, 0);
    /* Events 2..21 (door toggles); the ring keeps the last 16: 6..21. */
    for (k = 0; k < 20; k++) {
        H.mcu.in.door = (uint8_t)((k + 1) & 1);
        CHECK_EQ(h_tick(&H, 10), 1);
        CHECK_EQ(h_arg(&H.r[0], "id"), k + 2);
    }
    CHECK_EQ(h_cmd(&H, "get_event", (const uint32_t[]){1, 0}), 1);
    CHECK_EQ(h_arg(&H.r[0], "tag"), 1);
    CHECK_EQ(h_arg(&H.r[0], "id"), 6); /* after is too old: the oldest held */
    CHECK_EQ(h_arg(&H.r[0], "kind"), SP_EV_DOOR_OPEN + ((6 - 2) & 1));
    CHECK_EQ(h_cmd(&H, "get_event", (const uint32_t[]){2, 10}), 1);
    CHECK_EQ(h_arg(&H.r[0], "id"), 11);
    CHECK_EQ(h_arg(&H.r[0], "uptime_ms"), 100);
    CHECK_EQ(h_cmd(&H, "get_event", (const uint32_t[]){3, 21}), 1);
    CHECK_EQ(h_arg(&H.r[0], "id"), 0);
    CHECK_EQ(h_arg(&H.r[0], "kind"), 0);
    CHECK_EQ(h_arg(&H.r[0], "value"), 0);
    CHECK_EQ(h_arg(&H.r[0], "uptime_ms"), 0);
    CHECK_EQ(h_arg(&H.r[0], "unix_time"), 0);
    CHECK_EQ(h_cmd(&H, "get_stats", (const uint32_t[]){4}), 1);
    CHECK_EQ(h_arg(&H.r[0], "events_lost"), 5);
    CHECK_EQ(h_cmd(&H, "heartbeat", (const uint32_t[]){5, 0, 0}), 1);
    CHECK_EQ(h_arg(&H.r[0], "last_event"), 21);
}

static void event_unix_time(void)
{
    h_init(&H, 1, 0);
    H.now = 1000;
    h_cmd(&H, "heartbeat", (const uint32_t[]){1, 1700000000u, 0});
    H.mcu.in.door = 1;
    CHECK_EQ(h_tick(&H, 2999), 1);
    CHECK_EQ(h_arg(&H.r[0], "unix_time"), 1700000002u);
    CHECK_EQ(h_arg(&H.r[0], "uptime_ms"), 3999);
}

/* A configuration with a schedule 06:00 -> 0 and 18:30 -> 80, fallback level 30. */
static void configure_schedule(void)
{
    uint8_t cfg[64];
    size_t n = 0;

    n += h_msg(cfg + n, "config_fallback", (const uint32_t[]){1000, 30, 60000}, NULL);
    n += h_msg(cfg + n, "config_schedule", (const uint32_t[]){5, 360, 0}, NULL);
    n += h_msg(cfg + n, "config_schedule", (const uint32_t[]){2, 1110, 80}, NULL);
    h_configure(&H, cfg, n);
}

/* Sends a heartbeat and runs a tick, where the level follows the policy. */
static void beat(uint32_t unix_time, int32_t offset_min)
{
    h_cmd(&H, "heartbeat", (const uint32_t[]){1, unix_time, (uint32_t)offset_min});
    h_tick(&H, 0);
}

static void fallback_policy_schedule_photocell_level(void)
{
    /* 1700000000 is 2023-11-14 22:13:20 UTC. */
    const uint32_t t2213 = 1700000000u;

    h_init(&H, 1, 0);
    /* Unconfigured: the boot defaults' policy (photocell, else level 100). */
    H.mcu.in.photocell = SP_PHOTOCELL_LIGHT;
    h_tick(&H, 10);
    CHECK_EQ(H.mcu.out.level, 0);
    CHECK_EQ(H.mcu.out.source, SP_SRC_PHOTOCELL);
    H.mcu.in.photocell = SP_PHOTOCELL_NONE;
    h_tick(&H, 10);
    CHECK_EQ(H.mcu.out.level, 100);
    CHECK_EQ(H.mcu.out.source, SP_SRC_FALLBACK_LEVEL);
    CHECK_OK(configure_schedule());
    CHECK_EQ(H.mcu.out.level, 100); /* not before the next tick */
    h_tick(&H, 10);
    /* No clock: photocell not fitted -> fallback level. */
    CHECK_EQ(H.mcu.out.level, 30);
    CHECK_EQ(H.mcu.out.source, SP_SRC_FALLBACK_LEVEL);
    H.mcu.in.photocell = SP_PHOTOCELL_DARK;
    h_tick(&H, 10);
    CHECK_EQ(H.mcu.out.level, 30);
    CHECK_EQ(H.mcu.out.source, SP_SRC_PHOTOCELL);
    H.mcu.in.photocell = 7; /* not 0 or 1: not fitted */
    h_tick(&H, 10);
    CHECK_EQ(H.mcu.out.source, SP_SRC_FALLBACK_LEVEL);
    H.mcu.in.photocell = SP_PHOTOCELL_LIGHT;
    h_tick(&H, 10);
    CHECK_EQ(H.mcu.out.level, 0);
    CHECK_EQ(H.mcu.out.source, SP_SRC_PHOTOCELL);
    /* With the clock: 22:13 UTC -> the 18:30 step. */
    CHECK_OK(beat(t2213, 0));
    CHECK_EQ(H.mcu.out.level, 80);
    CHECK_EQ(H.mcu.out.source, SP_SRC_SCHEDULE);
    /* UTC-17:00 -> 05:13 local: before the first step, wraps to the 18:30 one. */
    CHECK_OK(beat(t2213, -1020));
    CHECK_EQ(H.mcu.out.level, 80);
    /* UTC+8 -> 06:13 local: the 06:00 step. */
    CHECK_OK(beat(t2213, 480));
    CHECK_EQ(H.mcu.out.level, 0);
    /* Any int32 offset is taken, however many days it spans (mod 1440 minutes). */
    CHECK_OK(beat(t2213, INT32_MAX)); /* 00:20 */
    CHECK_EQ(H.mcu.out.level, 80);
    CHECK_OK(beat(t2213, INT32_MAX - 1000)); /* 07:40 */
    CHECK_EQ(H.mcu.out.level, 0);
    CHECK_OK(beat(t2213, INT32_MIN)); /* 20:05 */
    CHECK_EQ(H.mcu.out.level, 80);
    CHECK_OK(beat(t2213, 3 * 1440 + 480)); /* 06:13 */
    CHECK_EQ(H.mcu.out.level, 0);
    CHECK_OK(beat(t2213, -5 * 1440 - 1020)); /* 05:13 */
    CHECK_EQ(H.mcu.out.level, 80);
    /* Exactly 18:30 local (UTC-3:43). */
    CHECK_OK(beat(t2213, -223));
    CHECK_EQ(H.mcu.out.level, 80);
    /* One minute earlier, 18:29:20: still the 06:00 step... */
    CHECK_OK(beat(t2213, -224));
    CHECK_EQ(H.mcu.out.level, 0);
    /* ...and the clock runs on in whole seconds to 18:30:00. */
    h_tick(&H, 39999);
    CHECK_EQ(H.mcu.out.level, 0);
    h_tick(&H, 1);
    CHECK_EQ(H.mcu.out.level, 80);
    CHECK_EQ(spi_unix_now(&H.mcu), t2213 + 40u);
    /* unix_time 0: the clock is invalid again, the photocell decides. */
    CHECK_OK(beat(0, 0));
    CHECK_EQ(H.mcu.out.source, SP_SRC_PHOTOCELL);
}

static void schedule_tie_and_single_step(void)
{
    uint8_t cfg[64];
    size_t n = 0;

    /* Two steps at 12:00: the higher index wins the tie. */
    n += h_msg(cfg + n, "config_schedule", (const uint32_t[]){6, 720, 66}, NULL);
    n += h_msg(cfg + n, "config_schedule", (const uint32_t[]){1, 720, 11}, NULL);
    n += h_msg(cfg + n, "config_schedule", (const uint32_t[]){3, 720, 33}, NULL);
    h_init(&H, 1, 0);
    h_configure(&H, cfg, n);
    CHECK_OK(beat(1700000000u, 0)); /* 22:13 */
    CHECK_EQ(H.mcu.out.level, 66);
    CHECK_OK(beat(1700000000u, 600)); /* 08:13 next day: wraps to the same steps */
    CHECK_EQ(H.mcu.out.level, 66);
    /* A re-sent index replaces its step. */
    n = h_msg(cfg, "config_schedule", (const uint32_t[]){0, 0, 5}, NULL);
    n += h_msg(cfg + n, "config_schedule", (const uint32_t[]){0, 1, 9}, NULL);
    h_init(&H, 1, 0);
    h_configure(&H, cfg, n);
    CHECK_OK(beat(1700000000u, 0));
    CHECK_EQ(H.mcu.out.level, 9);
    /* Local time before 1970: unix 90 (00:01:30 UTC) at UTC-2 is 22:01:30 the day before. */
    n = h_msg(cfg, "config_schedule", (const uint32_t[]){0, 1320, 22}, NULL);
    n += h_msg(cfg + n, "config_schedule", (const uint32_t[]){1, 1322, 44}, NULL);
    h_init(&H, 1, 0);
    h_configure(&H, cfg, n);
    CHECK_OK(beat(90, -120));
    CHECK_EQ(H.mcu.out.level, 22);
    CHECK_OK(beat(90 + 60, -120));
    CHECK_EQ(H.mcu.out.level, 44);
}

static void config_reset_keeps_outputs(void)
{
    h_init(&H, 1, 0);
    h_configure_typical(&H);
    h_cmd(&H, "set_relay", (const uint32_t[]){1, 3, 0});
    h_cmd(&H, "set_level", (const uint32_t[]){2, 55});
    CHECK_EQ(H.mcu.out.relays, 0xFB);
    CHECK_EQ(h_cmd(&H, "config_reset", (const uint32_t[]){3}), 1);
    CHECK_EQ(h_arg(&H.r[0], "is_config"), 0);
    CHECK_EQ(h_arg(&H.r[0], "crc"), 0);
    CHECK_EQ(H.mcu.out.level, 55);
    CHECK_EQ(H.mcu.out.relays & 0x04, 0); /* relay 3: the host's off, lease running */
    CHECK_EQ(h_cmd(&H, "set_level", (const uint32_t[]){4, 10}), 1);
    CHECK_EQ(h_arg(&H.r[0], "code"), SP_ERR_NOT_CONFIGURED);
    /* The level lease (5000 ms, from the old configuration) still ends. */
    h_tick(&H, 5000);
    CHECK_EQ(H.mcu.out.level, 100);
    CHECK(find_event(SP_EV_LEASE_EXPIRED) >= 0);
}

static void mcu_idle_drop_counts_error(void)
{
    uint8_t f[SP_MAX_FRAME];
    size_t n = sp_frame_encode(f, 0, 0, (const uint8_t[]){16, 1}, 2);

    h_init(&H, 1, 0);
    sp_mcu_rx(&H.mcu, f, 3, 0);
    CHECK_EQ(h_tick(&H, 20), 0);
    CHECK_EQ(H.mcu.rx.len, 3);
    CHECK_EQ(h_tick(&H, 1), 0); /* more than RX_IDLE_MS */
    CHECK_EQ(H.mcu.rx.len, 0);
    /* The frame whole: answered, with the drop counted. */
    sp_mcu_rx(&H.mcu, f, n, H.now);
    CHECK_EQ(h_collect(&H), 1);
    CHECK_EQ(h_id(&H.r[0]), SP_ID_STATS);
    CHECK_EQ(h_arg(&H.r[0], "rx_errors"), 1);
    CHECK_EQ(h_arg(&H.r[0], "rx_frames"), 1);
}

static void clock_wrap_around(void)
{
    const uint32_t start = 0xFFFFF800u; /* 2048 ms before the counter wraps */

    h_init(&H, 1, start);
    h_configure_typical(&H);
    h_cmd(&H, "heartbeat", (const uint32_t[]){1, 0, 0});
    h_cmd(&H, "set_relay", (const uint32_t[]){2, 1, 0});
    h_tick(&H, 900);
    h_cmd(&H, "heartbeat", (const uint32_t[]){1, 0, 0});
    h_tick(&H, 900);
    h_cmd(&H, "heartbeat", (const uint32_t[]){1, 0, 0});
    CHECK_EQ(H.mcu.out.relays & 1, 0);
    h_tick(&H, 200); /* 2000 ms: the lease ends */
    CHECK_EQ(H.mcu.out.relays & 1, 1);
    h_tick(&H, 900);
    h_cmd(&H, "heartbeat", (const uint32_t[]){1, 0, 0});
    h_tick(&H, 900); /* now past the wrap */
    CHECK(H.now < start);
    CHECK_EQ(H.mcu.fallback, 0);
    CHECK_EQ(h_cmd(&H, "get_inputs", (const uint32_t[]){3}), 1);
    CHECK_EQ(h_arg(&H.r[0], "uptime_ms"), 3800);
    h_tick(&H, 100);
    CHECK_EQ(H.mcu.fallback, 1);
}

static void no_config_fallback_no_watch(void)
{
    uint8_t cfg[16];
    size_t n = h_msg(cfg, "config_relay", (const uint32_t[]){1, 1, 0}, NULL);

    /* Configured without config_fallback: no heartbeat watch, and a level lease that holds
     * until the heartbeat lapses, i.e. for good. */
    h_init(&H, 1, 0);
    h_configure(&H, cfg, n);
    CHECK_EQ(H.mcu.active.heartbeat_ms, 0);
    h_cmd(&H, "set_level", (const uint32_t[]){1, 33});
    CHECK_EQ(h_tick(&H, 86400000u), 0);
    CHECK_EQ(H.mcu.fallback, 0);
    CHECK_EQ(H.mcu.out.level, 33);
}

static void trip_during_fallback_and_leases(void)
{
    h_init(&H, 1, 0);
    h_configure_typical(&H); /* trip 1000 uA on relays 1, 2; relay 1 lease 2000 ms */
    h_cmd(&H, "set_relay", (const uint32_t[]){1, 1, 1});
    H.mcu.in.leakage_ua = 5000;
    CHECK_EQ(h_tick(&H, 10), 1);
    CHECK_EQ(H.mcu.out.relays & 3, 0);
    /* The trip ended relay 1's lease: no lease_expired later. The fallback puts the
     * relays to their defaults, but the cut ones stay off. */
    CHECK_EQ(h_tick(&H, 2000), 1);
    CHECK(find_event(SP_EV_FALLBACK_ENTERED) == 0);
    CHECK_EQ(H.mcu.out.relays, 0xFC);
    CHECK_EQ(h_tick(&H, 5000), 0);
    /* config_reset keeps the latch and the fallback; only a heartbeat ends a fallback. */
    h_cmd(&H, "config_reset", (const uint32_t[]){2});
    CHECK_EQ(sp_mcu_flags(&H.mcu), SP_FLAG_FALLBACK | SP_FLAG_TRIPPED);
    CHECK_EQ(h_cmd(&H, "heartbeat", (const uint32_t[]){3, 0, 0}), 2);
    CHECK_EQ(h_arg(&H.r[0], "kind"), SP_EV_FALLBACK_LEFT);
    CHECK_EQ(h_arg(&H.r[1], "flags"), SP_FLAG_TRIPPED);
    /* With the boot defaults back, the trip level is 30000 uA: clear_trip works now. */
    CHECK_EQ(h_cmd(&H, "clear_trip", (const uint32_t[]){4}), 2);
    CHECK_EQ(h_arg(&H.r[1], "relays"), 0xFF);
}

static void two_instances_are_independent(void)
{
    static struct harness other;

    h_init(&H, 1, 0);
    h_init(&other, 2, 0);
    h_configure_typical(&H);
    CHECK_EQ(H.mcu.configured, 1);
    CHECK_EQ(other.mcu.configured, 0);
    CHECK_EQ(h_cmd(&other, "get_config", (const uint32_t[]){1}), 1);
    CHECK_EQ(h_arg(&other.r[0], "boot_id"), 2);
    CHECK_EQ(other.r[0].seq, 1);
}

const struct tt_case logic_tests[] = {
    TT_CASE(heartbeat_fallback_and_back),
    TT_CASE(no_heartbeat_watch_unconfigured),
    TT_CASE(relay_lease_expires),
    TT_CASE(relay_without_max_holds_until_heartbeat_lapses),
    TT_CASE(level_lease_expires),
    TT_CASE(leakage_trip_latches),
    TT_CASE(leakage_trip_at_boot_defaults),
    TT_CASE(door_water_tilt_impact_events),
    TT_CASE(zero_limits_disable_events),
    TT_CASE(event_ring_and_get_event),
    TT_CASE(event_unix_time),
    TT_CASE(fallback_policy_schedule_photocell_level),
    TT_CASE(schedule_tie_and_single_step),
    TT_CASE(config_reset_keeps_outputs),
    TT_CASE(mcu_idle_drop_counts_error),
    TT_CASE(clock_wrap_around),
    TT_CASE(no_config_fallback_no_watch),
    TT_CASE(trip_during_fallback_and_leases),
    TT_CASE(two_instances_are_independent),
};
const size_t logic_tests_n = sizeof logic_tests / sizeof logic_tests[0];
