"""A minimal ELF32 little-endian RISC-V loader (no dependency beyond the standard library).

It reads what running a bare-metal program needs: the loadable segments as
``(address, bytes)`` pairs, the entry point and the symbol table (``begin_signature`` /
``end_signature``, ``tohost`` and the like). Everything it does not understand is reported with
a message saying what was wrong, e.g. a 64-bit or non-RISC-V file, a truncated header, or a
segment that falls outside IMEM/DMEM of the memory map.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ElfError",
    "Segment",
    "ElfImage",
    "MemoryMap",
    "DEFAULT_MAP",
    "load_elf",
    "parse_elf",
    "write_image",
]

EM_RISCV = 243
PT_LOAD = 1
SHT_SYMTAB = 2


class ElfError(ValueError):
    """The file is not a loadable ELF32 RISC-V program for this core; the message says why."""


@dataclass(frozen=True)
class MemoryMap:
    """Where IMEM and DMEM live (contracts.md section 5).

    Parameters
    ----------
    imem_base, imem_size : int
        Instruction memory (fetch only; the host port can write it).
    dmem_base, dmem_size : int
        Data memory (loads and stores).
    mmio_base : int
        CONSOLE at ``+0``, EXIT at ``+4``.
    """

    imem_base: int = 0x0000_0000
    imem_size: int = 64 * 1024
    dmem_base: int = 0x1000_0000
    dmem_size: int = 64 * 1024
    mmio_base: int = 0x2000_0000

    def region(self, addr: int, size: int = 1) -> str | None:
        """``"imem"`` / ``"dmem"`` if ``[addr, addr+size)`` lies inside one of them, else None."""
        for name, base, length in (("imem", self.imem_base, self.imem_size),
                                   ("dmem", self.dmem_base, self.dmem_size)):
            if base <= addr and addr + size <= base + length:
                return name
        return None


#: The default SimSoC memory map (64 KiB IMEM at 0, 64 KiB DMEM at 0x1000_0000).
DEFAULT_MAP = MemoryMap()


@dataclass
class Segment:
    """One loadable segment: ``data`` (file bytes, zero-padded to ``memsz``) at ``addr``."""

    addr: int
    data: bytes
    flags: int = 0

    @property
    def executable(self) -> bool:
        """True for a segment with the PF_X flag."""
        return bool(self.flags & 1)


@dataclass
class ElfImage:
    """A parsed program.

    Attributes
    ----------
    entry : int
        Entry point (``_start``).
    segments : list of Segment
        Loadable segments, ``.bss`` included as zero bytes.
    symbols : dict of str to int
        Symbol name -> value (address), from ``.symtab``.
    path : str
        Where it was read from (for messages).
    """

    entry: int
    segments: list[Segment] = field(default_factory=list)
    symbols: dict[str, int] = field(default_factory=dict)
    path: str = "<bytes>"

    def signature_range(self) -> tuple[int, int] | None:
        """``(begin, end)`` of the signature region, or None when the symbols are absent."""
        b = self.symbols.get("begin_signature")
        e = self.symbols.get("end_signature")
        if b is None or e is None:
            return None
        if e < b:
            raise ElfError(f"{self.path}: end_signature (0x{e:08x}) is before begin_signature "
                           f"(0x{b:08x})")
        return b, e

    def words(self) -> dict[int, int]:
        """Memory image as ``{word-aligned address: 32-bit little-endian word}``."""
        out: dict[int, int] = {}
        for seg in self.segments:
            start = seg.addr & ~3
            buf = bytearray(seg.addr - start) + bytearray(seg.data)
            buf += bytes((-len(buf)) % 4)
            for i in range(0, len(buf), 4):
                a = start + i
                w = int.from_bytes(buf[i:i + 4], "little")
                if a in out:  # two segments sharing a word: merge byte-wise
                    old = out[a].to_bytes(4, "little")
                    lo = seg.addr - a if a < seg.addr else 0
                    hi = min(4, seg.addr + len(seg.data) - a)
                    merged = bytearray(old)
                    merged[lo:hi] = w.to_bytes(4, "little")[lo:hi]
                    w = int.from_bytes(merged, "little")
                out[a] = w
        return out


def parse_elf(blob: bytes, path: str = "<bytes>", memory_map: MemoryMap | None = DEFAULT_MAP
              ) -> ElfImage:
    """Parse an ELF32 RISC-V executable from bytes.

    Parameters
    ----------
    blob : bytes
        File contents.
    path : str
        Name used in error messages.
    memory_map : MemoryMap or None
        Check that every segment lies inside IMEM or DMEM; None skips the check.

    Returns
    -------
    ElfImage

    Raises
    ------
    ElfError
        For a non-ELF, 64-bit, big-endian, non-RISC-V, non-executable, truncated or corrupt
        file, or a segment outside the memory map.
    """
    if len(blob) >= 4 and blob[:4] == b"\x7fELF" and len(blob) < 52:
        raise ElfError(f"{path}: truncated ELF header ({len(blob)} bytes < 52)")
    if len(blob) < 16 or blob[:4] != b"\x7fELF":
        raise ElfError(f"{path}: not an ELF file (bad magic {blob[:4]!r}); expected a RISC-V "
                       "ELF32 executable, e.g. from `rvmpq cc`")
    if blob[4] == 2:
        raise ElfError(f"{path}: 64-bit ELF (ELFCLASS64); the core is RV32: compile with "
                       "-target riscv32-freestanding-none (`rvmpq cc` does)")
    if blob[4] != 1:
        raise ElfError(f"{path}: unknown ELF class {blob[4]} (expected 1 = ELFCLASS32)")
    if blob[5] != 1:
        raise ElfError(f"{path}: not little-endian (EI_DATA={blob[5]}); RISC-V is little-endian")
    if len(blob) < 52:
        raise ElfError(f"{path}: truncated ELF header ({len(blob)} bytes < 52)")
    (e_type, e_machine, _ver, e_entry, e_phoff, e_shoff, _flags, _ehsize, e_phentsize, e_phnum,
     e_shentsize, e_shnum, _shstrndx) = struct.unpack_from("<HHIIIIIHHHHHH", blob, 16)
    if e_machine != EM_RISCV:
        raise ElfError(f"{path}: ELF machine {e_machine} is not RISC-V (expected {EM_RISCV})")
    if e_type != 2:
        raise ElfError(f"{path}: ELF type {e_type} is not an executable (ET_EXEC = 2); "
                       "link it (an object file or shared library cannot run)")

    def check(off: int, size: int, what: str) -> None:
        if off < 0 or size < 0 or off + size > len(blob):
            raise ElfError(f"{path}: corrupt ELF: {what} at offset {off} size {size} runs past "
                           f"the end of the file ({len(blob)} bytes)")

    img = ElfImage(entry=e_entry, path=path)
    if e_phnum and e_phentsize < 32:
        raise ElfError(f"{path}: corrupt ELF: program header entry size {e_phentsize} < 32")
    check(e_phoff, e_phnum * e_phentsize, "program headers")
    for i in range(e_phnum):
        p_type, p_offset, p_vaddr, _paddr, p_filesz, p_memsz, p_flags, _align = \
            struct.unpack_from("<IIIIIIII", blob, e_phoff + i * e_phentsize)
        if p_type != PT_LOAD or p_memsz == 0:
            continue
        if p_filesz > p_memsz:
            raise ElfError(f"{path}: corrupt ELF: segment {i} filesz {p_filesz} > memsz {p_memsz}")
        check(p_offset, p_filesz, f"segment {i}")
        data = blob[p_offset:p_offset + p_filesz] + bytes(p_memsz - p_filesz)
        if memory_map is not None and memory_map.region(p_vaddr, p_memsz) is None:
            m = memory_map
            raise ElfError(
                f"{path}: segment {i} [0x{p_vaddr:08x}, 0x{p_vaddr + p_memsz:08x}) lies outside "
                f"IMEM [0x{m.imem_base:08x}, 0x{m.imem_base + m.imem_size:08x}) and DMEM "
                f"[0x{m.dmem_base:08x}, 0x{m.dmem_base + m.dmem_size:08x}); "
                "link with the `rvmpq cc` linker script or shrink the program")
        img.segments.append(Segment(p_vaddr, data, p_flags))
    if not img.segments:
        raise ElfError(f"{path}: no loadable segment")

    # symbols
    if e_shnum:
        if e_shentsize < 40:
            raise ElfError(f"{path}: corrupt ELF: section header entry size {e_shentsize} < 40")
        check(e_shoff, e_shnum * e_shentsize, "section headers")
        shdrs = [struct.unpack_from("<IIIIIIIIII", blob, e_shoff + i * e_shentsize)
                 for i in range(e_shnum)]
        for sh in shdrs:
            if sh[1] != SHT_SYMTAB:
                continue
            off, size, link, entsize = sh[4], sh[5], sh[6], sh[9] or 16
            check(off, size, "symbol table")
            if link >= e_shnum:
                raise ElfError(f"{path}: corrupt ELF: symbol table string section {link}")
            stroff, strsize = shdrs[link][4], shdrs[link][5]
            check(stroff, strsize, "string table")
            strtab = blob[stroff:stroff + strsize]
            for j in range(size // entsize):
                st_name, st_value, _sz, _info, _other, _shndx = struct.unpack_from(
                    "<IIIBBH", blob, off + j * entsize)
                if st_name == 0 or st_name >= len(strtab):
                    continue
                end = strtab.find(b"\0", st_name)
                name = strtab[st_name:end if end >= 0 else len(strtab)].decode("latin-1")
                img.symbols.setdefault(name, st_value)
    img.signature_range()  # validate early
    return img


def load_elf(path: str | Path, memory_map: MemoryMap | None = DEFAULT_MAP) -> ElfImage:
    """Read and parse an ELF file; see :func:`parse_elf`.

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ElfError
        When it is not a loadable RISC-V ELF32 program.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such ELF file")
    return parse_elf(p.read_bytes(), str(p), memory_map)


def write_image(img: ElfImage, out: str | Path) -> Path:
    """Write the program image in the harness format: one ``ADDR WORD`` hex pair per line.

    Parameters
    ----------
    img : ElfImage
    out : path
        Destination text file.
    """
    out = Path(out)
    lines = [f"{a:08x} {w:08x}" for a, w in sorted(img.words().items())]
    out.write_text("\n".join(lines) + "\n")
    return out
