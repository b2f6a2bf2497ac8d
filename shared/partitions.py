"""Which partition an event belongs to: events of one person stay in one partition, in order."""

from zlib import crc32


def partition_of(key: str, partitions: int) -> str:
    # crc32 is stable across processes and Python versions, unlike hash().
    return str(crc32(key.encode("utf-8")) % partitions)
