"""The kernel judges vmxprobe's AMD verdict: QEMU's TCG CPU is AuthenticAMD with SVM, and
in that guest `modprobe kvm_amd` gives the kernel's own answer (svm_init() and
kvm_x86_vendor_init() in arch/x86/kvm/svm/svm.c and x86.c, Debian's 6.1). vmxprobe's
verdict, read before the module loads, must be that answer: ready (exit 0) exactly when
kvm_amd loaded and /dev/kvm appeared, and `verdict.kvm_amd` the errno otherwise."""

from __future__ import annotations

import errno
import json
import os

import jsonschema
import pytest
from harness import REPO_ROOT

pytestmark = pytest.mark.vm

with open(os.path.join(REPO_ROOT, "vmxprobe", "schema", "report-v1.json")) as _f:
    SCHEMA = json.load(_f)

# modprobe prints the strerror() of what init_module(2) returned.
BY_MESSAGE = {os.strerror(n): name for n, name in errno.errorcode.items()}


def kernels_answer(vm) -> tuple[str, bool]:
    lines = dict(line.split(" ", 1) for line in vm.sections["kvm_amd"].splitlines())
    dev_kvm = lines["dev_kvm"] == "yes"
    if lines["rc"] == "0":
        return "ok", dev_kvm
    err = (vm.outdir / "kvm_amd.err").read_text()
    names = [name for message, name in BY_MESSAGE.items() if message in err]
    assert len(names) == 1, err
    return names[0], dev_kvm


def test_the_guest_cpu_is_amd_with_svm(amd_vm):
    vendor, flags = amd_vm.sections["cpuinfo"].splitlines()
    assert vendor.split(":")[1].strip() == "AuthenticAMD"
    assert "svm" in flags.split() and "vmx" not in flags.split()


def test_vmxprobe_says_what_kvm_amd_did(amd_vm):
    vm = amd_vm
    report = json.loads((vm.outdir / "amd-json.out").read_text())
    jsonschema.validate(report, SCHEMA)
    kvm_amd, dev_kvm = kernels_answer(vm)
    verdict = report["verdict"]
    assert verdict["virt"] == "svm" and verdict["determined"] is True
    assert verdict["kvm_amd"] == kvm_amd, (verdict["reasons"], vm.sections["kvm_amd_log"])
    assert verdict["ready"] is (kvm_amd == "ok") is dev_kvm
    assert vm.rc("amd-json") == (0 if kvm_amd == "ok" else 1), vm.err("amd-json")
    assert vm.err("amd-json") == ""


def test_the_root_vmcs_plan_does_not_apply_on_amd(amd_vm):
    report = json.loads((amd_vm.outdir / "amd-json.out").read_text())
    assert report["plan"]["applies"] is False and report["plan"]["pages"] == 0
    assert "Plan:   not applicable" in (amd_vm.outdir / "amd-text.out").read_text()
