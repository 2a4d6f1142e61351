/* Zicsr / Zicntr and machine-mode traps: CSR instructions, counters, ecall, ebreak, illegal
 * instructions, misaligned and faulting loads / stores / jumps, mtvec / mepc / mcause / mtval /
 * mstatus, and mret. The handler records mcause (s2), mepc (s3), mtval (s4), mstatus (s5),
 * counts traps (s6) and resumes at mepc + 4, or at s1 for fetch faults. */
#include "test_macros.h"

#define EXPECT_TRAP(n, cause)          \
    li TESTNUM, n;                     \
    li x7, cause;                      \
    bne s2, x7, fail

TEST_BEGIN
    la t0, handler
    csrw mtvec, t0
    li TESTNUM, 1
    csrr x14, mtvec
    bne x14, t0, fail
    /* CSR read/modify/write forms on mscratch */
    li x1, 0x0f0f0f0f
    csrw mscratch, x1
    li x2, 0xf0000000
    csrrs x14, mscratch, x2
    TEST_EQ(2, x14, 0x0f0f0f0f)
    li x2, 0x0000000f
    csrrc x14, mscratch, x2
    TEST_EQ(3, x14, 0xff0f0f0f)
    csrrwi x14, mscratch, 0x15
    TEST_EQ(4, x14, 0xff0f0f00)
    csrrsi x14, mscratch, 0x0a
    TEST_EQ(5, x14, 0x15)
    csrrci x14, mscratch, 0x01
    TEST_EQ(6, x14, 0x1f)
    csrr x14, mscratch
    TEST_EQ(7, x14, 0x1e)
    csrrw x14, mscratch, x0
    TEST_EQ(8, x14, 0x1e)
    csrr x14, mscratch
    TEST_EQ(9, x14, 0)
    /* counters: instret counts retired instructions exactly; cycle moves forward */
    li TESTNUM, 10
    rdinstret x1
    nop
    nop
    rdinstret x2
    sub x14, x2, x1
    li x7, 3
    bne x14, x7, fail
    li TESTNUM, 11
    rdcycle x1
    nop
    rdcycle x2
    sub x14, x2, x1
    blez x14, fail
    li TESTNUM, 12
    rdcycleh x1
    rdinstreth x2
    bnez x1, fail
    bnez x2, fail
    li TESTNUM, 13
    csrr x1, minstret
    nop
    csrr x2, minstret
    sub x14, x2, x1
    li x7, 2
    bne x14, x7, fail
    /* ecall with a7 != 93 traps to mtvec */
    li s6, 0
    li a7, 1
1:  ecall
    EXPECT_TRAP(20, 11)
    la x1, 1b
    bne s3, x1, fail
    li x7, 1
    bne s6, x7, fail
    /* ebreak */
2:  ebreak
    EXPECT_TRAP(21, 3)
    la x1, 2b
    bne s3, x1, fail
    /* illegal instructions: all zeros, all ones, unknown CSR, write to a read-only CSR */
3:  .word 0x00000000
    EXPECT_TRAP(22, 2)
    la x1, 3b
    bne s3, x1, fail
    .word 0xffffffff
    EXPECT_TRAP(23, 2)
    li s2, 0
    csrr x14, 0x7ff
    EXPECT_TRAP(24, 2)
    li s2, 0
    csrw cycle, x1
    EXPECT_TRAP(25, 2)
    /* misaligned loads / stores: mtval = the address */
    la x1, buf
    li s2, 0
    lw x14, 1(x1)
    EXPECT_TRAP(30, 4)
    addi x7, x1, 1
    bne s4, x7, fail
    lh x14, 3(x1)
    EXPECT_TRAP(31, 4)
    lhu x14, 1(x1)
    EXPECT_TRAP(32, 4)
    sw x0, 2(x1)
    EXPECT_TRAP(33, 6)
    addi x7, x1, 2
    bne s4, x7, fail
    sh x0, 1(x1)
    EXPECT_TRAP(34, 6)
    /* the faulting load did not write rd */
    li TESTNUM, 35
    li x14, 0x1234
    lw x14, 2(x1)
    li x7, 0x1234
    bne x14, x7, fail
    /* access faults: unmapped address, IMEM is fetch only, MMIO hole */
    li x1, 0x30000000
    li s2, 0
    lw x14, 0(x1)
    EXPECT_TRAP(40, 5)
    bne s4, x1, fail
    sw x0, 0(x1)
    EXPECT_TRAP(41, 7)
    li s2, 0
    lw x14, 0(x0)
    EXPECT_TRAP(42, 5)
    li s2, 0
    sw x0, 16(x0)
    EXPECT_TRAP(43, 7)
    li x1, 0x20000010
    li s2, 0
    sw x0, 0(x1)
    EXPECT_TRAP(44, 7)
    /* misaligned jump target (no C extension) */
    la s1, 4f
    la x1, 4f
    li s2, -1
    jalr x0, 2(x1)
    j fail
4:  EXPECT_TRAP(50, 0)
    /* fetch outside IMEM */
    la s1, 5f
    li x1, 0x30000000
    li s2, -1
    jalr x0, 0(x1)
    j fail
5:  EXPECT_TRAP(51, 1)
    /* mstatus: a trap clears MIE and saves it in MPIE, mret restores it */
    csrsi mstatus, 8
    ecall
    li TESTNUM, 60
    andi x14, s5, 0x88
    li x7, 0x80
    bne x14, x7, fail
    li TESTNUM, 61
    csrr x14, mstatus
    andi x14, x14, 0x88
    li x7, 0x88
    bne x14, x7, fail
    csrci mstatus, 8
    /* mepc / mcause / mtval are read/write */
    li TESTNUM, 62
    li x1, 0x100
    csrw mepc, x1
    csrr x14, mepc
    bne x14, x1, fail
    li TESTNUM, 63
    la x1, 6f
    csrw mepc, x1
    mret
    j fail
6:  li x7, 12
    li TESTNUM, 64
    li s6, 0
    ecall
    ecall
    li x7, 2
    bne s6, x7, fail
TEST_END

    .balign 4
handler:
    csrr s2, mcause
    csrr s3, mepc
    csrr s4, mtval
    csrr s5, mstatus
    addi s6, s6, 1
    li t6, 2
    bltu s2, t6, 7f         /* mcause 0 / 1: resume at s1 */
    addi t6, s3, 4
    csrw mepc, t6
    mret
7:  csrw mepc, s1
    mret

    .bss
    .balign 4
buf: .space 16
