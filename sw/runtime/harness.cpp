// rvmpq program runner: a Verilator C++ main loop around the SimSoC (`rvmpq_soc`), through
// run_top.v (`rvmpq_run`), which registers the host-side inputs.
//
// Usage:
//   Vrvmpq_run IMAGE RESULT MAX_CYCLES [--trace FILE] [--waves FILE]
//              [--sig BEGIN END FILE] [--read-latency N]
//
//   IMAGE      program image: one "ADDR WORD" pair of hex numbers per line (rvmpq.sw.runtime.elf)
//   RESULT     written at the end: "exit=<code> cycles=<n> instret=<n> halted=<0|1>"
//   MAX_CYCLES stop after this many cycles of the running core (halted=0 then)
//   --trace    retired-instruction trace, one line per retire_valid:
//              "PC INSN RD WDATA TRAP" (hex, hex, decimal, hex, 0/1; WDATA 0 when RD = 0)
//   --waves    waveform (only in a model built with --trace-fst or --trace-vcd)
//   --sig      after the run, read [BEGIN, END) through the host port, one hex word per line
//
// Sequence (contracts.md section 5): reset with host_en = 1, write the image through the host
// port, release host_en, clock until `halted` or MAX_CYCLES, printing each console byte to
// stdout as it arrives, then take the host port back to read the signature.
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "Vrvmpq_run.h"
#include "verilated.h"
#if VM_TRACE_FST
#include "verilated_fst_c.h"
typedef VerilatedFstC WavesWriter;
#elif VM_TRACE_VCD
#include "verilated_vcd_c.h"
typedef VerilatedVcdC WavesWriter;
#endif
#if VM_TRACE_FST || VM_TRACE_VCD
#define RVMPQ_WAVES 1
#else
#define RVMPQ_WAVES 0
#endif

static void usage() {
    std::fprintf(stderr,
                 "usage: Vrvmpq_run IMAGE RESULT MAX_CYCLES [--trace FILE] [--waves FILE] "
                 "[--sig BEGIN END FILE] [--read-latency N]\n");
    std::exit(2);
}

int main(int argc, char** argv) {
    if (argc < 4) usage();
    const char* image_path = argv[1];
    const char* result_path = argv[2];
    const uint64_t max_cycles = std::strtoull(argv[3], nullptr, 0);
    const char* trace_path = nullptr;
    const char* waves_path = nullptr;
    const char* sig_path = nullptr;
    uint32_t sig_begin = 0, sig_end = 0;
    int read_latency = 2;  // run_top.v registers host_addr: 1 + the SoC's 1
    for (int i = 4; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--trace") && i + 1 < argc) {
            trace_path = argv[++i];
        } else if (!std::strcmp(argv[i], "--waves") && i + 1 < argc) {
            waves_path = argv[++i];
        } else if (!std::strcmp(argv[i], "--sig") && i + 3 < argc) {
            sig_begin = std::strtoul(argv[++i], nullptr, 0);
            sig_end = std::strtoul(argv[++i], nullptr, 0);
            sig_path = argv[++i];
        } else if (!std::strcmp(argv[i], "--read-latency") && i + 1 < argc) {
            read_latency = std::atoi(argv[++i]);
        } else {
            usage();
        }
    }

    // ---- program image ------------------------------------------------------------------
    std::vector<std::pair<uint32_t, uint32_t>> image;
    {
        FILE* f = std::fopen(image_path, "r");
        if (!f) {
            std::fprintf(stderr, "harness: cannot open image %s\n", image_path);
            return 2;
        }
        unsigned int a, w;
        while (std::fscanf(f, "%x %x", &a, &w) == 2) image.emplace_back(a, w);
        std::fclose(f);
    }

    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(1, argv);
    auto top = std::make_unique<Vrvmpq_run>(ctx.get());

#if RVMPQ_WAVES
    std::unique_ptr<WavesWriter> tfp;
    if (waves_path) {
        ctx->traceEverOn(true);
        tfp = std::make_unique<WavesWriter>();
        top->trace(tfp.get(), 99);
        tfp->open(waves_path);
    }
#else
    if (waves_path) {
        std::fprintf(stderr, "harness: this model was built without --trace-fst/--trace-vcd\n");
        return 2;
    }
#endif
    uint64_t time_ps = 0;
    auto tick = [&]() {
        top->clk = 0;
        top->eval();
#if RVMPQ_WAVES
        if (tfp) tfp->dump(time_ps);
#endif
        time_ps += 5000;
        top->clk = 1;
        top->eval();
#if RVMPQ_WAVES
        if (tfp) tfp->dump(time_ps);
#endif
        time_ps += 5000;
    };

    // ---- reset, load through the host port ------------------------------------------------
    top->clk = 0;
    top->rst = 1;
    top->host_en = 1;
    top->host_we = 0;
    top->host_addr = 0;
    top->host_wdata = 0;
    for (int i = 0; i < 4; ++i) tick();
    top->rst = 0;
    tick();
    for (auto& aw : image) {
        top->host_we = 1;
        top->host_addr = aw.first;
        top->host_wdata = aw.second;
        tick();
    }
    top->host_we = 0;
    top->host_addr = 0;
    tick();
    top->host_en = 0;
    tick();  // run_top.v: the SoC sees host_en = 0 from this edge on; the core runs from the next

    // ---- run ------------------------------------------------------------------------------
    FILE* trace = nullptr;
    if (trace_path) {
        trace = std::fopen(trace_path, "w");
        if (!trace) {
            std::fprintf(stderr, "harness: cannot write %s\n", trace_path);
            return 2;
        }
    }
    uint64_t cycles = 0, instret = 0;
    while (!top->halted && cycles < max_cycles) {
        tick();
        ++cycles;
        if (top->console_valid) {
            std::fputc(top->console_data, stdout);
            if (top->console_data == '\n') std::fflush(stdout);
        }
        if (top->retire_valid) {
            ++instret;
            if (trace) {
                const unsigned rd = top->retire_rd;
                std::fprintf(trace, "%08x %08x %u %08x %d\n", (unsigned)top->retire_pc,
                             (unsigned)top->retire_insn, rd, rd ? (unsigned)top->retire_wdata : 0u,
                             (int)top->retire_trap);
            }
        }
    }
    std::fflush(stdout);
    if (trace) std::fclose(trace);
    const int halted = top->halted ? 1 : 0;
    const uint32_t exit_code = top->exit_code;

    // ---- signature through the host port ------------------------------------------------
    if (sig_path) {
        FILE* f = std::fopen(sig_path, "w");
        if (!f) {
            std::fprintf(stderr, "harness: cannot write %s\n", sig_path);
            return 2;
        }
        top->host_en = 1;
        top->host_we = 0;
        tick();
        for (uint32_t a = sig_begin & ~3u; a < sig_end; a += 4) {
            top->host_addr = a;
            for (int k = 0; k < read_latency; ++k) tick();
            std::fprintf(f, "%08x\n", (unsigned)top->host_rdata);
        }
        std::fclose(f);
    }
#if RVMPQ_WAVES
    if (tfp) tfp->close();
#endif
    top->final();

    FILE* r = std::fopen(result_path, "w");
    if (!r) {
        std::fprintf(stderr, "harness: cannot write %s\n", result_path);
        return 2;
    }
    std::fprintf(r, "exit=%u cycles=%" PRIu64 " instret=%" PRIu64 " halted=%d\n", exit_code,
                 cycles, instret, halted);
    std::fclose(r);
    return 0;
}
