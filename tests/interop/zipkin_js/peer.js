'use strict';
// zipkin-js, as its users run it, on the other side of a request from aiozipkin_client.
// tests/test_other_tracers.py starts this script; it speaks JSON on stdout.
//
//   node peer.js server
//     Serves 127.0.0.1 on a free port and prints {"port": N} once listening.
//     GET /joined: traced by zipkin-js's HttpServerInstrumentation; answers with the ids
//       zipkin-js took from the request's headers and the B3 headers that arrived.
//     GET /spans: not traced; every span zipkin-js finished so far, as its own
//       Zipkin v2 JSON encoder writes them (and forgets them).
//
//   node peer.js client URL SAMPLED DEBUG BITS
//     Makes a root trace id (SAMPLED "1" or "0"; DEBUG "1" or "0"; BITS 64 or 128), sends
//     GET URL as a child of it through zipkin-js's HttpClientInstrumentation, and prints
//     {"root", "headers", "status", "body", "spans"}.

const http = require('http');
const {
  BatchRecorder,
  ExplicitContext,
  Instrumentation,
  Tracer,
  jsonEncoder,
  option,
} = require('zipkin');

function tracerFor(serviceName, spans, traceId128Bit) {
  const recorder = new BatchRecorder({
    logger: {
      logSpan(span) {
        spans.push(JSON.parse(jsonEncoder.JSON_V2.encode(span)));
      },
    },
  });
  return new Tracer({
    ctxImpl: new ExplicitContext(),
    recorder,
    localServiceName: serviceName,
    traceId128Bit,
  });
}

function idAsJson(id) {
  return {
    traceId: id.traceId,
    spanId: id.spanId,
    parentSpanId: id.parentSpanId.getOrElse(null),
    sampled: id.sampled.getOrElse(null),
    debug: id.isDebug(),
  };
}

function b3Headers(headers) {
  const found = {};
  for (const [name, value] of Object.entries(headers)) {
    if (name === 'b3' || name.startsWith('x-b3-')) {
      found[name] = value;
    }
  }
  return found;
}

function serve() {
  const spans = [];
  const tracer = tracerFor('zipkin-js-server', spans, false);
  let instrumentation = null;
  const server = http.createServer((req, res) => {
    const reply = (status, body) => {
      res.writeHead(status, {'content-type': 'application/json'});
      res.end(JSON.stringify(body));
    };
    if (req.url === '/spans') {
      reply(200, spans.splice(0, spans.length));
      return;
    }
    if (req.url !== '/joined') {
      reply(404, {});
      return;
    }
    const readHeader = (name) => {
      const value = req.headers[name.toLowerCase()];
      return value === undefined ? option.None : new option.Some(value);
    };
    tracer.scoped(() => {
      const id = instrumentation.recordRequest(req.method, req.url, readHeader);
      reply(200, {id: idAsJson(id), headers: b3Headers(req.headers)});
      instrumentation.recordResponse(id, 200);
    });
  });
  server.listen(0, '127.0.0.1', () => {
    const {port} = server.address();
    instrumentation = new Instrumentation.HttpServer({tracer, port});
    process.stdout.write(`${JSON.stringify({port})}\n`);
  });
  // The test closes stdin when it is done: then this process ends.
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}

function get(url, headers) {
  return new Promise((resolve, reject) => {
    const request = http.get(url, {headers}, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => resolve({status: res.statusCode, body: Buffer.concat(chunks).toString()}));
    });
    request.on('error', reject);
    request.setTimeout(10000, () => request.destroy(new Error('timed out')));
  });
}

async function call(url, sampled, debug, bits) {
  const spans = [];
  const tracer = tracerFor('zipkin-js-client', spans, bits === '128');
  const client = new Instrumentation.HttpClient({tracer});
  const root = tracer.createRootId(new option.Some(sampled === '1'), debug === '1');
  let id = null;
  let request = null;
  tracer.letId(root, () => {
    request = client.recordRequest({headers: {}}, url, 'GET');
    id = tracer.id;
  });
  const response = await get(url, request.headers);
  tracer.letId(id, () => client.recordResponse(id, response.status));
  process.stdout.write(`${JSON.stringify({
    root: idAsJson(root),
    headers: request.headers,
    status: response.status,
    body: response.body,
    spans,
  })}\n`);
}

const [mode, ...args] = process.argv.slice(2);
if (mode === 'server') {
  serve();
} else if (mode === 'client') {
  call(...args).then(
    () => process.exit(0),
    (error) => {
      process.stderr.write(`${error.stack}\n`);
      process.exit(1);
    },
  );
} else {
  process.stderr.write('usage: node peer.js server | client URL SAMPLED DEBUG BITS\n');
  process.exit(2);
}
