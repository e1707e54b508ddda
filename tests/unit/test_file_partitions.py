"""Partition tables made by sfdisk (util-linux) on sparse files, parsed by our pure parser;
and damaged or crafted tables refused with CorruptData, never read as something else."""

from __future__ import annotations

import json
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from seawall.errors import CorruptData
from seawall.manager.files.partitions import parse_partition_table

MIB = 1 << 20


def _image(path: Path, size_bytes: int, script: str | None) -> bytes:
    with open(path, "wb") as file:
        file.truncate(size_bytes)
    if script is not None:
        subprocess.run(["sfdisk", "-q", str(path)], input=script, text=True, check=True,
                       capture_output=True)
    return path.read_bytes()


def _parse(data: bytes) -> object:
    return parse_partition_table(lambda offset, length: data[offset : offset + length],
                                 len(data))


def _sfdisk_json(path: Path) -> list[dict[str, object]]:
    out = subprocess.run(["sfdisk", "--json", str(path)], capture_output=True, text=True,
                         check=True).stdout
    partitions: list[dict[str, object]] = json.loads(out)["partitiontable"]["partitions"]
    return partitions


def test_gpt_as_sfdisk_writes_it(tmp_path: Path) -> None:
    path = tmp_path / "gpt.img"
    data = _image(path, 64 * MIB, "label: gpt\n"
                  "start=2048, size=16384, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp\n"
                  "size=40960, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n"
                  "type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n")
    table = _parse(data)
    assert table is not None and table.scheme == "gpt" and table.sector_bytes == 512
    expected = _sfdisk_json(path)
    assert [(p.number, p.start_bytes, p.size_bytes) for p in table.partitions] == [
        (int(str(e["node"])[-1]), int(str(e["start"])) * 512, int(str(e["size"])) * 512)
        for e in expected]
    assert [(p.kind, p.name) for p in table.partitions] == [
        ("EFI System", "esp"), ("Linux filesystem", "root"), ("Linux filesystem", "")]
    assert table.get(2) is table.partitions[1] and table.get(4) is None


def test_gpt_primary_damaged_uses_backup_both_damaged_refused(tmp_path: Path) -> None:
    data = bytearray(_image(tmp_path / "gpt.img", 16 * MIB, "label: gpt\nstart=2048\n"))
    data[512 + 40] ^= 0xFF  # inside the primary header: its CRC32 no longer matches
    table = _parse(bytes(data))
    assert table is not None and table.partitions[0].start_bytes == 2048 * 512
    data[len(data) - 512 + 40] ^= 0xFF  # the backup header too
    with pytest.raises(CorruptData, match="both damaged"):
        _parse(bytes(data))


def test_gpt_entries_damaged_refused(tmp_path: Path) -> None:
    data = bytearray(_image(tmp_path / "gpt.img", 16 * MIB, "label: gpt\nstart=2048\n"))
    data[1024 + 40] ^= 0x01  # first entry's start LBA, covered by the entries' CRC32
    with pytest.raises(CorruptData, match="entries are damaged"):
        _parse(bytes(data))


def test_gpt_partition_past_the_end_refused(tmp_path: Path) -> None:
    data = bytearray(_image(tmp_path / "gpt.img", 16 * MIB, "label: gpt\nstart=2048\n"))
    struct.pack_into("<Q", data, 1024 + 40, 1 << 40)  # last LBA far past the volume
    struct.pack_into("<I", data, 512 + 88, zlib.crc32(data[1024 : 1024 + 128 * 128]))
    header = bytearray(data[512 : 512 + 92])
    header[16:20] = bytes(4)
    struct.pack_into("<I", data, 512 + 16, zlib.crc32(header))
    with pytest.raises(CorruptData, match="outside the volume"):
        _parse(bytes(data))


def test_mbr_with_logical_partitions(tmp_path: Path) -> None:
    path = tmp_path / "mbr.img"
    data = _image(path, 64 * MIB, "label: dos\n"
                  "start=2048, size=8192, type=83\n"
                  "size=16384, type=c\n"
                  "size=2048, type=7\n"
                  "size=30000, type=5\n"
                  "size=8192, type=83\n"
                  "size=4096, type=82\n")
    table = _parse(data)
    assert table is not None and table.scheme == "mbr"
    expected = [e for e in _sfdisk_json(path) if e["type"] != "5"]
    assert [(p.number, p.start_bytes, p.size_bytes) for p in table.partitions] == [
        (int(str(e["node"])[len(str(path)):]), int(str(e["start"])) * 512,
         int(str(e["size"])) * 512) for e in expected]
    assert [p.number for p in table.partitions] == [1, 2, 3, 5, 6]
    assert [p.kind for p in table.partitions] == ["Linux", "FAT32 (LBA)", "NTFS/exFAT", "Linux",
                                                  "Linux swap"]


def test_mbr_ebr_loop_refused(tmp_path: Path) -> None:
    data = bytearray(_image(tmp_path / "mbr.img", 32 * MIB, "label: dos\n"
                            "start=2048, size=2048\nsize=2048\nsize=2048\n"
                            "size=20000, type=5\nsize=4096\nsize=4096\n"))
    extended_lba = struct.unpack_from("<I", data, 446 + 3 * 16 + 8)[0]
    first_ebr = extended_lba * 512
    second_lba = extended_lba + struct.unpack_from("<I", data, first_ebr + 446 + 16 + 8)[0]
    table = _parse(bytes(data))
    assert table is not None and [p.number for p in table.partitions] == [1, 2, 3, 5, 6]
    # The second EBR links to itself (links are relative to the extended partition).
    struct.pack_into("<B", data, second_lba * 512 + 446 + 16 + 4, 5)
    struct.pack_into("<I", data, second_lba * 512 + 446 + 16 + 8, second_lba - extended_lba)
    with pytest.raises(CorruptData, match="loops back"):
        _parse(bytes(data))


def test_no_table_whole_disk_file_systems_and_protective_mbr(tmp_path: Path) -> None:
    assert _parse(bytes(4 * MIB)) is None
    ext4 = tmp_path / "ext4.img"
    _image(ext4, 8 * MIB, None)
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", str(ext4)], check=True)
    assert _parse(ext4.read_bytes()) is None
    fat = tmp_path / "fat.img"
    _image(fat, 8 * MIB, None)
    subprocess.run(["mkfs.vfat", str(fat)], check=True, capture_output=True)
    fat_data = fat.read_bytes()
    assert fat_data[510:512] == b"\x55\xaa"  # looks like an MBR, but is a FAT boot sector
    assert _parse(fat_data) is None

    data = bytearray(_image(tmp_path / "gpt.img", 16 * MIB, "label: gpt\nstart=2048\n"))
    data[512:1024] = bytes(512)
    data[len(data) - 512 :] = bytes(512)
    with pytest.raises(CorruptData, match="protective MBR"):
        _parse(bytes(data))
