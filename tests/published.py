"""Published VMX capability MSR sets of real CPUs, for tests, each with its address.

Values are copied from the public files named in "source" (the VmxCaps table of physical
machines, and VirtualBox host logs, whose "HM: MSR_IA32_VMX_*" lines are the host's own
registers as VirtualBox's ring-0 code read them).  host() lays one out on a synthetic
host (tests/hostgen.py), every CPU given the same values.
"""

from tests import hostgen
from vmxprobe.host import fixture
from vmxprobe.host.sources import MsrReading

PUBLISHED = {
    "penryn-e7500": {
        "source": "https://github.com/honorarybot/VmxCaps/blob/9690362ce8d1bfa1a4b16f3d815180f9936a4805/vmx.html",
        "msrs": {
            0x480: 0x005A08000000000D,
            0x481: 0x0000003F00000016,
            0x482: 0xF7F9FFFE0401E172,
            0x483: 0x0003FFFF00036DFF,
            0x484: 0x00003FFF000011FF,
            0x485: 0x00000000000403C0,
            0x486: 0x0000000080000021,
            0x487: 0x00000000FFFFFFFF,
            0x488: 0x0000000000002000,
            0x489: 0x00000000000427FF,
            0x48A: 0x000000000000002C,
            0x48B: 0x0000004100000000,
        },
    },
    "skylake-u": {
        "source": "https://github.com/ShaGichara/CNS-Project-1-2024/blob/09ae4cd5d0f7ebf00a10854cc16984fcc698dfbd/VBox.log",
        "msrs": {
            0x3A: 0x5,
            0x480: 0x00DA040000000004,
            0x481: 0x0000007F00000016,
            0x482: 0xFFF9FFFE0401E172,
            0x483: 0x01FFFFFF00036DFF,
            0x484: 0x0003FFFF000011FF,
            0x485: 0x000000007004C1E7,
            0x486: 0x0000000080000021,
            0x487: 0x00000000FFFFFFFF,
            0x488: 0x0000000000002000,
            0x489: 0x00000000003767FF,
            0x48A: 0x000000000000002E,
            0x48B: 0x001FFCFF00000000,
            0x48C: 0x00000F0106334141,
            0x48D: 0x0000007F00000016,
            0x48E: 0xFFF9FFFE04006172,
            0x48F: 0x01FFFFFF00036DFB,
            0x490: 0x0003FFFF000011FB,
            0x491: 0x0000000000000001,
        },
    },
    "tiger-lake-h": {
        "source": "https://github.com/maxengel/rocknix/blob/dbacdefbb2e758a135403930a121f6cf46581684/VBox.log",
        "msrs": {
            0x3A: 0xFF07,
            0x480: 0x01DA050000000013,
            0x481: 0x000000FF00000016,
            0x482: 0xFFFBFFFE0401E172,
            0x483: 0x137FFFFF00036DFF,
            0x484: 0x0016FFFF000011FF,
            0x485: 0x000000007004C1E7,
            0x486: 0x0000000080000021,
            0x487: 0x00000000FFFFFFFF,
            0x488: 0x0000000000002000,
            0x489: 0x0000000000FF6FFF,
            0x48A: 0x000000000000002E,
            0x48B: 0x035F7FFF00000000,
            0x48C: 0x00000F0106F34141,
            0x48D: 0x000000FF00000016,
            0x48E: 0xFFFBFFFE04006172,
            0x48F: 0x137FFFFF00036DFB,
            0x490: 0x0016FFFF000011FB,
            0x491: 0x0000000000000001,
            0x492: 0x0000000000000001,
        },
    },
    # The exit controls allow secondary exit controls (bit 63), but VirtualBox's log does
    # not print IA32_VMX_EXIT_CTLS2: 0x493 stays unrecorded.
    "raptor-lake-s": {
        "source": "https://github.com/mrexodia/dos-agent-environment/blob/bc810a1b291be5205bbeadf1d29e117bd2ababb9/VBox.log",
        "msrs": {
            0x3A: 0x5,
            0x480: 0x03DA050000000013,
            0x481: 0x000000FF00000016,
            0x482: 0xFFFBFFFE0401E172,
            0x483: 0xF77FFFFF00036DFF,
            0x484: 0x0076FFFF000011FF,
            0x485: 0x000000007004C1E7,
            0x486: 0x0000000080000021,
            0x487: 0x00000000FFFFFFFF,
            0x488: 0x0000000000002000,
            0x489: 0x0000000001FF6FFF,
            0x48A: 0x000000000000002E,
            0x48B: 0x0F5D7FFF00000000,
            0x48C: 0x00010F0106F34141,
            0x48D: 0x000000FF00000016,
            0x48E: 0xFFFBFFFE04006172,
            0x48F: 0xF77FFFFF00036DFB,
            0x490: 0x0076FFFF000011FB,
            0x491: 0x0000000000000001,
            0x492: 0x000000000000000F,
        },
    },
}


def host(name: str, n: int = 4, **kw) -> fixture.Fixture:
    """A synthetic n-CPU host whose every CPU holds the published registers `name`."""
    pub = PUBLISHED[name]["msrs"]
    fx = fixture.parse(hostgen.synthetic(n, 1, vmx_basic=pub[0x480], feat_ctl=pub.get(0x3A, 0x5), **kw))
    for index, value in pub.items():
        fx.msr[index] = {cpu: MsrReading(value=value) for cpu in range(n)}
    return fx


def setreg(fx, index, cpu, value=None, errno=None):
    fx.msr.setdefault(index, {})[cpu] = MsrReading(value=value, errno=errno)
