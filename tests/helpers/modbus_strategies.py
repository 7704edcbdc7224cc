"""Hypothesis strategies for Modbus requests, shared by the framer, PDU and bank tests."""

from __future__ import annotations

from hypothesis import strategies as st

from smartpole.drivers.modbus.pdu import MAX_PDU_BYTES, Request

U16 = st.integers(0, 0xFFFF)
UNIT = st.integers(0, 255)
# The most data one FC 15/16 request carries: the PDU limit less function, address,
# quantity and byte count.
MAX_DATA_BYTES = MAX_PDU_BYTES - 6
FUNCTIONS = [1, 2, 3, 4, 5, 6, 15, 16]


def bits(count: int) -> st.SearchStrategy[tuple[int, ...]]:
    # One integer rather than a list of count draws keeps 1968-coil writes cheap to generate.
    return st.integers(0, (1 << count) - 1).map(lambda n: tuple((n >> i) & 1 for i in range(count)))


@st.composite
def requests(draw: st.DrawFn, counts: st.SearchStrategy[int] = U16) -> Request:
    """Any request the framings can carry, including ones a device must refuse.

    ``counts`` draws the quantity of reads (any 16-bit number by default).
    """
    unit, function, address = draw(UNIT), draw(st.sampled_from(FUNCTIONS)), draw(U16)
    if function <= 4:
        return Request(unit, function, address, draw(counts))
    if function in (5, 6):
        return Request(unit, function, address, 1, (draw(U16),))
    if function == 15:
        count = draw(st.integers(0, 8 * MAX_DATA_BYTES))
        return Request(unit, function, address, count, draw(bits(count)))
    count = draw(st.integers(0, MAX_DATA_BYTES // 2))
    return Request(
        unit, function, address, count, tuple(draw(st.lists(U16, min_size=count, max_size=count)))
    )
