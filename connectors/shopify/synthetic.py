"""A deterministic synthetic Shopify store: customers, products and a couple of years of orders.

Pure data, no I/O. Nodes are kept as dicts already in the Admin GraphQL response shape (keys are
schema field names), so the emulator only has to project the fields a query selects. Keys starting
with ``_`` are the emulator's bookkeeping (parsed times, numeric ids) and are never selectable.

The mix is meant to look like a small direct-to-consumer shop: mostly one-time buyers, some repeat
customers, a few whales; guest checkouts (some sharing a registered customer's email), cancelled,
refunded and test orders, discount codes and UTM-tagged first visits. ``malformed=True`` adds a
handful of records a worker must refuse (invalid email, negative total, unknown currency, a
non-numeric amount) so validation paths can be exercised.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

Node = dict[str, Any]

CUSTOMER_BASE = 7_000_000_000_000
ORDER_BASE = 5_000_000_000_000
PRODUCT_BASE = 8_000_000_000_000
SHOP_CURRENCY = "USD"
SHOP_HOST = "https://demo-shop.example.com"

FIRST_NAMES = (
    "Olivia",
    "Liam",
    "Emma",
    "Noah",
    "Ava",
    "Oliver",
    "Sophia",
    "Elijah",
    "Isabella",
    "James",
    "Mia",
    "William",
    "Amelia",
    "Benjamin",
    "Harper",
    "Lucas",
    "Evelyn",
    "Henry",
    "Abigail",
    "Theodore",
    "Emily",
    "Jack",
    "Ella",
    "Levi",
    "Elizabeth",
    "Alexander",
    "Camila",
    "Jackson",
    "Luna",
    "Mateo",
    "Sofia",
    "Daniel",
    "Avery",
    "Michael",
    "Mila",
    "Mason",
    "Aria",
    "Sebastian",
    "Scarlett",
    "Ethan",
    "Penelope",
    "Logan",
    "Layla",
    "Owen",
    "Chloe",
    "Samuel",
    "Victoria",
    "Jacob",
    "Madison",
    "Asher",
    "Eleanor",
    "Aiden",
    "Grace",
    "John",
    "Nora",
    "Joseph",
    "Riley",
    "Wyatt",
    "Zoey",
    "David",
    "Hannah",
    "Leo",
    "Hazel",
    "Luke",
    "Lily",
    "Julian",
    "Ellie",
    "Hudson",
    "Violet",
    "Grayson",
    "Lillian",
    "Matthew",
    "Zoe",
    "Ezra",
)
LAST_NAMES = (
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "Roberts",
    "Muller",
    "Schmidt",
    "Dubois",
    "Rossi",
    "Tanaka",
)
EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com", "shop.example.org")
#: (country, weight, phone prefix)
COUNTRIES = (
    ("US", 55, "+1415555"),
    ("CA", 10, "+1604555"),
    ("GB", 12, "+44794600"),
    ("AU", 6, "+6149155"),
    ("DE", 8, "+491511234"),
    ("FR", 5, "+3361234"),
    ("NL", 4, "+3161234"),
)
#: EmailMarketingState mix: (state, weight); None means the customer has no email address at all
CONSENT_MIX = (
    ("SUBSCRIBED", 55),
    ("NOT_SUBSCRIBED", 25),
    ("UNSUBSCRIBED", 10),
    ("PENDING", 5),
    ("INVALID", 3),
    (None, 2),
)
#: first-visit channels: (utm source, utm medium, visit source, referrer, weight)
CHANNELS = (
    ("google", "cpc", "google", "https://www.google.com/", 22),
    ("facebook", "paid", "facebook", "https://m.facebook.com/", 14),
    ("instagram", "paid", "instagram", "https://l.instagram.com/", 8),
    ("newsletter", "email", "email", None, 12),
    ("klaviyo", "email", "email", None, 6),
    ("tiktok", "paid", "tiktok", "https://www.tiktok.com/", 4),
    (None, None, "google", "https://www.google.com/", 14),
    (None, None, "direct", None, 15),
    (None, None, "bing", "https://www.bing.com/", 2),
    (None, None, "referral", "https://blog.example.org/best-gear", 3),
)
DISCOUNT_CODES = ("WELCOME10", "SUMMER20", "VIP15", "FREESHIP", "BFCM30", "SPRING5")
COUNTRY_CUM = list(itertools.accumulate(c[1] for c in COUNTRIES))
CONSENT_CUM = list(itertools.accumulate(w for _, w in CONSENT_MIX))
CHANNEL_CUM = list(itertools.accumulate(c[4] for c in CHANNELS))
KIND_CUM = list(itertools.accumulate((15, 55, 25, 4, 1)))
PRODUCT_WORDS = (
    "Classic Tee",
    "Hoodie",
    "Crew Socks",
    "Canvas Tote",
    "Water Bottle",
    "Running Cap",
    "Rain Jacket",
    "Wool Beanie",
    "Travel Mug",
    "Yoga Mat",
    "Leather Wallet",
    "Sunglasses",
    "Backpack",
    "Trail Shorts",
    "Linen Shirt",
    "Scarf",
    "Gift Card",
)


def iso(ts: datetime) -> str:
    """Shopify's DateTime rendering: UTC, whole seconds, ``Z``."""
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    return ts.isoformat(timespec="seconds")[:19] + "Z"


def money(cents: int, currency: str = SHOP_CURRENCY) -> Node:
    """A MoneyBag in the shop's currency; amounts are kept as integer cents while generating."""
    sign = "-" if cents < 0 else ""
    return {"shopMoney": {"amount": f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}", "currencyCode": currency}}


@dataclass
class Changes:
    """What one :meth:`SyntheticStore.advance` touched (gids)."""

    new_orders: list[str] = field(default_factory=list)
    updated_orders: list[str] = field(default_factory=list)
    new_customers: list[str] = field(default_factory=list)
    updated_customers: list[str] = field(default_factory=list)


class SyntheticStore:
    """Deterministic in-memory shop data for a seed; ``advance`` moves its clock and adds orders."""

    def __init__(
        self,
        seed: int,
        customers: int,
        now: datetime,
        years: float = 2.0,
        *,
        malformed: bool = False,
    ) -> None:
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = now.astimezone(UTC).replace(microsecond=0)
        self.start = self.now - timedelta(days=365.25 * years)
        self.customers: list[Node] = []
        self.orders: list[Node] = []
        self.products: list[Node] = []
        #: label -> gid of the deliberately malformed records (empty unless ``malformed``)
        self.malformed_ids: dict[str, str] = {}
        #: bumped on every change so readers can cache sorted views
        self.version = 0
        self._customer_seq = itertools.count(1)
        self._order_seq = itertools.count(1001)
        self._guest_seq = itertools.count(1)
        self._by_id: dict[str, Node] = {}
        self._product_cum: list[float] = []
        self._build_catalogue()
        for _ in range(customers):
            self._new_customer(self._random_time(self.start, self.now))
        self._build_history()
        if malformed:
            self._add_malformed()

    # -- accessors ---------------------------------------------------------------
    def node(self, gid: str) -> Node:
        return self._by_id[gid]

    def find(self, gid: str) -> Node | None:
        return self._by_id.get(gid)

    def customer_emails(self) -> set[str]:
        return {c["defaultEmailAddress"]["emailAddress"].lower() for c in self.customers if c["defaultEmailAddress"]}

    def all_order_emails(self) -> set[str]:
        return {o["email"].lower() for o in self.orders if o["email"]}

    def guest_orders(self) -> list[Node]:
        return [o for o in self.orders if o["customer"] is None]

    def cancelled_orders(self) -> list[Node]:
        return [o for o in self.orders if o["cancelledAt"] is not None]

    def refunded_orders(self) -> list[Node]:
        """Orders whose current total is below the original (partly or fully refunded)."""
        return [
            o for o in self.orders if o["_original_cents"] is not None and o["_current_cents"] < o["_original_cents"]
        ]

    def test_orders(self) -> list[Node]:
        return [o for o in self.orders if o["test"]]

    def orders_of(self, customer_gid: str) -> list[Node]:
        return [o for o in self.orders if o["customer"] is not None and o["customer"]["id"] == customer_gid]

    def updated_since(self, kind: str, since: datetime) -> list[Node]:
        """Nodes of ``kind`` ("orders" or "customers") with updatedAt >= ``since``."""
        nodes = self.orders if kind == "orders" else self.customers
        return [n for n in nodes if n["_updated"] >= since]

    # -- evolution ---------------------------------------------------------------
    def advance(self, days: float, new_orders: int) -> Changes:
        """Move the clock ``days`` forward; add orders, a few refunds and consent changes in that span."""
        rng = self.rng
        start, self.now = self.now, self.now + timedelta(days=days)
        after = start + timedelta(seconds=1)  # everything this call does happens after the old "now"
        changes = Changes()
        for _ in range(new_orders):
            created = self._random_time(after, self.now)
            if rng.random() < 0.2:
                customer = self._new_customer(max(after, created - timedelta(minutes=rng.randint(1, 30))))
                changes.new_customers.append(customer["id"])
            else:
                customer = rng.choice(self.customers)
            order = self._new_order(customer, created, guest_email=None)
            changes.new_orders.append(order["id"])
        # a few refunds of earlier orders and consent changes, all inside the window
        for order in rng.sample(self.orders, k=min(len(self.orders), max(1, new_orders // 10))):
            if order["id"] in changes.new_orders or order["_original_cents"] is None:
                continue
            when = self._random_time(max(after, order["_updated"]), self.now)
            self._refund(order, when, full=rng.random() < 0.3)
            changes.updated_orders.append(order["id"])
        for customer in rng.sample(self.customers, k=min(len(self.customers), max(1, new_orders // 20))):
            email = customer["defaultEmailAddress"]
            if email is None or customer["id"] in changes.new_customers:
                continue
            when = self._random_time(max(after, customer["_updated"]), self.now)
            email["marketingState"] = "UNSUBSCRIBED" if email["marketingState"] == "SUBSCRIBED" else "SUBSCRIBED"
            email["marketingUpdatedAt"] = iso(when)
            self._touch(customer, when)
            changes.updated_customers.append(customer["id"])
        changes.updated_customers.extend(
            o["customer"]["id"] for o in map(self.node, changes.new_orders) if o["customer"] is not None
        )
        self.version += 1
        return changes

    # -- generation --------------------------------------------------------------
    def _random_time(self, lo: datetime, hi: datetime) -> datetime:
        span = max(0, int((hi - lo).total_seconds()))
        return lo + timedelta(seconds=self.rng.randint(0, span))

    def _touch(self, node: Node, when: datetime) -> None:
        when = min(when, self.now)
        if when > node["_updated"]:
            node["_updated"] = when
            node["updatedAt"] = iso(when)

    def _build_catalogue(self) -> None:
        rng = self.rng
        for k in range(50):
            word = PRODUCT_WORDS[k % len(PRODUCT_WORDS)]
            variant = ("", " Pro", " Lite", " XL")[k // len(PRODUCT_WORDS)]
            price = rng.choice((12, 18, 24, 29, 35, 45, 59, 79, 99, 149)) * 100 - 1  # cents
            if word == "Gift Card":
                price = 5000
            gid = f"gid://shopify/Product/{PRODUCT_BASE + k}"
            self.products.append({"id": gid, "title": f"{word}{variant}", "sku": f"SKU-{k + 1:04d}", "_price": price})
            self._by_id[gid] = self.products[-1]
            # a few best sellers, a long tail
            self._product_cum.append((self._product_cum[-1] if k else 0.0) + 1.0 / (k + 1) ** 0.8)

    def _new_customer(self, created: datetime) -> Node:
        rng = self.rng
        i = next(self._customer_seq)
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        country, _, prefix = rng.choices(COUNTRIES, cum_weights=COUNTRY_CUM)[0]
        state = rng.choices(CONSENT_MIX, cum_weights=CONSENT_CUM)[0][0]
        email: Node | None = None
        if state is not None:
            address = f"{first}.{last}{i}@{rng.choice(EMAIL_DOMAINS)}".lower()
            consent_at = None if state == "NOT_SUBSCRIBED" else iso(created)
            email = {"emailAddress": address, "marketingState": state, "marketingUpdatedAt": consent_at}
        phone = None
        if state is None or rng.random() < 0.35:
            phone = {"phoneNumber": f"{prefix}{rng.randint(0, 9999):04d}"}
        gid = f"gid://shopify/Customer/{CUSTOMER_BASE + i}"
        customer: Node = {
            "id": gid,
            "firstName": first if rng.random() > 0.03 else None,
            "lastName": last if rng.random() > 0.05 else None,
            "createdAt": iso(created),
            "updatedAt": iso(created),
            "defaultEmailAddress": email,
            "defaultPhoneNumber": phone,
            "defaultAddress": {"countryCodeV2": country} if rng.random() > 0.08 else None,
            "_n": CUSTOMER_BASE + i,
            "_created": created,
            "_updated": created,
            "_kind": rng.choices(("none", "one", "repeat", "loyal", "whale"), cum_weights=KIND_CUM)[0],
        }
        self.customers.append(customer)
        self._by_id[gid] = customer
        return customer

    def _build_history(self) -> None:
        rng = self.rng
        counts = {"none": (0, 0), "one": (1, 1), "repeat": (2, 4), "loyal": (5, 12), "whale": (8, 30)}
        plan: list[tuple[datetime, Node | None, str | None]] = []
        for customer in self.customers:
            lo, hi = counts[customer["_kind"]]
            for _ in range(rng.randint(lo, hi)):
                plan.append((self._random_time(customer["_created"], self.now), customer, None))
        registered = [c for c in self.customers if c["defaultEmailAddress"]]
        for _ in range(len(plan) // 9):  # guest checkouts, about a tenth of all orders
            if registered and rng.random() < 0.3:
                email = rng.choice(registered)["defaultEmailAddress"]["emailAddress"]
            else:
                email = f"guest{next(self._guest_seq)}@{rng.choice(EMAIL_DOMAINS)}"
            plan.append((self._random_time(self.start, self.now), None, email))
        plan.sort(key=lambda item: item[0])  # order numbers increase with time, as in a real shop
        for created, buyer, guest_email in plan:
            self._new_order(buyer, created, guest_email)
        self._mark_test_orders()

    def _new_order(self, customer: Node | None, created: datetime, guest_email: str | None) -> Node:
        rng = self.rng
        n = next(self._order_seq)
        whale = customer is not None and customer["_kind"] == "whale"
        lines = []
        subtotal = 0
        for k, product in enumerate(rng.choices(self.products, cum_weights=self._product_cum, k=rng.randint(1, 4))):
            quantity = rng.randint(1, 3) * (rng.randint(3, 10) if whale else 1)
            subtotal += product["_price"] * quantity
            line_id = f"gid://shopify/LineItem/{(ORDER_BASE + n) * 10 + k}"
            lines.append({"id": line_id, "sku": product["sku"], "quantity": quantity, "product": {"id": product["id"]}})
        codes: list[str] = []
        if rng.random() < 0.3:
            codes = rng.sample(DISCOUNT_CODES, k=1 if rng.random() < 0.92 else 2)
            subtotal = subtotal * 85 // 100
        total = subtotal + (0 if subtotal > 7500 or "FREESHIP" in codes else 695)
        email: str | None = guest_email
        phone: str | None = None
        if customer is not None:
            email = customer["defaultEmailAddress"]["emailAddress"] if customer["defaultEmailAddress"] else None
            phone = customer["defaultPhoneNumber"]["phoneNumber"] if customer["defaultPhoneNumber"] else None
        updated = created + timedelta(minutes=rng.randint(1, 60 * 72))  # paid, fulfilled, ...
        if updated > self.now:
            updated = self._random_time(created, self.now)
        gid = f"gid://shopify/Order/{ORDER_BASE + n}"
        order: Node = {
            "id": gid,
            "name": f"#{n}",
            "email": email,
            "phone": phone,
            "createdAt": iso(created),
            "updatedAt": iso(updated),
            "cancelledAt": None,
            "test": False,
            "totalPriceSet": money(total),
            "currentTotalPriceSet": money(total),
            "discountCodes": codes,
            "customer": customer,
            "lineItems": {"nodes": lines},
            "customerJourneySummary": self._journey(created),
            "_n": ORDER_BASE + n,
            "_created": created,
            "_updated": updated,
            "_original_cents": total,
            "_current_cents": total,
        }
        roll = rng.random()
        if roll < 0.03:
            cancelled = min(self.now, created + timedelta(hours=rng.randint(1, 48)))
            order["cancelledAt"] = iso(cancelled)
            if rng.random() < 0.8:
                order["currentTotalPriceSet"] = money(0)
                order["_current_cents"] = 0
            self._touch(order, cancelled)
        elif roll < 0.03 + 0.06:
            when = min(self.now, created + timedelta(days=rng.randint(2, 40)))
            self._refund(order, when, full=rng.random() < 0.25)
        self.orders.append(order)
        self._by_id[gid] = order
        if customer is not None:
            self._touch(customer, updated)
        return order

    def _refund(self, order: Node, when: datetime, *, full: bool) -> None:
        remaining = 0 if full else order["_current_cents"] * self.rng.choice((3, 5, 7)) // 10
        order["currentTotalPriceSet"] = money(remaining, order["currentTotalPriceSet"]["shopMoney"]["currencyCode"])
        order["_current_cents"] = remaining
        self._touch(order, when)

    def _journey(self, created: datetime) -> Node | None:
        rng = self.rng
        if rng.random() < 0.12:  # POS, draft orders, or attribution not available
            return None
        source, medium, visit_source, referrer, _ = rng.choices(CHANNELS, cum_weights=CHANNEL_CUM)[0]
        product = rng.choice(self.products)
        landing = f"{SHOP_HOST}/products/{product['sku'].lower()}"
        utm = None
        if source is not None:
            landing += f"?utm_source={source}&utm_medium={medium}"
            utm = {"source": source, "medium": medium, "campaign": "always-on"}
        return {
            "firstVisit": {
                "source": visit_source,
                "utmParameters": utm,
                "landingPage": landing,
                "referrerUrl": referrer,
            }
        }

    def _mark_test_orders(self) -> None:
        if not self.orders:
            return
        for order in self.rng.sample(self.orders, k=min(len(self.orders), 2 + len(self.orders) // 400)):
            order["test"] = True

    def _add_malformed(self) -> None:
        """Records a worker must refuse; the source passes most through, the amount one is a Problem."""
        owner = next((c for c in self.customers if c["defaultEmailAddress"]), None)
        when = self.now - timedelta(days=1)
        bad: dict[str, Node] = {}
        for label in ("invalid_email", "negative_total", "unknown_currency", "non_numeric_amount"):
            bad[label] = self._new_order(owner, when, guest_email=None)
        bad["invalid_email"]["email"] = "not-an-email"
        bad["negative_total"]["currentTotalPriceSet"] = money(-1500)
        bad["unknown_currency"]["currentTotalPriceSet"] = money(4200, "XXX")
        bad["non_numeric_amount"]["currentTotalPriceSet"] = {"shopMoney": {"amount": "N/A", "currencyCode": "USD"}}
        for label, order in bad.items():
            order["_original_cents"] = None
            self.malformed_ids[label] = order["id"]
        self.version += 1
