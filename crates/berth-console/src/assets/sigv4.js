// AWS Signature Version 4 for the console's requests (header form, AWS General Reference
// "Signature Version 4 signing process"). SHA-256 (FIPS 180-4) and HMAC (RFC 2104) are written
// out here so the console also signs on plain-http origins, where WebCrypto is unavailable.
// The secret is read from sessionStorage by app.js and never leaves the page.
'use strict';

const berthSigV4 = (() => {
  const primes = [];
  for (let n = 2; primes.length < 64; n++) if (primes.every((p) => n % p)) primes.push(n);
  const frac = (x) => ((x - Math.floor(x)) * 0x100000000) >>> 0;
  const K = Uint32Array.from(primes, (p) => frac(Math.cbrt(p)));
  const H0 = Uint32Array.from(primes.slice(0, 8), (p) => frac(Math.sqrt(p)));
  const ror = (x, n) => (x >>> n) | (x << (32 - n));
  const enc = new TextEncoder();
  const bytes = (s) => (typeof s === 'string' ? enc.encode(s) : s);
  const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');

  function sha256(input) {
    const msg = bytes(input);
    const l = msg.length;
    const n = ((l + 9 + 63) >> 6) << 6;
    const m = new Uint8Array(n);
    m.set(msg);
    m[l] = 0x80;
    const dv = new DataView(m.buffer);
    dv.setUint32(n - 8, Math.floor(l / 0x20000000));
    dv.setUint32(n - 4, (l << 3) >>> 0);
    const H = Uint32Array.from(H0);
    const W = new Uint32Array(64);
    for (let off = 0; off < n; off += 64) {
      for (let i = 0; i < 16; i++) W[i] = dv.getUint32(off + 4 * i);
      for (let i = 16; i < 64; i++) {
        const a = W[i - 15];
        const b = W[i - 2];
        W[i] = W[i - 16] + (ror(a, 7) ^ ror(a, 18) ^ (a >>> 3)) + W[i - 7] + (ror(b, 17) ^ ror(b, 19) ^ (b >>> 10));
      }
      let [a, b, c, d, e, f, g, h] = H;
      for (let i = 0; i < 64; i++) {
        const t1 = (h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + W[i]) | 0;
        const t2 = ((ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) | 0;
        h = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
      }
      H[0] += a; H[1] += b; H[2] += c; H[3] += d; H[4] += e; H[5] += f; H[6] += g; H[7] += h;
    }
    const out = new Uint8Array(32);
    const ov = new DataView(out.buffer);
    for (let i = 0; i < 8; i++) ov.setUint32(4 * i, H[i]);
    return out;
  }

  function hmac(key, msg) {
    let k = bytes(key);
    if (k.length > 64) k = sha256(k);
    const pad = (x) => { const p = new Uint8Array(64).fill(x); k.forEach((v, i) => { p[i] ^= v; }); return p; };
    const m = bytes(msg);
    const inner = new Uint8Array(64 + m.length);
    inner.set(pad(0x36)); inner.set(m, 64);
    const outer = new Uint8Array(96);
    outer.set(pad(0x5c)); outer.set(sha256(inner), 64);
    return sha256(outer);
  }

  // RFC 3986 encoding as SigV4 wants it (unreserved characters kept).
  const uriEncode = (s) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());

  // A canonical (sorted, encoded) query string from [key, value] pairs; send it as it is.
  function query(pairs) {
    return pairs.map(([k, v]) => [uriEncode(k), uriEncode(String(v))])
      .sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0))
      .map(([k, v]) => `${k}=${v}`).join('&');
  }

  // Headers to add to a request to this origin: x-amz-date, x-amz-content-sha256, authorization.
  // `path` is the request path (no query), `qs` a string from query(), `headers` the other
  // headers to sign, `cred` {id, secret}.
  function sign(method, path, qs, headers, body, cred, now) {
    const amzDate = (now || new Date()).toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
    const date = amzDate.slice(0, 8);
    const payload = hex(sha256(body || ''));
    const h = { host: location.host, 'x-amz-date': amzDate, 'x-amz-content-sha256': payload };
    for (const [k, v] of Object.entries(headers || {})) h[k.toLowerCase()] = String(v).trim().replace(/\s+/g, ' ');
    const names = Object.keys(h).sort();
    const canonical = [method, path, qs || '', ...names.map((n) => `${n}:${h[n]}`), '', names.join(';'), payload].join('\n');
    const scope = `${date}/us-east-1/execute-api/aws4_request`;
    const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, hex(sha256(canonical))].join('\n');
    let k = hmac('AWS4' + cred.secret, date);
    for (const part of ['us-east-1', 'execute-api', 'aws4_request']) k = hmac(k, part);
    return {
      'X-Amz-Date': amzDate,
      'X-Amz-Content-Sha256': payload,
      Authorization: `AWS4-HMAC-SHA256 Credential=${cred.id}/${scope}, SignedHeaders=${names.join(';')}, Signature=${hex(hmac(k, toSign))}`,
    };
  }

  return { sha256, hmac, hex, query, sign };
})();
