/* Benchmark: a mix of ALU, branches, loads/stores and multiplies (an integer matrix product
 * and a CRC) long enough to measure the runner's simulated cycles per second and the CPI.
 * -DITER=N scales the run time. */
#include <stdint.h>
#ifndef ITER
#define ITER 20
#endif
#define N 24
static int32_t a[N][N], b[N][N], c[N][N];
uint32_t begin_signature[1] __attribute__((section(".data"))) = {0};
uint32_t end_signature[1] __attribute__((section(".data"))) = {0};

static uint32_t crc32(const uint8_t *p, int n, uint32_t crc) {
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xedb88320u & -(crc & 1));
    }
    return ~crc;
}

int main(void) {
    uint32_t seed = 1, crc = 0;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            seed = seed * 1103515245u + 12345u;
            a[i][j] = (int32_t)(seed >> 16) - 32768;
            b[i][j] = (int32_t)(seed & 0xff) - 128;
        }
    for (int it = 0; it < ITER; it++) {
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) {
                int32_t s = 0;
                for (int k = 0; k < N; k++) s += a[i][k] * b[k][j];
                c[i][j] = s + it;
            }
        crc = crc32((const uint8_t *)c, sizeof c, crc);
    }
    begin_signature[0] = crc;
    return 0;
}
