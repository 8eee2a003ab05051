"""`vmxprobe fixture mount`: serve a recorded host as a live root tree through FUSE
(vmxprobe.host.devfs does the serving)."""

from __future__ import annotations

import os
import re
import sys

import click

from vmxprobe.cli.common import Fail, Group, load_fixture
from vmxprobe.files import kernel_fs
from vmxprobe.host import devfs
from vmxprobe.printable import printable


def _offline_spec(ctx, param, values):
    hooks = {}
    for v in values:
        # ASCII digits, few enough for int(): a CPU id and a count of reads
        m = re.fullmatch(r"([0-9]{1,5}):([0-9]{1,9})", v)
        if not m:
            shown = v if len(v) <= 40 else f"{v[:37]}..."
            raise click.BadParameter(f"{shown!r}: expected CPU:READS, e.g. 3:2 (CPU up to 5 digits)")
        hooks[int(m.group(1))] = int(m.group(2))
    return hooks


@click.group("fixture", cls=Group)
def fixture_group():
    """Serve recorded fixtures as host trees."""


@fixture_group.command("mount")
@click.argument("fixture", metavar="FIXTURE")
@click.argument("mountpoint", metavar="MOUNTPOINT")
@click.option(
    "--background", is_flag=True, help="Return once mounted, leaving the server running; it prints its pid."
)
@click.option(
    "--allow-other", is_flag=True, help="Let other users (root included) use the mount (FUSE allow_other)."
)
@click.option(
    "--offline-after",
    "offline_after",
    metavar="CPU:READS",
    multiple=True,
    callback=_offline_spec,
    help="Test hook: once CPU's devices have served READS register reads, the "
    "CPU is offline: reads and opens fail with ENXIO. Repeatable.",
)
@click.option("--detached-child", is_flag=True, hidden=True)
def mount_cmd(fixture, mountpoint, background, allow_other, offline_after, detached_child):
    """Serve FIXTURE (a file or a bundled name) as a host root tree at MOUNTPOINT.

    \b
    MOUNTPOINT/dev/cpu/N/{msr,cpuid} behave as the kernel's devices do for every
    online CPU; MOUNTPOINT/sys and /proc hold the recorded files. Then:
      vmxprobe scan --root MOUNTPOINT
    replays the host through the live reader, and MOUNTPOINT/dev/cpu can be
    bind-mounted over /dev/cpu for other tools (docs/replay-dev-cpu.md).
    Runs in the foreground until Ctrl-C, SIGTERM or `fusermount3 -u MOUNTPOINT`.
    """
    fx = load_fixture(fixture)
    if not os.path.isdir(mountpoint):
        raise Fail(f"{mountpoint}: not a directory; create the mount point first")
    top = kernel_fs(mountpoint)
    if top is not None:
        # A fixture over /proc/PID, /sys or /dev would hide what the host itself shows,
        # to every process; over its own /proc/PID the server could not even be found.
        raise Fail(
            f"{mountpoint}: under {top}, which the kernel serves: a fixture is never mounted "
            "there; mount it on a folder of its own (mkdir /tmp/host)"
        )
    tree = devfs.DevCpuTree(fx, offline_after)
    unknown = sorted(set(offline_after) - set(tree.cpus()))
    if unknown:
        raise Fail(f"--offline-after: the fixture has no CPU {unknown[0]}")
    # The arguments are fine; now what this machine needs to mount them.
    try:
        devfs.load_binding()
    except devfs.MountError as e:
        raise Fail(str(e)) from None
    if not os.path.exists("/dev/fuse"):
        raise Fail(
            "/dev/fuse is missing: load the fuse module (modprobe fuse), or give "
            "the container the device (--device /dev/fuse)"
        )
    if devfs.mounted_at(mountpoint):
        raise Fail(
            f"{mountpoint}: a fixture is already mounted there; unmount it first "
            f"(fusermount3 -u {mountpoint})"
        )
    mountpoint = os.path.abspath(mountpoint)

    if background:
        spec = os.path.abspath(fixture) if os.path.exists(fixture) else fixture
        argv = [
            sys.executable,
            "-m",
            "vmxprobe",
            "fixture",
            "mount",
            spec,
            mountpoint,
            "--detached-child",
        ] + (["--allow-other"] if allow_other else [])
        argv += [f"--offline-after={cpu}:{n}" for cpu, n in offline_after.items()]
        try:
            server = devfs.start_in_background(argv, mountpoint)
        except devfs.MountError as e:
            raise Fail(str(e)) from None
        try:
            click.echo(
                printable(
                    f"vmxprobe: mounted {fx.name} at {mountpoint} (server pid {server.pid}); "
                    f"unmount with: fusermount3 -u {mountpoint}"
                )
            )
            sys.stdout.flush()
        except BaseException:
            # Whoever ran this cannot learn the mount exists (standard output failed, or
            # an interrupt): it must not outlive the error.
            devfs.stop(server, mountpoint)
            raise
        return

    def ready():
        if detached_child:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)  # closes the pipe: tells the parent we are mounted
            os.close(null)
        else:
            click.echo(
                printable(
                    f"vmxprobe: serving {fx.name} at {mountpoint} ({len(tree.cpus())} "
                    "CPUs); Ctrl-C or SIGTERM unmounts"
                ),
                err=True,
            )

    tree.on_ready = ready
    try:
        devfs.serve(tree, mountpoint, allow_other=allow_other)
    except RuntimeError:
        raise Fail(f"could not mount at {mountpoint} (libfuse's reason is above)") from None
