"""Stripe's official Python client against the sandbox, for every operation Slipway calls:
create a Checkout Session, read the subscription it starts, list the customer's subscriptions
(`status=all`, two pages), report a meter event, expire an open Checkout Session (a second
expiry refused); and a wrong key refused the way Stripe refuses it. Exits non-zero (with the
reason) on any mismatch.

Usage: stripe_client.py <sandbox base URL> <the sandbox's Stripe key>
"""
import json
import sys
import urllib.request

import stripe

base, key = sys.argv[1], sys.argv[2]
client = stripe.StripeClient(key, base_addresses={"api": f"{base}/stripe"}, max_network_retries=0)

session = client.v1.checkout.sessions.create(
    params={
        "mode": "subscription",
        "line_items": [{"price": "price_slipway_agent", "quantity": 1}],
        "success_url": "https://example.com/ok?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://example.com/cancel",
        "client_reference_id": "user-1",
        "metadata": {"userId": "user-1", "agentId": "agent-1", "region": "fsn1"},
        "subscription_data": {"metadata": {"userId": "user-1", "agentId": "agent-1"}},
    },
    options={"idempotency_key": "official-client-checkout-1"},
)
assert isinstance(session, stripe.checkout.Session), type(session)
assert session.id.startswith("cs_") and session.url and session.status == "open", session
print(f"checkout.sessions.create: {session.id} {session.status}")

# What the customer does in the browser (the sandbox's control endpoint), then Stripe's answers.
req = urllib.request.Request(f"{base}/_sandbox/stripe/checkout/{session.id}/complete", method="POST", data=b"{}",
                             headers={"content-type": "application/json"})
completed = json.load(urllib.request.urlopen(req))
session = client.v1.checkout.sessions.retrieve(session.id)
assert session.status == "complete" and session.subscription, session
sub = client.v1.subscriptions.retrieve(session.subscription)
assert isinstance(sub, stripe.Subscription) and sub.status in ("active", "trialing"), sub
assert sub.items.data[0].quantity == 1, sub.items
print(f"subscriptions.retrieve: {sub.id} {sub.status}")

# The customer's subscriptions, whatever their status, a page at a time (a second one first).
body = {"userId": "user-1", "agentId": "agent-3", "region": "fsn1", "customer": sub.customer}
req = urllib.request.Request(f"{base}/_sandbox/stripe/checkout/complete", method="POST",
                             data=json.dumps(body).encode(), headers={"content-type": "application/json"})
second = json.load(urllib.request.urlopen(req))["subscription_id"]
page = client.v1.subscriptions.list(params={"customer": sub.customer, "status": "all", "limit": 1})
assert isinstance(page, stripe.ListObject) and page.has_more, page
assert [s.id for s in page.data] == [second] and isinstance(page.data[0], stripe.Subscription), page
rest = client.v1.subscriptions.list(
    params={"customer": sub.customer, "status": "all", "limit": 1, "starting_after": page.data[-1].id})
assert [s.id for s in rest.data] == [sub.id] and not rest.has_more, rest
listed = [s.id for s in page.auto_paging_iter()]
assert listed == [second, sub.id], listed
print(f"subscriptions.list: {listed}")

event = client.v1.billing.meter_events.create(
    params={"event_name": "slipway_pull_requests", "payload": {"stripe_customer_id": sub.customer, "value": "1"},
            "identifier": "official-client-meter-1"})
assert isinstance(event, stripe.billing.MeterEvent) and event.identifier == "official-client-meter-1", event
print(f"billing.meter_events.create: {event.identifier}")

# A draft's checkout, expired: only an open session can be, so a second expiry is refused.
draft = client.v1.checkout.sessions.create(
    params={
        "mode": "subscription",
        "line_items": [{"price": "price_slipway_agent", "quantity": 1}],
        "success_url": "https://example.com/ok",
        "cancel_url": "https://example.com/cancel",
        "metadata": {"userId": "user-1", "agentId": "agent-2", "region": "fsn1"},
    })
expired = client.v1.checkout.sessions.expire(draft.id, options={"idempotency_key": "official-client-expire-1"})
assert isinstance(expired, stripe.checkout.Session), type(expired)
assert expired.id == draft.id and expired.status == "expired" and expired.url is None, expired
try:
    client.v1.checkout.sessions.expire(draft.id)
except stripe.InvalidRequestError as e:
    assert e.http_status == 400 and "expired" in e.user_message, (e.http_status, e.user_message)
else:
    sys.exit("an expired session was expired again")
print(f"checkout.sessions.expire: {expired.id} {expired.status}")

wrong = stripe.StripeClient("sk_test_wrong", base_addresses={"api": f"{base}/stripe"}, max_network_retries=0)
try:
    wrong.v1.subscriptions.retrieve(sub.id)
except stripe.AuthenticationError as e:
    assert e.http_status == 401, e.http_status
    print(f"wrong key: AuthenticationError {e.http_status}")
else:
    sys.exit("a wrong key was accepted")
print("ok")
