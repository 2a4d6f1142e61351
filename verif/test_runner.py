"""`rvmpq cc` / `rvmpq run` conventions and the ELF loader's error handling."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "programs"))
import rvmpq_testprogs as tp  # noqa: E402

from rvmpq.sw.runtime import cc  # noqa: E402
from rvmpq.sw.runtime.elf import ElfError, load_elf, parse_elf  # noqa: E402

needs_soc = pytest.mark.skipif(not tp.have_soc(), reason="rvmpq.hw.soc is not installed")


def rvmpq(*args, **kw):
    return subprocess.run([sys.executable, "-m", "rvmpq.sw.cli", *map(str, args)],
                          capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def exit_prog(tmp_path_factory):
    """A program that prints 'hi', writes a 3-word signature and exits with code 5."""
    d = tmp_path_factory.mktemp("prog")
    src = d / "p.S"
    src.write_text("""
    .text
    .globl main
main:
    li t0, 0x20000000
    li t1, 'h'
    sb t1, 0(t0)
    li t1, 'i'
    sb t1, 0(t0)
    la t0, begin_signature
    li t1, 0x12345678
    sw t1, 0(t0)
    li t1, -1
    sw t1, 8(t0)
    li a0, 5
    ret
    .data
    .balign 4
    .globl begin_signature, end_signature
begin_signature: .word 0, 0xabcdef01, 0
end_signature:
""")
    return cc.compile_program([src], d / "p.elf")


def test_elf_loader_reads_segments_and_symbols(exit_prog):
    img = load_elf(exit_prog)
    assert img.entry == 0
    assert {s.addr >> 28 for s in img.segments} == {0, 1}
    b, e = img.signature_range()
    assert e - b == 12
    assert "main" in img.symbols


@pytest.mark.parametrize("mutate,msg", [
    (lambda b: b"not an elf at all", "not an ELF"),
    (lambda b: b[:4] + b"\x02" + b[5:], "64-bit"),
    (lambda b: b[:18] + struct.pack("<H", 62) + b[20:], "not RISC-V"),
    (lambda b: b[:30], "truncated"),
    (lambda b: b[:28] + struct.pack("<I", 10**7) + b[32:], "corrupt"),
])
def test_elf_loader_errors(exit_prog, mutate, msg):
    with pytest.raises(ElfError, match=msg):
        parse_elf(mutate(exit_prog.read_bytes()), "x.elf")


def test_elf_segment_outside_memory(exit_prog):
    blob = bytearray(exit_prog.read_bytes())
    phoff, = struct.unpack_from("<I", blob, 28)
    phentsize, phnum = struct.unpack_from("<HH", blob, 42)
    for i in range(phnum):
        off = phoff + i * phentsize
        if struct.unpack_from("<I", blob, off)[0] == 1 and \
                struct.unpack_from("<I", blob, off + 8)[0] >> 28 == 1:
            struct.pack_into("<I", blob, off + 8, 0x3000_0000)  # move the DMEM segment away
    with pytest.raises(ElfError, match="outside IMEM"):
        parse_elf(bytes(blob), "far.elf")


def test_cc_errors(tmp_path):
    r = rvmpq("cc", tmp_path / "missing.c", "-o", tmp_path / "x.elf")
    assert r.returncode == 1 and "no such source file" in r.stderr
    bad = tmp_path / "bad.c"
    bad.write_text("int main(void) { return undefined_thing; }\n")
    r = rvmpq("cc", bad, "-o", tmp_path / "x.elf")
    assert r.returncode == 1 and "undefined_thing" in r.stderr and not (tmp_path / "x.elf").exists()
    r = rvmpq("cc", bad, "-o", tmp_path / "x.elf", "--config", "fast")
    assert r.returncode != 0 and "baseline" in r.stderr


def test_cc_insn_last_in_file(tmp_path):
    """zig cannot assemble `.insn` as the last statement of a file; rvmpq cc works around it."""
    src = tmp_path / "last.S"
    src.write_text(".text\n.globl f\nf:\n.insn r 0x0b, 2, 3, a0, a1, a2\n")
    main = tmp_path / "m.c"
    main.write_text("int main(void) { return 0; }\n")
    cc.compile_program([main, src], tmp_path / "last.elf")


def test_cc_header_is_generated():
    from rvmpq.hw import isa
    inc = cc.include_dir()
    assert (inc / "rvmpq_isa.h").read_text() == isa.to_c_header()
    assert "MPQ_DOT_W8_SS" in (inc / "rvmpq_isa_asm.h").read_text()


def test_memory_size_names_the_model_and_the_map():
    """A SoC with another DMEM/IMEM size is a model of its own (its name and memory map); the
    default 64 KiB sizes keep the names of the cached default models; bad sizes are refused."""
    from rvmpq.sw.runtime.elf import DEFAULT_MAP
    from rvmpq.sw.runtime.runner import model_tag

    assert model_tag("mpq", "words") == model_tag("mpq", "words", 64, 64) == "mpq-words"
    assert model_tag("baseline") == "baseline"
    assert model_tag("mpq", "words", dmem_kib=128) == "mpq-words-d128k"
    assert model_tag("baseline", dmem_kib=256, imem_kib=32) == "baseline-i32k-d256k"
    if tp.have_soc():
        assert cc.memory_map("mpq") == DEFAULT_MAP
        mm = cc.memory_map("baseline", dmem_kib=128)
        assert (mm.dmem_base, mm.dmem_size, mm.imem_size) == (0x1000_0000, 128 << 10, 64 << 10)
        assert "LENGTH = 0x20000" in cc.linker_script(mm)
        assert "__stack_top = 0x10020000" in cc.linker_script(mm)
        for bad in (0, 96, -64, 64.0):
            with pytest.raises(ValueError, match="power of two"):
                cc.memory_map("mpq", dmem_kib=bad)


def test_run_corrupt_elf(tmp_path):
    bad = tmp_path / "bad.elf"
    bad.write_bytes(b"\x7fELF\x01\x01\x01" + bytes(5))
    r = rvmpq("run", bad)
    assert r.returncode == 2 and "bad.elf" in r.stderr and "truncated" in r.stderr
    r = rvmpq("run", tmp_path / "nothere.elf")
    assert r.returncode == 2 and "no such ELF file" in r.stderr


@needs_soc
def test_run_exit_status_console_and_signature(exit_prog, tmp_path):
    sig = tmp_path / "sig.txt"
    r = rvmpq("run", exit_prog, "--signature", sig, "--trace", tmp_path / "t.txt")
    assert r.returncode == 5, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "hi"
    assert lines[-1].startswith("exit=5 cycles=") and " instret=" in lines[-1]
    assert sig.read_text() == "12345678\nabcdef01\nffffffff\n"
    trace = (tmp_path / "t.txt").read_text().splitlines()
    instret = int(lines[-1].split("instret=")[1])
    assert len(trace) == instret and trace[-1].split()[1] == "00000073"


@needs_soc
def test_run_max_cycles_overrun(tmp_path):
    src = tmp_path / "loop.S"
    src.write_text(".text\n.globl main\nmain: j main\n")
    elf = cc.compile_program([src], tmp_path / "loop.elf")
    r = rvmpq("run", elf, "--max-cycles", "5000")
    assert r.returncode == 124
    assert "--max-cycles 5000" in r.stderr
    assert "cycles=5000" in r.stdout


@pytest.mark.slow
@needs_soc
def test_run_api_waves(exit_prog, tmp_path):
    """A VCD waveform (the FST writer of the wheel needs lz4.h); the extra model build takes a
    few minutes, so this runs only with RVMPQ_TEST_WAVES=1."""
    import os
    from rvmpq.sw.runtime.runner import run_elf
    if not os.environ.get("RVMPQ_TEST_WAVES"):
        pytest.skip("the waves build takes minutes: set RVMPQ_TEST_WAVES=1")
    res = run_elf(exit_prog, waves=tmp_path / "w.vcd")
    assert res.exit_code == 5
    text = (tmp_path / "w.vcd").read_text()
    assert "$enddefinitions" in text and "retire_pc" in text
