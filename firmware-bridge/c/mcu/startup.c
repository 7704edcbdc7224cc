/* Reset and the vector table of a Cortex-M (ARMv6-M and ARMv7-M alike), without a vendor's
 * startup code: copy .data from flash, zero .bss, run main. Symbols come from cortex-m.ld. */
#include <stdint.h>

extern uint32_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[];
extern uint32_t __stack_top[];

int main(void);
void Reset_Handler(void);
void SysTick_Handler(void);
void UART_IRQHandler(void);

#define UART_IRQ 0u /* the part's UART receive interrupt number (a stand-in) */
#define IRQS 8u

static void Default_Handler(void)
{
    for (;;) {
    }
}

void Reset_Handler(void)
{
    const uint32_t *src = __data_load;
    uint32_t *dst;

    for (dst = __data_start; dst < __data_end; dst++)
        *dst = *src++;
    for (dst = __bss_start; dst < __bss_end; dst++)
        *dst = 0;
    (void)main();
    Default_Handler();
}

typedef void (*handler_fn)(void);

struct vector_table {
    uint32_t *initial_sp;
    handler_fn system[15]; /* Reset, NMI, HardFault, ..., PendSV, SysTick */
    handler_fn irq[IRQS];
};

__attribute__((section(".vectors"), used)) static const struct vector_table vectors = {
    __stack_top,
    {
        Reset_Handler,   Default_Handler, Default_Handler, Default_Handler, Default_Handler,
        Default_Handler, 0,               0,               0,               0,
        Default_Handler, Default_Handler, 0,               Default_Handler, SysTick_Handler,
    },
    {[UART_IRQ] = UART_IRQHandler, Default_Handler, Default_Handler, Default_Handler,
     Default_Handler, Default_Handler, Default_Handler, Default_Handler},
};
