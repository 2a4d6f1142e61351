/* mpq.rq / mpq.rqp with the mpq_rq CSR: rounding, clamping, zero point, every output width,
 * 63-bit products, packing order. Expected values are worked out by hand in the comments. */
#include "test_macros.h"
#include "rvmpq_isa_asm.h"

#define SET_RQ(shift, zp, bits, sgn) \
    li x5, MPQ_RQ_CFG(shift, zp, MPQ_BITS_##bits, sgn); \
    csrw MPQ_CSR_RQ, x5

#define TEST_RQ(n, result, acc, mult) \
    li TESTNUM, n;  \
    li x1, acc;     \
    li x2, mult;    \
    MPQ_RQ(x14, x1, x2); \
    li x7, result;  \
    bne x14, x7, fail

/* an mpq.rq result (0x11 = 0x22 >> 1 with shift 1, so not the product's low word) used `gap`
 * instructions later: by addi (rs1), by mul (rs2, the operand that goes to the SIMD unit
 * straight from D) and as an mpq.dot accumulator (rd; 0x11 + 2 * 1) */
#define RQ_USE(n, gap) \
    li TESTNUM, n;  \
    li x14, 0;      \
    MPQ_RQ(x14, x13, x2); \
    .rept gap; nop; .endr; \
    addi x15, x14, 1; \
    li x7, 0x12;    \
    bne x15, x7, fail; \
    li x14, 0;      \
    MPQ_RQ(x14, x13, x2); \
    .rept gap; nop; .endr; \
    mul x15, x12, x14; \
    li x7, 0x22;    \
    bne x15, x7, fail; \
    li x14, 0;      \
    MPQ_RQ(x14, x13, x2); \
    .rept gap; nop; .endr; \
    MPQ_DOT_W8_SS(x14, x12, x2); \
    li x7, 0x13;    \
    bne x14, x7, fail

/* a packing chain into x14 with `gap` instructions between the two mpq.rqp */
#define RQP_GAP(n, gap) \
    li TESTNUM, n;  \
    li x14, 0;      \
    MPQ_RQP(x14, x1, x2); \
    .rept gap; nop; .endr; \
    MPQ_RQP(x14, x9, x2); \
    li x7, 0x22110000; \
    bne x14, x7, fail

#define PUSH(acc, mult) \
    li x1, acc;     \
    li x2, mult;    \
    MPQ_RQP(x14, x1, x2)

TEST_BEGIN
    /* CSR read back */
    li TESTNUM, 1
    li x5, MPQ_RQ_CFG(5, -3, MPQ_BITS_4, 1)
    csrw MPQ_CSR_RQ, x5
    csrr x14, MPQ_CSR_RQ
    bne x14, x5, fail
    /* shift 0, int8 signed: pass, clamp high, clamp low */
    SET_RQ(0, 0, 8, 1)
    TEST_RQ(2, 100, 100, 1)
    TEST_RQ(3, 127, 200, 1)
    TEST_RQ(4, 0xffffff80, -200, 1)
    TEST_RQ(5, 0xffffffe2, -10, 3)                  /* -30 */
    /* rounding half up: (p >> s) + ((p >> (s-1)) & 1) */
    SET_RQ(1, 0, 8, 1)
    TEST_RQ(10, 2, 3, 1)                            /* 1.5 -> 2 */
    TEST_RQ(11, 0xffffffff, -3, 1)                  /* -1.5 -> -1 */
    TEST_RQ(12, 1, 1, 1)                            /* 0.5 -> 1 */
    TEST_RQ(13, 0, -1, 1)                           /* -0.5 -> 0 */
    SET_RQ(2, 0, 8, 1)
    TEST_RQ(14, 1, 5, 1)                            /* 1.25 -> 1 */
    TEST_RQ(15, 2, 6, 1)                            /* 1.5 -> 2 */
    TEST_RQ(16, 0xfffffffe, -7, 1)                  /* -1.75 -> -2 */
    /* 63-bit products */
    SET_RQ(62, 0, 16, 1)
    TEST_RQ(20, 1, 0x7fffffff, 0x7fffffff)          /* (2^62 - 2^32 + 1) / 2^62 -> 1 */
    SET_RQ(63, 0, 16, 1)
    TEST_RQ(21, 1, 0x80000000, 0x80000000)          /* 2^62 / 2^63 = 0.5 -> 1 */
    TEST_RQ(22, 0, 0x80000000, 0x7fffffff)          /* (-2^62 + 2^31) / 2^63 -> -0.49.. -> 0 */
    SET_RQ(0, 0, 16, 1)
    TEST_RQ(23, 0x7fff, 0x80000000, 0x80000000)     /* 2^62 clamps to 32767 */
    SET_RQ(32, 0, 16, 1)
    TEST_RQ(24, 0xffff8000, 0x80000000, 0x7fffffff) /* -2^30 + 1 clamps to -32768 */
    SET_RQ(16, 0, 16, 1)
    TEST_RQ(25, 0x7fff, 0x40000000, 0x00010000)     /* 2^46 / 2^16 = 2^30 clamps to 32767 */
    /* zero point */
    SET_RQ(0, -20, 8, 0)
    TEST_RQ(30, 0, 10, 1)                           /* -10 clamps to 0 (ReLU) */
    TEST_RQ(31, 5, 25, 1)
    SET_RQ(0, 100, 8, 0)
    TEST_RQ(32, 255, 200, 1)                        /* 300 clamps to 255 */
    TEST_RQ(33, 150, 50, 1)
    SET_RQ(0, -32768, 16, 1)
    TEST_RQ(34, 0x7fff, 0x7fffffff, 1)              /* 2^31 - 1 - 32768 clamps to 32767 */
    SET_RQ(0, 32767, 16, 1)
    TEST_RQ(35, 0xffff8000, 0x80000000, 1)          /* -2^31 + 32767 clamps to -32768 */
    /* output widths */
    SET_RQ(0, 0, 2, 1)
    TEST_RQ(40, 1, 5, 1)
    TEST_RQ(41, 0xfffffffe, -5, 1)
    SET_RQ(0, 0, 2, 0)
    TEST_RQ(42, 3, 5, 1)
    TEST_RQ(43, 2, 2, 1)
    TEST_RQ(44, 0, -5, 1)
    SET_RQ(0, 0, 4, 0)
    TEST_RQ(45, 15, 20, 1)
    SET_RQ(0, 0, 4, 1)
    TEST_RQ(46, 0xfffffff8, -20, 1)
    TEST_RQ(47, 7, 7, 1)
    SET_RQ(0, 0, 16, 0)
    TEST_RQ(48, 0xffff, 70000, 1)
    /* rqp: lane 0 holds the first value pushed */
    li TESTNUM, 50
    SET_RQ(0, 0, 8, 1)
    li x14, 0
    PUSH(1, 1)
    PUSH(2, 1)
    PUSH(3, 1)
    PUSH(-128, 1)
    li x7, 0x80030201
    bne x14, x7, fail
    li TESTNUM, 51
    SET_RQ(0, 0, 4, 0)
    li x14, 0
    PUSH(0, 1)
    PUSH(1, 1)
    PUSH(2, 1)
    PUSH(3, 1)
    PUSH(4, 1)
    PUSH(5, 1)
    PUSH(6, 1)
    PUSH(7, 1)
    li x7, 0x76543210
    bne x14, x7, fail
    li TESTNUM, 52
    SET_RQ(0, 0, 16, 1)
    li x14, 0
    PUSH(0x1234, 1)
    PUSH(-1, 1)
    li x7, 0xffff1234
    bne x14, x7, fail
    li TESTNUM, 53
    SET_RQ(0, 0, 2, 1)
    li x14, 0xffffffff
    PUSH(1, 1)
    li x7, 0x7fffffff                               /* (rd >> 2) | (1 << 30) */
    bne x14, x7, fail
    PUSH(-2, 1)
    li x7, 0x9fffffff                               /* (rd >> 2) | (2 << 30) */
    bne x14, x7, fail
    li TESTNUM, 54                                  /* clamped and rounded values are packed */
    SET_RQ(1, 0, 8, 0)
    li x14, 0
    PUSH(1000, 1)                                   /* 500 -> 255 */
    PUSH(3, 1)                                      /* 1.5 -> 2 */
    PUSH(-3, 1)                                     /* -1.5 -> -1 -> 0 */
    PUSH(21, 1)                                     /* 10.5 -> 11 */
    li x7, 0x0b0002ff
    bne x14, x7, fail
    li TESTNUM, 55                                  /* packing chains with gaps of 1, 2, 3 */
    SET_RQ(0, 0, 8, 1)
    li x1, 0x11
    li x9, 0x22
    li x4, 0x33
    li x6, 0x44
    li x2, 1
    li x14, 0
    MPQ_RQP(x14, x1, x2)                            /* 0x11000000 */
    nop
    MPQ_RQP(x14, x9, x2)                            /* two behind: 0x22110000 */
    MPQ_RQP(x14, x4, x2)                            /* right behind: 0x33221100 */
    nop
    nop
    MPQ_RQP(x14, x6, x2)                            /* three behind: 0x44332211 */
    li x7, 0x44332211
    bne x14, x7, fail
    li TESTNUM, 56                                  /* a younger plain write of rd wins */
    MPQ_RQP(x14, x1, x2)
    addi x14, x0, 0x550                             /* two behind the next rqp's W */
    MPQ_RQP(x14, x9, x2)                            /* (0x550 >> 8) | 0x22 << 24 */
    li x7, 0x22000005
    bne x14, x7, fail
    /* every distance from 1 to 5 between a requantization and its user: the result is
     * finished one stage after W and forwarded from there (D, M, W), or waited for */
    li x12, 2
    li x13, 0x22
    SET_RQ(1, 0, 8, 1)
    RQ_USE(60, 0)
    RQ_USE(61, 1)
    RQ_USE(62, 2)
    RQ_USE(63, 3)
    RQ_USE(64, 4)
    SET_RQ(0, 0, 8, 1)
    RQP_GAP(65, 0)
    RQP_GAP(66, 1)
    RQP_GAP(67, 2)
    RQP_GAP(68, 3)
    RQP_GAP(69, 4)
    li TESTNUM, 70                                  /* plain writes of rd 2 and 3 ahead */
    MPQ_RQP(x14, x1, x2)
    addi x14, x0, 0x550
    nop
    MPQ_RQP(x14, x9, x2)                            /* (0x550 >> 8) | 0x22 << 24 */
    li x7, 0x22000005
    bne x14, x7, fail
    li TESTNUM, 71
    MPQ_RQP(x14, x1, x2)
    addi x14, x0, 0x550
    nop
    nop
    MPQ_RQP(x14, x9, x2)
    li x7, 0x22000005
    bne x14, x7, fail
    li TESTNUM, 72                                  /* a plain write, then a chain */
    addi x14, x0, 0x660
    MPQ_RQP(x14, x1, x2)                            /* 0x11000006 */
    MPQ_RQP(x14, x9, x2)                            /* 0x22110000 */
    li x7, 0x22110000
    bne x14, x7, fail
TEST_END
