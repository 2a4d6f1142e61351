/* RV32I branches (taken / not taken, signed / unsigned corners), JAL and JALR. */
#include "test_macros.h"
TEST_BEGIN
    TEST_BR_TAKEN(1, beq, 0, 0)
    TEST_BR_TAKEN(2, beq, -1, -1)
    TEST_BR_NOT_TAKEN(3, beq, 0, 1)
    TEST_BR_NOT_TAKEN(4, beq, 0x80000000, 0)
    TEST_BR_TAKEN(5, bne, 0, 1)
    TEST_BR_TAKEN(6, bne, 0x80000000, 0)
    TEST_BR_NOT_TAKEN(7, bne, -1, -1)
    TEST_BR_TAKEN(8, blt, -1, 1)
    TEST_BR_TAKEN(9, blt, 0x80000000, 0x7fffffff)
    TEST_BR_NOT_TAKEN(10, blt, 1, -1)
    TEST_BR_NOT_TAKEN(11, blt, 5, 5)
    TEST_BR_TAKEN(12, bge, 5, 5)
    TEST_BR_TAKEN(13, bge, 1, -1)
    TEST_BR_NOT_TAKEN(14, bge, 0x80000000, 0x7fffffff)
    TEST_BR_TAKEN(15, bltu, 1, -1)
    TEST_BR_TAKEN(16, bltu, 0x7fffffff, 0x80000000)
    TEST_BR_NOT_TAKEN(17, bltu, -1, 1)
    TEST_BR_NOT_TAKEN(18, bltu, 5, 5)
    TEST_BR_TAKEN(19, bgeu, 5, 5)
    TEST_BR_TAKEN(20, bgeu, -1, 1)
    TEST_BR_NOT_TAKEN(21, bgeu, 0x7fffffff, 0x80000000)
    /* backward branch: a loop of 10 iterations */
    li TESTNUM, 30
    li x1, 0
    li x2, 10
3:  addi x1, x1, 1
    bne x1, x2, 3b
    li x7, 10
    bne x1, x7, fail
    /* jal: link = pc + 4, skips the instruction after it */
    li TESTNUM, 40
    li x14, 0
4:  jal x5, 5f
    li x14, 1
5:  bnez x14, fail
    la x6, 4b
    addi x6, x6, 4
    bne x5, x6, fail
    /* jalr with an offset, clearing bit 0 of the target; link written even when rd == rs1 */
    li TESTNUM, 41
    la x1, 6f
    addi x1, x1, -3          /* target = (x1 + 4) & ~1 = 6f - 3 + 4 = 6f + 1 -> 6f */
    jalr x5, 4(x1)
    j fail
6:  la x6, 6b
    addi x6, x6, -4
    bne x5, x6, fail
    li TESTNUM, 42
    la x1, 7f
    jalr x1, 0(x1)           /* rd == rs1: the target uses the old value */
    j fail
7:  la x6, 7b
    addi x6, x6, -4
    bne x1, x6, fail
    /* call / ret */
    li TESTNUM, 43
    li a0, 20
    call add22
    li x7, 42
    bne a0, x7, fail
    /* jal x0 (no link) */
    li TESTNUM, 44
    li x5, 0x55
    jal x0, 8f
    j fail
8:  li x7, 0x55
    bne x5, x7, fail
TEST_END

add22:
    addi a0, a0, 22
    ret
