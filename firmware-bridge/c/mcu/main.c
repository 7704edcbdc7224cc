/* A whole firmware image around the library, as a port wires it on a small part, so that
 * its flash and RAM can be measured with everything unreachable dropped (--gc-sections).
 *
 * The UART receive interrupt fills a ring; the main loop hands what arrived to sp_mcu_rx(),
 * runs sp_mcu_tick() every 10 ms of SysTick time, applies the outputs and drains the
 * transmit ring the write callback fills. The peripheral registers below are stand-ins at
 * made-up addresses (no vendor HAL): a real port puts its part's UART, GPIO, PWM and ADC
 * here; SysTick and the NVIC are the architecture's own. */
#include <stddef.h>
#include <stdint.h>

#include "../sp_mcu.h"

#define REG(addr) (*(volatile uint32_t *)(addr))

#define CORE_HZ 16000000u
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define NVIC_ISER REG(0xE000E100u)
#define UART_IRQ 0u

#define UART_STATUS REG(0x40004000u)
#define UART_DATA REG(0x40004004u)
#define UART_CTRL REG(0x40004008u)
#define UART_RX_READY 0x1u
#define UART_TX_READY 0x2u
#define UART_RX_IRQ_ENABLE 0x1u
#define GPIO_IN REG(0x40010000u)  /* bit 0 door, 1 water, 2 photocell dark, 3 no photocell */
#define GPIO_OUT REG(0x40010004u) /* relays */
#define PWM_DUTY REG(0x40011000u) /* dimming level, 0..100 */
#define ADC(ch) REG(0x40012000u + 4u * (ch))
#define RNG_DATA REG(0x40013000u)

/* Both rings hold a power of two of bytes; the indices run freely and wrap. */
#define RX_RING 128u
#define TX_RING 256u /* four answers of the longest frame (64 bytes) */
#define TICK_MS 10u

static volatile uint32_t now_ms;
static uint8_t rx_ring[RX_RING];
static volatile uint8_t rx_head; /* written by the interrupt only */
static uint8_t rx_tail;
static uint8_t tx_ring[TX_RING];
static uint16_t tx_head, tx_tail;
static struct sp_mcu mcu;

void SysTick_Handler(void);
void UART_IRQHandler(void);

void SysTick_Handler(void)
{
    now_ms++;
}

/* A byte that finds the ring full is dropped: the host's CRC and sequence numbers notice. */
void UART_IRQHandler(void)
{
    while (UART_STATUS & UART_RX_READY) {
        uint8_t b = (uint8_t)UART_DATA;
        uint8_t head = rx_head;

        if ((uint8_t)(head - rx_tail) < RX_RING) {
            rx_ring[head % RX_RING] = b;
            rx_head = (uint8_t)(head + 1u);
        }
    }
}

/* The write callback: a whole frame, or nothing when the ring lacks room (the host asks
 * again). */
static void queue_frame(void *ctx, const uint8_t *frame, size_t len)
{
    size_t i;

    (void)ctx;
    if (len > TX_RING - (uint16_t)(tx_head - tx_tail))
        return;
    for (i = 0; i < len; i++)
        tx_ring[(uint16_t)(tx_head + i) % TX_RING] = frame[i];
    tx_head = (uint16_t)(tx_head + len);
}

static void drain_tx(void)
{
    while (tx_tail != tx_head && (UART_STATUS & UART_TX_READY)) {
        UART_DATA = tx_ring[tx_tail % TX_RING];
        tx_tail++;
    }
}

static void read_inputs(struct sp_inputs *in)
{
    uint32_t gpio = GPIO_IN;
    uint32_t peak = ADC(6);

    in->door = (uint8_t)(gpio & 1u);
    in->water = (uint8_t)((gpio >> 1) & 1u);
    if (gpio & 8u)
        in->photocell = SP_PHOTOCELL_NONE;
    else
        in->photocell = (gpio & 4u) ? SP_PHOTOCELL_DARK : SP_PHOTOCELL_LIGHT;
    in->tilt_x = (int32_t)ADC(0);
    in->tilt_y = (int32_t)ADC(1);
    in->leakage_ua = ADC(2);
    in->temp_cdeg = (int32_t)ADC(3);
    in->supply_mv = ADC(4);
    if (peak > in->accel_peak_mg)
        in->accel_peak_mg = peak;
}

static void apply_outputs(const struct sp_outputs *out)
{
    GPIO_OUT = out->relays;
    PWM_DUTY = out->level;
}

int main(void)
{
    uint32_t last_tick;

    SYST_RVR = CORE_HZ / 1000u - 1u;
    SYST_CVR = 0;
    SYST_CSR = 7u; /* core clock, interrupt, enable */
    last_tick = now_ms;
    sp_mcu_init(&mcu, RNG_DATA, last_tick, queue_frame, NULL);
    apply_outputs(sp_mcu_outputs(&mcu));
    UART_CTRL = UART_RX_IRQ_ENABLE;
    NVIC_ISER = 1u << UART_IRQ;

    for (;;) {
        uint8_t chunk[16];
        size_t n = 0;
        uint32_t t = now_ms;

        while (n < sizeof chunk && rx_tail != rx_head)
            chunk[n++] = rx_ring[rx_tail++ % RX_RING];
        if (n) {
            sp_mcu_rx(&mcu, chunk, n, t);
            apply_outputs(sp_mcu_outputs(&mcu));
        }
        if ((uint32_t)(t - last_tick) >= TICK_MS) {
            last_tick = t;
            read_inputs(sp_mcu_inputs(&mcu));
            sp_mcu_tick(&mcu, t);
            apply_outputs(sp_mcu_outputs(&mcu));
        }
        drain_tx();
        if (rx_tail == rx_head && tx_tail == tx_head)
            __asm__ volatile("wfi"); /* the next SysTick or UART interrupt wakes it */
    }
}
