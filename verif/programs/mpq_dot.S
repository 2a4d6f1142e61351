/* mpq.dot.w{2,4,8,16}.{ss,su,us,uu}: rd += sum_i lane_i(rs1) * lane_i(rs2), corner values.
 * Expected values are worked out by hand in the comments. */
#include "test_macros.h"
#include "rvmpq_isa_asm.h"

#define TEST_DOT(n, OP, result, acc, a, b) \
    li TESTNUM, n;  \
    li x14, acc;    \
    li x1, a;       \
    li x2, b;       \
    OP(x14, x1, x2); \
    li x7, result;  \
    bne x14, x7, fail

TEST_BEGIN
    /* w8: 4 lanes */
    TEST_DOT(1, MPQ_DOT_W8_SS, 10, 0, 0x01020304, 0x01010101)           /* 4+3+2+1 */
    TEST_DOT(2, MPQ_DOT_W8_SS, 0x10000, 0, 0x80808080, 0x80808080)      /* 4 * (-128)^2 */
    TEST_DOT(3, MPQ_DOT_W8_SS, 4, 0, 0xffffffff, 0xffffffff)            /* 4 * (-1)(-1) */
    TEST_DOT(4, MPQ_DOT_W8_UU, 0x3f804, 0, 0xffffffff, 0xffffffff)      /* 4 * 255^2 */
    TEST_DOT(5, MPQ_DOT_W8_SU, 0xfffffc04, 0, 0xffffffff, 0xffffffff)   /* 4 * (-1)(255) */
    TEST_DOT(6, MPQ_DOT_W8_US, 0xfffe0200, 0, 0xffffffff, 0x80808080)   /* 4 * 255 (-128) */
    TEST_DOT(7, MPQ_DOT_W8_SS, 0x80000000, 0x7fffffff, 1, 1)            /* acc wraps */
    TEST_DOT(8, MPQ_DOT_W8_UU, 0x12345678, 0x12345678, 0, 0xffffffff)   /* zero operand */
    /* w16: 2 lanes */
    TEST_DOT(10, MPQ_DOT_W16_SS, 0x80000000, 0, 0x80008000, 0x80008000) /* 2 * 2^30 */
    TEST_DOT(11, MPQ_DOT_W16_UU, 0xfffc0002, 0, 0xffffffff, 0xffffffff) /* 2 * 65535^2 mod 2^32 */
    TEST_DOT(12, MPQ_DOT_W16_SU, 0xffff0003, 0, 0xffff0001, 0xffff0002) /* 1*2 + (-1)*65535 */
    TEST_DOT(13, MPQ_DOT_W16_US, 11, 0, 0x00020003, 0xfffe0005)         /* 3*5 + 2*(-2) */
    TEST_DOT(14, MPQ_DOT_W16_SS, 0x7fff0001, 0x7fff0000, 0x00000001, 0x00000001)
    /* w4: 8 lanes */
    TEST_DOT(20, MPQ_DOT_W4_SS, 0x200, 0, 0x88888888, 0x88888888)       /* 8 * (-8)^2 */
    TEST_DOT(21, MPQ_DOT_W4_UU, 0x708, 0, 0xffffffff, 0xffffffff)       /* 8 * 15^2 */
    TEST_DOT(22, MPQ_DOT_W4_SU, 0xffffff88, 0, 0xffffffff, 0xffffffff)  /* 8 * (-1)(15) */
    TEST_DOT(23, MPQ_DOT_W4_US, 0x1c, 0, 0x76543210, 0x11111111)        /* 0+1+..+7 */
    TEST_DOT(24, MPQ_DOT_W4_SS, 0xffffffe4, 0, 0x76543210, 0xffffffff)  /* -(0+..+7) */
    TEST_DOT(25, MPQ_DOT_W4_US, 0xfffffc40, 0, 0xffffffff, 0x88888888)  /* 8 * 15 * (-8) */
    /* w2: 16 lanes */
    TEST_DOT(30, MPQ_DOT_W2_SS, 64, 0, 0xaaaaaaaa, 0xaaaaaaaa)          /* 16 * (-2)^2 */
    TEST_DOT(31, MPQ_DOT_W2_UU, 0x90, 0, 0xffffffff, 0xffffffff)        /* 16 * 3^2 */
    TEST_DOT(32, MPQ_DOT_W2_SU, 0xffffffd0, 0, 0xffffffff, 0xffffffff)  /* 16 * (-1)(3) */
    TEST_DOT(33, MPQ_DOT_W2_US, 0xffffffa0, 0, 0xffffffff, 0xaaaaaaaa)  /* 16 * 3 * (-2) */
    TEST_DOT(34, MPQ_DOT_W2_SS, 0xfffffff0, 0, 0x55555555, 0xffffffff)  /* 16 * 1 * (-1) */
    TEST_DOT(35, MPQ_DOT_W2_UU, 100, 100, 0x0000000c, 0x00000003)       /* lane1: 3*0 + lane0 0*3 */
    /* rd == rs1: the accumulator is also an operand */
    li TESTNUM, 40
    li x1, 0x01010101
    li x2, 0x01010101
    MPQ_DOT_W8_UU(x1, x1, x2)
    li x7, 0x01010105
    bne x1, x7, fail
    /* back-to-back chain through rd, then an immediate use */
    li TESTNUM, 41
    li x14, 0
    li x1, 0x02020202
    li x2, 0x03030303
    MPQ_DOT_W8_SS(x14, x1, x2)
    MPQ_DOT_W8_SS(x14, x1, x2)
    MPQ_DOT_W8_SS(x14, x1, x2)
    addi x15, x14, 1
    li x7, 73                                                          /* 3 * 24 + 1 */
    bne x15, x7, fail
    /* two interleaved accumulators */
    li TESTNUM, 42
    li x14, 0
    li x15, 0
    MPQ_DOT_W16_SS(x14, x1, x2)
    MPQ_DOT_W16_UU(x15, x1, x2)
    MPQ_DOT_W16_SS(x14, x1, x2)
    MPQ_DOT_W16_UU(x15, x1, x2)
    sub x16, x14, x15
    bnez x16, fail                                                     /* positive lanes */
    /* 0x0202 * 0x0303 = 514 * 771 = 396294; two lanes, two times: 1585176 = 0x00183018 */
    li x7, 0x00183018
    bne x14, x7, fail
    /* rd = x0: the result is discarded */
    li TESTNUM, 43
    MPQ_DOT_W8_UU(x0, x1, x2)
    bnez x0, fail
    /* a load feeding a dot product at once */
    li TESTNUM, 44
    la x5, dat
    lw x1, 0(x5)
    li x14, 0
    MPQ_DOT_W4_UU(x14, x1, x1)
    li x7, 140
    bne x14, x7, fail
TEST_END

    .data
    .balign 4
dat: .word 0x76543210
