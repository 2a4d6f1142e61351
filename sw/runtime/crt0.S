/* rvmpq bare-metal start-up (contracts.md section 6).
 *
 * _start: sp = top of DMEM, gp = __global_pointer$, .bss cleared, mtvec = default trap handler,
 * a0 = main(0, 0), then exit with ecall a7 = 93 (a0 = main's return value).
 *
 * The default trap handler prints
 *     "trap mcause=XXXXXXXX mepc=XXXXXXXX mtval=XXXXXXXX\n"
 * on the console and exits with code 128 + mcause (through the EXIT MMIO register, so that it
 * works whatever state a7/a0 are in). A program that wants to handle traps itself writes its
 * own handler address to mtvec; `__rvmpq_default_trap` stays available.
 */
    .equ RVMPQ_MMIO_CONSOLE, 0x20000000
    .equ RVMPQ_MMIO_EXIT,    0x20000004

    .section .text.init, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    .option push
    .option norelax
    la      gp, __global_pointer$
    .option pop
    la      sp, __stack_top
    /* clear .bss (word aligned by the linker script) */
    la      t0, __bss_start
    la      t1, __bss_end
1:  bgeu    t0, t1, 2f
    sw      zero, 0(t0)
    addi    t0, t0, 4
    j       1b
2:  la      t0, __rvmpq_default_trap
    csrw    mtvec, t0
    li      a0, 0
    li      a1, 0
    call    main
    /* exit(main()) */
    li      a7, 93
    ecall
3:  j       3b
    .size _start, . - _start

    /* ---- default trap handler (4-byte aligned: mtvec direct mode) ---- */
    .balign 4
    .globl __rvmpq_default_trap
    .type __rvmpq_default_trap, @function
__rvmpq_default_trap:
    li      s0, RVMPQ_MMIO_CONSOLE
    la      s1, __rvmpq_trap_msg
    call    __rvmpq_puts
    csrr    a0, mcause
    call    __rvmpq_puthex
    la      s1, __rvmpq_trap_mepc
    call    __rvmpq_puts
    csrr    a0, mepc
    call    __rvmpq_puthex
    la      s1, __rvmpq_trap_mtval
    call    __rvmpq_puts
    csrr    a0, mtval
    call    __rvmpq_puthex
    li      t0, 10
    sb      t0, 0(s0)
    csrr    a0, mcause
    addi    a0, a0, 128
    li      t0, RVMPQ_MMIO_EXIT
    sw      a0, 0(t0)
4:  j       4b
    .size __rvmpq_default_trap, . - __rvmpq_default_trap

    /* print the NUL-terminated string at s1 to the console at s0 (clobbers t0, s1) */
__rvmpq_puts:
    lbu     t0, 0(s1)
    beqz    t0, 5f
    sb      t0, 0(s0)
    addi    s1, s1, 1
    j       __rvmpq_puts
5:  ret

    /* print a0 as 8 hex digits to the console at s0 (clobbers t0-t2) */
__rvmpq_puthex:
    li      t1, 28
6:  srl     t0, a0, t1
    andi    t0, t0, 15
    li      t2, 10
    blt     t0, t2, 7f
    addi    t0, t0, 39          /* 'a' - '0' - 10 */
7:  addi    t0, t0, 48          /* '0' */
    sb      t0, 0(s0)
    addi    t1, t1, -4
    bgez    t1, 6b
    ret

    .section .rodata.rvmpq_trap, "a", @progbits
__rvmpq_trap_msg:   .asciz "trap mcause="
__rvmpq_trap_mepc:  .asciz " mepc="
__rvmpq_trap_mtval: .asciz " mtval="
