"""Field layouts of the order messages the fake gateway sends (server version 178).

`openOrder` and `completedOrder` are the longest messages of the protocol: ib_async's decoder
unpacks them field by field, and a field too few makes it drop the whole message with nothing
but a log line. The layouts below follow `ib_async.decoder.Decoder.openOrder` /
`completedOrder` for an order without combo legs, scale, hedge, algo or conditions (all the
fake accepts), writing empty text for every value the fake does not model — ib_async reads
empty text as "unset".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scalper.instruments import spec
from tests.fakes.tws.contracts import contract_fields
from tests.fakes.tws.protocol import Out

if TYPE_CHECKING:
    from tests.fakes.tws.orders import Execution, FakeOrder

UNSET = ""


def _blank(count: int) -> list[object]:
    return [UNSET] * count


def open_order(order: FakeOrder) -> list[object]:
    """`openOrder`: the order, its contract and its state (`Decoder.openOrder`)."""
    return [
        Out.OPEN_ORDER, order.order_id, *contract_fields(order.listing),
        order.action, order.quantity, order.order_type, order.limit_price, order.stop_price,
        order.tif, order.oca_group, order.account, UNSET, 0, order.order_ref,
        order.client_id, order.perm_id, 0, 0, UNSET, UNSET,  # outsideRth .. goodAfterTime
        UNSET, UNSET, UNSET, UNSET,  # sharesAllocation, faGroup, faMethod, faPercentage
        *_blank(14),  # modelCode .. stockRangeUpper
        UNSET, 0, 0, 0, UNSET, order.oca_type, 0, 0, UNSET,  # displaySize .. nbboPriceCap
        order.parent_id, 0, UNSET, UNSET, UNSET, UNSET,  # parentId .. deltaNeutralAuxPrice
        *_blank(7),  # continuousUpdate .. comboLegsDescrip
        0, 0, 0,  # combo legs, order combo legs, smart combo routing params
        UNSET, UNSET, UNSET,  # scale init/subs level size, price increment
        UNSET,  # hedgeType
        0, UNSET, UNSET, 0, 0,  # optOutSmartRouting .. notHeld, no delta-neutral contract
        UNSET,  # algoStrategy
        0, 0, order.status, *_blank(12), UNSET, UNSET,  # solicited .. warningText
        0, 0,  # randomizeSize, randomizePrice
        0,  # conditions
        *_blank(8),  # adjustedOrderType .. adjustableTrailingUnit
        UNSET, UNSET, UNSET,  # softDollarTier name, value, display name
        UNSET, 0, 0, UNSET, 0,  # cashQty .. usePriceMgmtAlgo
        UNSET, 0, 0,  # duration, postToAts, autoCancelParent
        *_blank(5),  # minTradeQty .. midOffsetAtHalf
    ]  # fmt: skip


def completed_order(order: FakeOrder, completed_at: str) -> list[object]:
    """`completedOrder`: a filled, cancelled or rejected order (`Decoder.completedOrder`)."""
    return [
        Out.COMPLETED_ORDER, *contract_fields(order.listing),
        order.action, order.quantity, order.order_type, order.limit_price, order.stop_price,
        order.tif, order.oca_group, order.account, UNSET, 0, order.order_ref,
        order.perm_id, 0, 0, UNSET, UNSET,  # permId, outsideRth .. goodAfterTime
        UNSET, UNSET, UNSET,  # faGroup, faMethod, faPercentage
        *_blank(13),  # modelCode .. stockRangeUpper
        UNSET, 0, 0, UNSET, order.oca_type, 0, UNSET, UNSET, UNSET, UNSET,  # displaySize ..
        *_blank(5),  # continuousUpdate .. comboLegsDescrip
        0, 0, 0,  # combo legs, order combo legs, smart combo routing params
        UNSET, UNSET, UNSET,  # scale
        UNSET,  # hedgeType
        UNSET, UNSET, 0, 0,  # clearingAccount, clearingIntent, notHeld, no delta-neutral
        UNSET,  # algoStrategy
        0, order.status, 0, 0,  # solicited, status, randomizeSize, randomizePrice
        0,  # conditions
        UNSET, UNSET, UNSET, 0, 0,  # trailStopPrice .. isOmsContainer
        UNSET, order.filled, UNSET, 0, UNSET, 0, 0, UNSET,  # autoCancelDate .. parentPermId
        completed_at, order.completed_status,
        *_blank(5),  # minTradeQty .. midOffsetAtHalf
    ]  # fmt: skip


def order_status(order: FakeOrder) -> list[object]:
    """`orderStatus` (no version field since server version 136)."""
    last = order.executions[-1].price if order.executions else 0.0
    return [
        Out.ORDER_STATUS, order.order_id, order.status, order.filled, order.remaining,
        order.average_price, order.perm_id, order.parent_id, last, order.client_id,
        order.why_held, UNSET,
    ]  # fmt: skip


def execution_details(req_id: int, execution: Execution, time_text: str) -> list[object]:
    """`execDetails`, for a live fill (`req_id` -1) or a `reqExecutions` answer."""
    order = execution.order
    side = "BOT" if order.action == "BUY" else "SLD"
    return [
        Out.EXECUTION_DATA, req_id, order.order_id, *contract_fields(order.listing),
        execution.exec_id, time_text, order.account, spec(order.listing.contract.symbol).exchange,
        side, execution.shares, execution.price, order.perm_id, order.client_id, 0,
        execution.cumulative, execution.average_price, order.order_ref, UNSET, UNSET, UNSET,
        1, 0,  # lastLiquidity (added), pendingPriceRevision
    ]  # fmt: skip


def commission_report(execution: Execution) -> list[object]:
    """`commissionReport` for one execution (realized P&L left unset, as IB does for opens)."""
    return [
        Out.COMMISSION_REPORT,
        1,
        execution.exec_id,
        execution.commission,
        "USD",
        UNSET,
        UNSET,
        UNSET,
    ]
