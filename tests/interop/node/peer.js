'use strict';
// Tracers for Node.js, as their users run them, on the other side of a request from
// aiozipkin_client. tests/test_other_tracers.py starts this script; it speaks JSON on stdout.
//
//   node peer.js server
//     zipkin-js. Serves 127.0.0.1 on a free port and prints {"port": N} once listening.
//     GET /joined: traced by zipkin-js's HttpServerInstrumentation; answers with the ids
//       zipkin-js took from the request's headers and the B3 headers that arrived.
//     GET /spans: not traced; every span zipkin-js finished so far, as its own
//       Zipkin v2 JSON encoder writes them (and forgets them).
//
//   node peer.js client URL SAMPLED DEBUG BITS
//     zipkin-js. Makes a root trace id (SAMPLED "1" or "0"; DEBUG "1" or "0"; BITS 64 or
//     128), sends GET URL as a child of it through zipkin-js's HttpClientInstrumentation,
//     and prints {"root", "headers", "status", "body", "spans"}.
//
//   node peer.js otel-relay
//     OpenTelemetry JS, a service that calls another one while serving. Serves 127.0.0.1 on
//     a free port and prints {"port": N}. GET /relay?to=URL&inject=single|multi extracts
//     the incoming B3 headers with OpenTelemetry's B3Propagator (either format), starts a
//     SERVER span under them and a CLIENT span under that (its SDK, default sampler),
//     injects the CLIENT span in the format asked for, GETs URL with those headers, and
//     answers {"received", "sent", "status", "spans"}: the B3 headers that arrived, those
//     it sent, the answer's status, and its finished spans' names, ids and sampling.

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

function relay() {
  const api = require('@opentelemetry/api');
  const {B3InjectEncoding, B3Propagator} = require('@opentelemetry/propagator-b3');
  const {
    BasicTracerProvider,
    InMemorySpanExporter,
    SimpleSpanProcessor,
  } = require('@opentelemetry/sdk-trace-base');

  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({spanProcessors: [new SimpleSpanProcessor(exporter)]});
  const tracer = provider.getTracer('otel-js-relay');
  const propagators = {
    single: new B3Propagator({injectEncoding: B3InjectEncoding.SINGLE_HEADER}),
    multi: new B3Propagator({injectEncoding: B3InjectEncoding.MULTI_HEADER}),
  };

  const server = http.createServer(async (req, res) => {
    const reply = (status, body) => {
      res.writeHead(status, {'content-type': 'application/json'});
      res.end(JSON.stringify(body));
    };
    const url = new URL(req.url, 'http://127.0.0.1');
    const propagator = propagators[url.searchParams.get('inject')];
    const to = url.searchParams.get('to');
    if (url.pathname !== '/relay' || !propagator || !to) {
      reply(404, {});
      return;
    }
    try {
      const extracted = propagator.extract(api.ROOT_CONTEXT, req.headers, api.defaultTextMapGetter);
      const serving = tracer.startSpan('relay', {kind: api.SpanKind.SERVER}, extracted);
      const servingContext = api.trace.setSpan(extracted, serving);
      const calling = tracer.startSpan('call', {kind: api.SpanKind.CLIENT}, servingContext);
      const sent = {};
      propagator.inject(api.trace.setSpan(servingContext, calling), sent, api.defaultTextMapSetter);
      const response = await get(to, sent);
      calling.end();
      serving.end();
      const spans = exporter.getFinishedSpans().map((span) => ({
        name: span.name,
        traceId: span.spanContext().traceId,
        spanId: span.spanContext().spanId,
        parentSpanId: span.parentSpanContext ? span.parentSpanContext.spanId : null,
        sampled: (span.spanContext().traceFlags & api.TraceFlags.SAMPLED) === api.TraceFlags.SAMPLED,
      }));
      exporter.reset();
      reply(200, {received: b3Headers(req.headers), sent, status: response.status, spans});
    } catch (error) {
      reply(500, {error: String(error.stack)});
    }
  });
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(`${JSON.stringify({port: server.address().port})}\n`);
  });
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}

const [mode, ...args] = process.argv.slice(2);
if (mode === 'server') {
  serve();
} else if (mode === 'otel-relay') {
  relay();
} else if (mode === 'client') {
  call(...args).then(
    () => process.exit(0),
    (error) => {
      process.stderr.write(`${error.stack}\n`);
      process.exit(1);
    },
  );
} else {
  process.stderr.write('usage: node peer.js server | client URL SAMPLED DEBUG BITS | otel-relay\n');
  process.exit(2);
}
