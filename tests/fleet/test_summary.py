"""`vmxprobe fleet` / `fleet summary` (vmxprobe.fleet.summary)."""

import csv
import io
import os
import random
import re
import time
import tracemalloc

import pytest

from benchmarks import fleet as bench_fleet
from tests.fleet.reports import invoke, live, report, summary_json, undetermined_doc, write
from vmxprobe.fleet import check as fleet_check
from vmxprobe.fleet import summary as fleet_summary

# --- the summary -------------------------------------------------------------------------


@pytest.fixture
def fleet_dir(tmp_path):
    d = tmp_path / "reports"
    d.mkdir()
    write(d, "web01.json", live("intel-2s-ready"))
    write(d, "web02.json", live("intel-fw-locked-off"))
    write(d, "kvm01.json", live("kvm-nested-guest"))
    write(d, "amd01.json", live("amd-svm-locked-off"))
    write(d, "amd02.json", live("amd-host"))
    write(d, "db01.json", undetermined_doc())
    return d


def test_summary_counts_and_groups(fleet_dir):
    code, s, _ = summary_json(fleet_dir)
    assert code == 1
    assert s["kind"] == "vmxprobe-fleet-summary"
    assert s["reports"] == {
        "files": 6,
        "read": 6,
        "skipped": 0,
        "oldest": s["reports"]["oldest"],
        "newest": s["reports"]["newest"],
    }
    assert s["readiness"] == {"ready": 3, "not_ready": 2, "undetermined": 1}
    # The VMX registers are counted for the hosts judged by VMX, VM_CR for those judged by SVM.
    assert s["by_revision_id"] == {"unknown": 1, "0x00000004": 1, "0x00000012": 1, "0x11e57ed0": 1}
    assert s["by_vmcs_size"] == {"1024": 2, "unknown": 1, "4096": 1}
    assert s["by_feature_control"] == {"unreadable": 1, "enabled_locked": 2, "disabled_locked": 1}
    assert s["by_vm_cr"] == {"enabled": 1, "disabled_locked": 1}
    assert s["by_virt"] == {"vmx": 4, "svm": 2}
    assert s["by_verdict"]["x86_svm_init ok, kvm_amd ok"] == 1
    assert s["by_verdict"]["x86_svm_init -EOPNOTSUPP, kvm_amd -EOPNOTSUPP"] == 1
    assert s["by_verdict"]["x86_vmx_init ok, kvm_intel ok"] == 2
    assert s["by_hypervisor"] == {"none": 5, "KVM": 1}
    assert s["by_cpu_model"]["Intel(R) Xeon(R) CPU (composed) (6/63/2)"] == 2
    assert [h["host"] for h in s["not_ready"]["hosts"]] == ["amd01", "web02"]
    amd01 = s["not_ready"]["hosts"][0]
    assert (amd01["virt"], amd01["x86_svm_init"], amd01["kvm_amd"]) == ("svm", "EOPNOTSUPP", "EOPNOTSUPP")
    assert "VM_CR (0xc0010114) = 0x0000000000000018" in amd01["reason"]
    assert "IA32_FEATURE_CONTROL" in s["not_ready"]["hosts"][1]["reason"]
    assert s["undetermined"]["hosts"][0]["host"] == "db01"
    assert "ENOENT" in s["undetermined"]["hosts"][0]["reason"]
    assert s["exit_code"] == 1


def test_summary_csv_carries_the_amd_verdict(fleet_dir):
    r = invoke("fleet", "--format", "csv", fleet_dir)
    rows = {row["host"]: row for row in csv.DictReader(io.StringIO(r.stdout))}
    assert list(csv.reader(io.StringIO(r.stdout)))[0][-4:] == ["virt", "x86_svm_init", "kvm_amd", "vm_cr"]
    assert {k: rows["amd02"][k] for k in ("status", "virt", "x86_svm_init", "kvm_amd", "vm_cr")} == {
        "status": "ready",
        "virt": "svm",
        "x86_svm_init": "ok",
        "kvm_amd": "ok",
        "vm_cr": "enabled",
    }
    # No plan applies to an AMD host: its CPU count comes from the possible list.
    assert rows["amd02"]["possible_cpus"] == "16" and rows["amd01"]["vm_cr"] == "disabled_locked"
    assert rows["web01"]["virt"] == "vmx" and rows["web01"]["kvm_amd"] == "EOPNOTSUPP"


def test_summary_text(fleet_dir):
    r = invoke("fleet", fleet_dir)
    assert r.exit_code == 1
    out = r.stdout
    assert "6 report file(s): 6 read, 0 skipped" in out
    assert "3 ready (50.0%), 2 not ready (33.3%), 1 could not be determined (16.7%)" in out
    assert "none (bare metal)" in out
    assert "Not ready (2):\n  amd01: CPU 0: VM_CR (0xc0010114)" in out
    assert "VM_CR (SVM hosts):\n         1  disabled_locked\n         1  enabled" in out
    assert "Could not be determined (1):\n  db01: IA32_VMX_BASIC" in out


@pytest.mark.parametrize(
    "docs,code",
    [
        ([live(), live("kvm-nested-guest")], 0),
        ([live(), live("intel-fw-locked-off")], 1),
        ([live(), undetermined_doc()], 3),
        ([live(), live("amd-host"), undetermined_doc()], 3),
        ([live(), live("amd-host")], 0),
        ([live(), live("amd-sev-guest")], 1),
        ([live(), "{not json"], 3),
        ([live(), {"schema_version": 2}], 3),
    ],
)
def test_summary_exit_codes(tmp_path, docs, code):
    for i, doc in enumerate(docs):
        write(tmp_path, f"h{i}.json", doc)
    assert invoke("fleet", tmp_path).exit_code == code


def test_skipped_reports_are_listed_counted_and_never_crash(tmp_path, monkeypatch):
    write(tmp_path, "good.json", live())
    write(tmp_path, "broken.json", '{"schema_version": 1,')
    write(tmp_path, "future.json", dict(live(), schema_version=2))
    write(tmp_path, "other.json", {"some": "thing"})
    write(tmp_path, "array.json", "[1, 2]")
    write(tmp_path, "invalid.json", live(verdict__ready="yes"))
    write(tmp_path, "deep.json", "[" * 100000 + "]" * 100000)
    (tmp_path / "latin1.json").write_bytes(b'{"a": "\xe9"}')
    (tmp_path / "empty.json").write_bytes(b"")
    os.symlink("nowhere.json", tmp_path / "dangling.json")
    (tmp_path / "folder.json").mkdir()  # a folder named like a report is not a file
    code, s, _ = summary_json(tmp_path)
    assert code == 3
    assert s["readiness"] == {"ready": 1, "not_ready": 0, "undetermined": 0}
    assert s["reports"]["files"] == 10
    assert s["unknown_schema"]["count"] == 1 and s["unknown_schema"]["hosts"][0]["schema_version"] == 2
    invalid = {h["host"]: h["error"] for h in s["invalid"]["hosts"]}
    assert invalid.keys() == {"other", "array", "invalid"}
    assert "not a vmxprobe scan report" in invalid["other"]
    assert "verdict.ready" in invalid["invalid"]
    unreadable = {h["host"]: h["error"] for h in s["unreadable"]["hosts"]}
    assert unreadable.keys() == {"broken", "deep", "latin1", "empty", "dangling"}
    assert unreadable["latin1"] == "not UTF-8 text"
    assert unreadable["dangling"] == "a symbolic link to nothing: not read"
    assert s["reports"]["skipped"] == 9


def test_unreadable_file_and_oversized_report(tmp_path, monkeypatch):
    write(tmp_path, "big.json", live())
    monkeypatch.setattr(fleet_check, "MAX_REPORT_BYTES", 1000)
    code, s, _ = summary_json(tmp_path / "big.json")
    assert code == 3
    assert "larger than" in s["unreadable"]["hosts"][0]["error"]
    s2 = fleet_summary.Summary()
    row = s2.add_path(str(tmp_path / "nope.json"))
    assert row["status"] == "unreadable" and "No such file" in row["reason"]


def test_a_fleet_summary_in_the_folder_is_recognised(tmp_path):
    write(tmp_path, "a.json", live())
    r = invoke("fleet", "--format", "json", "-o", tmp_path / "summary.json", tmp_path)
    assert r.exit_code == 0 and r.stdout == ""
    code, s, _ = summary_json(tmp_path)
    assert s["invalid"]["hosts"][0]["error"] == "a vmxprobe fleet summary, not a scan report"


def test_stale_reports(tmp_path):
    now = time.time()
    write(tmp_path, "fresh.json", live(when=now - 3600))
    write(tmp_path, "old.json", live(when=now - 10 * 86400))
    write(tmp_path, "future.json", live(when=now + 3600))
    assert invoke("fleet", tmp_path).exit_code == 0  # no age limit asked for
    code, s, r = summary_json("--stale-after", "7d", tmp_path)
    assert code == 3
    assert s["options"]["stale_after_seconds"] == 7 * 86400
    [old] = s["stale"]["hosts"]
    assert old["host"] == "old" and 10 * 86400 <= old["age_seconds"] < 10 * 86400 + 60
    text = invoke("fleet", "--stale-after", "1w", tmp_path).stdout
    assert "Stale (scanned more than 7d ago) (1):\n  old: scanned" in text
    # Ten days, and the seconds a loaded machine takes between writing and reading.
    assert re.search(r"\(10d(\d+[hms])* ago\)\n", text), text


def test_fixture_reports_are_flagged(tmp_path):
    write(tmp_path, "real.json", live())
    write(tmp_path, "test.json", report("intel-2s-ready"))
    code, s, _ = summary_json(tmp_path)
    assert code == 0
    assert s["fixtures"]["hosts"] == [
        {"host": "test", "file": str(tmp_path / "test.json"), "fixture": "intel-2s-ready"}
    ]


def test_host_from_source(tmp_path):
    write(tmp_path, "x.json", report("intel-fw-locked-off"))
    _, s, _ = summary_json("--host-from", "source", tmp_path)
    assert s["not_ready"]["hosts"][0]["host"] == "intel-fw-locked-off"
    _, s, _ = summary_json(tmp_path)
    assert s["not_ready"]["hosts"][0]["host"] == "x"


def test_duplicate_host_names(tmp_path):
    for sub in ("a", "b", "c"):
        (tmp_path / sub).mkdir()
        write(tmp_path / sub, "web01.json", live())
    write(tmp_path / "a", "web02.json", live())
    write(tmp_path / "b", "web02.json", live())
    write(tmp_path / "a", "web03.json", live())
    code, s, _ = summary_json(tmp_path / "a", tmp_path / "b", tmp_path / "c")
    assert code == 0
    assert s["duplicates"]["hosts"] == [{"host": "web01"}, {"host": "web02"}]
    assert s["duplicates"]["count"] == 2 and s["duplicates"]["extra_reports"] == 3


def test_lists_are_capped_by_name_whatever_the_order(tmp_path):
    names = [f"host{i:03d}" for i in range(40)]
    random.Random(3).shuffle(names)
    for n in names:
        write(tmp_path, f"{n}.json", live("intel-fw-locked-off"))
    _, s, _ = summary_json("--limit", "5", tmp_path)
    nr = s["not_ready"]
    assert nr["count"] == 40 and nr["cut"] == 35
    assert [h["host"] for h in nr["hosts"]] == [f"host{i:03d}" for i in range(5)]
    text = invoke("fleet", "--limit", "5", tmp_path).stdout
    assert "... and 35 more (--limit N, or --format csv for every report)" in text
    _, s, _ = summary_json("--limit", "0", tmp_path)
    assert len(s["not_ready"]["hosts"]) == 40 and s["not_ready"]["cut"] == 0
    assert [h["host"] for h in s["not_ready"]["hosts"]] == sorted(names)


def test_directories_dot_files_and_recursion(tmp_path):
    write(tmp_path, "a.json", live())
    write(tmp_path, ".a.json.1234.tmp", "partial")  # an atomic write in progress
    write(tmp_path, ".hidden.json", live("amd-host"))
    write(tmp_path, "notes.txt", "not a report")
    (tmp_path / "old").mkdir()
    write(tmp_path / "old", "b.json", live("intel-fw-locked-off"))
    code, s, _ = summary_json(tmp_path)
    assert code == 0 and s["reports"]["files"] == 1
    code, s, _ = summary_json("-r", tmp_path)
    assert code == 1 and s["reports"]["files"] == 2
    # A file named on the command line is read whatever its name.
    write(tmp_path, "report.txt", live("intel-fw-locked-off"))
    code, s, _ = summary_json(tmp_path / "report.txt", tmp_path / "a.json")
    assert code == 1 and s["not_ready"]["hosts"][0]["host"] == "report.txt"


def test_csv_is_one_row_per_report(fleet_dir, tmp_path):
    write(fleet_dir, "zz-broken.json", "{")
    r = invoke("fleet", "--format", "csv", fleet_dir)
    assert r.exit_code == 1
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert list(rows[0].keys()) == list(fleet_summary.CSV_COLUMNS)
    by_host = {row["host"]: row for row in rows}
    assert len(rows) == 7
    assert by_host["web01"]["status"] == "ready" and by_host["web01"]["revision_id"] == "0x00000012"
    assert by_host["web02"]["status"] == "not_ready" and "IA32_FEATURE_CONTROL" in by_host["web02"]["reason"]
    assert by_host["web02"]["feature_control"] == "disabled_locked"
    assert by_host["db01"]["status"] == "undetermined" and by_host["db01"]["determined"] == "false"
    assert by_host["kvm01"]["hypervisor"] == "KVM" and by_host["kvm01"]["emulated"] == "KVM nested VMX"
    assert by_host["zz-broken"]["status"] == "unreadable" and by_host["zz-broken"]["ready"] == ""
    out = tmp_path / "inventory.csv"
    r = invoke("fleet", "--format", "csv", "-o", out, fleet_dir)
    assert r.exit_code == 1 and r.stdout == ""
    assert sorted(out.read_text().splitlines()) == sorted(
        invoke("fleet", "--format", "csv", fleet_dir).stdout.splitlines()
    )


def test_output_file_for_text_and_json(fleet_dir, tmp_path):
    out = tmp_path / "summary.txt"
    r = invoke("fleet", "-o", out, fleet_dir)
    assert r.exit_code == 1 and r.stdout == "" and out.read_text().startswith("vmxprobe fleet: 6 report")
    r = invoke("fleet", "-o", tmp_path, fleet_dir)
    assert r.exit_code == 2


def test_progress_bar_only_wraps_when_asked(fleet_dir):
    seen = []

    class Bar:
        def __init__(self, it):
            self.it = it

        def __enter__(self):
            seen.append("enter")
            return self.it

        def __exit__(self, *exc):
            seen.append("exit")

    text, s = fleet_summary.summarise([str(fleet_dir)], progress=Bar)
    assert seen == ["enter", "exit"] and s.read == 6
    r = invoke("fleet", fleet_dir)  # CliRunner's stderr is not a terminal: no bar
    assert "Reading reports" not in r.stderr


def test_state_does_not_grow_with_the_number_of_reports(tmp_path, monkeypatch):
    """What the summary keeps after N reports: 200 and 2,000 must cost about the same
    (the duplicate table's 8 bytes a name is the only per-report state)."""
    monkeypatch.setattr(bench_fleet, "CPU_COUNTS", [(2, 1)])
    kept = {}
    for n in (200, 2000):
        d = tmp_path / str(n)
        bench_fleet.generate(str(d), n, seed=n, future_schema_fraction=0)
        tracemalloc.start()
        _, summary = fleet_summary.summarise([str(d)], fmt="json")
        kept[n] = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert summary.files == n
        del summary
    assert kept[2000] - kept[200] < 150_000, kept


def test_special_files_named_json_are_counted_as_unreadable(tmp_path):
    d = tmp_path / "reports"
    d.mkdir()
    write(d, "web01.json", live())
    os.mkfifo(d / "fifo.json")
    os.symlink(d / "nowhere", d / "gone.json")
    os.mkfifo(d / "not-a-report")  # not *.json: not a report, not listed
    code, s, _ = summary_json(d)
    assert code == 3
    assert s["reports"] == {**s["reports"], "files": 3, "read": 1, "skipped": 2}
    errors = {os.path.basename(h["file"]): h["error"] for h in s["unreadable"]["hosts"]}
    assert errors == {
        "fifo.json": "not a regular file: a FIFO",
        "gone.json": "a symbolic link to nothing: not read",
    }
