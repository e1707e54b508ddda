"""VM configurations in a journal: the newest VM_CONFIG at or before a checkpoint, across
retention (the base configurations) and reopening (the index is rebuilt)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from journal_model import frame_directory

from seawall.errors import CorruptData
from seawall.journal import Journal
from seawall.journal.vm_configs import BASE_FILE, configs_in_force
from seawall.wire.frames import Codec, Compressor, encode_records
from seawall.wire.records import (
    Record,
    RecordKind,
    VmConfig,
    checkpoint_record,
    decode_vm_config,
    encode_vm_config,
    validate_header,
    vm_config_record,
    write_record,
)

SIZES = {0: 64 * 1024}
WEB = "5eab0a11-0000-4000-8000-000000000001"
DB = "5eab0a11-0000-4000-8000-000000000002"


def config(uuid: str, name: str, text: str) -> VmConfig:
    return VmConfig(uuid, name, "libvirt-xml", f"<domain><name>{name}</name>{text}</domain>",
                    (("vda", f"{name}-vda"),))


def _journal(root: Path) -> Journal:
    replica = root / "replica-0.img"
    if not replica.exists():
        replica.write_bytes(bytes(SIZES[0]))
    return Journal.open(root / "journal", SIZES, {0: replica})


def _append(journal: Journal, records: list[Record]) -> None:
    frame = encode_records(records, Compressor(Codec.ZSTD))
    journal.append_frame(frame, frame_directory(frame))
    journal.sync()


def test_the_record_codec_round_trips_and_checks_its_header() -> None:
    web = config(WEB, "web", "<memory>1024</memory>")
    record = vm_config_record(7, 99, web)
    assert record.kind == RecordKind.VM_CONFIG and record.length == len(record.payload)
    validate_header(record.header())
    assert decode_vm_config(record.payload, 7, 99) == VmConfig(
        web.uuid, web.name, web.format, web.definition, web.volumes, 7, 99)
    with pytest.raises(CorruptData, match="record 7"):
        validate_header(record._replace(length=1).header())
    with pytest.raises(CorruptData, match="record 7"):
        validate_header(record._replace(volume=1).header())
    with pytest.raises(CorruptData, match="not a VM configuration"):
        decode_vm_config(b'{"uuid": "x"}', 7, 99)
    with pytest.raises(CorruptData, match="not a VM configuration"):
        decode_vm_config(encode_vm_config(web)[:-1], 7, 99)


def test_configs_in_force_is_the_newest_of_each_vm_at_or_before_the_seq() -> None:
    base = [VmConfig(WEB, "web", "qmp-json", "{}", seq=3)]
    records = [VmConfig(DB, "db", "qmp-json", "1", seq=5),
               VmConfig(WEB, "web", "qmp-json", "2", seq=8),
               VmConfig(WEB, "web2", "qmp-json", "3", seq=12)]
    assert configs_in_force([], records, 4) == {}
    assert configs_in_force(base, records, 4) == {WEB: base[0]}
    assert configs_in_force(base, records, 8) == {WEB: records[1], DB: records[0]}
    assert configs_in_force(base, records, 11)[WEB].definition == "2"
    assert configs_in_force(base, records, 12)[WEB].name == "web2"


def test_a_checkpoint_keeps_its_configuration_after_retention_and_reopen(
        tmp_path: Path) -> None:
    web1, db1 = config(WEB, "web", "<memory>1</memory>"), config(DB, "db", "<vcpu>1</vcpu>")
    web2 = config(WEB, "web", "<memory>2</memory>")
    journal = _journal(tmp_path)
    _append(journal, [Record(1, 10, RecordKind.SYNC_BEGIN), vm_config_record(2, 11, web1),
                      vm_config_record(3, 11, db1), write_record(4, 12, 0, 0, b"a" * 512),
                      Record(5, 13, RecordKind.SYNC_END), checkpoint_record(6, 14, "c1")])
    _append(journal, [write_record(7, 15, 0, 512, b"b" * 512), vm_config_record(8, 16, web2),
                      checkpoint_record(9, 17, "c2")])
    _append(journal, [write_record(10, 18, 0, 0, b"c" * 512), checkpoint_record(11, 19, "c3")])
    at_c1 = journal.vm_configs_at(6)
    assert at_c1[WEB].definition == web1.definition and at_c1[WEB].seq == 2
    assert at_c1[DB].definition == db1.definition
    assert journal.vm_configs_at(9)[WEB].definition == web2.definition
    assert journal.vm_configs_at(9)[WEB].volumes == (("vda", "web-vda"),)
    assert journal.vm_configs_at(1) == {}

    # The first frame goes: its records carried web1 and db1. c2 (the oldest checkpoint
    # left) still finds db1, now from the base, and web2 from its record.
    assert journal.apply_through(6) == 6
    assert journal.oldest_checkpoint().seq == 9
    base = json.loads((tmp_path / "journal" / BASE_FILE).read_text())
    assert {(c["name"], c["seq"]) for c in base} == {("web", 2), ("db", 3)}
    at_c2 = journal.vm_configs_at(9)
    assert at_c2[DB].definition == db1.definition and at_c2[DB].seq == 3
    assert at_c2[WEB].definition == web2.definition
    # The second goes too: web2 is in the base now, and c3 has both.
    assert journal.apply_through(9) == 9
    journal.close()
    reopened = _journal(tmp_path)  # the index rebuilt from the segments and the base
    at_c3 = reopened.vm_configs_at(11)
    assert (at_c3[WEB].definition, at_c3[WEB].seq) == (web2.definition, 8)
    assert (at_c3[DB].definition, at_c3[DB].seq) == (db1.definition, 3)
    reopened.close()


def test_a_corrupt_base_file_is_refused(tmp_path: Path) -> None:
    _journal(tmp_path).close()
    (tmp_path / "journal" / BASE_FILE).write_text("[{\"uuid\": 1}]")
    with pytest.raises(CorruptData, match=BASE_FILE):
        _journal(tmp_path)
