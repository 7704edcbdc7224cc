#include "sp_codec.h"

#include <string.h>

int sp_leb_get(const uint8_t **p, const uint8_t *end, uint32_t *value)
{
    const uint8_t *q = *p;
    uint32_t v = 0;
    unsigned i;

    for (i = 0; i < SP_LEB_MAX; i++) {
        uint8_t b;

        if (q >= end)
            return -1;
        b = *q++;
        if (i == SP_LEB_MAX - 1 && b > 0x0Fu)
            return -1; /* bits past 32, or a sixth byte */
        v |= (uint32_t)(b & 0x7Fu) << (7u * i);
        if (!(b & 0x80u)) {
            if (i > 0 && b == 0)
                return -1; /* padded: a final 0x00 */
            *value = v;
            *p = q;
            return 0;
        }
    }
    return -1; /* not reached: a fifth byte <= 0x0F has no continuation bit */
}

size_t sp_leb_put(uint8_t *out, uint32_t value)
{
    size_t n = 0;

    while (value >= 0x80u) {
        out[n++] = (uint8_t)(value | 0x80u);
        value >>= 7;
    }
    out[n++] = (uint8_t)value;
    return n;
}

/* Zigzag of the int32_t whose two's complement bit pattern is u. */
static uint32_t zigzag_bits(uint32_t u)
{
    return (u << 1) ^ ((u & 0x80000000u) ? 0xFFFFFFFFu : 0u);
}

uint32_t sp_zigzag(int32_t value)
{
    return zigzag_bits((uint32_t)value);
}

int32_t sp_i32(uint32_t bits)
{
    /* Without the implementation-defined conversion of a value above INT32_MAX. */
    if (bits <= 0x7FFFFFFFu)
        return (int32_t)bits;
    return (int32_t)(bits - 0x80000000u) - (int32_t)0x7FFFFFFF - 1;
}

int32_t sp_unzigzag(uint32_t value)
{
    return sp_i32((value >> 1) ^ (0u - (value & 1u)));
}

const struct sp_msg_def *sp_msg_by_id(uint32_t id)
{
    size_t i;

    for (i = 0; i < SP_DICT_MESSAGES; i++)
        if (sp_dict_messages[i].id == id)
            return &sp_dict_messages[i];
    return NULL;
}

const struct sp_msg_def *sp_msg_by_name(const char *name)
{
    size_t i;

    for (i = 0; i < SP_DICT_MESSAGES; i++)
        if (strcmp(sp_dict_messages[i].name, name) == 0)
            return &sp_dict_messages[i];
    return NULL;
}

static uint32_t type_max(uint8_t type)
{
    switch (type) {
    case SP_T_U16:
        return 0xFFFFu;
    case SP_T_U8:
        return 0xFFu;
    default:
        return 0xFFFFFFFFu;
    }
}

enum sp_dec sp_msg_decode(const uint8_t *buf, size_t len, enum sp_dir dir, size_t *used,
                          struct sp_msg *out)
{
    const uint8_t *p = buf;
    const uint8_t *end = buf + len;
    const struct sp_msg_def *def;
    uint32_t id;
    unsigned i;

    memset(out, 0, sizeof *out);
    if (sp_leb_get(&p, end, &id) != 0)
        return SP_DEC_MALFORMED;
    def = sp_msg_by_id(id);
    if (!def || (dir != SP_DIR_ANY && def->is_response != (dir == SP_DIR_MCU))) {
        out->v[0] = id;
        return SP_DEC_UNKNOWN;
    }
    out->def = def;
    for (i = 0; i < def->nargs; i++) {
        uint32_t v;

        if (sp_leb_get(&p, end, &v) != 0 || v > type_max(def->types[i]))
            return SP_DEC_MALFORMED;
        if (def->types[i] == SP_T_BYTES) {
            if (v > (size_t)(end - p))
                return SP_DEC_MALFORMED;
            out->data = p;
            p += v;
        } else if (def->types[i] == SP_T_I32) {
            v = (uint32_t)sp_unzigzag(v);
        }
        out->v[i] = v;
    }
    *used = (size_t)(p - buf);
    return SP_DEC_OK;
}

size_t sp_msg_encode(uint8_t *out, size_t cap, const struct sp_msg_def *def,
                     const uint32_t *v, const uint8_t *data)
{
    uint8_t tmp[SP_LEB_MAX];
    size_t n, k;
    unsigned i;

    n = sp_leb_put(tmp, def->id);
    if (n > cap)
        return 0;
    memcpy(out, tmp, n);
    for (i = 0; i < def->nargs; i++) {
        uint32_t x = v[i];

        if (x > type_max(def->types[i]))
            return 0;
        if (def->types[i] == SP_T_I32)
            x = zigzag_bits(x);
        k = sp_leb_put(tmp, x);
        if (k > cap - n)
            return 0;
        memcpy(out + n, tmp, k);
        n += k;
        if (def->types[i] == SP_T_BYTES) {
            if (x > cap - n)
                return 0;
            if (x)
                memcpy(out + n, data, x);
            n += x;
        }
    }
    return n;
}
