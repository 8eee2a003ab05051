"""vmxprobe.render.nfd: node-feature-discovery features.d labels, read the way
nfd-worker's local source reads them."""

from datetime import datetime, timedelta, timezone

import pytest

from tests.render.exports import FIXTURES, parse_features_d, report, undetermined, with_host
from vmxprobe.render import nfd


@pytest.mark.parametrize("name", FIXTURES)
def test_nfd_labels_are_valid_and_namespaced_for_every_fixture(name):
    r = report(name)
    text = nfd.render_nfd(r, environ={})
    assert len(text.encode()) <= nfd.NFD_MAX_FILE_BYTES
    scanned = datetime.strptime(r.generated_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    labels, expiry = parse_features_d(text, scanned)
    assert expiry == scanned + timedelta(hours=24)
    assert labels == nfd.nfd_labels(r)
    for label, value in labels.items():
        assert label.startswith("vmxprobe.io/")
        assert "kubernetes.io" not in label
        assert nfd.valid_label(label, value), (label, value)
    assert labels["vmxprobe.io/ready"] == ("true" if r.verdict.ready else "false")
    assert labels["vmxprobe.io/source"] == "fixture"


def test_nfd_labels_expire_and_expiry_is_configurable():
    r = report()
    scanned = datetime.strptime(r.generated_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    text = nfd.render_nfd(r, environ={"VMXPROBE_NFD_EXPIRY": "3h"})
    labels, expiry = parse_features_d(text, scanned)
    assert expiry == scanned + timedelta(hours=3) and labels
    later, _ = parse_features_d(text, scanned + timedelta(hours=3, seconds=1))
    assert later == {}
    with pytest.raises(nfd.ExportError, match="VMXPROBE_NFD_EXPIRY"):
        nfd.render_nfd(r, environ={"VMXPROBE_NFD_EXPIRY": "3"})


def test_nfd_labels_carry_the_amd_verdict():
    a = nfd.nfd_labels(report("amd-svm-locked-off"))
    assert a["vmxprobe.io/ready"] == "false" and a["vmxprobe.io/virt"] == "svm"
    assert (a["vmxprobe.io/x86-svm-init"], a["vmxprobe.io/kvm-amd"]) == ("EOPNOTSUPP", "EOPNOTSUPP")
    assert a["vmxprobe.io/vm-cr"] == "disabled_locked" and a["vmxprobe.io/root-vmcs-pages"] == "0"
    ok = nfd.nfd_labels(report("amd-host"))
    assert ok["vmxprobe.io/ready"] == "true" and ok["vmxprobe.io/kvm-amd"] == "ok"
    intel = nfd.nfd_labels(report("intel-2s-ready"))
    assert intel["vmxprobe.io/virt"] == "vmx" and intel["vmxprobe.io/kvm-amd"] == "EOPNOTSUPP"
    assert "vmxprobe.io/vm-cr" not in intel


def test_nfd_values_from_undetermined_and_nested_scans():
    u = nfd.nfd_labels(undetermined())
    assert u["vmxprobe.io/ready"] == "false" and u["vmxprobe.io/determined"] == "false"
    assert u["vmxprobe.io/x86-vmx-init"] == "unknown"
    assert "vmxprobe.io/vmcs-revision" not in u
    n = nfd.nfd_labels(report("kvm-nested-guest"))
    assert n["vmxprobe.io/nested-vmx"] == "true"
    assert n["vmxprobe.io/vmcs-revision"] == "0x11e57ed0"
    assert n["vmxprobe.io/hypervisor"] == "KVM"


@pytest.mark.parametrize(
    "raw,want",
    [
        ("Microsoft Hv", "Microsoft-Hv"),
        ("KVM nested VMX", "KVM-nested-VMX"),
        ("  --x--  ", "x"),
        ("(composed)", "composed"),
        ("...", ""),
        ("é", ""),
        ("a" * 100, "a" * 63),
        ("a" * 62 + "-b", "a" * 62),
        (True, "true"),
        (4096, "4096"),
    ],
)
def test_label_value_sanitising(raw, want):
    got = nfd.label_value(raw)
    assert got == want
    assert nfd.valid_label("vmxprobe.io/x", got)


def test_hostile_values_never_make_an_invalid_label(monkeypatch):
    r = with_host(report(), hypervisor="\x00weird hv/\u2603 " + "z" * 80 + "!")
    monkeypatch.setattr(nfd, "__version__", "1.0.0+local/dirty")
    for label, value in nfd.nfd_labels(r).items():
        assert nfd.valid_label(label, value), (label, value)
