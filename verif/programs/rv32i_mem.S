/* RV32I loads and stores: every width, sign/zero extension, offsets, load-use. */
#include "test_macros.h"
TEST_BEGIN
    TEST_LD(1, lw, 0x00ff00ff, 0, tdat)
    TEST_LD(2, lw, 0xff00ff00, 4, tdat)
    TEST_LD(3, lw, 0x0ff00ff0, 8, tdat)
    TEST_LD(4, lw, 0xf00ff00f, 12, tdat)
    TEST_LD(5, lw, 0x0ff00ff0, -4, tdat_3)
    TEST_LD(6, lh, 0x000000ff, 0, tdat)
    TEST_LD(7, lh, 0x000000ff, 2, tdat)
    TEST_LD(8, lh, 0xffffff00, 4, tdat)
    TEST_LD(9, lh, 0xfffff00f, 12, tdat)
    TEST_LD(10, lhu, 0x000000ff, 0, tdat)
    TEST_LD(11, lhu, 0x000000ff, 2, tdat)
    TEST_LD(12, lhu, 0x0000f00f, 12, tdat)
    TEST_LD(13, lb, 0xffffffff, 0, tdat)
    TEST_LD(14, lb, 0x00000000, 1, tdat)
    TEST_LD(15, lb, 0xffffffff, 3, tdat_1)
    TEST_LD(16, lb, 0x00000000, 2, tdat_1)
    TEST_LD(17, lbu, 0x000000ff, 0, tdat)
    TEST_LD(18, lbu, 0x000000ff, 3, tdat_1)
    TEST_LD(19, lbu, 0x000000ff, -2, tdat_1)
    TEST_ST(20, lw, sw, 0xaabbccdd, 0, sdat)
    TEST_ST(21, lw, sw, 0x80000000, 4, sdat)
    TEST_ST(22, lh, sh, 0xffffa00a, 8, sdat)
    TEST_ST(23, lhu, sh, 0x0000a00a, 10, sdat)
    TEST_ST(24, lb, sb, 0xffffffa0, 12, sdat)
    TEST_ST(25, lbu, sb, 0x000000a0, 15, sdat)
    /* partial stores leave the other bytes alone */
    li TESTNUM, 30
    la x1, sdat
    li x2, 0x11223344
    sw x2, 16(x1)
    li x2, 0xee
    sb x2, 17(x1)
    li x2, 0xbeef
    sh x2, 18(x1)
    lw x14, 16(x1)
    li x7, 0xbeefee44
    bne x14, x7, fail
    /* store then load back with a negative offset, and a load used at once */
    li TESTNUM, 31
    la x1, sdat + 32
    li x2, 0x1234
    sw x2, -4(x1)
    lw x3, -4(x1)
    addi x14, x3, 1
    li x7, 0x1235
    bne x14, x7, fail
    /* load into the base register */
    li TESTNUM, 32
    la x1, tdat
    lw x1, 0(x1)
    li x7, 0x00ff00ff
    bne x1, x7, fail
TEST_END

    .data
    .balign 4
tdat:
tdat_0: .word 0x00ff00ff
tdat_1: .word 0xff00ff00
tdat_2: .word 0x0ff00ff0
tdat_3: .word 0xf00ff00f
    .bss
    .balign 4
sdat: .space 64
