/* Undefined encodings in the custom-0..custom-3 opcodes trap as illegal (mcause 2), leave rd
 * alone, and the defined ones next to them still work. test_programs.py checks with
 * rvmpq.hw.isa.decode that the words used here are undefined in the ISA table. */
#include "test_macros.h"
#include "rvmpq_isa_asm.h"

#define EXPECT_ILLEGAL(n, insn_word) \
    li TESTNUM, n;  \
    li s2, -1;      \
    li x14, 0x5a5a; \
    .word insn_word; \
    li x7, 2;       \
    bne s2, x7, fail; \
    li x7, 0x5a5a;  \
    bne x14, x7, fail

TEST_BEGIN
    la t0, handler
    csrw mtvec, t0
    /* rd = x14 in every word below */
    EXPECT_ILLEGAL(1, 0x0020c70b)   /* custom-0 funct3=4 */
    EXPECT_ILLEGAL(2, 0x0020f70b)   /* custom-0 funct3=7 */
    EXPECT_ILLEGAL(3, 0x0820870b)   /* custom-0 funct7=4 */
    EXPECT_ILLEGAL(4, 0xfe20870b)   /* custom-0 funct7=0x7f */
    EXPECT_ILLEGAL(5, 0x0020a72b)   /* custom-1 funct3=2 */
    EXPECT_ILLEGAL(6, 0x0220872b)   /* custom-1 funct7=1 */
    EXPECT_ILLEGAL(7, 0x0020f72b)   /* custom-1 funct3=7 */
    EXPECT_ILLEGAL(11, 0x00208f5b)  /* custom-2 mpq.ldot with k = 30 (rd field) */
    EXPECT_ILLEGAL(12, 0x0020b77b)  /* custom-3 funct3=3 */
    EXPECT_ILLEGAL(13, 0x002080fb)  /* custom-3 mpq.accld with rs2 != 0 */
    EXPECT_ILLEGAL(14, 0x0120977b)  /* custom-3 mpq.rqpa with k = 18 (rs2 field) */
    EXPECT_ILLEGAL(15, 0x0220977b)  /* custom-3 mpq.rqpa with funct7=1 */
    EXPECT_ILLEGAL(16, 0x0020a77b)  /* custom-3 mpq.accrd with rs1 != 0 */
    /* a defined neighbour still executes */
    li TESTNUM, 10
    li s2, -1
    li x14, 1
    li x1, 0x01010101
    li x2, 0x01010101
    MPQ_DOT_W8_UU(x14, x1, x2)
    li x7, 5
    bne x14, x7, fail
    li x7, -1
    bne s2, x7, fail
TEST_END

    .balign 4
handler:
    csrr s2, mcause
    csrr t6, mepc
    addi t6, t6, 4
    csrw mepc, t6
    mret
