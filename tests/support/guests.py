"""Real guests for the VM tests: a Debian kernel, a busybox initramfs, a libvirt domain.

Rules and invariants:
- The guest is built from Debian packages only, once per cache key (the kernel package's
  and busybox's versions, and this module's init script), into ``GUEST_CACHE`` (default
  /var/cache/seawall-tests); a lock file lets two test workers share the cache. The kernel
  package is fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x``: nothing
  is installed on the host.
- The initramfs's init loads the virtio modules in the order the kernel needs them to see
  /dev/vda, then runs the writer the kernel command line names (``sw_writer=counter``): it
  writes its counter N to slot N % ``sw_slots`` (one 4 KiB block each, from
  ``COUNTER_BASE_BYTES`` of /dev/vda) with an fsync, and prints ``sw-count N`` on the
  serial console after each write that succeeded, ``sw-ioerror N`` after one that did not.
  So a test reads from the console whether the guest kept writing and saw no I/O error,
  and knows from the last N what every slot holds. Before writing, init prints
  ``sw-boot-counter N``, the highest counter its disk already holds: a guest booted from a
  recovered disk says which moment that disk is from; it counts on from there (counters
  on a disk only grow, whoever boots it).
- A clean shutdown: qemu-ga's ``guest-shutdown`` (libvirt ``shutdown`` through the guest
  agent) runs the image's ``/sbin/shutdown``, which prints ``sw-shutdown ARGS`` and asks
  init to stop; init finishes the write under way, syncs, prints ``sw-poweroff N`` (N the
  last counter) and powers off.
- The guest carries Debian's qemu-guest-agent (the host's ``/usr/sbin/qemu-ga`` and the
  shared libraries ``ldd`` names, from the host package qemu-guest-agent: its service only
  starts on a host with the virtio port, so none runs here) and virtio_console. When the
  domain has the ``org.qemu.guest_agent.0`` channel (``guest_agent=True``), init finds its
  port in /sys/class/virtio-ports and starts qemu-ga on it, with a freeze hook that prints
  ``sw-fsfreeze freeze|thaw UPTIME`` on the console: the guest's own account of how long
  it stayed frozen. Its only file systems are RAM ones (rootfs, tmpfs), which qemu-ga does
  not freeze: a freeze answers 0 file systems but runs the hooks and sets the frozen state.
- Domains run under TCG (``<domain type='qemu'>``) unless ``SEAWALL_TEST_ACCEL=kvm``:
  guests hang under KVM on the machines this was written for.
- libvirt's QEMU runs as libvirt-qemu: everything a guest opens (disks, the console log,
  a mirror's socket) lives in a directory of ``guest_workdir``, which it can traverse.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import lzma
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from xml.sax.saxutils import escape

libvirt: ModuleType | None
try:
    import libvirt
except ImportError:  # the VM tests say so and skip (``libvirt_problem``)
    libvirt = None

GUEST_CACHE = Path(os.environ.get("SEAWALL_GUEST_CACHE", "/var/cache/seawall-tests"))
ACCEL = os.environ.get("SEAWALL_TEST_ACCEL", "qemu")  # libvirt's domain type: qemu (TCG) or kvm
VIRTIO_MODULES = ("virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
                  "virtio_pci", "virtio_blk", "virtio_console")
QEMU_GA = Path("/usr/sbin/qemu-ga")
GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"
COUNTER_BASE_BYTES = 1 << 20
SLOT_BYTES = 4096
BOOT_TIMEOUT_S = 120.0

INIT_SCRIPT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for module in @MODULES@; do
  insmod /lib/modules/$module.ko || echo "sw-insmod-failed $module"
done
for arg in $(cat /proc/cmdline); do
  case $arg in sw_*=*) eval "$arg";; esac
done
tries=0
while [ ! -b /dev/vda ] && [ $tries -lt 100 ]; do usleep 100000; tries=$((tries + 1)); done
[ -b /dev/vda ] || { echo "sw-no-disk"; poweroff -f; }
last=0
for slot in $(seq 0 $(( ${sw_slots:-1} - 1 ))); do
  found=$(dd if=/dev/vda bs=4096 skip=$(( @BASE_BLOCKS@ + slot )) count=1 2>/dev/null | \
    head -c 40 | sed -n 's/^seawall counter \\([0-9]*\\).*/\\1/p')
  [ -n "$found" ] && [ "$found" -gt "$last" ] && last=$found
done
echo "sw-boot-counter $last"
echo "sw-ready"
for port in /sys/class/virtio-ports/*; do
  if [ "$(cat $port/name 2>/dev/null)" = @CHANNEL@ ] && [ -x /usr/sbin/qemu-ga ]; then
    mkdir -p /run /etc/qemu
    (qemu-ga -m virtio-serial -p /dev/${port##*/} -t /run -f /run/qemu-ga.pid \\
      -F/bin/sw-fsfreeze-hook || echo "sw-guest-agent-exited $?") 2>&1 | sed 's/^/sw-qga: /' &
    echo "sw-guest-agent ${port##*/}"
  fi
done
n=$last
if [ "$sw_writer" = counter ]; then
  while [ ! -e /sw-stop ]; do
    n=$((n + 1))
    if printf '%-4095s\\n' "seawall counter $n" | \\
        dd of=/dev/vda bs=4096 seek=$(( @BASE_BLOCKS@ + n % sw_slots )) conv=notrunc,fsync \\
        2>/dev/null; then
      echo "sw-count $n"
    else
      echo "sw-ioerror $n"
    fi
    usleep ${sw_delay_us:-50000}
  done
fi
while [ ! -e /sw-stop ]; do sleep 1; done
sync
echo "sw-poweroff $n"
poweroff -f
""".replace("@MODULES@", " ".join(VIRTIO_MODULES)).replace(
    "@BASE_BLOCKS@", str(COUNTER_BASE_BYTES // SLOT_BYTES)).replace(
    "@CHANNEL@", GUEST_AGENT_CHANNEL)

FSFREEZE_HOOK = """#!/bin/busybox sh
echo "sw-fsfreeze $1 $(cut -d' ' -f1 /proc/uptime)" > /dev/ttyS0
"""

SHUTDOWN = """#!/bin/busybox sh
echo "sw-shutdown $*" > /dev/ttyS0
touch /sw-stop
"""
"""qemu-ga's ``guest-shutdown`` runs ``/sbin/shutdown -h -P +0 ...`` (busybox has none):
init's writer stops after the write under way, syncs and powers off (``sw-poweroff N``)."""


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initramfs: Path
    kernel_package: str


def _run(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, cwd=cwd).stdout


def _package_version(package: str) -> str:
    out = _run("apt-cache", "policy", package)
    match = re.search(r"Candidate: (\S+)", out)
    if match is None or match.group(1) == "(none)":
        raise RuntimeError(f"no Debian package {package} known to apt (apt-get update?)")
    return match.group(1)


def kernel_package() -> str:
    """The versioned kernel package ``linux-image-amd64`` depends on."""
    out = _run("apt-cache", "depends", "linux-image-amd64")
    match = re.search(r"Depends: (linux-image-\S+-amd64)", out)
    if match is None:
        raise RuntimeError("linux-image-amd64 depends on no linux-image-*-amd64 package")
    return match.group(1)


def build_guest_image(cache: Path = GUEST_CACHE) -> GuestImage:
    """The kernel and initramfs of the test guest, built once per cache key."""
    package = kernel_package()
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise RuntimeError("no /bin/busybox: install Debian's busybox-static")
    key = re.sub(r"[^A-Za-z0-9.+-]", "_", "-".join((
        package, _package_version(package), _package_version("busybox-static"),
        _guest_agent_version(), f"{hash_text(INIT_SCRIPT + FSFREEZE_HOOK + SHUTDOWN):08x}")))
    directory = cache / f"guest-{key}"
    image = GuestImage(directory / "vmlinuz", directory / "initramfs.cpio", package)
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not image.initramfs.exists():
            _build(directory, package, busybox)
    return image


def hash_text(text: str) -> int:
    return zlib.crc32(text.encode())


def _guest_agent_version() -> str:
    if not QEMU_GA.exists():
        raise RuntimeError("no /usr/sbin/qemu-ga: install Debian's qemu-guest-agent "
                           "(`make setup`)")
    return _package_version("qemu-guest-agent")


def _guest_agent_files() -> dict[str, tuple[int, bytes]]:
    """qemu-ga and every shared library ldd names for it, at the paths ldd names."""
    files = {QEMU_GA.as_posix().lstrip("/"): (0o100755, QEMU_GA.read_bytes()),
             "bin/sw-fsfreeze-hook": (0o100755, FSFREEZE_HOOK.encode()),
             "sbin/shutdown": (0o100755, SHUTDOWN.encode())}
    for line in _run("ldd", str(QEMU_GA)).splitlines():
        match = re.search(r"(/\S+) \(0x", line)
        if match is not None:
            library = Path(match.group(1))  # read through symlinks, stored under this name
            files[library.as_posix().lstrip("/")] = (0o100755, library.read_bytes())
    return files


def _build(directory: Path, package: str, busybox: Path) -> None:
    with tempfile.TemporaryDirectory(dir=directory.parent) as scratch_text:
        scratch = Path(scratch_text)
        _run("apt-get", "download", package, cwd=scratch)
        deb = next(scratch.glob("linux-image-*.deb"))
        unpacked = scratch / "unpacked"
        _run("dpkg-deb", "-x", str(deb), str(unpacked))
        build = scratch / "out"
        build.mkdir()
        shutil.copyfile(next((unpacked / "boot").glob("vmlinuz-*")), build / "vmlinuz")
        files: dict[str, tuple[int, bytes]] = {
            "init": (0o100755, INIT_SCRIPT.encode()),
            "bin/busybox": (0o100755, busybox.read_bytes()),
            **_guest_agent_files(),
        }
        for module in VIRTIO_MODULES:
            files[f"lib/modules/{module}.ko"] = (0o100644, _module_bytes(unpacked, module))
        (build / "initramfs.cpio").write_bytes(newc_archive(files))
        build.rename(directory)


def _module_bytes(unpacked: Path, module: str) -> bytes:
    """The module's .ko, decompressed if the package ships it as .ko.xz."""
    for path in (unpacked / "lib/modules").rglob(f"{module}.ko*"):
        if path.name == f"{module}.ko":
            return path.read_bytes()
        if path.name == f"{module}.ko.xz":
            return lzma.decompress(path.read_bytes())
    raise RuntimeError(f"kernel module {module} is not in the kernel package")


def newc_archive(files: dict[str, tuple[int, bytes]]) -> bytes:
    """A cpio archive in the kernel's ``newc`` format, its directories made implicitly."""
    directories = sorted({str(Path(name).parents[i]) for name in files
                          for i in range(len(Path(name).parents) - 1)})
    entries = [(d, 0o040755, b"") for d in directories]
    entries += [(name, mode, data) for name, (mode, data) in sorted(files.items())]
    entries.append(("TRAILER!!!", 0, b""))
    out = bytearray()
    for inode, (name, mode, data) in enumerate(entries, start=1):
        encoded = name.encode() + b"\0"
        fields = (inode, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        out += b"070701" + b"".join(b"%08X" % field for field in fields) + encoded
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def guest_workdir() -> Path:
    """A new directory libvirt's QEMU (user libvirt-qemu) can reach: under /var/tmp, 0755."""
    directory = Path(tempfile.mkdtemp(prefix="seawall-guests-", dir="/var/tmp"))
    directory.chmod(0o755)
    return directory


@dataclass(frozen=True)
class GuestDisk:
    target: str  # vda...
    path: Path | None  # None: an empty CD-ROM
    format: str = "raw"
    device: str = "disk"  # disk or cdrom


def make_disk(path: Path, size_bytes: int, disk_format: str = "raw") -> Path:
    _run("qemu-img", "create", "-q", "-f", disk_format, str(path), str(size_bytes))
    path.chmod(0o666)  # libvirt-qemu writes it (libvirt may also chown it while it runs)
    return path


def domain_xml(name: str, image: GuestImage, disks: Sequence[GuestDisk], console_log: Path,
               network: str | None = None, mac: str = "52:54:00:5e:a0:01",
               writer: str = "counter", slots: int = 64, delay_us: int = 50000,
               guest_agent: bool = False) -> str:
    disk_xml = []
    for disk in disks:
        bus = "virtio" if disk.device == "disk" else "ide"
        source = "" if disk.path is None else f"<source file='{escape(str(disk.path))}'/>"
        readonly = "<readonly/>" if disk.device == "cdrom" else ""
        disk_xml.append(
            f"<disk type='file' device='{disk.device}'><driver name='qemu' "
            f"type='{disk.format}'/>{source}<target dev='{disk.target}' bus='{bus}'/>"
            f"{readonly}</disk>")
    nic = ("" if network is None else f"<interface type='network'><source network="
           f"'{escape(network)}'/><mac address='{mac}'/><model type='virtio'/></interface>")
    channel = ("" if not guest_agent else  # libvirt makes and owns its socket
               f"<channel type='unix'><target type='virtio' name='{GUEST_AGENT_CHANNEL}'/>"
               "</channel>")
    cmdline = (f"console=ttyS0 panic=-1 quiet sw_writer={writer} sw_slots={slots} "
               f"sw_delay_us={delay_us}")
    return f"""<domain type='{ACCEL}'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>192</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{image.kernel}</kernel><initrd>{image.initramfs}</initrd>
    <cmdline>{cmdline}</cmdline></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    {''.join(disk_xml)}
    {nic}
    <serial type='file'><source path='{escape(str(console_log))}'/><target port='0'/></serial>
    {channel}
    <memballoon model='none'/>
  </devices>
</domain>"""


class Console:
    """What the guest printed on its serial console (a file libvirt's QEMU writes)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def text(self) -> str:
        try:
            return self.path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def counter(self) -> int:
        """The last counter the guest wrote successfully (0: none yet)."""
        counts = re.findall(r"^sw-count (\d+)", self.text(), re.MULTILINE)
        return int(counts[-1]) if counts else 0

    def io_errors(self) -> list[str]:
        return re.findall(r"^sw-(?:ioerror|no-disk|insmod-failed).*$", self.text(),
                          re.MULTILINE)

    def wait_for(self, pattern: str, timeout_s: float = BOOT_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if re.search(pattern, self.text(), re.MULTILINE):
                return
            time.sleep(0.2)
        raise AssertionError(f"the guest printed no {pattern!r} in {timeout_s:.0f} s; its "
                             f"console:\n{self.text()[-2000:]}")

    def wait_counter_past(self, value: int, timeout_s: float = 60.0) -> int:
        """Until the guest wrote a counter above ``value`` (a guest started again counts on
        from its disk's highest, so it may skip past it); that counter."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.counter() > value:
                return self.counter()
            time.sleep(0.2)
        raise AssertionError(f"the guest wrote no counter above {value} in {timeout_s:.0f} s; "
                             f"its console:\n{self.text()[-2000:]}")


def counter_slot(data: bytes, slot: int) -> int | None:
    """The counter a guest disk's ``data`` holds in ``slot`` (None: never written)."""
    start = COUNTER_BASE_BYTES + slot * SLOT_BYTES
    match = re.match(rb"seawall counter (\d+) *\n", data[start:start + SLOT_BYTES])
    return int(match.group(1)) if match else None


def libvirt_problem(uri: str = "qemu:///system") -> str | None:
    """None once libvirt at ``uri`` answers, else why it cannot here (a skip reason).

    As root with Debian's libvirt-daemon-system installed, virtlogd and libvirtd are started
    (``-d``) when not running; they are left running, as a host's service would be (other
    test workers may be using them)."""
    if libvirt is None:
        return "libvirt-python is not installed (pyproject's dependencies; `make setup`)"
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 is not installed (Debian qemu-system-x86; `make setup`)"
    libvirt.registerErrorHandler(lambda _context, _error: None, None)
    _kvm_node_as_udev_makes_it()
    if _answers(uri):
        return None
    if uri != "qemu:///system":
        return f"libvirt at {uri} does not answer"
    if os.geteuid() != 0:
        return "libvirtd is not running and only root can start it here"
    if shutil.which("libvirtd") is None or shutil.which("virtlogd") is None:
        return "libvirtd is not installed (Debian libvirt-daemon-system; `make setup`)"
    for daemon in ("virtlogd", "libvirtd"):  # -d: daemonize; a running one refuses, fine
        subprocess.run([daemon, "-d"], capture_output=True, timeout=30, check=False)
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        if _answers(uri):
            return None
        time.sleep(0.2)
    return "libvirtd was started (libvirtd -d) but does not answer at qemu:///system"


def _kvm_node_as_udev_makes_it() -> None:
    """/dev/kvm root:kvm 0660, as Debian's udev rules make it, where no udev ran (0600).

    libvirt probes QEMU's capabilities with KVM (as root) but then finds /dev/kvm unusable
    by libvirt-qemu, so it judges its cache stale and probes again (~4 s) at every define
    and start: a domain then took ~60 s to start here instead of 0.5 s. The guests still
    run under TCG (``ACCEL``)."""
    kvm = Path("/dev/kvm")
    try:
        kvm_group = grp.getgrnam("kvm").gr_gid
        status = kvm.stat()
    except (KeyError, OSError):
        return
    if os.geteuid() == 0 and status.st_gid == 0 and stat.S_IMODE(status.st_mode) == 0o600:
        os.chown(kvm, 0, kvm_group)
        kvm.chmod(0o660)


def _answers(uri: str) -> bool:
    assert libvirt is not None
    try:
        connection = libvirt.open(uri)
    except libvirt.libvirtError:
        return False
    connection.close()
    return True


@dataclass
class Guest:
    """A libvirt domain of the tests, its files in ``workdir``."""

    name: str
    uuid: str
    workdir: Path
    disks: dict[str, Path]
    console: Console


class GuestHost:
    """Test domains and an isolated network on one libvirt, all removed by ``close``."""

    def __init__(self, uri: str, image: GuestImage) -> None:
        assert libvirt is not None
        self.uri = uri
        self.image = image
        self.connection = libvirt.open(uri)
        self.workdir = guest_workdir()
        self.prefix = f"seawall-test-{os.getpid()}"
        self._domains: list[str] = []
        self.network = self.prefix
        bridge = f"swt{os.getpid() % 100000}"  # a Linux interface name: 15 bytes at most
        # No <ip>: no dnsmasq, no firewall rules; only a bridge to plug NICs into.
        self.connection.networkCreateXML(
            f"<network><name>{self.network}</name><bridge name='{bridge}' stp='off'/>"
            "</network>")

    def define(self, name: str, disks: Sequence[GuestDisk], *, start: bool,
               mac: str = "52:54:00:5e:a0:01", guest_agent: bool = False) -> Guest:
        full_name = f"{self.prefix}-{name}"
        console_log = self.workdir / f"{name}.console.log"
        domain = self.connection.defineXML(domain_xml(
            full_name, self.image, disks, console_log, self.network, mac,
            guest_agent=guest_agent))
        self._domains.append(full_name)
        if start:
            domain.create()
        return Guest(full_name, domain.UUIDString(), self.workdir,
                     {d.target: d.path for d in disks if d.path is not None},
                     Console(console_log))

    def domain(self, guest: Guest) -> Any:
        return self.connection.lookupByName(guest.name)

    def wait_guest_agent(self, guest: Guest, timeout_s: float = 60.0) -> None:
        """Until libvirt sees the guest agent's channel connected (qemu-ga opened it)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            live_xml = self.domain(guest).XMLDesc(0)
            if re.search(rf"name='{GUEST_AGENT_CHANNEL}' state='connected'", live_xml):
                return
            time.sleep(0.2)
        raise AssertionError(f"no guest agent connected in {timeout_s:.0f} s; the guest's "
                             f"console:\n{guest.console.text()[-2000:]}")

    def close(self) -> None:
        assert libvirt is not None
        for name in self._domains:
            with contextlib.suppress(libvirt.libvirtError):  # gone already
                domain = self.connection.lookupByName(name)
                if domain.isActive():
                    domain.destroy()
                domain.undefine()
        with contextlib.suppress(libvirt.libvirtError):
            self.connection.networkLookupByName(self.network).destroy()
        self.connection.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


LIBVIRT_URI = "qemu:///system"
RAW_DISK_BYTES = 64 << 20
QCOW2_DISK_BYTES = 48 << 20
STOPPED_DISK_BYTES = 16 << 20
RUNNING_MAC, STOPPED_MAC = "52:54:00:5e:a0:01", "52:54:00:5e:a0:02"


@dataclass
class SessionGuests:
    """The guests every VM test shares (``tests/vm/conftest.py``)."""

    host: GuestHost
    running: Guest
    stopped: Guest
    boot_s: float  # from create to the guest's first counter write

    @property
    def uri(self) -> str:
        return self.host.uri


def start_session_guests(uri: str) -> SessionGuests:
    """A running guest writing its counter (raw ``vda``, qcow2 ``vdb``, an empty CD-ROM
    ``hdc``, a NIC) and a shut-off one; the caller closes ``host``."""
    host = GuestHost(uri, build_guest_image())
    try:
        work = host.workdir
        started = time.monotonic()
        running = host.define("writer", [
            GuestDisk("vda", make_disk(work / "writer-vda.raw", RAW_DISK_BYTES)),
            GuestDisk("vdb", make_disk(work / "writer-vdb.qcow2", QCOW2_DISK_BYTES, "qcow2"),
                      "qcow2"),
            GuestDisk("hdc", None, device="cdrom"),
        ], start=True, mac=RUNNING_MAC, guest_agent=True)
        stopped = host.define("stopped", [
            GuestDisk("vda", make_disk(work / "stopped-vda.raw", STOPPED_DISK_BYTES)),
        ], start=False, mac=STOPPED_MAC)
        running.console.wait_for(r"^sw-count 1$")
    except BaseException:
        host.close()
        raise
    return SessionGuests(host, running, stopped, time.monotonic() - started)
