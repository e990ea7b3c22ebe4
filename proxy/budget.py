"""Budget holds: a budgeted request reserves its worst case before any upstream call,
records what each upstream call cost, and settles to that when it ends.

The guard opens a ``Hold`` for a key with a budget and leaves it on the request's
context (``RequestContext.hold``); the pipeline passes it to each call. Before each provider call (the first, and each
fallback) ``ensure`` tops the reservation up to what was charged so far plus that call's
worst case (``worst_case``); a top-up that does not fit is a 429 ``budget_exceeded`` and
the call is not made. Each call that answered is charged its cost, or its worst case if
the reply cannot be priced; a call that failed is charged nothing. A call given up on
after it was sent (a stream the client left before it completed, a request cancelled at
shutdown or when its client left) is charged its worst case, since the provider
finishes and bills the generation anyway; a stream the provider broke off is
charged the partial images it sent. When the request ends the reservations are given
back and the charges added to the key's spend, in one step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from proxy.catalogue.bound import ask_of, bounds, partials_cost
from proxy.catalogue.cost import usd as to_usd
from proxy.catalogue.load import Catalogue
from proxy.catalogue.measure import reply_cost
from proxy.catalogue.schema import Entry
from proxy.controls import ClientKey
from proxy.errors import Forbidden
from proxy.models import EditJob, EditResult
from proxy.pricing import PriceTable
from proxy.quotas import (
    MICRO,
    QuotaStore,
    Refusal,
    Reservation,
    micro_usd,
    refusal_error,
)

if TYPE_CHECKING:
    from proxy.routing import Route


def worst_case(
    catalogue: Catalogue | None,
    route: Route,
    job: EditJob,
    *,
    native_n: bool,
    unpriced_image_usd: float | None,
) -> float | None:
    """The most ``job`` can cost on ``route`` (n calls of one image unless native_n),
    from the catalogue (``proxy.catalogue.bound``, as the quote's max_cost); None when
    the model has no bound and no fallback price is configured."""
    entry = None if catalogue is None else catalogue.get(route.price_key)
    most = bounds(entry, ask_of(job, native_n=native_n)).high
    if most is not None:
        return to_usd(most)
    if unpriced_image_usd is None:
        return None
    return round(unpriced_image_usd * (job.n or 1), 8)


class Hold:
    """One budgeted request's reservations and charges, in micro-USD."""

    def __init__(
        self,
        store: QuotaStore,
        name: str,
        rule: ClientKey,
        prices: PriceTable,
        unpriced_image_usd: float | None,
    ) -> None:
        self._store = store
        self._name = name
        self._rule = rule
        self._prices = prices
        self._unpriced = unpriced_image_usd
        self._reservations: list[Reservation] = []
        self.held = 0  # reserved, or let through uncounted while the store is down
        self.charged = 0

    def _worst(self, route: Route, job: EditJob, *, native_n: bool = True) -> float:
        worst = worst_case(
            self._prices.catalogue, route, job, native_n=native_n,
            unpriced_image_usd=self._unpriced,
        )  # fmt: skip
        if worst is None:
            raise Forbidden(
                f"model '{route.provider}/{route.model}' has no price and key "
                f"'{self._name}' has a budget, so its cost could not be counted; use "
                "a priced model (the operator may set limits.unpriced_image_usd)",
                param="model",
                code="model_unpriced",
            )
        return worst

    async def ensure(self, route: Route, job: EditJob, *, native_n: bool) -> None:
        """Reserve room for one more call's worst case; 429 if it does not fit."""
        need = self.charged + micro_usd(self._worst(route, job, native_n=native_n))
        need -= self.held
        if need <= 0:
            return
        got = await self._store.reserve(self._name, self._rule, need)
        if isinstance(got, Refusal):
            raise refusal_error(self._name, self._rule, got)
        self._reservations.append(got)
        self.held += need

    def _unpriceable(self, route: Route, job: EditJob, images: int) -> float:
        """An answer without a cost: the fallback price per image for an unpriced
        model, else the call's worst case (usage missing or not priceable)."""
        if self._unpriced is not None and self._entry(route) is None:
            return self._unpriced * images
        return self._worst(route, job)

    def _entry(self, route: Route) -> Entry | None:
        """The route's catalogue row if it has a price (the budget counts from it)."""
        cat = self._prices.catalogue
        entry = None if cat is None else cat.get(route.price_key)
        return None if entry is None or entry.price is None else entry

    def charge(self, route: Route, job: EditJob, result: EditResult) -> None:
        cost = result.cost
        if cost is None:
            entry = self._entry(route)
            spent = None if entry is None else reply_cost(entry, job, result)
            cost = None if spent is None else to_usd(spent)
        if cost is None:
            cost = self._unpriceable(route, job, result.images)
        self.charged += micro_usd(cost)

    def charge_worst(self, route: Route, job: EditJob) -> None:
        self.charged += micro_usd(self._worst(route, job))

    def charge_stream(
        self,
        route: Route,
        job: EditJob,
        *,
        cost: float | None,
        images: int,
        partials: int,
        abandoned: bool,
    ) -> None:
        """Charge a relayed stream for what it delivered (see the module docstring)."""
        usd: float | None
        if images:
            usd = cost if cost is not None else self._unpriceable(route, job, images)
        elif abandoned:
            usd = 0.0
        else:
            spent = partials_cost(self._entry(route), partials)
            usd = None if spent is None else to_usd(spent)
            if usd is None:
                usd = self._worst(route, job) if partials else 0.0
        if abandoned and images < (job.n or 1):
            # The provider goes on to finish what the client walked away from.
            usd = max(usd, self._worst(route, job))
        self.charged += micro_usd(usd)

    async def settle(self) -> None:
        await self._store.settle(self._name, self._reservations, self.charged / MICRO)


async def charged(
    hold: Hold | None, route: Route, job: EditJob, call: Awaitable[EditResult]
) -> EditResult:
    """``call``'s result, charged to the request's budget ``hold`` if it has one."""
    try:
        result = await call
    except asyncio.CancelledError:
        if hold is not None:
            # Given up after it was sent (the client left, shutdown): the provider
            # may still finish and bill it.
            hold.charge_worst(route, job)
        raise
    if hold is not None:
        hold.charge(route, job, result)
    return result
