/* RV32I register-register and immediate ALU instructions with corner values. */
#include "test_macros.h"
TEST_BEGIN
    /* add / sub */
    TEST_RR(1, add, 0x00000000, 0x00000000, 0x00000000)
    TEST_RR(2, add, 0x0000000a, 0x00000003, 0x00000007)
    TEST_RR(3, add, 0xffff8000, 0x00000000, 0xffff8000)
    TEST_RR(4, add, 0x7fffffff, 0x7fffffff, 0x00000000)
    TEST_RR(5, add, 0x80000000, 0x7fffffff, 0x00000001)
    TEST_RR(6, add, 0x00000000, 0xffffffff, 0x00000001)
    TEST_RR(7, add, 0x7fffffff, 0x80000000, 0xffffffff)
    TEST_RR_SRC1_EQ_DEST(8, add, 24, 13, 11)
    TEST_RR_BYPASS(9, add, 0x80000000, 0x7fffffff, 0x00000001)
    TEST_RR(10, sub, 0x00000000, 0x00000003, 0x00000003)
    TEST_RR(11, sub, 0xfffffffc, 0x00000003, 0x00000007)
    TEST_RR(12, sub, 0x80000000, 0x00000000, 0x80000000)
    TEST_RR(13, sub, 0x7fffffff, 0x80000000, 0x00000001)
    TEST_RR(14, sub, 0x00000001, 0x00000000, 0xffffffff)
    TEST_RR_BYPASS(15, sub, 0x7fffffff, 0x80000000, 0x00000001)
    /* logic */
    TEST_RR(20, and, 0x0f000f00, 0xff00ff00, 0x0f0f0f0f)
    TEST_RR(21, and, 0xf000f000, 0xf00ff00f, 0xf0f0f0f0)
    TEST_RR(22, or,  0xff0fff0f, 0xff00ff00, 0x0f0f0f0f)
    TEST_RR(23, or,  0xfff0fff0, 0x0ff00ff0, 0xf0f0f0f0)
    TEST_RR(24, xor, 0xf00ff00f, 0xff00ff00, 0x0f0f0f0f)
    TEST_RR(25, xor, 0xff00ff00, 0x0ff00ff0, 0xf0f0f0f0)
    /* compares */
    TEST_RR(30, slt, 0, 0x00000000, 0x00000000)
    TEST_RR(31, slt, 1, 0x00000003, 0x00000007)
    TEST_RR(32, slt, 0, 0x00000007, 0x00000003)
    TEST_RR(33, slt, 1, 0x80000000, 0x00000000)
    TEST_RR(34, slt, 0, 0x7fffffff, 0x80000000)
    TEST_RR(35, slt, 1, 0xffffffff, 0x00000001)
    TEST_RR(36, sltu, 0, 0x00000000, 0x00000000)
    TEST_RR(37, sltu, 1, 0x00000000, 0xffffffff)
    TEST_RR(38, sltu, 0, 0xffffffff, 0x00000001)
    TEST_RR(39, sltu, 1, 0x7fffffff, 0x80000000)
    /* shifts (only the low 5 bits of rs2 count) */
    TEST_RR(40, sll, 0x00000001, 0x00000001, 0)
    TEST_RR(41, sll, 0x80000000, 0x00000001, 31)
    TEST_RR(42, sll, 0x90909080, 0x21212121, 7)
    TEST_RR(43, sll, 0x21212121, 0x21212121, 0xffffffe0)
    TEST_RR(44, sll, 0x80000000, 0x21212121, 0xffffffff)
    TEST_RR(45, srl, 0x01000000, 0x80000000, 7)
    TEST_RR(46, srl, 0x00000001, 0x80000000, 31)
    TEST_RR(47, srl, 0x00000001, 0xffffffff, 0xffffffff)
    TEST_RR(48, srl, 0x21212121, 0x21212121, 0xffffffe0)
    TEST_RR(49, sra, 0xff000000, 0x80000000, 7)
    TEST_RR(50, sra, 0xffffffff, 0x80000000, 31)
    TEST_RR(51, sra, 0x00000000, 0x7fffffff, 31)
    TEST_RR(52, sra, 0xffffffff, 0x81818181, 0xffffffff)
    TEST_RR(53, sra, 0x81818181, 0x81818181, 0xffffffe0)
    /* immediates */
    TEST_IMM(60, addi, 0x00000000, 0x00000000, 0)
    TEST_IMM(61, addi, 0xfffff800, 0x00000000, -2048)
    TEST_IMM(62, addi, 0x800007fe, 0x7fffffff, 2047)
    TEST_IMM(63, addi, 0x7ffff7ff, 0x7fffffff, -2048)
    TEST_IMM(64, addi, 0x00000000, 0xffffffff, 1)
    TEST_IMM(65, slti, 1, 0x80000000, 0)
    TEST_IMM(66, slti, 0, 0x00000000, -1)
    TEST_IMM(67, slti, 1, 0xfffff000, -2048+1)
    TEST_IMM(68, sltiu, 1, 0x00000000, -1)
    TEST_IMM(69, sltiu, 0, 0xffffffff, 1)
    TEST_IMM(70, sltiu, 1, 0xfffffffe, -1)
    TEST_IMM(71, andi, 0xff00ff00, 0xff00ff00, -1)
    TEST_IMM(72, andi, 0x000000f0, 0x0ff00ff0, 0x0f0)
    TEST_IMM(73, ori, 0xffffff0f, 0xff00ff00, -241)
    TEST_IMM(74, xori, 0xff00f00f, 0x00ff0f00, -241)
    TEST_IMM(75, slli, 0x80000000, 0x00000001, 31)
    TEST_IMM(76, slli, 0x42424242, 0x21212121, 1)
    TEST_IMM(77, srli, 0x00000001, 0xffffffff, 31)
    TEST_IMM(78, srli, 0x7fffffff, 0xffffffff, 1)
    TEST_IMM(79, srai, 0xffffffff, 0x80000000, 31)
    TEST_IMM(80, srai, 0xc0000000, 0x80000000, 1)
    TEST_IMM(81, srai, 0x3fffffff, 0x7fffffff, 1)
    /* lui / auipc */
    li TESTNUM, 90
    lui x14, 0xfffff
    li x7, 0xfffff000
    bne x14, x7, fail
    li TESTNUM, 91
    lui x14, 0x80000
    srai x14, x14, 12
    li x7, 0xfff80000
    bne x14, x7, fail
    li TESTNUM, 92
1:  auipc x14, 0x1
    la x15, 1b
    sub x14, x14, x15
    li x7, 0x1000
    bne x14, x7, fail
    li TESTNUM, 93
    addi x0, x0, 5       /* x0 stays zero */
    bnez x0, fail
    li x14, 0x12345678
    add x0, x14, x14
    bnez x0, fail
TEST_END
