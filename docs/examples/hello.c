#include <stdint.h>
#include "rvmpq_isa.h"
static void puts_(const char *s) { while (*s) *(volatile uint8_t *)0x20000000 = *s++; }
int main(void) {
    uint32_t acc = 0;
    /* four INT8 lanes: (1,2,3,4) . (5,6,7,8) = 70 */
    acc = mpq_dot_w8_ss(acc, 0x04030201u, 0x08070605u);
    puts_(acc == 70 ? "dot ok\n" : "dot WRONG\n");
    return acc == 70 ? 0 : 1;
}
