'use strict';
const assert = require('node:assert/strict');
const net = require('node:net');
const fc = require('fast-check');
const { parseProxyHeader } = require('../../dist/lib/proxy-protocol.js');

const RUNS = Number(process.env.PROXY_PROTOCOL_PROPERTY_RUNS) || 500;
const SIG = Buffer.from('\r\n\r\n\0\r\nQUIT\n', 'latin1');
const HTTP = Buffer.from('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');

const v1 = (line) => Buffer.from(`${line}\r\n`, 'latin1');

function ipv4Bytes(a) {
  return Buffer.from(a.split('.').map(Number));
}

/** 16 bytes from a full 8-group IPv6 text (the tests only build such texts). */
function ipv6Bytes(full) {
  const b = Buffer.alloc(16);
  full.split(':').forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2));
  return b;
}

function ports(sport, dport) {
  const b = Buffer.alloc(4);
  b.writeUInt16BE(sport, 0);
  b.writeUInt16BE(dport, 2);
  return b;
}

function tlv(type, value) {
  const b = Buffer.alloc(3);
  b[0] = type;
  b.writeUInt16BE(value.length, 1);
  return Buffer.concat([b, value]);
}

/** A v2 header; `length` overrides the honest one. */
function v2({ verCmd = 0x21, fam = 0x11, body = Buffer.alloc(0), length = body.length }) {
  const head = Buffer.alloc(4);
  head[0] = verCmd;
  head[1] = fam;
  head.writeUInt16BE(length, 2);
  return Buffer.concat([SIG, head, body]);
}

const tcp4Body = (src, dst, sport, dport) => Buffer.concat([ipv4Bytes(src), ipv4Bytes(dst), ports(sport, dport)]);
const tcp6Body = (src, dst, sport, dport) => Buffer.concat([ipv6Bytes(src), ipv6Bytes(dst), ports(sport, dport)]);

function ok(buf) {
  const r = parseProxyHeader(buf);
  assert.equal(r.status, 'ok', `expected ok, got ${JSON.stringify(r)}`);
  return r;
}

function invalid(buf) {
  const r = parseProxyHeader(buf);
  assert.equal(r.status, 'invalid', `expected invalid, got ${JSON.stringify(r)}`);
  assert.match(r.reason, /^[a-z0-9 -]{1,40}$/i);
  return r;
}

/** Valid headers of every kind, for the prefix and extension checks. */
const VALID = {
  'v1 TCP4': v1('PROXY TCP4 203.0.113.7 10.0.0.1 51000 80'),
  'v1 TCP6': v1('PROXY TCP6 2001:db8::7 2001:db8::1 51000 443'),
  'v1 TCP6 longest': v1('PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535'),
  'v1 UNKNOWN': v1('PROXY UNKNOWN'),
  'v1 UNKNOWN with addresses': v1('PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535'),
  'v2 TCP4': v2({ body: tcp4Body('203.0.113.7', '10.0.0.1', 51000, 80) }),
  'v2 UDP4': v2({ fam: 0x12, body: tcp4Body('198.51.100.2', '10.0.0.1', 53, 5353) }),
  'v2 TCP6': v2({ fam: 0x21, body: tcp6Body('2001:db8:0:0:0:0:0:7', '2001:db8:0:0:0:0:0:1', 51000, 443) }),
  'v2 LOCAL': v2({ verCmd: 0x20, fam: 0x00 }),
  'v2 LOCAL with an address block': v2({ verCmd: 0x20, fam: 0x11, body: tcp4Body('127.0.0.1', '127.0.0.1', 1, 2) }),
  'v2 TCP4 with TLVs': v2({
    body: Buffer.concat([
      tcp4Body('203.0.113.7', '10.0.0.1', 51000, 80),
      tlv(0x01, Buffer.from('h2')), tlv(0x02, Buffer.from('example.com')), tlv(0x04, Buffer.alloc(0)),
      tlv(0x20, Buffer.concat([Buffer.from([0x01]), Buffer.alloc(4), tlv(0x21, Buffer.from('TLSv1.3'))])),
    ]),
  }),
  'v2 UNIX stream': v2({ fam: 0x31, body: Buffer.concat([Buffer.from('/run/a.sock'), Buffer.alloc(97), Buffer.from('/run/b.sock'), Buffer.alloc(97)]) }),
  'v2 UNSPEC': v2({ fam: 0x00 }),
  'v2 UNSPEC with an opaque block': v2({ fam: 0x00, body: Buffer.from([1, 2, 3, 4, 5]) }),
};

describe('proxy-protocol: parseProxyHeader', function () {
  describe('v1', function () {
    it('parses TCP4, with the exact header length', () => {
      const r = ok(Buffer.concat([VALID['v1 TCP4'], HTTP]));
      assert.deepEqual(r, {
        status: 'ok', length: VALID['v1 TCP4'].length, version: 1, command: 'PROXY',
        source: { address: '203.0.113.7', port: 51000 }, destination: { address: '10.0.0.1', port: 80 },
      });
    });

    it('parses TCP6 and reports addresses in the form Node uses for remoteAddress', () => {
      const r = ok(v1('PROXY TCP6 2001:DB8:0:0:0:0:0:7 0:0:0:0:0:FFFF:0A00:0001 0 65535'));
      assert.deepEqual(r.source, { address: '2001:db8::7', port: 0 });
      assert.deepEqual(r.destination, { address: '::ffff:10.0.0.1', port: 65535 });
      assert.equal(ok(VALID['v1 TCP6 longest']).length, 104);
    });

    it('UNKNOWN: ok, no addresses, and whatever precedes the CRLF is ignored', () => {
      for (const h of [VALID['v1 UNKNOWN'], VALID['v1 UNKNOWN with addresses']]) {
        const r = ok(Buffer.concat([h, HTTP]));
        assert.equal(r.length, h.length);
        assert.equal(r.command, 'PROXY');
        assert.equal(r.source, undefined);
        assert.equal(r.destination, undefined);
      }
      const longest = v1(`PROXY UNKNOWN ${'x'.repeat(107 - 16)}`);
      assert.equal(longest.length, 107);
      assert.equal(ok(longest).length, 107);
    });

    it('refuses a line without CRLF within 107 bytes', () => {
      invalid(Buffer.from(`PROXY UNKNOWN ${'x'.repeat(200)}`));
      invalid(v1(`PROXY UNKNOWN ${'x'.repeat(107 - 15)}`)); // CRLF one byte too late
      invalid(Buffer.from('PROXY TCP4 203.0.113.7 10.0.0.1 51000 80\n')); // LF without CR
      invalid(Buffer.from('PROXY TCP4 203.0.113.7 10.0.0.1 51000 80\r\r\n'));
    });

    it('refuses bad addresses, ports and shapes', () => {
      for (const line of [
        'PROXY TCP4 999.1.1.1 10.0.0.1 51000 80',
        'PROXY TCP4 203.0.113.7 10.0.0.256 51000 80',
        'PROXY TCP4 203.0.113.07 10.0.0.1 51000 80', // leading zero: octal confusion
        'PROXY TCP4 203.0.113.7 10.0.0.1 70000 80',
        'PROXY TCP4 203.0.113.7 10.0.0.1 51000 65536',
        'PROXY TCP4 203.0.113.7 10.0.0.1 051000 80',
        'PROXY TCP4 203.0.113.7 10.0.0.1 -1 80',
        'PROXY TCP4 203.0.113.7 10.0.0.1 +80 80',
        'PROXY TCP4 203.0.113.7 10.0.0.1 0x50 80',
        'PROXY TCP4 2001:db8::7 10.0.0.1 51000 80', // TCP4 with an IPv6 address
        'PROXY TCP6 203.0.113.7 2001:db8::1 51000 80', // TCP6 with an IPv4 address
        'PROXY TCP6 fe80::1%eth0 2001:db8::1 51000 80', // a zone
        'PROXY TCP6 2001:db8::7::1 2001:db8::1 51000 80',
        'PROXY TCP6 [2001:db8::7] 2001:db8::1 51000 80',
        'PROXY TCP4 203.0.113.7 10.0.0.1 51000', // a field short
        'PROXY TCP4 203.0.113.7 10.0.0.1 51000 80 9', // a field too many
        'PROXY TCP4  203.0.113.7 10.0.0.1 51000 80', // two spaces
        'PROXY tcp4 203.0.113.7 10.0.0.1 51000 80',
        'PROXY UDP4 203.0.113.7 10.0.0.1 51000 80',
        'PROXY TCP4 203.0.113.7\t10.0.0.1 51000 80',
        'PROXY UNKNOWNX',
        'PROXY  UNKNOWN',
        'PROXY',
        'PROXY ',
      ]) invalid(v1(line));
    });

    it('refuses a non-printable byte at once, without waiting for the CRLF', () => {
      invalid(Buffer.from('PROXY TCP4 1.2.3.4\0'));
      invalid(Buffer.from('PROXY TCP4 1.2\r.3'));
      invalid(Buffer.from('PROXY T\xff', 'latin1'));
    });
  });

  describe('v2', function () {
    it('parses PROXY TCP4, with the exact header length', () => {
      const r = ok(Buffer.concat([VALID['v2 TCP4'], HTTP]));
      assert.deepEqual(r, {
        status: 'ok', length: 28, version: 2, command: 'PROXY',
        source: { address: '203.0.113.7', port: 51000 }, destination: { address: '10.0.0.1', port: 80 },
      });
    });

    it('parses PROXY TCP6 into canonical addresses', () => {
      const r = ok(VALID['v2 TCP6']);
      assert.equal(r.length, 52);
      assert.deepEqual(r.source, { address: '2001:db8::7', port: 51000 });
      assert.deepEqual(r.destination, { address: '2001:db8::1', port: 443 });
      const mapped = ok(v2({ fam: 0x21, body: tcp6Body('0:0:0:0:0:ffff:cb00:7107', '0:0:0:0:0:0:0:1', 1, 2) }));
      assert.equal(mapped.source.address, '::ffff:203.0.113.7');
      assert.equal(mapped.destination.address, '::1');
    });

    it('UDP families carry addresses like TCP', () => {
      assert.deepEqual(ok(VALID['v2 UDP4']).source, { address: '198.51.100.2', port: 53 });
    });

    it('LOCAL: ok, no source, the block skipped whatever the family says', () => {
      for (const name of ['v2 LOCAL', 'v2 LOCAL with an address block']) {
        const r = ok(Buffer.concat([VALID[name], HTTP]));
        assert.equal(r.command, 'LOCAL');
        assert.equal(r.length, VALID[name].length);
        assert.equal(r.source, undefined);
      }
      // "must not assume zero is presented for LOCAL": and a LOCAL with an AF_INET family but no block is fine too
      assert.equal(ok(v2({ verCmd: 0x20, fam: 0x11 })).length, 16);
      assert.equal(ok(v2({ verCmd: 0x20, fam: 0x77 })).command, 'LOCAL');
    });

    it('skips TLVs', () => {
      const h = VALID['v2 TCP4 with TLVs'];
      const r = ok(Buffer.concat([h, HTTP]));
      assert.equal(r.length, h.length);
      assert.deepEqual(r.source, { address: '203.0.113.7', port: 51000 });
    });

    it('UNIX and UNSPEC families: ok, no source', () => {
      for (const name of ['v2 UNIX stream', 'v2 UNSPEC', 'v2 UNSPEC with an opaque block']) {
        const r = ok(VALID[name]);
        assert.equal(r.command, 'PROXY');
        assert.equal(r.length, VALID[name].length);
        assert.equal(r.source, undefined);
        assert.equal(r.destination, undefined);
      }
    });

    it('refuses a wrong signature', () => {
      invalid(HTTP);
      invalid(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00])); // a TLS ClientHello
      const bad = Buffer.from(VALID['v2 TCP4']);
      bad[11] = 0x0b;
      invalid(bad);
      invalid(Buffer.from('\r\n\r\n\r\n'));
    });

    it('refuses a wrong version nibble, command or family', () => {
      for (const verCmd of [0x11, 0x31, 0x01, 0xf1, 0x22, 0x2f]) {
        invalid(v2({ verCmd, body: tcp4Body('1.2.3.4', '5.6.7.8', 1, 2) }));
      }
      for (const fam of [0x01, 0x10, 0x13, 0x41, 0xff]) invalid(v2({ fam, body: Buffer.alloc(216) }));
    });

    it('refuses a length shorter than the address block', () => {
      invalid(v2({ fam: 0x11, body: Buffer.alloc(11) }));
      invalid(v2({ fam: 0x21, body: Buffer.alloc(35) }));
      invalid(v2({ fam: 0x31, body: Buffer.alloc(215) }));
      // decided from the 16 fixed bytes alone, without waiting for the block
      invalid(v2({ fam: 0x21, body: Buffer.alloc(0), length: 12 }));
    });

    it('refuses a lying length', () => {
      // longer than the header: the application's first bytes would be swallowed as TLVs
      invalid(Buffer.concat([v2({ body: tcp4Body('203.0.113.7', '10.0.0.1', 51000, 80), length: 12 + 40 }), HTTP]));
      // TLVs that overrun the block, or leave a fragment
      invalid(v2({ body: Buffer.concat([tcp4Body('1.2.3.4', '5.6.7.8', 1, 2), Buffer.from([0x01, 0x00, 0x05, 0x68])]) }));
      invalid(v2({ body: Buffer.concat([tcp4Body('1.2.3.4', '5.6.7.8', 1, 2), Buffer.from([0x04, 0x00])]) }));
      // beyond any plausible header: refused from the fixed part, without buffering 64 KiB
      invalid(v2({ body: Buffer.alloc(0), length: 0xffff }));
      invalid(v2({ body: Buffer.alloc(0), length: 2049 }));
      assert.equal(parseProxyHeader(v2({ body: Buffer.alloc(0), length: 2048 })).status, 'incomplete');
    });
  });

  describe('incomplete input', function () {
    it('is incomplete at every cut of every valid header, never invalid or ok', () => {
      for (const [name, h] of Object.entries(VALID)) {
        for (let cut = 0; cut < h.length; cut++) {
          assert.deepEqual(parseProxyHeader(h.subarray(0, cut)), { status: 'incomplete' }, `${name} cut at ${cut}`);
        }
        assert.equal(ok(h).length, h.length, name);
      }
    });

    it('does not throw on what is not a Buffer', () => {
      for (const x of [undefined, null, 'PROXY UNKNOWN\r\n', 42, {}, [0x50], new ArrayBuffer(4)]) {
        assert.equal(parseProxyHeader(x).status, 'invalid');
      }
      assert.equal(parseProxyHeader(new Uint8Array(VALID['v2 TCP4'])).status, 'ok');
    });
  });

  describe('properties', function () {
    const ipv4 = fc.ipV4();
    const port = fc.integer({ min: 0, max: 65535 });
    const bytes16 = fc.uint8Array({ minLength: 16, maxLength: 16 }).map((a) => Buffer.from(a));
    /** IPv6 texts a sender may write: Node's form, full upper-case groups, or fast-check's variety (hex only, so the line fits 107 bytes). */
    const ipv6Text = fc.oneof(
      bytes16.map((b) => hex8(b).join(':')).map((t) => new net.SocketAddress({ address: t, family: 'ipv6' }).address),
      bytes16.map((b) => hex8(b).map((g) => g.padStart(4, '0').toUpperCase()).join(':')),
      fc.ipV6().filter((t) => !t.includes('.') && t.length <= 39),
    );
    const tlvs = fc.array(fc.tuple(fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 40 })), { maxLength: 4 })
      .map((list) => Buffer.concat(list.map(([t, v]) => tlv(t, Buffer.from(v)))));
    const trailing = fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a));

    function hex8(b) {
      const groups = [];
      for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
      return groups;
    }
    /** Same 128-bit value, judged by WHATWG URL's own IPv6 parser rather than ours. */
    const sameIPv6 = (a, b) => new URL(`http://[${a}]/`).hostname === new URL(`http://[${b}]/`).hostname;

    /** A valid header with the endpoints it encodes (null where none is reported). */
    const header = fc.oneof(
      fc.tuple(ipv4, ipv4, port, port).map(([s, d, sp, dp]) => ({
        buf: v1(`PROXY TCP4 ${s} ${d} ${sp} ${dp}`), src: s, dst: d, sp, dp, six: false,
      })),
      fc.tuple(ipv6Text, ipv6Text, port, port).map(([s, d, sp, dp]) => ({
        buf: v1(`PROXY TCP6 ${s} ${d} ${sp} ${dp}`), src: s, dst: d, sp, dp, six: true,
      })),
      fc.tuple(ipv4, ipv4, port, port, fc.constantFrom(0x11, 0x12), tlvs).map(([s, d, sp, dp, fam, t]) => ({
        buf: v2({ fam, body: Buffer.concat([tcp4Body(s, d, sp, dp), t]) }), src: s, dst: d, sp, dp, six: false,
      })),
      fc.tuple(bytes16, bytes16, port, port, fc.constantFrom(0x21, 0x22), tlvs).map(([s, d, sp, dp, fam, t]) => ({
        buf: v2({ fam, body: Buffer.concat([s, d, ports(sp, dp), t]) }), src: hex8(s).join(':'), dst: hex8(d).join(':'), sp, dp, six: true,
      })),
      fc.tuple(fc.constantFrom(0x00, 0x11, 0x21, 0x31), fc.uint8Array({ maxLength: 300 })).map(([fam, block]) => ({
        buf: v2({ verCmd: 0x20, fam, body: Buffer.from(block) }), src: null,
      })),
    );

    it('a generated valid header round-trips to the same addresses and ports, whatever follows it', () => {
      fc.assert(fc.property(header, trailing, (h, rest) => {
        const r = ok(Buffer.concat([h.buf, rest]));
        assert.equal(r.length, h.buf.length);
        if (h.src === null) {
          assert.equal(r.source, undefined);
          return;
        }
        assert.equal(r.source.port, h.sp);
        assert.equal(r.destination.port, h.dp);
        if (h.six) {
          assert.ok(sameIPv6(r.source.address, h.src), `${r.source.address} vs ${h.src}`);
          assert.ok(sameIPv6(r.destination.address, h.dst), `${r.destination.address} vs ${h.dst}`);
          // the form socket.remoteAddress would have
          assert.equal(r.source.address, new net.SocketAddress({ address: h.src, family: 'ipv6' }).address);
        } else {
          assert.equal(r.source.address, h.src);
          assert.equal(r.destination.address, h.dst);
        }
      }), { numRuns: RUNS });
    });

    it('every cut of a generated valid header is incomplete', () => {
      fc.assert(fc.property(header, fc.nat(), (h, n) => {
        const cut = n % h.buf.length;
        assert.deepEqual(parseProxyHeader(h.buf.subarray(0, cut)), { status: 'incomplete' });
      }), { numRuns: RUNS });
    });

    /** Arbitrary bytes, often behind a real signature so the deeper paths get exercised. */
    const anyBytes = fc.tuple(
      fc.constantFrom(Buffer.alloc(0), SIG, Buffer.from('PROXY '), Buffer.from('PROXY TCP4 '), Buffer.from('PROXY TCP6 '),
        Buffer.concat([SIG, Buffer.from([0x21, 0x11])]), Buffer.concat([SIG, Buffer.from([0x21, 0x21, 0x00, 0x24])])),
      fc.uint8Array({ maxLength: 300 }),
    ).map(([prefix, a]) => Buffer.concat([prefix, Buffer.from(a)]));

    it('never throws on arbitrary bytes, and answers one of the three statuses', () => {
      const reasons = new Set();
      fc.assert(fc.property(anyBytes, (buf) => {
        const r = parseProxyHeader(buf);
        if (r.status === 'ok') {
          assert.ok(Number.isInteger(r.length) && r.length > 0 && r.length <= buf.length);
          assert.ok(r.version === 1 || r.version === 2);
          assert.ok(r.command === 'PROXY' || r.command === 'LOCAL');
        } else if (r.status === 'invalid') {
          assert.match(r.reason, /^[a-z0-9 -]{1,40}$/i);
          reasons.add(r.reason);
        } else {
          assert.deepEqual(r, { status: 'incomplete' });
        }
      }), { numRuns: RUNS * 4 });
      // reasons are fixed strings: random input would otherwise produce many distinct ones
      assert.ok(reasons.size <= 20, [...reasons].join(' | '));
    });

    it('more bytes never change a decided answer (so reading stops at the first decision)', () => {
      fc.assert(fc.property(fc.oneof(anyBytes, header.map((h) => h.buf)), trailing, (buf, more) => {
        const first = parseProxyHeader(buf);
        if (first.status === 'incomplete') return;
        assert.deepEqual(parseProxyHeader(Buffer.concat([buf, more])), first);
      }), { numRuns: RUNS * 2 });
    });
  });
});
