//! A small CBOR (RFC 8949) codec between CBOR bytes and `serde_json::Value`, for the
//! smithy-rpc-v2-cbor protocol (Smithy "RPC v2 CBOR": `POST /service/<Service>/operation/<Op>`,
//! `smithy-protocol: rpc-v2-cbor`, `Content-Type: application/cbor`).
//!
//! Decoding: integers, floats (half, single, double), text, byte strings (as base64 text, the
//! JSON form of a blob), arrays, maps with text keys, booleans, null/undefined and tag 1 (epoch
//! seconds; decoded to the bare number, which is what the JSON protocols carry). Definite and
//! indefinite lengths are accepted. Encoding: definite lengths; whole numbers as integers, others as
//! doubles; members whose key is listed as a timestamp key are written as tag 1 + number (a list
//! under such a key gets each element tagged).

use serde_json::{Map, Number, Value};

/// Decoding failures (malformed or truncated input, unsupported items).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cbor: {0}")]
pub struct CborError(pub String);

fn err<T>(m: impl Into<String>) -> Result<T, CborError> {
    Err(CborError(m.into()))
}

/// Decodes one CBOR data item (the whole input; trailing bytes are an error). An empty input
/// decodes to an empty map, as an empty request body means "no members".
pub fn decode(bytes: &[u8]) -> Result<Value, CborError> {
    if bytes.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let mut d = Decoder { b: bytes, i: 0 };
    let v = d.item(0)?;
    if d.i != bytes.len() {
        return err("trailing bytes after the data item");
    }
    Ok(v)
}

struct Decoder<'a> {
    b: &'a [u8],
    i: usize,
}

const BREAK: u8 = 0xff;

impl Decoder<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], CborError> {
        if self.b.len() - self.i < n {
            return err("truncated input");
        }
        let s = &self.b[self.i..self.i + n];
        self.i += n;
        Ok(s)
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// The argument of an initial byte (`None` for indefinite length).
    fn arg(&mut self, info: u8) -> Result<Option<u64>, CborError> {
        Ok(Some(match info {
            0..=23 => info as u64,
            24 => self.take(1)?[0] as u64,
            25 => u16::from_be_bytes(self.take(2)?.try_into().unwrap()) as u64,
            26 => u32::from_be_bytes(self.take(4)?.try_into().unwrap()) as u64,
            27 => u64::from_be_bytes(self.take(8)?.try_into().unwrap()),
            31 => return Ok(None),
            _ => return err(format!("reserved additional info {info}")),
        }))
    }

    fn bytes_of(&mut self, major: u8, info: u8) -> Result<Vec<u8>, CborError> {
        match self.arg(info)? {
            Some(n) => Ok(self.take(n as usize)?.to_vec()),
            None => {
                let mut out = Vec::new();
                loop {
                    if self.peek() == Some(BREAK) {
                        self.i += 1;
                        return Ok(out);
                    }
                    let ib = self.take(1)?[0];
                    if ib >> 5 != major || ib & 31 == 31 {
                        return err("bad chunk in an indefinite-length string");
                    }
                    let n = self.arg(ib & 31)?.unwrap_or(0);
                    out.extend_from_slice(self.take(n as usize)?);
                }
            }
        }
    }

    fn item(&mut self, depth: usize) -> Result<Value, CborError> {
        if depth > 64 {
            return err("nesting too deep");
        }
        let ib = self.take(1)?[0];
        let (major, info) = (ib >> 5, ib & 31);
        match major {
            0 => Ok(Value::from(
                self.arg(info)?.ok_or(CborError("bad int".into()))?,
            )),
            1 => {
                let n = self.arg(info)?.ok_or(CborError("bad int".into()))?;
                Ok(Value::from(-1 - n as i128 as i64))
            }
            2 => {
                use base64::Engine;
                let b = self.bytes_of(2, info)?;
                Ok(Value::String(
                    base64::engine::general_purpose::STANDARD.encode(b),
                ))
            }
            3 => {
                let b = self.bytes_of(3, info)?;
                String::from_utf8(b)
                    .map(Value::String)
                    .map_err(|_| CborError("text is not UTF-8".into()))
            }
            4 => {
                let mut v = Vec::new();
                match self.arg(info)? {
                    Some(n) => {
                        for _ in 0..n {
                            v.push(self.item(depth + 1)?);
                        }
                    }
                    None => {
                        while self.peek() != Some(BREAK) {
                            v.push(self.item(depth + 1)?);
                        }
                        self.i += 1;
                    }
                }
                Ok(Value::Array(v))
            }
            5 => {
                let mut m = Map::new();
                let n = self.arg(info)?;
                let mut k = 0u64;
                loop {
                    match n {
                        Some(n) if k >= n => break,
                        None if self.peek() == Some(BREAK) => {
                            self.i += 1;
                            break;
                        }
                        _ => {}
                    }
                    let key = match self.item(depth + 1)? {
                        Value::String(s) => s,
                        _ => return err("map keys must be text"),
                    };
                    let val = self.item(depth + 1)?;
                    m.insert(key, val);
                    k += 1;
                }
                Ok(Value::Object(m))
            }
            6 => {
                let tag = self.arg(info)?.ok_or(CborError("bad tag".into()))?;
                let v = self.item(depth + 1)?;
                if tag == 1 && v.is_number() {
                    Ok(v)
                } else {
                    err(format!("unsupported tag {tag}"))
                }
            }
            _ => match info {
                20 => Ok(Value::Bool(false)),
                21 => Ok(Value::Bool(true)),
                22 | 23 => Ok(Value::Null),
                25 => {
                    let h = u16::from_be_bytes(self.take(2)?.try_into().unwrap());
                    Ok(float(half_to_f64(h)))
                }
                26 => {
                    let f = f32::from_be_bytes(self.take(4)?.try_into().unwrap());
                    Ok(float(f as f64))
                }
                27 => {
                    let f = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                    Ok(float(f))
                }
                _ => err(format!("unsupported simple value {info}")),
            },
        }
    }
}

fn float(f: f64) -> Value {
    Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

fn half_to_f64(h: u16) -> f64 {
    let exp = (h >> 10) & 0x1f;
    let mant = (h & 0x3ff) as f64;
    let v = match exp {
        0 => mant * 2f64.powi(-24),
        31 if mant == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (mant + 1024.0) * 2f64.powi(e as i32 - 25),
    };
    if h & 0x8000 != 0 {
        -v
    } else {
        v
    }
}

/// Encodes `v`; members named in `timestamp_keys` are written as tag 1 (epoch seconds).
pub fn encode(v: &Value, timestamp_keys: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    enc(&mut out, v, false, timestamp_keys);
    out
}

fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

fn enc(out: &mut Vec<u8>, v: &Value, ts: bool, keys: &[&str]) {
    match v {
        Value::Null => out.push(0xf6),
        Value::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
        Value::Number(n) => {
            if ts {
                head(out, 6, 1);
            }
            if let Some(u) = n.as_u64() {
                head(out, 0, u);
            } else if let Some(i) = n.as_i64() {
                head(out, 1, (-1 - i) as u64);
            } else {
                out.push(0xfb);
                out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_be_bytes());
            }
        }
        Value::String(s) => {
            head(out, 3, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        Value::Array(a) => {
            head(out, 4, a.len() as u64);
            for x in a {
                enc(out, x, ts, keys);
            }
        }
        Value::Object(m) => {
            head(out, 5, m.len() as u64);
            for (k, x) in m {
                head(out, 3, k.len() as u64);
                out.extend_from_slice(k.as_bytes());
                enc(out, x, keys.contains(&k.as_str()), keys);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_with_timestamps() {
        let v = json!({"Label": "CPUUtilization", "Datapoints": [
            {"Timestamp": 1700000000, "Average": 97.5, "Unit": "Percent", "SampleCount": 3}],
            "Timestamps": [1700000000.5, 1700000060], "neg": -5, "ok": true, "none": null});
        let b = encode(&v, &["Timestamp", "Timestamps"]);
        // Tag 1 (0xc1) precedes each timestamp.
        assert_eq!(b.iter().filter(|&&x| x == 0xc1).count(), 3);
        assert_eq!(decode(&b).unwrap(), v);
    }

    #[test]
    fn decodes_rfc8949_examples() {
        // {"a": 1, "b": [2, 3]}
        let b = [0xa2, 0x61, 0x61, 0x01, 0x61, 0x62, 0x82, 0x02, 0x03];
        assert_eq!(decode(&b).unwrap(), json!({"a": 1, "b": [2, 3]}));
        // Indefinite map {_ "Fun": true, "Amt": -2}
        let b = [
            0xbf, 0x63, 0x46, 0x75, 0x6e, 0xf5, 0x63, 0x41, 0x6d, 0x74, 0x21, 0xff,
        ];
        assert_eq!(decode(&b).unwrap(), json!({"Fun": true, "Amt": -2}));
        // Half 1.5, single 100000.0, double 1.1, tag 1 over 1363896240
        assert_eq!(decode(&[0xf9, 0x3e, 0x00]).unwrap(), json!(1.5));
        assert_eq!(
            decode(&[0xfa, 0x47, 0xc3, 0x50, 0x00]).unwrap(),
            json!(100000.0)
        );
        assert_eq!(
            decode(&[0xfb, 0x3f, 0xf1, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a]).unwrap(),
            json!(1.1)
        );
        assert_eq!(
            decode(&[0xc1, 0x1a, 0x51, 0x4b, 0x67, 0xb0]).unwrap(),
            json!(1363896240)
        );
        // Indefinite text (_ "strea", "ming")
        let b = [
            0x7f, 0x65, 0x73, 0x74, 0x72, 0x65, 0x61, 0x64, 0x6d, 0x69, 0x6e, 0x67, 0xff,
        ];
        assert_eq!(decode(&b).unwrap(), json!("streaming"));
        assert_eq!(decode(b"").unwrap(), json!({}));
    }

    #[test]
    fn rejects_malformed() {
        assert!(decode(&[0x82, 0x01]).is_err());
        assert!(decode(&[0x01, 0x02]).is_err());
        assert!(decode(&[0xa1, 0x01, 0x02]).is_err());
        assert!(decode(&[0xc2, 0x01]).is_err());
    }
}
