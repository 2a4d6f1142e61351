/* Memory-operand dot products into the internal accumulators: mpq.ldot.w{2,4,8,16}.{us,ss},
 * mpq.accld, mpq.rqpa, mpq.accrd. Back-to-back accumulation into one accumulator, interleaved
 * accumulators, 32-bit wrap-around, a chain of mpq.rqpa into one rd, results used right after,
 * a load feeding an ldot at once, precise traps (a faulting ldot/accld leaves ACC alone), and
 * the re-arm: every read (CHECK_ACC, mpq.rqpa) sets ACC[k] back to its mpq.accld value.
 * Expected values are worked out by hand in the comments (lane 0 = least significant). */
#include "test_macros.h"
#include "rvmpq_isa_asm.h"

#define SET_RQ(shift, zp, bits, sgn) \
    li x5, MPQ_RQ_CFG(shift, zp, MPQ_BITS_##bits, sgn); \
    csrw MPQ_CSR_RQ, x5

#define CHECK_ACC(n, k, result) \
    li TESTNUM, n;  \
    MPQ_ACCRD(x14, k); \
    li x7, result;  \
    bne x14, x7, fail

TEST_BEGIN
    la t0, handler
    csrw mtvec, t0
    la x10, wdata
    li x11, 0x01010101          /* u8 lanes 1 */
    li x12, 0xffffffff          /* s8/s4/s2/s16 lanes -1; u8 lanes 255; u2 lanes 3 */
    li x13, 0x11111111          /* u4 lanes 1 */
    li x15, 0x00020001          /* u16 lanes 1, 2 */

    /* INT8: ACC3 = 100 (bias), + (1,1,1,1).(4,3,2,1) = 10, + (1,1,1,1).(-4,-3,-2,-1), + 10 */
    MPQ_ACCLD(x3, 2, x10)
    MPQ_LDOT_W8_US(x3, x11, 0, x10)
    MPQ_LDOT_W8_US(x3, x11, 1, x10)
    MPQ_LDOT_W8_US(x3, x11, 0, x10)
    CHECK_ACC(1, x3, 110)
    /* signed activations: 100 + (-1)*10 = 90; unsigned: 100 + 255*10 = 2650 */
    MPQ_ACCLD(x4, 2, x10)
    MPQ_ACCLD(x5, 2, x10)
    MPQ_LDOT_W8_SS(x4, x12, 0, x10)
    MPQ_LDOT_W8_US(x5, x12, 0, x10)
    CHECK_ACC(2, x4, 90)
    CHECK_ACC(3, x5, 2650)
    /* INT2: u2 lanes 3 x w5 lanes 1: 16*3 = 48; s2 -1 x w4 lanes -1: +16 -> 64 */
    MPQ_ACCLD(x0, 7, x10)
    MPQ_LDOT_W2_US(x0, x12, 5, x10)
    MPQ_LDOT_W2_SS(x0, x12, 4, x10)
    CHECK_ACC(4, x0, 64)
    /* INT4: u4 lanes 1 x w5 lanes 5: 40; s4 -1 x -1: +8 -> 48 */
    MPQ_ACCLD(x1, 7, x10)
    MPQ_LDOT_W4_US(x1, x13, 5, x10)
    MPQ_LDOT_W4_SS(x1, x12, 4, x10)
    CHECK_ACC(5, x1, 48)
    /* INT16: (1, 2).(32767, -32768) = -32769; (-1, -1).(32767, -32768) = +1 -> -32768 */
    MPQ_ACCLD(x2, 7, x10)
    MPQ_LDOT_W16_US(x2, x15, 6, x10)
    MPQ_LDOT_W16_SS(x2, x12, 6, x10)
    CHECK_ACC(6, x2, 0xffff8000)
    /* wrap-around: 0x7fffffff + 10 */
    MPQ_ACCLD(x6, 3, x10)
    MPQ_LDOT_W8_US(x6, x11, 0, x10)
    CHECK_ACC(7, x6, 0x80000009)
    /* interleaved accumulators */
    MPQ_ACCLD(x15, 2, x10)
    MPQ_ACCLD(x14, 7, x10)
    MPQ_LDOT_W8_US(x15, x11, 0, x10)
    MPQ_LDOT_W8_US(x14, x11, 1, x10)
    CHECK_ACC(8, x15, 110)
    CHECK_ACC(9, x14, 0xfffffff6)
    /* a load feeding an ldot at once: u8 lanes 85 x (4,3,2,1) = 850 */
    li TESTNUM, 10
    MPQ_ACCLD(x10, 7, x10)
    lw x17, 20(x10)
    MPQ_LDOT_W8_US(x10, x17, 0, x10)
    CHECK_ACC(10, x10, 850)

    /* the reads above re-armed ACC15 = 100, ACC14 = 0, ACC3 = 100, ACC4 = 100: again 110, -10,
     * 110, 90 */
    MPQ_LDOT_W8_US(x15, x11, 0, x10)
    MPQ_LDOT_W8_US(x14, x11, 1, x10)
    MPQ_LDOT_W8_US(x3, x11, 0, x10)
    MPQ_LDOT_W8_SS(x4, x12, 0, x10)
    /* mpq.rqpa: a chain into one rd (int8, shift 0): 110, -10, 220 -> 127, 90 * -1 = -90 */
    li TESTNUM, 20
    SET_RQ(0, 0, 8, 1)
    li x1, 1
    li x2, 2
    li x8, -1
    li x14, 0
    MPQ_RQPA(x14, x1, x15)      /* 0x6e000000 */
    MPQ_RQPA(x14, x1, x14)      /* 0xf66e0000 */
    MPQ_RQPA(x14, x2, x3)       /* 0x7ff66e00 */
    MPQ_RQPA(x14, x8, x4)       /* 0xa67ff66e */
    li x7, 0xa67ff66e
    bne x14, x7, fail
    /* the result used by the very next instruction (ACC15 re-armed to 100) */
    li TESTNUM, 21
    li x14, 0
    MPQ_RQPA(x14, x1, x15)
    addi x13, x14, 1
    li x7, 0x64000001
    bne x13, x7, fail
    /* the packing register written just before */
    li TESTNUM, 22
    li x14, 0x12345678
    MPQ_RQPA(x14, x1, x15)
    li x7, 0x64123456
    bne x14, x7, fail
    /* ACC1 = 0 + 40 + 8 = 48, ACC2 = 0 - 32769 + 1 = -32768, ACC0 = 0 + 48 + 16 = 64 again */
    li x13, 0x11111111
    MPQ_LDOT_W4_US(x1, x13, 5, x10)
    MPQ_LDOT_W4_SS(x1, x12, 4, x10)
    MPQ_LDOT_W16_US(x2, x15, 6, x10)
    MPQ_LDOT_W16_SS(x2, x12, 6, x10)
    MPQ_LDOT_W2_US(x0, x12, 5, x10)
    MPQ_LDOT_W2_SS(x0, x12, 4, x10)
    /* int16, shift 1: 48 * 3 / 2 = 72; -32768 / 2 = -16384 */
    li TESTNUM, 23
    SET_RQ(1, 0, 16, 1)
    li x1, 3
    li x2, 1
    li x14, 0
    MPQ_RQPA(x14, x1, x1)       /* 0x00480000 */
    MPQ_RQPA(x14, x2, x2)       /* 0xc0000048 */
    li x7, 0xc0000048
    bne x14, x7, fail
    /* int2 unsigned with zero point 1 (ReLU): 64 * 1 + 1 clamps to 3 */
    li TESTNUM, 24
    SET_RQ(0, 1, 2, 0)
    li x1, 1
    li x14, 0
    MPQ_RQPA(x14, x1, x0)
    li x7, 0xc0000000
    bne x14, x7, fail

    /* traps: misaligned ldot/accld -> mcause 4, outside DMEM -> 5; ACC unchanged */
    li TESTNUM, 30
    MPQ_ACCLD(x9, 2, x10)
    addi x16, x10, 2
    li s2, -1
    MPQ_LDOT_W8_US(x9, x11, 0, x16)
    li x7, 4
    bne s2, x7, fail
    bne s3, x16, fail
    CHECK_ACC(31, x9, 100)
    li TESTNUM, 32
    li x16, 0x30000000
    li s2, -1
    MPQ_LDOT_W8_US(x9, x11, 1, x16)
    li x7, 5
    bne s2, x7, fail
    li x7, 0x30000004
    bne s3, x7, fail
    CHECK_ACC(33, x9, 100)
    li TESTNUM, 34
    addi x16, x10, 1
    li s2, -1
    MPQ_ACCLD(x9, 0, x16)
    li x7, 4
    bne s2, x7, fail
    CHECK_ACC(35, x9, 100)
    /* an ldot right after a faulting one still accumulates */
    li TESTNUM, 36
    li x16, 0x30000000
    MPQ_LDOT_W8_US(x9, x11, 0, x16)
    MPQ_LDOT_W8_US(x9, x11, 0, x10)
    CHECK_ACC(37, x9, 110)
    /* re-arm: the read set ACC9 back to its bias; ACC6 back to 0x7fffffff */
    CHECK_ACC(38, x9, 100)
    CHECK_ACC(39, x6, 0x7fffffff)
    CHECK_ACC(40, x6, 0x7fffffff)
TEST_END

    .balign 4
handler:
    csrr s2, mcause
    csrr s3, mtval
    csrr t6, mepc
    addi t6, t6, 4
    csrw mepc, t6
    mret

    .data
    .balign 4
wdata:
    .word 0x01020304    /* 0: s8 lanes 4, 3, 2, 1 */
    .word 0xfffefdfc    /* 1: s8 lanes -4, -3, -2, -1 */
    .word 100           /* 2: a bias */
    .word 0x7fffffff    /* 3 */
    .word 0xffffffff    /* 4: every lane -1 */
    .word 0x55555555    /* 5: s2 lanes 1, s4 lanes 5, u8 lanes 85 */
    .word 0x80007fff    /* 6: s16 lanes 32767, -32768 */
    .word 0             /* 7 */
