"""OpenAI's official Python client against the sandbox's chat completions, as Slipway calls them:
a system message, the data as a JSON user message and a strict JSON schema as `response_format`;
the answer's content and `usage` read through the client's typed models; and a wrong key
refused the way OpenAI refuses it (401 `invalid_api_key`).

Usage: openai_client.py <sandbox base URL> <the sandbox's model API key>
"""
import json
import sys

import openai
from openai import OpenAI

base, key = sys.argv[1], sys.argv[2]
client = OpenAI(api_key=key, base_url=f"{base}/openai/v1", max_retries=0)

schema = {
    "type": "object",
    "properties": {"summary": {"type": "string"}, "steps": {"type": "array", "items": {"type": "string"}},
                   "files": {"type": "array", "items": {"type": "string"}}},
    "required": ["summary", "steps", "files"],
    "additionalProperties": False,
}
issue = {"issue": {"repository": "acme/shop", "title": "Add a buy button", "body": "The shop needs one."},
         "tree": ["README.md"]}
answer = client.chat.completions.create(
    model="gpt-4o-mini",
    temperature=0,
    messages=[
        {"role": "system", "content": "You plan code changes."},
        {"role": "user", "content": json.dumps(issue)},
    ],
    response_format={"type": "json_schema", "json_schema": {"name": "slipway_plan", "strict": True, "schema": schema}},
)
choice = answer.choices[0]
assert choice.message.role == "assistant" and choice.message.content, choice
plan = json.loads(choice.message.content)
assert plan["summary"] == "Plan for: Add a buy button" and "README.md" in plan["files"], plan
assert choice.finish_reason == "stop", choice.finish_reason
assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0, answer.usage
assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
print(f"chat.completions.create: {answer.id} usage {answer.usage.total_tokens}")

wrong = OpenAI(api_key="sk-not-the-key-0000", base_url=f"{base}/openai/v1", max_retries=0)
try:
    wrong.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
except openai.AuthenticationError as e:
    assert e.status_code == 401 and e.code == "invalid_api_key", (e.status_code, e.code)
    print("wrong key: AuthenticationError 401 invalid_api_key")
else:
    sys.exit("a wrong key was accepted")
print("ok")
