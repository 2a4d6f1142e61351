/* C smoke test: crt0 (.data init, .bss clear, stack), the console, the signature region, the
 * counters, and the generated intrinsics header on the mpq configuration. */
#include <stdint.h>
#include "rvmpq_isa.h"

#define CONSOLE (*(volatile uint8_t *)0x20000000)

uint32_t begin_signature[8] __attribute__((section(".data"), aligned(4))) = {0};
uint32_t end_signature[1] __attribute__((section(".data"))) = {0};

static int initialised = 42;
static uint32_t zeroed[16];

static void puts_(const char *s) {
    while (*s) CONSOLE = (uint8_t)*s++;
}

static uint32_t fib(uint32_t n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

int main(void) {
    puts_("hello from rvmpq\n");
    if (initialised != 42) return 1;
    for (int i = 0; i < 16; i++)
        if (zeroed[i]) return 2;
    uint32_t c0, c1, i0, i1;
    __asm__ volatile("rdcycle %0\n rdinstret %1" : "=r"(c0), "=r"(i0));
    uint32_t f = fib(15);
    __asm__ volatile("rdcycle %0\n rdinstret %1" : "=r"(c1), "=r"(i1));
    if (f != 610) return 3;
    if (c1 <= c0 || i1 <= i0) return 4;
    begin_signature[0] = f;
    begin_signature[1] = 0xdeadbeef;
    begin_signature[2] = (uint32_t)-7 / 3u;
    begin_signature[3] = (uint32_t)((int32_t)-7 / 3);
#if RVMPQ_CONFIG_MPQ
    begin_signature[4] = mpq_dot_w8_ss(0, 0x01020304u, 0xff01ff01u);  /* 4 - 3 + 2 - 1 = 2 */
    mpq_rq_config_write(MPQ_RQ_CONFIG(1, 0, 8, 1));
    begin_signature[5] = (uint32_t)mpq_rq(5, 3);                       /* 15 / 2 -> 8 */
    if (begin_signature[4] != 2 || begin_signature[5] != 8) return 5;
#endif
    return 0;
}
