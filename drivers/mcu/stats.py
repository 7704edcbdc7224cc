"""Counters of the host's MCU link, shared by the link and the client that reports them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LinkStats:
    """Counters over the link's life; :attr:`McuLink.stats` hands out snapshots.

    The ``bad_messages``, ``stale_answers`` and ``timeouts`` counters are the client's
    (payloads it could not decode, answers nobody waited for any more, requests that got
    no answer in time); they live here so one snapshot describes the whole conversation.
    """

    frames_sent: int = 0  # every frame written, retransmissions included
    frames_received: int = 0  # valid frames from the MCU (acks, NAKs, answers, pushes)
    messages_sent: int = 0  # messages handed to the link (several may share a frame)
    retransmits: int = 0  # frames written again (go-back-N after a NAK or an RTO)
    rto_expiries: int = 0
    naks: int = 0  # NAK frames received
    naks_ignored: int = 0  # NAKs within one RTO of a go-back-N for the same frame
    discards: int = 0  # decoder discards: bad LEN / SEQ / CRC / SYNC, resync to 0x7E
    discarded_bytes: int = 0  # bytes the decoder threw away (discards and idle drops)
    idle_drops: int = 0  # partial frames dropped after RX_IDLE_MS of silence
    seq_resyncs: int = 0
    bad_messages: int = 0
    stale_answers: int = 0
    timeouts: int = 0
    srtt_ms: float | None = None
    rto_ms: float = 0.0
