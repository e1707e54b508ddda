"""Partition tables (GPT, MBR with logical partitions): pure parsing, no I/O of its own.

Rules:
- ``parse_partition_table(read, size_bytes)`` takes a ``read(offset, length) -> bytes``
  over the whole volume and returns the table, or None when the volume has none (a file
  system on the whole disk).
- GPT first: a header at LBA 1 with 512- or 4096-byte sectors, its CRC32 and the entry
  array's CRC32 checked; if the primary header is damaged the backup (last LBA) is used.
  A protective MBR (type 0xEE) without a valid GPT is an error, never "no table".
- MBR: the 0x55AA signature alone is not enough, since FAT, exFAT and NTFS boot sectors
  carry it too: a boot sector naming its file system, or entries with a bad status byte,
  mean "no table". Logical partitions are read along the EBR chain (at most 128, each
  EBR strictly after the previous one, so a crafted loop ends).
- Numbers are those Linux gives: GPT entry index + 1 (empty entries skipped, numbers
  kept); MBR primaries 1-4, logical partitions from 5. Extended containers are not
  listed. Every partition lies inside the volume, or the table is CorruptData.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from seawall.errors import CorruptData
from seawall.units import format_bytes

Read = Callable[[int, int], bytes]

GPT_SIGNATURE = b"EFI PART"
GPT_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")  # up to the entry array's CRC32
assert GPT_HEADER.size == 92
GPT_ENTRY = struct.Struct("<16s16sQQQ72s")
assert GPT_ENTRY.size == 128
MBR_ENTRY = struct.Struct("<B3sB3sII")
assert MBR_ENTRY.size == 16
MBR_ENTRIES_OFFSET = 446
SECTOR_SIZES = (512, 4096)
MAX_GPT_ENTRIES = 1024
MAX_LOGICAL = 128
MBR_EXTENDED = frozenset({0x05, 0x0F, 0x85})
MBR_PROTECTIVE = 0xEE

GPT_TYPES = {
    "0fc63daf-8483-4772-8e79-3d69d8477de4": "Linux filesystem",
    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b": "EFI System",
    "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7": "Microsoft basic data",
    "e3c9e316-0b5c-4db8-817d-f92df00215ae": "Microsoft reserved",
    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f": "Linux swap",
    "e6d6d379-f507-44c2-a23c-238f2a3df928": "Linux LVM",
    "a19d880f-05fc-4d3b-a006-743f0f84911e": "Linux RAID",
    "21686148-6449-6e6f-744e-656564454649": "BIOS boot",
    "4f68bce3-e8cd-4db1-96e7-fbcaf984b709": "Linux root (x86-64)",
    "bc13c2ff-59e6-4262-a352-b275fd6f7172": "Linux extended boot",
}
MBR_TYPES = {
    0x01: "FAT12", 0x04: "FAT16", 0x06: "FAT16", 0x07: "NTFS/exFAT", 0x0B: "FAT32",
    0x0C: "FAT32 (LBA)", 0x0E: "FAT16 (LBA)", 0x82: "Linux swap", 0x83: "Linux",
    0x8E: "Linux LVM", 0xEF: "EFI System", 0xFD: "Linux RAID",
}


@dataclass(frozen=True)
class Partition:
    number: int
    start_bytes: int
    size_bytes: int
    kind: str  # the type, as a name when we know it
    name: str = ""  # GPT partition name

    def describe(self) -> dict[str, object]:
        return {"number": self.number, "start_bytes": self.start_bytes,
                "size_bytes": self.size_bytes, "type": self.kind, "name": self.name}

    def text(self) -> str:
        label = f" '{self.name}'" if self.name else ""
        return (f"{self.number}: {self.kind}{label}, {format_bytes(self.size_bytes)} "
                f"at {self.start_bytes}")


@dataclass(frozen=True)
class PartitionTable:
    scheme: str  # "gpt" or "mbr"
    sector_bytes: int
    partitions: tuple[Partition, ...]

    def get(self, number: int) -> Partition | None:
        return next((p for p in self.partitions if p.number == number), None)


def parse_partition_table(read: Read, size_bytes: int) -> PartitionTable | None:
    if size_bytes < 1024:
        return None
    sector0 = read(0, 512)
    for sector_bytes in SECTOR_SIZES:
        table = _gpt(read, size_bytes, sector_bytes)
        if table is not None:
            return table
    if sector0[510:512] != b"\x55\xaa" or _is_boot_sector(sector0):
        return None
    entries = [MBR_ENTRY.unpack_from(sector0, MBR_ENTRIES_OFFSET + 16 * i) for i in range(4)]
    if any(status not in (0x00, 0x80) for status, *_ in entries):
        return None
    if any(kind == MBR_PROTECTIVE for _, _, kind, *_ in entries):
        raise CorruptData("the volume has a protective MBR but no valid GPT header "
                          "(neither the primary nor the backup)")
    return _mbr(read, size_bytes, entries)


def _is_boot_sector(sector0: bytes) -> bool:
    """A FAT/exFAT/NTFS volume boot record (a file system on the whole disk), not an MBR."""
    return (sector0[3:11] in (b"NTFS    ", b"EXFAT   ") or sector0[54:59] == b"FAT12"
            or sector0[54:59] == b"FAT16" or sector0[82:87] == b"FAT32")


# --- GPT -------------------------------------------------------------------------------


def _gpt(read: Read, size_bytes: int, sector_bytes: int) -> PartitionTable | None:
    last_lba = size_bytes // sector_bytes - 1
    primary = _gpt_header(read, sector_bytes, 1)
    if primary is None:
        if read(sector_bytes, 8) != GPT_SIGNATURE:
            return None  # no GPT with this sector size
        primary = _gpt_header(read, sector_bytes, last_lba)  # damaged: try the backup
        if primary is None:
            raise CorruptData("the GPT header and its backup are both damaged (bad CRC32)")
    entries_lba, count, entry_bytes, entries_crc = primary
    raw = read(entries_lba * sector_bytes, count * entry_bytes)
    if zlib.crc32(raw) != entries_crc:
        raise CorruptData("the GPT partition entries are damaged (bad CRC32)")
    partitions: list[Partition] = []
    for index in range(count):
        type_guid, _unique, first, last, _attrs, name = GPT_ENTRY.unpack_from(
            raw, index * entry_bytes)
        if type_guid == bytes(16):
            continue
        type_text = str(uuid.UUID(bytes_le=type_guid))
        partitions.append(_checked(Partition(
            index + 1, first * sector_bytes, (last - first + 1) * sector_bytes,
            GPT_TYPES.get(type_text, type_text),
            name.decode("utf-16-le", errors="replace").split("\x00")[0]), size_bytes))
    return PartitionTable("gpt", sector_bytes, tuple(partitions))


def _gpt_header(read: Read, sector_bytes: int, lba: int) -> tuple[int, int, int, int] | None:
    """(entries LBA, entry count, entry size, entries CRC32) of a valid header, else None."""
    data = read(lba * sector_bytes, GPT_HEADER.size)
    (signature, _revision, header_bytes, header_crc, _reserved, _current, _backup, _first,
     _last, _guid, entries_lba, count, entry_bytes, entries_crc) = GPT_HEADER.unpack(data)
    if signature != GPT_SIGNATURE or not GPT_HEADER.size <= header_bytes <= sector_bytes:
        return None
    header = bytearray(read(lba * sector_bytes, header_bytes))
    header[16:20] = bytes(4)  # the CRC is computed with its own field zeroed
    if zlib.crc32(header) != header_crc:
        return None
    if not 0 < count <= MAX_GPT_ENTRIES or entry_bytes < GPT_ENTRY.size or entry_bytes % 8:
        return None
    return entries_lba, count, entry_bytes, entries_crc


# --- MBR -------------------------------------------------------------------------------


def _mbr(read: Read, size_bytes: int,
         entries: list[tuple[int, bytes, int, bytes, int, int]]) -> PartitionTable:
    partitions: list[Partition] = []
    extended_lba = None
    for number, (_status, _chs, kind, _chs_end, start_lba, sectors) in enumerate(entries, 1):
        if kind == 0 or sectors == 0:
            continue
        if kind in MBR_EXTENDED:
            extended_lba = start_lba
            continue
        partitions.append(_checked(_mbr_partition(number, kind, start_lba, sectors), size_bytes))
    if extended_lba is not None:
        partitions += _logical(read, size_bytes, extended_lba)
    return PartitionTable("mbr", 512, tuple(partitions))


def _logical(read: Read, size_bytes: int, extended_lba: int) -> list[Partition]:
    """Walk the EBR chain; each EBR holds one logical partition and a link to the next."""
    partitions: list[Partition] = []
    ebr_lba = extended_lba
    for number in range(5, 5 + MAX_LOGICAL):
        if ebr_lba * 512 + 512 > size_bytes:
            raise CorruptData(f"an extended boot record lies past the end of the volume "
                              f"(sector {ebr_lba})")
        sector = read(ebr_lba * 512, 512)
        if sector[510:512] != b"\x55\xaa":
            raise CorruptData(f"the extended boot record at sector {ebr_lba} has no signature")
        _, _, kind, _, start, sectors = MBR_ENTRY.unpack_from(sector, MBR_ENTRIES_OFFSET)
        _, _, next_kind, _, next_start, _ = MBR_ENTRY.unpack_from(sector, MBR_ENTRIES_OFFSET + 16)
        if kind and sectors:
            partitions.append(_checked(_mbr_partition(number, kind, ebr_lba + start, sectors),
                                       size_bytes))
        if next_kind not in MBR_EXTENDED or next_start == 0:
            return partitions
        following = extended_lba + next_start
        if following <= ebr_lba:
            raise CorruptData("the chain of extended boot records loops back")
        ebr_lba = following
    raise CorruptData(f"more than {MAX_LOGICAL} logical partitions")


def _mbr_partition(number: int, kind: int, start_lba: int, sectors: int) -> Partition:
    return Partition(number, start_lba * 512, sectors * 512,
                     MBR_TYPES.get(kind, f"type 0x{kind:02x}"))


def _checked(partition: Partition, size_bytes: int) -> Partition:
    if partition.size_bytes <= 0 or partition.start_bytes + partition.size_bytes > size_bytes:
        raise CorruptData(f"partition {partition.number} ({partition.start_bytes}, "
                          f"+{partition.size_bytes}) lies outside the volume ({size_bytes} bytes)")
    return partition
