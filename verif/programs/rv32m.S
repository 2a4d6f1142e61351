/* RV32M: every multiply / divide / remainder with the corner values of the spec. */
#include "test_macros.h"
TEST_BEGIN
    TEST_RR(1, mul, 0x00000000, 0x00000000, 0x00000000)
    TEST_RR(2, mul, 0x00000001, 0x00000001, 0x00000001)
    TEST_RR(3, mul, 0x00000015, 0x00000003, 0x00000007)
    TEST_RR(4, mul, 0x00000000, 0x00000000, 0xffff8000)
    TEST_RR(5, mul, 0x00000000, 0x80000000, 0x00000000)
    TEST_RR(6, mul, 0x00000000, 0x80000000, 0xffff8000)
    TEST_RR(7, mul, 0x0000ff7f, 0xaaaaaaab, 0x0002fe7d)
    TEST_RR(8, mul, 0x00000001, 0xffffffff, 0xffffffff)
    TEST_RR(9, mul, 0x80000000, 0x80000000, 0xffffffff)
    TEST_RR_BYPASS(10, mul, 0x0000ff7f, 0x0002fe7d, 0xaaaaaaab)
    TEST_RR(11, mulh, 0x00000000, 0x00000000, 0x00000000)
    TEST_RR(12, mulh, 0x00000000, 0x00000003, 0x00000007)
    TEST_RR(13, mulh, 0xffff0081, 0xaaaaaaab, 0x0002fe7d)
    TEST_RR(14, mulh, 0x00000000, 0xffffffff, 0xffffffff)
    TEST_RR(15, mulh, 0x40000000, 0x80000000, 0x80000000)
    TEST_RR(16, mulh, 0xffffffff, 0xffffffff, 0x00000001)
    TEST_RR(17, mulh, 0xc0000000, 0x80000000, 0x7fffffff+1-1)
    TEST_RR(20, mulhsu, 0x00000000, 0x00000003, 0x00000007)
    TEST_RR(21, mulhsu, 0xffff0081, 0xaaaaaaab, 0x0002fe7d)
    TEST_RR(22, mulhsu, 0xffffffff, 0xffffffff, 0xffffffff)
    TEST_RR(23, mulhsu, 0x80000000, 0x80000000, 0xffffffff+0)
    TEST_RR(24, mulhsu, 0x00000000, 0x00000001, 0xffffffff)
    TEST_RR(30, mulhu, 0x00000000, 0x00000003, 0x00000007)
    TEST_RR(31, mulhu, 0x0001fefe, 0xaaaaaaab, 0x0002fe7d)
    TEST_RR(32, mulhu, 0xfffffffe, 0xffffffff, 0xffffffff)
    TEST_RR(33, mulhu, 0x7fffffff, 0x80000000, 0xffffffff)
    TEST_RR(40, div, 3, 20, 6)
    TEST_RR(41, div, -3, -20, 6)
    TEST_RR(42, div, -3, 20, -6)
    TEST_RR(43, div, 3, -20, -6)
    TEST_RR(44, div, 0x80000000, 0x80000000, 1)
    TEST_RR(45, div, 0x80000000, 0x80000000, -1)   /* overflow */
    TEST_RR(46, div, -1, 0x80000000, 0)            /* by zero */
    TEST_RR(47, div, -1, 1, 0)
    TEST_RR(48, div, -1, 0, 0)
    TEST_RR(50, divu, 3, 20, 6)
    TEST_RR(51, divu, 715827879, -20, 6)
    TEST_RR(52, divu, 0, 20, -6)
    TEST_RR(53, divu, 0x80000000, 0x80000000, 1)
    TEST_RR(54, divu, 0, 0x80000000, -1)
    TEST_RR(55, divu, -1, 0x80000000, 0)
    TEST_RR(56, divu, -1, 0, 0)
    TEST_RR(60, rem, 2, 20, 6)
    TEST_RR(61, rem, -2, -20, 6)
    TEST_RR(62, rem, 2, 20, -6)
    TEST_RR(63, rem, -2, -20, -6)
    TEST_RR(64, rem, 0, 0x80000000, 1)
    TEST_RR(65, rem, 0, 0x80000000, -1)            /* overflow */
    TEST_RR(66, rem, 0x80000000, 0x80000000, 0)    /* by zero: dividend */
    TEST_RR(67, rem, 1, 1, 0)
    TEST_RR(68, rem, 0, 0, 0)
    TEST_RR(70, remu, 2, 20, 6)
    TEST_RR(71, remu, 2, -20, 6)
    TEST_RR(72, remu, 20, 20, -6)
    TEST_RR(73, remu, 0, 0x80000000, 1)
    TEST_RR(74, remu, 0x80000000, 0x80000000, -1)
    TEST_RR(75, remu, 0x80000000, 0x80000000, 0)
    TEST_RR(76, remu, 1, 1, 0)
    TEST_RR(77, remu, 0, 0, 0)
    TEST_RR_BYPASS(78, div, -3, -20, 6)
    TEST_RR_BYPASS(79, remu, 2, -20, 6)
    TEST_RR_SRC1_EQ_DEST(80, divu, 3, 20, 6)
    /* a divide right after a multiply that feeds it */
    li TESTNUM, 81
    li x1, 1000
    li x2, 7
    mul x3, x1, x2
    div x14, x3, x2
    bne x14, x1, fail
    /* a signed sub-word load feeding a multiply: right behind it (rs1, rs2) and one apart; the
       load is sign-extended in W, so the multiply waits for it there (dep_ld), not in M */
    li TESTNUM, 82
    la x5, mdat
    li x2, 3
    lb x1, 0(x5)        /* 0x85: -123 */
    mul x14, x1, x2
    li x7, -369
    bne x14, x7, fail
    li TESTNUM, 83
    lh x1, 2(x5)        /* 0x80f0: -32528 */
    mul x14, x2, x1
    li x7, -97584
    bne x14, x7, fail
    li TESTNUM, 84
    lb x1, 1(x5)        /* 0xff: -1 */
    addi x0, x0, 0
    mul x14, x1, x2
    li x7, -3
    bne x14, x7, fail
    li TESTNUM, 85
    lh x1, 0(x5)        /* 0xff85: -123 */
    mulh x14, x1, x1    /* (-123)^2 >> 32 = 0 */
    bne x14, x0, fail
TEST_END

    .data
    .balign 4
mdat: .word 0x80f0ff85
