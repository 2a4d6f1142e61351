"""The Python ISS against Unicorn (an independent RV32IM implementation) on random programs,
plus directed checks of the ISS's trap behaviour on raw instruction words."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "programs"))
import rvmpq_testprogs as tp  # noqa: E402

from rvmpq.sw import fuzz  # noqa: E402
from rvmpq.sw.iss import Iss, format_trace_line, parse_trace_line, run_words  # noqa: E402


@pytest.mark.parametrize("config", ["baseline", "mpq"])
def test_iss_matches_unicorn_on_random_programs(config):
    seeds = tp.pick_seeds(list(range(1, 41)), 10, f"ISS vs Unicorn ({config})")
    fails = []
    for s in seeds:
        problems = fuzz.check_program(fuzz.generate(s, config, 200), rtl=False)
        if problems:
            fails.append(f"seed {s}: {problems[:4]}; replay: "
                         f"{fuzz.replay_command(s, config, 200, rtl=False)}")
    assert not fails, "\n".join(fails)


def test_unicorn_comparison_detects_a_wrong_iss(monkeypatch):
    """The comparison is not vacuous: an ISS with a broken DIV is caught."""
    from rvmpq.sw import iss as iss_mod
    orig = iss_mod.Iss._muldiv
    monkeypatch.setattr(iss_mod.Iss, "_muldiv",
                        staticmethod(lambda f3, a, b: orig(f3, a, b) ^ (f3 == 4)))
    bad = [s for s in range(1, 30) if fuzz.check_program(fuzz.generate(s, "baseline"), rtl=False)]
    assert bad, "a wrong DIV went unnoticed in 29 programs"


def _trap(words, config="mpq"):
    iss, _ = run_words(words + [0x0000006F], config=config, max_steps=len(words))
    return iss


def test_iss_traps():
    addi_a7_1 = 0x00100893
    # ecall with a7 != 93: mcause 11, mepc = its pc
    iss = _trap([addi_a7_1, 0x00000073])
    assert iss.csr[0x342] == 11 and iss.csr[0x341] == 4 and iss.pc == 0
    # illegal (all zeros): mcause 2, mtval = the word
    iss = _trap([0x00000000])
    assert iss.csr[0x342] == 2
    # lw from 0x30000000: load access fault, mtval = address
    iss = _trap(fuzz.li(1, 0x30000000) + [0x0000A103])
    assert iss.csr[0x342] == 5 and iss.csr[0x343] == 0x30000000
    # misaligned sw in DMEM
    iss = _trap(fuzz.li(1, 0x10000002) + [0x0020A023])
    assert iss.csr[0x342] == 6 and iss.csr[0x343] == 0x10000002
    # custom instruction on baseline: illegal
    from rvmpq.hw import isa
    iss = _trap([isa.encode("mpq.dot.w8.ss", 1, 2, 3)], config="baseline")
    assert iss.csr[0x342] == 2


def test_iss_exit_and_console():
    words = fuzz.li(5, 0x20000000) + [0x04100313, 0x00628023]  # li t1,'A'; sb t1,0(t0)
    words += fuzz.li(17, 93) + fuzz.li(10, 7) + [0x00000073]
    iss, res = run_words(words, config="baseline")
    assert res.halted and res.exit_code == 7 and res.console == b"A"
    assert res.trace[-1].trap and res.instret == len(words)


def test_trace_line_roundtrip():
    iss, res = run_words(fuzz.li(3, 0xDEADBEEF) + [0x00000073], config="baseline")
    for r in res.trace:
        assert parse_trace_line(format_trace_line(r)) == r


def test_bad_config_names_allowed_values():
    with pytest.raises(ValueError, match="mpq, baseline"):
        Iss("fast")


def test_iss_accumulator_instructions(seed):
    """mpq.ldot/accld/rqpa/accrd on the ISS: random words against the golden model written
    out here (dot of the activation register with the memory word, accumulate, requantize, the
    re-arm with the bias after a read), and a faulting ldot leaves the accumulator alone
    (seeded)."""
    import random

    import numpy as np

    from rvmpq.hw import isa
    from rvmpq.sw import golden
    rng = random.Random(seed)
    dmem = 0x1000_0000
    for _ in range(20):
        width = rng.choice((2, 4, 8, 16))
        a_signed = rng.random() < 0.5
        name = f"mpq.ldot.w{width}.{'s' if a_signed else 'u'}s"
        bias, act = rng.getrandbits(32), rng.getrandbits(32)
        wts = [rng.getrandbits(32) for _ in range(3)]
        k, off0 = rng.randrange(16), rng.randrange(120)
        iss = Iss("mpq")
        iss.write_bytes(dmem, b"".join(v.to_bytes(4, "little") for v in [bias] + [0] * off0 + wts))
        iss.x[10], iss.x[11] = dmem, act
        words = [isa.encode("mpq.accld", k, 10, 0, off=0)]
        words += [isa.encode(name, k, 10, 11, off=off0 + 1 + i) for i in range(3)]
        words += [isa.encode("mpq.accrd", 12, 0, k)]
        iss.load_words(words)
        for _ in words:
            iss.step()
        want = bias
        for w in wts:
            want = int(golden.dot(np.uint32(act), np.uint32(w), width, a_signed, True,
                                  acc=np.uint32(want)))
        assert iss.x[12] == want, (name, k)
        assert iss.custom.acc[k] == bias, "the read did not re-arm ACC[k] with its bias"
        iss.custom.acc[k] = want
        # rqpa: requantize ACC[k] with mult = x13 into x14
        cfg = isa.rq_config_pack(rng.randrange(40), rng.randrange(-8, 8), width, a_signed)
        iss.csr[isa.CSR_MPQ_RQ] = cfg
        iss.x[13], iss.x[14] = rng.getrandbits(31), rng.getrandbits(32)
        old14 = iss.x[14]
        iss.load_words([isa.encode("mpq.rqpa", 14, 13, k)])
        iss.step()
        c = isa.rq_config_unpack(cfg)
        acc_s = want - (1 << 32) if want >> 31 else want
        assert iss.x[14] == int(golden.rqpack(np.uint32(old14), np.int64(acc_s),
                                              np.int64(iss.x[13]), c.shift, c.zp, c.bits,
                                              c.out_signed))
    # a misaligned ldot traps (mcause 4, mtval the address) and leaves ACC[k]
    iss = Iss("mpq")
    iss.custom.acc[3] = 1234
    iss.x[10] = dmem + 2
    iss.load_words([isa.encode("mpq.ldot.w8.us", 3, 10, 11, off=1), 0x0000006F])
    iss.step()
    assert iss.csr[0x342] == 4 and iss.csr[0x343] == dmem + 6 and iss.custom.acc[3] == 1234
    # on baseline every accumulator row is illegal
    for name, fields in (("mpq.ldot.w8.us", (1, 2, 3)), ("mpq.accld", (1, 2, 0)),
                         ("mpq.rqpa", (1, 2, 3)), ("mpq.accrd", (1, 0, 3))):
        iss = _trap([isa.encode(name, *fields)], config="baseline")
        assert iss.csr[0x342] == 2, name
