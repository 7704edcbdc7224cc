/* The host's commands (PROTOCOL.md sections 3 to 5), run for each message of an accepted
 * frame, in order. */
#include "sp_codec.h"
#include "sp_crc.h"
#include "sp_internal.h"

#define MAX_DURATION_MS 86400000u
#define HEARTBEAT_MIN_MS 100u
#define HEARTBEAT_MAX_MS 600000u
#define LEASE_MIN_MS 100u
#define LEASE_MAX_MS 86400000u
#define MINUTES_PER_DAY 1440u
#define LEVEL_MAX 100u

static void send_config_state(struct sp_mcu *m, uint32_t tag)
{
    uint32_t v[SP_N_CONFIG_STATE];

    v[SP_A_CONFIG_STATE_TAG] = tag;
    v[SP_A_CONFIG_STATE_IS_CONFIG] = m->configured;
    v[SP_A_CONFIG_STATE_CRC] = m->config_crc; /* the running CRC while unconfigured */
    v[SP_A_CONFIG_STATE_BOOT_ID] = m->boot_id;
    spi_send_msg(m, SP_M_CONFIG_STATE, v, NULL);
}

static void identify(struct sp_mcu *m, const uint32_t *a)
{
    uint32_t offset = a[SP_A_IDENTIFY_OFFSET], count = a[SP_A_IDENTIFY_COUNT];
    uint32_t v[SP_N_IDENTIFY_RESPONSE];
    uint32_t n = 0;

    if (count < 1 || count > SP_IDENTIFY_MAX) {
        spi_send_error(m, 0, SP_ERR_BAD_ARGUMENT);
        return;
    }
    if (offset < SP_DICT_JSON_LEN)
        n = SP_DICT_JSON_LEN - offset < count ? SP_DICT_JSON_LEN - offset : count;
    v[SP_A_IDENTIFY_RESPONSE_OFFSET] = offset;
    v[SP_A_IDENTIFY_RESPONSE_DATA] = n;
    spi_send_msg(m, SP_M_IDENTIFY_RESPONSE, v, n ? sp_dict_json + offset : NULL);
}

static void config_reset(struct sp_mcu *m, uint32_t tag)
{
    /* The configuration goes; outputs, leases, the trip latch and fallback stay. */
    m->configured = 0;
    m->config_crc = 0;
    spi_config_defaults(&m->active);
    spi_config_defaults(&m->pending);
    send_config_state(m, tag);
}

/* A config_* message: checks its limits and records it in the pending configuration.
 * Returns 0 if an argument is out of its limit. */
static int config_apply(struct sp_config *c, uint32_t id, const uint32_t *a)
{
    switch (id) {
    case SP_ID_CONFIG_RELAY: {
        uint32_t ch = a[SP_A_CONFIG_RELAY_CHANNEL];
        uint32_t max_ms = a[SP_A_CONFIG_RELAY_MAX_DURATION_MS];
        uint8_t bit;

        if (ch < 1 || ch > SP_RELAYS || max_ms > MAX_DURATION_MS)
            return 0;
        bit = (uint8_t)(1u << (ch - 1));
        if (a[SP_A_CONFIG_RELAY_DEFAULT_ON])
            c->relay_default |= bit;
        else
            c->relay_default = (uint8_t)(c->relay_default & ~bit);
        c->relay_max_ms[ch - 1] = max_ms;
        return 1;
    }
    case SP_ID_CONFIG_FALLBACK: {
        uint32_t hb = a[SP_A_CONFIG_FALLBACK_HEARTBEAT_MS];
        uint32_t level = a[SP_A_CONFIG_FALLBACK_LEVEL];
        uint32_t lease = a[SP_A_CONFIG_FALLBACK_LEASE_MS];

        if (hb < HEARTBEAT_MIN_MS || hb > HEARTBEAT_MAX_MS || level > LEVEL_MAX ||
            lease < LEASE_MIN_MS || lease > LEASE_MAX_MS)
            return 0;
        c->heartbeat_ms = hb;
        c->fallback_level = (uint8_t)level;
        c->lease_ms = lease;
        return 1;
    }
    case SP_ID_CONFIG_SCHEDULE: {
        uint32_t i = a[SP_A_CONFIG_SCHEDULE_INDEX];
        uint32_t minute = a[SP_A_CONFIG_SCHEDULE_MINUTE];
        uint32_t level = a[SP_A_CONFIG_SCHEDULE_LEVEL];

        if (i >= SP_SCHEDULE_STEPS || minute >= MINUTES_PER_DAY || level > LEVEL_MAX)
            return 0;
        c->schedule_used |= (uint8_t)(1u << i);
        c->schedule_minute[i] = (uint16_t)minute;
        c->schedule_level[i] = (uint8_t)level;
        return 1;
    }
    case SP_ID_CONFIG_LEAKAGE:
        c->trip_ua = a[SP_A_CONFIG_LEAKAGE_TRIP_UA];
        c->trip_mask = (uint8_t)a[SP_A_CONFIG_LEAKAGE_RELAY_MASK];
        return 1;
    case SP_ID_CONFIG_ALARMS:
        c->tilt_cdeg = a[SP_A_CONFIG_ALARMS_TILT_CDEG];
        c->impact_mg = a[SP_A_CONFIG_ALARMS_IMPACT_MG];
        return 1;
    default:
        return 0;
    }
}

static void config_message(struct sp_mcu *m, uint32_t id, const uint32_t *a,
                           const uint8_t *raw, size_t raw_len)
{
    if (m->configured) {
        spi_send_error(m, 0, SP_ERR_ALREADY_CONFIGURED);
        return;
    }
    if (!config_apply(&m->pending, id, a)) {
        spi_send_error(m, 0, SP_ERR_BAD_ARGUMENT);
        return;
    }
    m->config_crc = sp_crc32(m->config_crc, raw, raw_len);
}

/* Outputs do not move: the new defaults and policy act from the next event or tick. */
static void finalize_config(struct sp_mcu *m, uint32_t tag, uint32_t crc)
{
    /* Once configured no config_* is taken, so config_crc is the configuration's. */
    if (crc != m->config_crc) {
        spi_send_error(m, tag, SP_ERR_CRC_MISMATCH);
        return;
    }
    if (!m->configured) {
        m->configured = 1;
        m->active = m->pending;
        m->last_heartbeat_ms = m->now_ms; /* the heartbeat watch starts now */
    }
    send_config_state(m, tag);
}

static void heartbeat(struct sp_mcu *m, const uint32_t *a)
{
    m->clock_valid = a[SP_A_HEARTBEAT_UNIX_TIME] != 0;
    m->clock_unix = a[SP_A_HEARTBEAT_UNIX_TIME];
    m->clock_ms = m->now_ms;
    m->utc_offset_min = sp_i32(a[SP_A_HEARTBEAT_UTC_OFFSET_MIN]);
    m->last_heartbeat_ms = m->now_ms;
    if (m->fallback) {
        m->fallback = 0;
        spi_event(m, SP_EV_FALLBACK_LEFT, 0); /* outputs stay where the fallback put them */
    }
    spi_send_status(m, a[SP_A_HEARTBEAT_TAG]);
}

/* set_relay and set_level need a configured MCU whose heartbeat is alive. */
static int may_set(struct sp_mcu *m, uint32_t tag)
{
    if (!m->configured) {
        spi_send_error(m, tag, SP_ERR_NOT_CONFIGURED);
        return 0;
    }
    if (m->fallback) {
        spi_send_error(m, tag, SP_ERR_FALLBACK_ACTIVE);
        return 0;
    }
    return 1;
}

static void set_relay(struct sp_mcu *m, const uint32_t *a)
{
    uint32_t tag = a[SP_A_SET_RELAY_TAG], ch = a[SP_A_SET_RELAY_CHANNEL];
    uint32_t v[SP_N_RELAY_STATE];
    uint8_t bit;

    if (!may_set(m, tag))
        return;
    if (ch < 1 || ch > SP_RELAYS) {
        spi_send_error(m, tag, SP_ERR_BAD_ARGUMENT);
        return;
    }
    bit = (uint8_t)(1u << (ch - 1));
    if (!(m->trip_cut & bit)) { /* a relay cut by a trip stays off, with no lease */
        m->relay_held |= bit;
        if (a[SP_A_SET_RELAY_ON])
            m->out.relays |= bit;
        else
            m->out.relays = (uint8_t)(m->out.relays & ~bit);
        m->relay_set_ms[ch - 1] = m->now_ms;
        m->relay_lease_ms[ch - 1] = m->active.relay_max_ms[ch - 1];
    }
    v[SP_A_RELAY_STATE_TAG] = tag;
    v[SP_A_RELAY_STATE_RELAYS] = m->out.relays;
    v[SP_A_RELAY_STATE_TRIPPED] = m->tripped;
    spi_send_msg(m, SP_M_RELAY_STATE, v, NULL);
}

static void set_level(struct sp_mcu *m, const uint32_t *a)
{
    uint32_t tag = a[SP_A_SET_LEVEL_TAG], level = a[SP_A_SET_LEVEL_LEVEL];
    uint32_t v[SP_N_LEVEL_STATE];

    if (!may_set(m, tag))
        return;
    if (level > LEVEL_MAX) {
        spi_send_error(m, tag, SP_ERR_BAD_ARGUMENT);
        return;
    }
    m->level_held = 1;
    m->out.level = (uint8_t)level;
    m->out.source = SP_SRC_HOST;
    m->level_set_ms = m->now_ms;
    m->level_lease_ms = m->active.lease_ms;
    v[SP_A_LEVEL_STATE_TAG] = tag;
    v[SP_A_LEVEL_STATE_LEVEL] = m->out.level;
    v[SP_A_LEVEL_STATE_SOURCE] = m->out.source;
    spi_send_msg(m, SP_M_LEVEL_STATE, v, NULL);
}

static void get_inputs(struct sp_mcu *m, uint32_t tag)
{
    uint32_t v[SP_N_INPUTS];

    v[SP_A_INPUTS_TAG] = tag;
    v[SP_A_INPUTS_DOOR] = m->in.door;
    v[SP_A_INPUTS_WATER] = m->in.water;
    v[SP_A_INPUTS_PHOTOCELL] = m->in.photocell;
    v[SP_A_INPUTS_TILT_X] = (uint32_t)m->in.tilt_x;
    v[SP_A_INPUTS_TILT_Y] = (uint32_t)m->in.tilt_y;
    v[SP_A_INPUTS_LEAKAGE_UA] = m->in.leakage_ua;
    v[SP_A_INPUTS_TEMP_CDEG] = (uint32_t)m->in.temp_cdeg;
    v[SP_A_INPUTS_SUPPLY_MV] = m->in.supply_mv;
    v[SP_A_INPUTS_UPTIME_MS] = spi_uptime(m);
    spi_send_msg(m, SP_M_INPUTS, v, NULL);
}

static void get_event(struct sp_mcu *m, uint32_t tag, uint32_t after)
{
    const struct sp_event *e = spi_event_after(m, after);
    uint32_t v[SP_N_EVENT] = {0};

    v[SP_A_EVENT_TAG] = tag;
    if (e) {
        v[SP_A_EVENT_ID] = e->id;
        v[SP_A_EVENT_KIND] = e->kind;
        v[SP_A_EVENT_VALUE] = (uint32_t)e->value;
        v[SP_A_EVENT_UPTIME_MS] = e->uptime_ms;
        v[SP_A_EVENT_UNIX_TIME] = e->unix_time;
    }
    spi_send_msg(m, SP_M_EVENT, v, NULL);
}

static void clear_trip(struct sp_mcu *m, uint32_t tag)
{
    if (m->tripped) {
        if (m->active.trip_ua && m->in.leakage_ua >= m->active.trip_ua) {
            spi_send_error(m, tag, SP_ERR_TRIPPED);
            return;
        }
        /* The relays the trip cut go back to their defaults. */
        m->out.relays = (uint8_t)((m->out.relays & ~m->trip_cut) |
                                  (m->active.relay_default & m->trip_cut));
        m->tripped = 0;
        m->trip_cut = 0;
        spi_event(m, SP_EV_TRIP_CLEARED, 0);
    }
    spi_send_status(m, tag);
}

static void get_stats(struct sp_mcu *m, uint32_t tag)
{
    struct sp_stats s;
    uint32_t v[SP_N_STATS];

    sp_mcu_get_stats(m, &s);
    v[SP_A_STATS_TAG] = tag;
    v[SP_A_STATS_RX_FRAMES] = s.rx_frames;
    v[SP_A_STATS_RX_ERRORS] = s.rx_errors;
    v[SP_A_STATS_NAKS] = s.naks;
    v[SP_A_STATS_BAD_MESSAGES] = s.bad_messages;
    v[SP_A_STATS_EVENTS_LOST] = s.events_lost;
    spi_send_msg(m, SP_M_STATS, v, NULL);
}

static void dispatch(struct sp_mcu *m, const struct sp_msg *msg, const uint8_t *raw,
                     size_t raw_len)
{
    const uint32_t *a = msg->v;

    switch (msg->def->id) {
    case SP_ID_IDENTIFY:
        identify(m, a);
        break;
    case SP_ID_GET_CONFIG:
        send_config_state(m, a[SP_A_GET_CONFIG_TAG]);
        break;
    case SP_ID_CONFIG_RESET:
        config_reset(m, a[SP_A_CONFIG_RESET_TAG]);
        break;
    case SP_ID_CONFIG_RELAY:
    case SP_ID_CONFIG_FALLBACK:
    case SP_ID_CONFIG_SCHEDULE:
    case SP_ID_CONFIG_LEAKAGE:
    case SP_ID_CONFIG_ALARMS:
        config_message(m, msg->def->id, a, raw, raw_len);
        break;
    case SP_ID_FINALIZE_CONFIG:
        finalize_config(m, a[SP_A_FINALIZE_CONFIG_TAG], a[SP_A_FINALIZE_CONFIG_CRC]);
        break;
    case SP_ID_HEARTBEAT:
        heartbeat(m, a);
        break;
    case SP_ID_SET_RELAY:
        set_relay(m, a);
        break;
    case SP_ID_SET_LEVEL:
        set_level(m, a);
        break;
    case SP_ID_GET_INPUTS:
        get_inputs(m, a[SP_A_GET_INPUTS_TAG]);
        break;
    case SP_ID_GET_EVENT:
        get_event(m, a[SP_A_GET_EVENT_TAG], a[SP_A_GET_EVENT_AFTER]);
        break;
    case SP_ID_CLEAR_TRIP:
        clear_trip(m, a[SP_A_CLEAR_TRIP_TAG]);
        break;
    case SP_ID_GET_STATS:
        get_stats(m, a[SP_A_GET_STATS_TAG]);
        break;
    default: /* not reached: the decoder takes host-to-MCU messages only */
        break;
    }
}

void spi_run_payload(struct sp_mcu *m, const uint8_t *payload, size_t len)
{
    size_t pos = 0;

    while (pos < len) {
        struct sp_msg msg;
        size_t used = 0;
        enum sp_dec d = sp_msg_decode(payload + pos, len - pos, SP_DIR_HOST, &used, &msg);

        if (d != SP_DEC_OK) {
            /* Stop at the first bad message; the ones before it were run. */
            m->stats.bad_messages++;
            spi_send_error(m, 0, d == SP_DEC_MALFORMED ? SP_ERR_MALFORMED
                                                       : SP_ERR_UNKNOWN_COMMAND);
            return;
        }
        dispatch(m, &msg, payload + pos, used);
        pos += used;
    }
}
