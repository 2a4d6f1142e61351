/* Self-checking test macros for rvmpq directed programs (in the style of riscv-tests).
 *
 * Every check loads its test number into gp (x3) first; on a mismatch the program exits with
 * that number (`ecall`, a7 = 93, a0 = gp), on success with 0. Operands go through x1/x2,
 * results land in x14, expectations in x7.
 */
#ifndef RVMPQ_TEST_MACROS_H
#define RVMPQ_TEST_MACROS_H

#define TESTNUM gp

#define TEST_BEGIN          \
    .text;                  \
    .globl main;            \
main:

#define TEST_END            \
pass:                       \
    li a0, 0;               \
    li a7, 93;              \
    ecall;                  \
fail:                       \
    mv a0, TESTNUM;         \
    li a7, 93;              \
    ecall;                  \
1:  j 1b

/* rd = inst(val1, val2) == result */
#define TEST_RR(n, inst, result, val1, val2) \
    li TESTNUM, n;  \
    li x1, val1;    \
    li x2, val2;    \
    inst x14, x1, x2; \
    li x7, result;  \
    bne x14, x7, fail

/* the same with the destination equal to a source (rd == rs1) */
#define TEST_RR_SRC1_EQ_DEST(n, inst, result, val1, val2) \
    li TESTNUM, n;  \
    li x1, val1;    \
    li x2, val2;    \
    inst x1, x1, x2; \
    li x7, result;  \
    bne x1, x7, fail

/* back-to-back dependency: the result feeds the next instruction at once */
#define TEST_RR_BYPASS(n, inst, result, val1, val2) \
    li TESTNUM, n;  \
    li x1, val1;    \
    li x2, val2;    \
    inst x14, x1, x2; \
    addi x15, x14, 0; \
    li x7, result;  \
    bne x15, x7, fail

#define TEST_IMM(n, inst, result, val1, imm) \
    li TESTNUM, n;  \
    li x1, val1;    \
    inst x14, x1, imm; \
    li x7, result;  \
    bne x14, x7, fail

/* accumulate form: rd (acc) += op(val1, val2), checked against result */
#define TEST_ACC(n, inst, result, acc, val1, val2) \
    li TESTNUM, n;  \
    li x14, acc;    \
    li x1, val1;    \
    li x2, val2;    \
    inst x14, x1, x2; \
    li x7, result;  \
    bne x14, x7, fail

/* load from a labelled word in .data */
#define TEST_LD(n, inst, result, offset, base) \
    li TESTNUM, n;  \
    la x1, base;    \
    inst x14, offset(x1); \
    li x7, result;  \
    bne x14, x7, fail

/* store then load back (load-use right after) */
#define TEST_ST(n, ld, st, result, offset, base) \
    li TESTNUM, n;  \
    la x1, base;    \
    li x2, result;  \
    st x2, offset(x1); \
    ld x14, offset(x1); \
    li x7, result;  \
    bne x14, x7, fail

#define TEST_BR_TAKEN(n, inst, val1, val2) \
    li TESTNUM, n;  \
    li x1, val1;    \
    li x2, val2;    \
    inst x1, x2, 2f; \
    j fail;         \
2:

#define TEST_BR_NOT_TAKEN(n, inst, val1, val2) \
    li TESTNUM, n;  \
    li x1, val1;    \
    li x2, val2;    \
    inst x1, x2, fail;

#define TEST_EQ(n, reg, value) \
    li TESTNUM, n;  \
    li x7, value;   \
    bne reg, x7, fail

#endif
