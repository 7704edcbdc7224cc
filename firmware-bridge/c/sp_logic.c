/* The MCU's own logic (PROTOCOL.md sections 6 and 7): tick, outputs and the fallback
 * policy, the clock, and the event ring. */
#include <string.h>

#include "sp_codec.h"
#include "sp_internal.h"

void spi_config_defaults(struct sp_config *c)
{
    memset(c, 0, sizeof *c);
    c->relay_default = 0xFFu;
    c->heartbeat_ms = 0; /* no heartbeat watch */
    c->fallback_level = 100;
    c->lease_ms = 0;
    c->trip_ua = 30000u;
    c->trip_mask = 0xFFu;
    c->tilt_cdeg = 500u;
    c->impact_mg = 0u;
}

/* ---- clock ---- */

uint32_t spi_unix_now(struct sp_mcu *m)
{
    uint32_t secs;

    if (!m->clock_valid)
        return 0;
    /* Advance in whole seconds so the difference never grows large enough to wrap. */
    secs = (uint32_t)(m->now_ms - m->clock_ms) / 1000u;
    m->clock_unix += secs;
    m->clock_ms += secs * 1000u;
    return m->clock_unix;
}

/* Local minute of the day, 0..1439: floor((unix + 60 * offset) / 60) mod 1440. The offset
 * is whole minutes, so that is (unix / 60 + offset) mod 1440, done in unsigned 32 bits:
 * 64-bit or signed division would pull libgcc routines into a Cortex-M0+ image (no divide
 * instruction) for this one modulo, 800 bytes of its flash. */
static unsigned local_minute(struct sp_mcu *m)
{
    uint32_t minute = spi_unix_now(m) / 60u % 1440u;
    int32_t offset = m->utc_offset_min;
    uint32_t shift = (offset < 0 ? 0u - (uint32_t)offset : (uint32_t)offset) % 1440u;

    minute += offset < 0 ? 1440u - shift : shift; /* < 2880 */
    return (unsigned)(minute >= 1440u ? minute - 1440u : minute);
}

/* ---- outputs ---- */

/* The fallback policy for the level: the schedule if the clock is valid and it has a
 * step, else the photocell if fitted, else the fallback level. */
static void fallback_policy(struct sp_mcu *m, uint8_t *level, uint8_t *source)
{
    const struct sp_config *c = &m->active;

    if (m->clock_valid && c->schedule_used) {
        unsigned now = local_minute(m);
        int best = -1, last = -1;
        unsigned i;

        /* The last step at or before now in minute order (equal minutes: higher index);
         * none: the last step of the day, wrapping around midnight. */
        for (i = 0; i < SP_SCHEDULE_STEPS; i++) {
            if (!(c->schedule_used & (1u << i)))
                continue;
            if (last < 0 || c->schedule_minute[i] >= c->schedule_minute[last])
                last = (int)i;
            if (c->schedule_minute[i] <= now &&
                (best < 0 || c->schedule_minute[i] >= c->schedule_minute[best]))
                best = (int)i;
        }
        if (best < 0)
            best = last;
        *level = c->schedule_level[best];
        *source = SP_SRC_SCHEDULE;
    } else if (m->in.photocell == SP_PHOTOCELL_DARK || m->in.photocell == SP_PHOTOCELL_LIGHT) {
        *level = m->in.photocell == SP_PHOTOCELL_DARK ? c->fallback_level : 0u;
        *source = SP_SRC_PHOTOCELL;
    } else {
        *level = c->fallback_level;
        *source = SP_SRC_FALLBACK_LEVEL;
    }
}

/* The level, when no host lease holds it, is the fallback policy's. */
void spi_level_policy(struct sp_mcu *m)
{
    if (!m->level_held)
        fallback_policy(m, &m->out.level, &m->out.source);
}

/* The heartbeat lapsed: the host's setpoints go, relays to their defaults (a relay cut by
 * a trip stays off), the level to the fallback policy. */
static void enter_fallback(struct sp_mcu *m)
{
    m->fallback = 1;
    m->relay_held = 0;
    m->level_held = 0;
    m->out.relays = (uint8_t)(m->active.relay_default & ~m->trip_cut);
    spi_level_policy(m);
    spi_event(m, SP_EV_FALLBACK_ENTERED, 0);
}

/* ---- events ---- */

void spi_event(struct sp_mcu *m, uint8_t kind, int32_t value)
{
    struct sp_event *e;
    uint32_t v[SP_N_EVENT];

    if (m->ring_count == SP_EVENTS) {
        m->ring_first = (uint8_t)((m->ring_first + 1u) % SP_EVENTS);
        m->ring_count--;
        m->stats.events_lost++;
    }
    e = &m->ring[(m->ring_first + m->ring_count) % SP_EVENTS];
    m->ring_count++;
    e->id = ++m->last_event_id;
    e->kind = kind;
    e->value = value;
    e->uptime_ms = spi_uptime(m);
    e->unix_time = spi_unix_now(m);

    v[SP_A_EVENT_TAG] = 0;
    v[SP_A_EVENT_ID] = e->id;
    v[SP_A_EVENT_KIND] = e->kind;
    v[SP_A_EVENT_VALUE] = (uint32_t)e->value;
    v[SP_A_EVENT_UPTIME_MS] = e->uptime_ms;
    v[SP_A_EVENT_UNIX_TIME] = e->unix_time;
    spi_send_msg(m, SP_M_EVENT, v, NULL);
}

const struct sp_event *spi_event_after(const struct sp_mcu *m, uint32_t after)
{
    unsigned i;

    for (i = 0; i < m->ring_count; i++) {
        const struct sp_event *e = &m->ring[(m->ring_first + i) % SP_EVENTS];

        if (e->id > after)
            return e;
    }
    return NULL;
}

/* ---- tick ---- */

static int32_t clamp_i32(uint32_t v)
{
    return v > 0x7FFFFFFFu ? (int32_t)0x7FFFFFFF : (int32_t)v;
}

static uint32_t abs_u32(int32_t v)
{
    return v < 0 ? 0u - (uint32_t)v : (uint32_t)v;
}

static void inputs_to_events(struct sp_mcu *m)
{
    const struct sp_config *c = &m->active;
    uint8_t door = m->in.door ? 1u : 0u;
    uint8_t water = m->in.water ? 1u : 0u;
    uint32_t tx = abs_u32(m->in.tilt_x), ty = abs_u32(m->in.tilt_y);
    uint32_t tilt = tx > ty ? tx : ty;

    if (door != m->prev_door) {
        m->prev_door = door;
        spi_event(m, door ? SP_EV_DOOR_OPEN : SP_EV_DOOR_CLOSED, 0);
    }
    if (water != m->prev_water) {
        m->prev_water = water;
        spi_event(m, water ? SP_EV_WATER_DETECTED : SP_EV_WATER_CLEARED, 0);
    }
    if (c->tilt_cdeg != 0) {
        if (m->tilt_armed && tilt >= c->tilt_cdeg) {
            m->tilt_armed = 0;
            spi_event(m, SP_EV_TILT, clamp_i32(tilt));
        } else if (!m->tilt_armed && (uint64_t)tilt * 2u < c->tilt_cdeg) {
            m->tilt_armed = 1;
        }
    }
    if (c->impact_mg && m->in.accel_peak_mg >= c->impact_mg)
        spi_event(m, SP_EV_IMPACT, clamp_i32(m->in.accel_peak_mg));
}

static void leakage_trip(struct sp_mcu *m)
{
    const struct sp_config *c = &m->active;

    if (m->tripped || c->trip_ua == 0 || m->in.leakage_ua < c->trip_ua)
        return;
    m->tripped = 1;
    m->trip_cut = c->trip_mask;
    m->out.relays = (uint8_t)(m->out.relays & ~m->trip_cut);
    m->relay_held = (uint8_t)(m->relay_held & ~m->trip_cut); /* their leases end too */
    spi_event(m, SP_EV_LEAKAGE_TRIP, clamp_i32(m->in.leakage_ua));
}

static void heartbeat_watch(struct sp_mcu *m)
{
    if (!m->configured || m->fallback || m->active.heartbeat_ms == 0 ||
        (uint32_t)(m->now_ms - m->last_heartbeat_ms) < m->active.heartbeat_ms)
        return;
    enter_fallback(m);
}

static int lease_over(uint32_t now, uint32_t set_ms, uint32_t lease_ms)
{
    return lease_ms != 0 && (uint32_t)(now - set_ms) >= lease_ms;
}

static void leases(struct sp_mcu *m)
{
    unsigned i;

    for (i = 0; i < SP_RELAYS; i++) {
        uint8_t bit = (uint8_t)(1u << i);

        if ((m->relay_held & bit) &&
            lease_over(m->now_ms, m->relay_set_ms[i], m->relay_lease_ms[i])) {
            m->relay_held = (uint8_t)(m->relay_held & ~bit);
            m->out.relays = (uint8_t)((m->out.relays & ~bit) | (m->active.relay_default & bit));
            spi_event(m, SP_EV_LEASE_EXPIRED, (int32_t)(i + 1u));
        }
    }
    if (m->level_held && lease_over(m->now_ms, m->level_set_ms, m->level_lease_ms)) {
        m->level_held = 0;
        spi_level_policy(m);
        spi_event(m, SP_EV_LEASE_EXPIRED, 255);
    }
}

void sp_mcu_tick(struct sp_mcu *m, uint32_t now_ms)
{
    m->now_ms = now_ms;
    sp_rx_idle(&m->rx, now_ms);
    (void)spi_unix_now(m); /* keeps the clock's base recent: no wrap in a long silence */
    inputs_to_events(m);
    leakage_trip(m);
    heartbeat_watch(m);
    leases(m);
    spi_level_policy(m);
    m->in.accel_peak_mg = 0; /* consumed */
}
