/* The MCU side of the pole-MCU bridge protocol (PROTOCOL.md): one struct sp_mcu holds all
 * state, so a program may run several. No allocation, no globals, no HAL: the port
 *
 *   - calls sp_mcu_init() once at reset with a random boot_id and its millisecond clock;
 *   - passes every byte the UART received to sp_mcu_rx();
 *   - updates sp_mcu_inputs() from its sensors and calls sp_mcu_tick() at least every 10 ms;
 *   - applies sp_mcu_outputs() (relays, dimming level) after each rx and tick;
 *   - sends the frames handed to its write callback, in order, whole.
 *
 * Time is a uint32_t millisecond counter from the caller that only goes forward; it may
 * wrap around (every difference is taken unsigned). sp_mcu_init()'s now_ms is uptime 0. */
#ifndef SP_MCU_H
#define SP_MCU_H

#include <stddef.h>
#include <stdint.h>

#include "sp_frame.h"

#define SP_RELAYS 8u
#define SP_EVENTS 16u
#define SP_SCHEDULE_STEPS 8u
#define SP_IDENTIFY_MAX 48u

/* status.flags bits */
#define SP_FLAG_CONFIGURED 0x01u
#define SP_FLAG_FALLBACK 0x02u
#define SP_FLAG_CLOCK 0x04u
#define SP_FLAG_TRIPPED 0x08u

enum sp_error_code {
    SP_ERR_BAD_ARGUMENT = 1,
    SP_ERR_NOT_CONFIGURED = 2,
    SP_ERR_ALREADY_CONFIGURED = 3,
    SP_ERR_FALLBACK_ACTIVE = 4,
    SP_ERR_TRIPPED = 5,
    SP_ERR_UNKNOWN_COMMAND = 6,
    SP_ERR_MALFORMED = 7,
    SP_ERR_CRC_MISMATCH = 8
};

enum sp_event_kind {
    SP_EV_BOOT = 1,
    SP_EV_DOOR_OPEN = 2,
    SP_EV_DOOR_CLOSED = 3,
    SP_EV_WATER_DETECTED = 4,
    SP_EV_WATER_CLEARED = 5,
    SP_EV_LEAKAGE_TRIP = 6,
    SP_EV_TILT = 7,
    SP_EV_IMPACT = 8,
    SP_EV_FALLBACK_ENTERED = 9,
    SP_EV_FALLBACK_LEFT = 10,
    SP_EV_LEASE_EXPIRED = 11,
    SP_EV_TRIP_CLEARED = 12
};

/* level_state.source */
enum sp_source {
    SP_SRC_HOST = 0,
    SP_SRC_SCHEDULE = 1,
    SP_SRC_PHOTOCELL = 2,
    SP_SRC_FALLBACK_LEVEL = 3
};

#define SP_PHOTOCELL_LIGHT 0u
#define SP_PHOTOCELL_DARK 1u
#define SP_PHOTOCELL_NONE 2u

/* What the port measures. accel_peak_mg is the largest acceleration since the last tick:
 * sp_mcu_tick() consumes it (sets it back to 0). */
struct sp_inputs {
    uint8_t door;      /* 1 open */
    uint8_t water;     /* 1 detected */
    uint8_t photocell; /* SP_PHOTOCELL_* */
    int32_t tilt_x;    /* 0.01 degree from vertical */
    int32_t tilt_y;
    uint32_t leakage_ua;
    int32_t temp_cdeg; /* 0.01 degree Celsius */
    uint32_t supply_mv;
    uint32_t accel_peak_mg;
};

/* What the port drives. Relays change only when something acts on them (set_relay, a
 * lease end, fallback, a leakage trip, clear_trip); the level follows the fallback policy
 * at every tick while no host lease holds it. */
struct sp_outputs {
    uint8_t relays; /* bit 0 = channel 1; 1 = on */
    uint8_t level;  /* 0..100 % */
    uint8_t source; /* enum sp_source */
};

struct sp_stats {
    uint32_t rx_frames;    /* valid frames received (in sequence or not) */
    uint32_t rx_errors;    /* discards and idle drops */
    uint32_t naks;         /* NAKs sent */
    uint32_t bad_messages; /* unknown or malformed messages */
    uint32_t events_lost;  /* events pushed out of the ring by newer ones */
};

/* Receives each outgoing frame, whole (5..64 bytes). */
typedef void (*sp_write_fn)(void *ctx, const uint8_t *frame, size_t len);

/* A configuration. The boot defaults (section 7) are where every configuration starts:
 * without config_fallback, heartbeat_ms and lease_ms stay 0 (no heartbeat watch; a level
 * lease that holds until the heartbeat lapses). */
struct sp_config {
    uint8_t relay_default;                 /* bit mask of default_on */
    uint32_t relay_max_ms[SP_RELAYS];      /* 0: until the heartbeat lapses */
    uint32_t heartbeat_ms;                 /* 0: no heartbeat watch */
    uint8_t fallback_level;
    uint32_t lease_ms;                     /* 0: until the heartbeat lapses */
    uint8_t schedule_used;                 /* bit i: step i is set */
    uint16_t schedule_minute[SP_SCHEDULE_STEPS];
    uint8_t schedule_level[SP_SCHEDULE_STEPS];
    uint32_t trip_ua;                      /* 0: no trip */
    uint8_t trip_mask;
    uint32_t tilt_cdeg;                    /* 0: no tilt event */
    uint32_t impact_mg;                    /* 0: no impact event */
};

struct sp_event {
    uint32_t id;
    uint8_t kind;
    int32_t value;
    uint32_t uptime_ms;
    uint32_t unix_time;
};

/* All state; treat as opaque except through the functions below. */
struct sp_mcu {
    struct sp_inputs in;
    struct sp_outputs out;
    sp_write_fn write;
    void *write_ctx;
    uint32_t boot_id;
    uint32_t boot_ms;
    uint32_t now_ms;            /* time of the rx or tick being run */
    struct sp_rx rx;
    uint8_t expected;           /* next host seq accepted */
    uint8_t sent;               /* a frame went out for the host frame being processed */
    uint8_t configured;
    uint8_t fallback;
    uint8_t tripped;
    uint8_t trip_cut;           /* relays cut by the latched trip */
    uint32_t config_crc;        /* CRC-32 over the config_* messages since config_reset */
    struct sp_config active;    /* in force: boot defaults until finalize_config */
    struct sp_config pending;   /* being built by config_* messages */
    uint32_t last_heartbeat_ms;
    uint8_t clock_valid;
    uint32_t clock_unix;        /* unix time at clock_ms */
    uint32_t clock_ms;
    int32_t utc_offset_min;
    uint8_t relay_held;         /* relays set by the host, lease running */
    uint32_t relay_set_ms[SP_RELAYS];
    uint32_t relay_lease_ms[SP_RELAYS];
    uint8_t level_held;         /* level set by the host, lease running */
    uint32_t level_set_ms;
    uint32_t level_lease_ms;
    uint8_t prev_door;
    uint8_t prev_water;
    uint8_t tilt_armed;
    struct sp_event ring[SP_EVENTS];
    uint8_t ring_first;
    uint8_t ring_count;
    uint32_t last_event_id;
    struct sp_stats stats;
};

/* Resets *mcu to the boot state (section 7) and pushes the boot event through write. */
void sp_mcu_init(struct sp_mcu *mcu, uint32_t boot_id, uint32_t now_ms, sp_write_fn write,
                 void *write_ctx);

/* Bytes received from the host. Answers go out through the write callback at once. */
void sp_mcu_rx(struct sp_mcu *mcu, const uint8_t *data, size_t len, uint32_t now_ms);

/* The periodic work of section 6 (and the RX_IDLE_MS drop); call at least every 10 ms. */
void sp_mcu_tick(struct sp_mcu *mcu, uint32_t now_ms);

struct sp_inputs *sp_mcu_inputs(struct sp_mcu *mcu);
const struct sp_outputs *sp_mcu_outputs(const struct sp_mcu *mcu);
uint8_t sp_mcu_flags(const struct sp_mcu *mcu); /* SP_FLAG_* as in status.flags */
void sp_mcu_get_stats(const struct sp_mcu *mcu, struct sp_stats *stats);

#endif /* SP_MCU_H */
