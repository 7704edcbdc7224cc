/* Generated from firmware-bridge/dictionary.json by
 * firmware-bridge/tools/gen_c_dictionary.py. Do not edit: change dictionary.json
 * and rerun the script (`make -C firmware-bridge/c gen`). */
#ifndef SP_DICTIONARY_H
#define SP_DICTIONARY_H

#include <stdint.h>

#define SP_DICT_PROTOCOL "smartpole-mcu"
#define SP_DICT_VERSION 1
#define SP_DICT_MAX_FRAME 64
#define SP_DICT_WINDOW 4
#define SP_DICT_RELAYS 8
#define SP_DICT_EVENTS 16
#define SP_DICT_JSON_LEN 1317u
#define SP_DICT_MESSAGES 25
#define SP_DICT_MAX_ARGS 10

/* Argument types, one per format of PROTOCOL.md section 1. */
enum sp_arg_type { SP_T_U32, SP_T_U16, SP_T_U8, SP_T_I32, SP_T_BYTES };

struct sp_msg_def {
    const char *name;
    uint32_t id;
    uint8_t is_response; /* 1: MCU to host, 0: host to MCU */
    uint8_t nargs;
    uint8_t types[SP_DICT_MAX_ARGS]; /* enum sp_arg_type */
    const char *const *arg_names;
};

/* Message ids. */
#define SP_ID_IDENTIFY 0u
#define SP_ID_GET_CONFIG 2u
#define SP_ID_CONFIG_RESET 3u
#define SP_ID_CONFIG_RELAY 4u
#define SP_ID_CONFIG_FALLBACK 5u
#define SP_ID_CONFIG_SCHEDULE 6u
#define SP_ID_CONFIG_LEAKAGE 7u
#define SP_ID_CONFIG_ALARMS 8u
#define SP_ID_FINALIZE_CONFIG 9u
#define SP_ID_HEARTBEAT 10u
#define SP_ID_SET_RELAY 11u
#define SP_ID_SET_LEVEL 12u
#define SP_ID_GET_INPUTS 13u
#define SP_ID_GET_EVENT 14u
#define SP_ID_CLEAR_TRIP 15u
#define SP_ID_GET_STATS 16u
#define SP_ID_IDENTIFY_RESPONSE 1u
#define SP_ID_CONFIG_STATE 32u
#define SP_ID_STATUS 33u
#define SP_ID_RELAY_STATE 34u
#define SP_ID_LEVEL_STATE 35u
#define SP_ID_INPUTS 36u
#define SP_ID_EVENT 37u
#define SP_ID_STATS 38u
#define SP_ID_ERROR 39u

/* Index of each message in sp_dict_messages. */
#define SP_M_IDENTIFY 0
#define SP_M_GET_CONFIG 1
#define SP_M_CONFIG_RESET 2
#define SP_M_CONFIG_RELAY 3
#define SP_M_CONFIG_FALLBACK 4
#define SP_M_CONFIG_SCHEDULE 5
#define SP_M_CONFIG_LEAKAGE 6
#define SP_M_CONFIG_ALARMS 7
#define SP_M_FINALIZE_CONFIG 8
#define SP_M_HEARTBEAT 9
#define SP_M_SET_RELAY 10
#define SP_M_SET_LEVEL 11
#define SP_M_GET_INPUTS 12
#define SP_M_GET_EVENT 13
#define SP_M_CLEAR_TRIP 14
#define SP_M_GET_STATS 15
#define SP_M_IDENTIFY_RESPONSE 16
#define SP_M_CONFIG_STATE 17
#define SP_M_STATUS 18
#define SP_M_RELAY_STATE 19
#define SP_M_LEVEL_STATE 20
#define SP_M_INPUTS 21
#define SP_M_EVENT 22
#define SP_M_STATS 23
#define SP_M_ERROR 24

/* Argument positions and counts. */
#define SP_N_IDENTIFY 2
#define SP_A_IDENTIFY_OFFSET 0
#define SP_A_IDENTIFY_COUNT 1
#define SP_N_GET_CONFIG 1
#define SP_A_GET_CONFIG_TAG 0
#define SP_N_CONFIG_RESET 1
#define SP_A_CONFIG_RESET_TAG 0
#define SP_N_CONFIG_RELAY 3
#define SP_A_CONFIG_RELAY_CHANNEL 0
#define SP_A_CONFIG_RELAY_DEFAULT_ON 1
#define SP_A_CONFIG_RELAY_MAX_DURATION_MS 2
#define SP_N_CONFIG_FALLBACK 3
#define SP_A_CONFIG_FALLBACK_HEARTBEAT_MS 0
#define SP_A_CONFIG_FALLBACK_LEVEL 1
#define SP_A_CONFIG_FALLBACK_LEASE_MS 2
#define SP_N_CONFIG_SCHEDULE 3
#define SP_A_CONFIG_SCHEDULE_INDEX 0
#define SP_A_CONFIG_SCHEDULE_MINUTE 1
#define SP_A_CONFIG_SCHEDULE_LEVEL 2
#define SP_N_CONFIG_LEAKAGE 2
#define SP_A_CONFIG_LEAKAGE_TRIP_UA 0
#define SP_A_CONFIG_LEAKAGE_RELAY_MASK 1
#define SP_N_CONFIG_ALARMS 2
#define SP_A_CONFIG_ALARMS_TILT_CDEG 0
#define SP_A_CONFIG_ALARMS_IMPACT_MG 1
#define SP_N_FINALIZE_CONFIG 2
#define SP_A_FINALIZE_CONFIG_TAG 0
#define SP_A_FINALIZE_CONFIG_CRC 1
#define SP_N_HEARTBEAT 3
#define SP_A_HEARTBEAT_TAG 0
#define SP_A_HEARTBEAT_UNIX_TIME 1
#define SP_A_HEARTBEAT_UTC_OFFSET_MIN 2
#define SP_N_SET_RELAY 3
#define SP_A_SET_RELAY_TAG 0
#define SP_A_SET_RELAY_CHANNEL 1
#define SP_A_SET_RELAY_ON 2
#define SP_N_SET_LEVEL 2
#define SP_A_SET_LEVEL_TAG 0
#define SP_A_SET_LEVEL_LEVEL 1
#define SP_N_GET_INPUTS 1
#define SP_A_GET_INPUTS_TAG 0
#define SP_N_GET_EVENT 2
#define SP_A_GET_EVENT_TAG 0
#define SP_A_GET_EVENT_AFTER 1
#define SP_N_CLEAR_TRIP 1
#define SP_A_CLEAR_TRIP_TAG 0
#define SP_N_GET_STATS 1
#define SP_A_GET_STATS_TAG 0
#define SP_N_IDENTIFY_RESPONSE 2
#define SP_A_IDENTIFY_RESPONSE_OFFSET 0
#define SP_A_IDENTIFY_RESPONSE_DATA 1
#define SP_N_CONFIG_STATE 4
#define SP_A_CONFIG_STATE_TAG 0
#define SP_A_CONFIG_STATE_IS_CONFIG 1
#define SP_A_CONFIG_STATE_CRC 2
#define SP_A_CONFIG_STATE_BOOT_ID 3
#define SP_N_STATUS 8
#define SP_A_STATUS_TAG 0
#define SP_A_STATUS_FLAGS 1
#define SP_A_STATUS_CONFIG_CRC 2
#define SP_A_STATUS_BOOT_ID 3
#define SP_A_STATUS_UPTIME_MS 4
#define SP_A_STATUS_LAST_EVENT 5
#define SP_A_STATUS_LEVEL 6
#define SP_A_STATUS_RELAYS 7
#define SP_N_RELAY_STATE 3
#define SP_A_RELAY_STATE_TAG 0
#define SP_A_RELAY_STATE_RELAYS 1
#define SP_A_RELAY_STATE_TRIPPED 2
#define SP_N_LEVEL_STATE 3
#define SP_A_LEVEL_STATE_TAG 0
#define SP_A_LEVEL_STATE_LEVEL 1
#define SP_A_LEVEL_STATE_SOURCE 2
#define SP_N_INPUTS 10
#define SP_A_INPUTS_TAG 0
#define SP_A_INPUTS_DOOR 1
#define SP_A_INPUTS_WATER 2
#define SP_A_INPUTS_PHOTOCELL 3
#define SP_A_INPUTS_TILT_X 4
#define SP_A_INPUTS_TILT_Y 5
#define SP_A_INPUTS_LEAKAGE_UA 6
#define SP_A_INPUTS_TEMP_CDEG 7
#define SP_A_INPUTS_SUPPLY_MV 8
#define SP_A_INPUTS_UPTIME_MS 9
#define SP_N_EVENT 6
#define SP_A_EVENT_TAG 0
#define SP_A_EVENT_ID 1
#define SP_A_EVENT_KIND 2
#define SP_A_EVENT_VALUE 3
#define SP_A_EVENT_UPTIME_MS 4
#define SP_A_EVENT_UNIX_TIME 5
#define SP_N_STATS 6
#define SP_A_STATS_TAG 0
#define SP_A_STATS_RX_FRAMES 1
#define SP_A_STATS_RX_ERRORS 2
#define SP_A_STATS_NAKS 3
#define SP_A_STATS_BAD_MESSAGES 4
#define SP_A_STATS_EVENTS_LOST 5
#define SP_N_ERROR 2
#define SP_A_ERROR_TAG 0
#define SP_A_ERROR_CODE 1

/* The exact bytes of dictionary.json, served by identify. */
extern const uint8_t sp_dict_json[SP_DICT_JSON_LEN];
extern const struct sp_msg_def sp_dict_messages[SP_DICT_MESSAGES];

#endif /* SP_DICTIONARY_H */
