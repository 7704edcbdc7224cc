/* Shared between the files of the MCU state machine; not part of the API. */
#ifndef SP_INTERNAL_H
#define SP_INTERNAL_H

#include "sp_mcu.h"

/* sp_mcu.c: output */
void spi_send_msg(struct sp_mcu *m, int msg_index, const uint32_t *v, const uint8_t *data);
void spi_send_error(struct sp_mcu *m, uint32_t tag, uint32_t code);
void spi_send_status(struct sp_mcu *m, uint32_t tag);
uint32_t spi_uptime(const struct sp_mcu *m);

/* sp_commands.c: the messages of one accepted host frame */
void spi_run_payload(struct sp_mcu *m, const uint8_t *payload, size_t len);

/* sp_logic.c: outputs, clock, events, configuration */
void spi_config_defaults(struct sp_config *c);
void spi_level_policy(struct sp_mcu *m);
uint32_t spi_unix_now(struct sp_mcu *m);
void spi_event(struct sp_mcu *m, uint8_t kind, int32_t value);
/* The oldest held event with an id above after; 0 if there is none. */
const struct sp_event *spi_event_after(const struct sp_mcu *m, uint32_t after);

#endif /* SP_INTERNAL_H */
