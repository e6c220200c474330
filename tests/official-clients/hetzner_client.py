"""Hetzner's official Python client (hcloud) against the sandbox, for every operation Slipway
calls: create a server and wait for its action, find it by name and label, shut it down, power it
off and on, delete it, get a 404 for it; and a wrong token refused the way Hetzner refuses it.

Usage: hetzner_client.py <sandbox base URL> <the sandbox's Hetzner token>
"""
import sys

from hcloud import APIException, Client
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.server_types import ServerType

base, token = sys.argv[1], sys.argv[2]
client = Client(token=token, api_endpoint=f"{base}/hetzner/v1", poll_interval=0.2)

created = client.servers.create(
    name="slipway-official-1", server_type=ServerType(name="cx22"), image=Image(name="ubuntu-24.04"),
    location=Location(name="fsn1"), labels={"slipway-agent": "official-1"}, user_data="#cloud-config\n")
created.action.wait_until_finished(max_retries=100)
server = client.servers.get_by_id(created.server.id)
assert server.status == "running" and server.public_net.ipv4.ip, server.status
print(f"servers.create + actions: {server.id} {server.status}")
assert client.servers.get_by_name("slipway-official-1").id == server.id
assert [s.id for s in client.servers.get_all(label_selector="slipway-agent=official-1")] == [server.id]
print("servers.get_by_name / get_all(label_selector)")

for verb in ("shutdown", "power_off", "power_on"):
    getattr(client.servers, verb)(server).wait_until_finished(max_retries=100)
    print(f"servers.{verb}: {client.servers.get_by_id(server.id).status}")

client.servers.delete(server).wait_until_finished(max_retries=100)
try:
    client.servers.get_by_id(server.id)
except APIException as e:
    assert e.code == "not_found", e.code
    print("servers.delete, then get: not_found")
else:
    sys.exit("a deleted server was found")

wrong = Client(token="wrong-token", api_endpoint=f"{base}/hetzner/v1")
try:
    wrong.servers.get_all()
except APIException as e:
    assert e.code == "unauthorized", e.code
    print("wrong token: unauthorized")
else:
    sys.exit("a wrong token was accepted")
print("ok")
