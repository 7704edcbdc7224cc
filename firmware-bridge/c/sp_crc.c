#include "sp_crc.h"

/* Bitwise on purpose: a few hundred bytes per second on the MCU, and no table in flash. */

uint16_t sp_crc16(const uint8_t *data, size_t len)
{
    uint32_t crc = 0xFFFFu;
    size_t i;
    int bit;

    for (i = 0; i < len; i++) {
        crc ^= (uint32_t)data[i] << 8;
        for (bit = 0; bit < 8; bit++)
            crc = (crc & 0x8000u) ? (crc << 1) ^ 0x1021u : crc << 1;
        crc &= 0xFFFFu;
    }
    return (uint16_t)crc;
}

uint32_t sp_crc32(uint32_t crc, const uint8_t *data, size_t len)
{
    size_t i;
    int bit;

    crc = ~crc;
    for (i = 0; i < len; i++) {
        crc ^= data[i];
        for (bit = 0; bit < 8; bit++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}
