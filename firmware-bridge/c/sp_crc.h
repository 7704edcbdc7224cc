/* CRCs of the pole-MCU bridge protocol (PROTOCOL.md sections 1 and 4). */
#ifndef SP_CRC_H
#define SP_CRC_H

#include <stddef.h>
#include <stdint.h>

/* CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final XOR.
 * Check value of "123456789" is 0x29B1. */
uint16_t sp_crc16(const uint8_t *data, size_t len);

/* CRC-32/ISO-HDLC as zlib's crc32(): sp_crc32(0, ...) starts a CRC, and
 * sp_crc32(sp_crc32(0, a), b) is the CRC of a followed by b. Check value 0xCBF43926. */
uint32_t sp_crc32(uint32_t crc, const uint8_t *data, size_t len);

#endif /* SP_CRC_H */
