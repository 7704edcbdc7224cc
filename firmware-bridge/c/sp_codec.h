/* Messages of the pole-MCU bridge protocol (PROTOCOL.md section 1, "Messages"): canonical
 * LEB128 integers, zigzag for %i, and a table-driven encoder/decoder over the generated
 * dictionary (sp_dictionary.h). */
#ifndef SP_CODEC_H
#define SP_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "sp_dictionary.h"

#define SP_LEB_MAX 5u /* bytes of the longest LEB128 encoding of a 32-bit value */

/* Reads one canonical LEB128 value at *p (not past end), advancing *p. Returns 0, or -1
 * for a truncated or non-canonical encoding (more than 5 bytes, a fifth byte above 0x0F,
 * a final 0x00 byte in a multi-byte encoding). */
int sp_leb_get(const uint8_t **p, const uint8_t *end, uint32_t *value);

/* Writes the canonical LEB128 encoding of value (1..5 bytes); returns its length. */
size_t sp_leb_put(uint8_t *out, uint32_t value);

uint32_t sp_zigzag(int32_t value);
int32_t sp_unzigzag(uint32_t value);

/* The int32_t whose two's complement bit pattern is bits (how %i arguments are held). */
int32_t sp_i32(uint32_t bits);

enum sp_dec {
    SP_DEC_OK = 0,
    SP_DEC_MALFORMED, /* bad LEB128, argument out of its type's range or past the end */
    SP_DEC_UNKNOWN    /* the id is not in the dictionary */
};

/* A decoded message. Each argument is in v[] in the order of its format: %i as its two's
 * complement bit pattern (sp_unzigzag applied), %*s as its length, with data pointing at
 * the bytes inside the decoded buffer. */
struct sp_msg {
    const struct sp_msg_def *def;
    uint32_t v[SP_DICT_MAX_ARGS];
    const uint8_t *data;
};

const struct sp_msg_def *sp_msg_by_id(uint32_t id);
const struct sp_msg_def *sp_msg_by_name(const char *name);

/* Which messages a decoder takes: host-to-MCU (commands), MCU-to-host (responses), any. */
enum sp_dir { SP_DIR_HOST = 0, SP_DIR_MCU = 1, SP_DIR_ANY = 2 };

/* Decodes the message at the start of buf[0..len). On SP_DEC_OK, *used is its length.
 * An id not in the dictionary, or of the other direction, is SP_DEC_UNKNOWN (out->v[0]
 * holds it), whatever follows it. len 0 is SP_DEC_MALFORMED. */
enum sp_dec sp_msg_decode(const uint8_t *buf, size_t len, enum sp_dir dir, size_t *used,
                          struct sp_msg *out);

/* Encodes def with arguments v[] (and data for a %*s argument, whose length is its v[]
 * entry) into out[0..cap). Returns the length, or 0 if it does not fit or an argument is
 * outside its type's range. */
size_t sp_msg_encode(uint8_t *out, size_t cap, const struct sp_msg_def *def,
                     const uint32_t *v, const uint8_t *data);

#endif /* SP_CODEC_H */
