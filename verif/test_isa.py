"""Tests of the ISA table (rvmpq.hw.isa) and its generators."""

import json
import random
import subprocess
import sys

import pytest

from rvmpq.hw import isa
from rvmpq.hw.modes import ElemWidth


def test_table_shape():
    """16 dot rows (4 widths x 4 signedness) + rq + rqp, 8 ldot rows (4 widths x activation
    signedness) + accld/rqpa/accrd; unique names and encodings."""
    dots = [d for d in isa.CUSTOM_INSTRUCTIONS if d.kind == "dot"]
    assert len(dots) == 16
    assert {(d.width, d.a_signed, d.b_signed) for d in dots} == {
        (w, a, b) for w in (2, 4, 8, 16) for a in (False, True) for b in (False, True)}
    assert {d.kind for d in isa.CUSTOM_INSTRUCTIONS} == {"dot", "rq", "rqp", "ldot", "accld",
                                                         "rqpa", "accrd"}
    assert len({d.name for d in isa.CUSTOM_INSTRUCTIONS}) == len(isa.CUSTOM_INSTRUCTIONS)
    assert len({d.match for d in isa.CUSTOM_INSTRUCTIONS}) == len(isa.CUSTOM_INSTRUCTIONS)
    ldots = [d for d in isa.CUSTOM_INSTRUCTIONS if d.kind == "ldot"]
    assert {(d.width, d.a_signed) for d in ldots} == {
        (w, a) for w in (2, 4, 8, 16) for a in (False, True)}
    for d in ldots:  # funct3 = width code | activation signed << 2; weights always signed
        assert d.opcode == 0x5B and d.b_signed and d.fmt == "L"
        assert d.funct3 == ElemWidth[f"W{d.width}"].value | (int(d.a_signed) << 2)
    for name, f3, fmt in (("mpq.accld", 0, "LA"), ("mpq.rqpa", 1, "K"), ("mpq.accrd", 2, "KR")):
        d = isa.BY_NAME[name]
        assert (d.opcode, d.funct3, d.fmt) == (0x7B, f3, fmt)
    for d in dots:  # the documented field assignment
        assert d.funct3 == ElemWidth[f"W{d.width}"].value
        assert d.funct7 == int(d.a_signed) | (int(d.b_signed) << 1)
        assert d.name == f"mpq.dot.w{d.width}.{'s' if d.a_signed else 'u'}" \
                         f"{'s' if d.b_signed else 'u'}"


def test_known_encoding():
    """One hand-computed word: mpq.dot.w8.us a0, a1, a2 = funct7 0b10, funct3 2, custom-0."""
    word = (0b0000010 << 25) | (12 << 20) | (11 << 15) | (2 << 12) | (10 << 7) | 0x0B
    assert isa.encode("mpq.dot.w8.us", 10, 11, 12) == word
    assert isa.encode("mpq.rq", 1, 2, 3) == (3 << 20) | (2 << 15) | (1 << 7) | 0x2B
    # mpq.ldot.w4.ss k=5, act a1, off 9, base a0: funct7 = 9, rs2 = 11, rs1 = 10, funct3 = 0b101
    word = (9 << 25) | (11 << 20) | (10 << 15) | (0b101 << 12) | (5 << 7) | 0x5B
    assert isa.encode("mpq.ldot.w4.ss", 5, 10, 11, off=9) == word
    assert isa.decode_off(word) == 9
    # mpq.rqpa a0, a1, k=15: rs2 field = 15; mpq.accrd a0, k=3
    assert isa.encode("mpq.rqpa", 10, 11, 15) == (15 << 20) | (11 << 15) | (1 << 12) | (10 << 7) | 0x7B
    assert isa.encode("mpq.accrd", 10, 0, 3) == (3 << 20) | (2 << 12) | (10 << 7) | 0x7B


def _field_range(d, field):
    """Values a field of row ``d`` may take (register 0..31, accumulator 0..15, or fixed 0)."""
    fixed = {"rd": 0x1F << 7, "rs1": 0x1F << 15, "rs2": 0x1F << 20}[field]
    if d.mask & fixed == fixed:
        return [0]
    if d.mask & fixed:
        return list(range(isa.NUM_ACC))
    return list(range(32))


def test_round_trip_every_row():
    """encode/decode round trip for every row and every value of each field (and offset)."""
    for d in isa.CUSTOM_INSTRUCTIONS:
        rds, rs1s, rs2s = (_field_range(d, f) for f in ("rd", "rs1", "rs2"))
        offs = range(128) if d.fmt in ("L", "LA") else []
        for rd, rs1, rs2 in ([(r, rs1s[-1], rs2s[0]) for r in rds] +
                             [(rds[-1], r, rs2s[0]) for r in rs1s] +
                             [(rds[0], rs1s[-1], r) for r in rs2s]):
            got = isa.decode(isa.encode(d.name, rd, rs1, rs2))
            assert got == (d, rd, rs1, rs2), (d.name, rd, rs1, rs2)
        for off in offs:
            w = isa.encode(d.name, rds[-1], rs1s[-1], rs2s[-1], off=off)
            assert isa.decode(w)[0] is d and isa.decode_off(w) == off


def test_every_undefined_custom_encoding_is_none():
    """Every word of the custom opcodes whose fixed bits match no row decodes to None, and one
    that matches a row decodes to it: funct3 x funct7 exhaustively, register fields at values
    that are legal or not for the accumulator fields (k >= 16) and the fields fixed to 0."""
    n_defined = 0
    for opcode in isa.CUSTOM_OPCODES:
        for f3 in range(8):
            for f7 in range(128):
                for rd, rs1, rs2 in ((5, 6, 7), (0, 0, 0), (17, 6, 7), (5, 6, 19), (5, 0, 0),
                                     (31, 31, 31)):
                    word = isa.r_type(opcode, f3, f7, rd, rs1, rs2)
                    rows = [d for d in isa.CUSTOM_INSTRUCTIONS if word & d.mask == d.match]
                    assert len(rows) <= 1, (hex(word), [d.name for d in rows])
                    got = isa.decode(word)
                    if rows:
                        n_defined += 1
                        assert got is not None and got[0] is rows[0], hex(word)
                    else:
                        assert got is None, hex(word)
    assert n_defined > 0


def test_other_opcodes_decode_none(seed):
    """Random words outside the custom opcodes never decode (seeded)."""
    rng = random.Random(seed)
    for _ in range(5000):
        w = rng.getrandbits(32)
        if (w & 0x7F) not in isa.CUSTOM_OPCODES:
            assert isa.decode(w) is None


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown custom instruction.*mpq.dot.w8.ss"):
        isa.encode("mpq.dot.w3.ss", 1, 2, 3)
    with pytest.raises(ValueError, match="rd = 32"):
        isa.encode("mpq.rq", 32, 0, 0)
    with pytest.raises(ValueError, match="accumulator k must be 0..15"):
        isa.encode("mpq.ldot.w8.us", 16, 1, 2)
    with pytest.raises(ValueError, match="accumulator k must be 0..15"):
        isa.encode("mpq.rqpa", 1, 2, 16)
    with pytest.raises(ValueError, match="word offset 0..127"):
        isa.encode("mpq.ldot.w8.us", 1, 1, 2, off=128)
    with pytest.raises(ValueError, match="no offset"):
        isa.encode("mpq.dot.w8.us", 1, 1, 2, off=1)
    with pytest.raises(ValueError, match="shift"):
        isa.rq_config_pack(64)
    with pytest.raises(ValueError, match="zp"):
        isa.rq_config_pack(3, zp=40000)
    with pytest.raises(ValueError, match=r"\(2, 4, 8, 16\)"):
        isa.rq_config_pack(3, bits=3)


def test_rq_config_pack_unpack(seed):
    rng = random.Random(seed)
    for _ in range(500):
        cfg = isa.RqConfig(rng.randrange(64), rng.randrange(-32768, 32768),
                           rng.choice([2, 4, 8, 16]), rng.random() < 0.5)
        word = isa.rq_config_pack(*cfg)
        assert isa.rq_config_unpack(word) == cfg
        # field positions as documented
        assert word & 63 == cfg.shift
        assert (word >> 6) & 1 == cfg.out_signed
        assert (word >> 8) & 3 == {2: 0, 4: 1, 8: 2, 16: 3}[cfg.bits]
        assert word >> 16 == cfg.zp & 0xFFFF
        assert isa.rq_config_mask(word) == word
    assert isa.rq_config_mask(0xFFFF_FFFF) == 0xFFFF_037F
    # the Amaranth layout agrees with the packer
    v = isa.RqConfigLayout.const({"shift": 5, "out_signed": 1, "bits": ElemWidth.W4,
                                  "zp": -3}).as_value().value
    assert v == isa.rq_config_pack(5, -3, 4, True)


def test_json_and_markdown():
    doc = json.loads(isa.to_json())
    assert [i["name"] for i in doc["instructions"]] == [d.name for d in isa.CUSTOM_INSTRUCTIONS]
    assert doc["csrs"][0]["address"] == isa.CSR_MPQ_RQ
    for i in doc["instructions"]:
        assert i["match"] == isa.BY_NAME[i["name"]].match
    md = isa.to_markdown()
    for d in isa.CUSTOM_INSTRUCTIONS:
        assert f"`{d.name} {d.operands}`" in md
        assert doc["instructions"][isa.CUSTOM_INSTRUCTIONS.index(d)]["mask"] == d.mask


def test_cli(tmp_path):
    out = tmp_path / "mpq.json"
    r = subprocess.run([sys.executable, "-m", "rvmpq", "isa", "--format", "json", "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["extension"] == "mpq"
    r = subprocess.run([sys.executable, "-m", "rvmpq", "isa", "--format", "c"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "mpq_dot_w4_us" in r.stdout


def test_c_header_compiles_and_encodes(tmp_path):
    """The generated header compiles with zig cc for RV32IM and emits the table's encodings."""
    (tmp_path / "rvmpq_isa.h").write_text(isa.to_c_header())
    calls = []
    for d in isa.CUSTOM_INSTRUCTIONS:
        if d.kind == "dot":
            calls.append(f"r ^= {d.c_name}(a, b, c);")
        elif d.kind == "rq":
            calls.append(f"r ^= (uint32_t){d.c_name}((int32_t)a, (int32_t)b);")
        elif d.kind == "rqp":
            calls.append(f"r ^= {d.c_name}(c, (int32_t)a, (int32_t)b);")
        elif d.kind == "ldot":
            calls.append(f"{d.c_name}(3, a, p, 17);")
        elif d.kind == "accld":
            calls.append(f"{d.c_name}(3, p, 2);")
        elif d.kind == "rqpa":
            calls.append(f"r ^= {d.c_name}(c, a, 3);")
        else:
            calls.append(f"r ^= {d.c_name}(3);")
    (tmp_path / "t.c").write_text(
        '#include "rvmpq_isa.h"\n'
        "uint32_t f(uint32_t a, uint32_t b, uint32_t c, const uint32_t *p) {\n"
        "    uint32_t r = 0;\n"
        "    mpq_rq_config_write(MPQ_RQ_CONFIG(7, -5, 4, 1));\n"
        + "\n".join("    " + c for c in calls) +
        "\n    return r + mpq_rq_config_read();\n}\n")
    r = subprocess.run([sys.executable, "-m", "ziglang", "cc", "-target",
                        "riscv32-freestanding-none", "-mcpu=generic_rv32+m", "-O2", "-c",
                        "t.c", "-o", "t.o"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # find every custom instruction in .text (decode each aligned word of the object file)
    blob = (tmp_path / "t.o").read_bytes()
    found = set()
    for off in range(0, len(blob) - 3, 2):
        w = int.from_bytes(blob[off:off + 4], "little")
        got = isa.decode(w)
        if got is not None:
            found.add(got[0].name)
    assert found == {d.name for d in isa.CUSTOM_INSTRUCTIONS}
