// The official `openai` npm package against llama-broker's gateway: the same scenario list as the
// Python SDK's (chat, streaming with usage, tools, errors with their statuses, a wrong key, a
// residency refusal).  Run by tests/gateway/test_openai_node.py, which starts the gateway and
// checks the ledger afterwards; GATEWAY_URL and GATEWAY_KEYS (JSON) come from there.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const url = process.env.GATEWAY_URL;
const keys = JSON.parse(process.env.GATEWAY_KEYS);
const client = (tenant = 'acme', options = {}) =>
  new OpenAI({ baseURL: url, apiKey: keys[tenant] ?? tenant, maxRetries: 0, ...options });
const weatherTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};

test('chat answers in the OpenAI shape, with the route in headers', async () => {
  const { data, response } = await client()
    .chat.completions.create({
      model: 'llama-3.1-8b',
      messages: [{ role: 'user', content: 'Hello from node' }],
      user: 'node-user',
    }, { headers: { 'x-llama-broker-tags': 'app=node-test' } })
    .withResponse();
  assert.equal(data.object, 'chat.completion');
  assert.match(data.choices[0].message.content, /You said: Hello from node/);
  assert.equal(data.usage.total_tokens, data.usage.prompt_tokens + data.usage.completion_tokens);
  assert.equal(response.headers.get('x-llama-broker-route'), 'local-8b');
  assert.equal(response.headers.get('x-llama-broker-jurisdiction'), 'on-prem');
  assert.ok(Number(response.headers.get('x-llama-broker-cost-usd')) > 0);
  assert.equal(data.id, `chatcmpl-${response.headers.get('x-request-id')}`);
});

test('streaming with usage', async () => {
  const stream = await client().chat.completions.create({
    model: 'llama-3.1-8b',
    messages: [{ role: 'user', content: 'Stream from node' }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  const chunks = [];
  for await (const chunk of stream) {
    chunks.push(chunk);
    text += chunk.choices[0]?.delta?.content ?? '';
  }
  assert.match(text, /You said: Stream from node/);
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.ok(last.usage.completion_tokens > 0);
  assert.equal(last.llama_broker.route, 'local-8b');
  assert.deepEqual(chunks.filter((c) => c.choices[0]?.finish_reason).map((c) => c.choices[0].finish_reason), ['stop']);
});

test('tools round trip', async () => {
  const api = client();
  const messages = [{ role: 'user', content: 'Weather in Paris?' }];
  const first = await api.chat.completions.create({ model: 'llama-3.3-70b', messages, tools: [weatherTool] });
  const call = first.choices[0].message.tool_calls[0];
  assert.equal(first.choices[0].finish_reason, 'tool_calls');
  assert.equal(call.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Paris' });
  messages.push(first.choices[0].message, { role: 'tool', tool_call_id: call.id, content: '{"temp_c": 18}' });
  const second = await api.chat.completions.create({ model: 'llama-3.3-70b', messages, tools: [weatherTool] });
  assert.equal(second.choices[0].finish_reason, 'stop');
  assert.ok(second.choices[0].message.content);
});

const errorCases = [
  ['unknown model', 'acme', { model: 'gpt-4o' }, OpenAI.NotFoundError, 404, 'model_not_found'],
  ['bad temperature', 'acme', { temperature: 5 }, OpenAI.BadRequestError, 400, 'invalid_request'],
  ['throttled', 'acme', { model: 'llama-3.1-405b' }, OpenAI.RateLimitError, 429, 'rate_limit_exceeded'],
  ['budget', 'capped', {}, OpenAI.RateLimitError, 429, 'budget_exceeded'],
  ['unavailable', 'acme', { model: 'llama-3.2-1b' }, OpenAI.InternalServerError, 503, 'upstream_unavailable'],
  ['residency refusal', 'eu-only', {}, OpenAI.PermissionDeniedError, 403, 'no_route_allowed'],
  ['wrong key', 'sk-gw-nobody-000000', {}, OpenAI.AuthenticationError, 401, 'invalid_api_key'],
];

for (const [name, tenant, extra, kind, status, code] of errorCases) {
  test(`error: ${name} is ${status}`, async () => {
    const request = { model: 'llama-3.1-8b', messages: [{ role: 'user', content: 'x' }], ...extra };
    await assert.rejects(client(tenant).chat.completions.create(request), (err) => {
      assert.ok(err instanceof kind, `${err?.constructor?.name} is not ${kind.name}`);
      assert.equal(err.status, status);
      assert.equal(err.code, code);
      assert.ok(err.headers.get('x-request-id'));
      if (status === 429) assert.ok(Number(err.headers.get('retry-after')) >= 1);
      return true;
    });
  });
}

test('a residency refusal of a stream is a 403 before any chunk', async () => {
  await assert.rejects(
    client('eu-only').chat.completions.create({
      model: 'llama-3.1-8b', messages: [{ role: 'user', content: 'x' }], stream: true,
    }),
    (err) => err instanceof OpenAI.PermissionDeniedError && err.status === 403,
  );
});

test('models: only what the key\'s tenant may use', async () => {
  const ids = [];
  for await (const model of client('globex').models.list()) ids.push(model.id);
  assert.deepEqual(ids, ['llama-3.1-8b']);
});

test('the globex key is metered as globex', async () => {
  const { response } = await client('globex')
    .chat.completions.create({ model: 'llama-3.1-8b', messages: [{ role: 'user', content: 'I am globex' }] },
      { headers: { 'x-llama-broker-tenant': 'acme' } })
    .withResponse();
  assert.equal(response.headers.get('x-llama-broker-route'), 'groq-8b');
});
