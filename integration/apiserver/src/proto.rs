//! Just enough of the Kubernetes protobuf encoding to read the request bodies that kubectl's
//! typed clients send (`kubectl create namespace|configmap|secret|serviceaccount|token`).
//! Answers are always JSON.

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::error::{ApiError, ApiResult};

pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(data: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = data.split_first()?;
        *data = rest;
        v |= ((b & 0x7f) as u64) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// The fields of one message, in order.
fn fields(mut data: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let key = varint(&mut data)?;
        let field = match key & 7 {
            0 => Field::Varint(varint(&mut data)?),
            2 => {
                let len = varint(&mut data)? as usize;
                if data.len() < len {
                    return None;
                }
                let (b, rest) = data.split_at(len);
                data = rest;
                Field::Bytes(b)
            }
            1 => {
                data = data.get(8..)?;
                continue;
            }
            5 => {
                data = data.get(4..)?;
                continue;
            }
            _ => return None,
        };
        out.push((key >> 3, field));
    }
    Some(out)
}

fn text(b: &[u8]) -> Value {
    json!(String::from_utf8_lossy(b))
}

/// Protobuf sends empty strings for unset fields: leave those out.
fn set_text(target: &mut Value, key: &str, b: &[u8]) {
    if !b.is_empty() {
        target[key] = text(b);
    }
}

fn b64(b: &[u8]) -> Value {
    json!(base64::engine::general_purpose::STANDARD.encode(b))
}

/// A map entry (key = 1, value = 2) into `m`, the value converted by `conv`.
fn map_entry(m: &mut Value, entry: &[u8], conv: fn(&[u8]) -> Value) -> Option<()> {
    let mut k = String::new();
    let mut v = conv(b"");
    for (n, f) in fields(entry)? {
        match (n, f) {
            (1, Field::Bytes(b)) => k = String::from_utf8_lossy(b).into(),
            (2, Field::Bytes(b)) => v = conv(b),
            _ => {}
        }
    }
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    m[k] = v;
    Some(())
}

fn push(list: &mut Value, v: Value) {
    match list {
        Value::Array(a) => a.push(v),
        other => *other = json!([v]),
    }
}

fn object_meta(data: &[u8]) -> Option<Value> {
    let mut m = json!({});
    for (n, f) in fields(data)? {
        match (n, f) {
            (1, Field::Bytes(b)) => set_text(&mut m, "name", b),
            (2, Field::Bytes(b)) => set_text(&mut m, "generateName", b),
            (3, Field::Bytes(b)) => set_text(&mut m, "namespace", b),
            (6, Field::Bytes(b)) => set_text(&mut m, "resourceVersion", b),
            (11, Field::Bytes(b)) => map_entry(&mut m["labels"], b, text)?,
            (12, Field::Bytes(b)) => map_entry(&mut m["annotations"], b, text)?,
            (14, Field::Bytes(b)) => push(&mut m["finalizers"], text(b)),
            _ => {}
        }
    }
    Some(m)
}

fn names(data: &[u8]) -> Option<Value> {
    let mut r = json!({});
    for (n, f) in fields(data)? {
        if let (1, Field::Bytes(b)) = (n, f) {
            set_text(&mut r, "name", b);
        }
    }
    Some(r)
}

fn object(kind: &str, raw: &[u8]) -> Option<Value> {
    let mut o = json!({});
    for (n, f) in fields(raw)? {
        match (kind, n, f) {
            (_, 1, Field::Bytes(b)) => o["metadata"] = object_meta(b)?,
            ("Namespace", 2, Field::Bytes(b)) => {
                o["spec"] = json!({});
                for (n, f) in fields(b)? {
                    if let (1, Field::Bytes(s)) = (n, f) {
                        push(&mut o["spec"]["finalizers"], text(s));
                    }
                }
            }
            ("ConfigMap", 2, Field::Bytes(b)) => map_entry(&mut o["data"], b, text)?,
            ("ConfigMap", 3, Field::Bytes(b)) => map_entry(&mut o["binaryData"], b, b64)?,
            ("ConfigMap", 4, Field::Varint(v)) => o["immutable"] = json!(v != 0),
            ("Secret", 2, Field::Bytes(b)) => map_entry(&mut o["data"], b, b64)?,
            ("Secret", 3, Field::Bytes(b)) => set_text(&mut o, "type", b),
            ("Secret", 4, Field::Bytes(b)) => map_entry(&mut o["stringData"], b, text)?,
            ("Secret", 5, Field::Varint(v)) => o["immutable"] = json!(v != 0),
            ("ServiceAccount", 3, Field::Bytes(b)) => push(&mut o["imagePullSecrets"], names(b)?),
            ("ServiceAccount", 4, Field::Varint(v)) => {
                o["automountServiceAccountToken"] = json!(v != 0)
            }
            ("TokenRequest", 2, Field::Bytes(b)) => {
                o["spec"] = json!({});
                for (n, f) in fields(b)? {
                    match (n, f) {
                        (1, Field::Bytes(s)) => push(&mut o["spec"]["audiences"], text(s)),
                        (4, Field::Varint(v)) => o["spec"]["expirationSeconds"] = json!(v as i64),
                        (3, Field::Bytes(r)) => {
                            let mut br = json!({});
                            for (n, f) in fields(r)? {
                                if let Field::Bytes(s) = f {
                                    let key = match n {
                                        1 => "kind",
                                        2 => "apiVersion",
                                        3 => "name",
                                        4 => "uid",
                                        _ => continue,
                                    };
                                    set_text(&mut br, key, s);
                                }
                            }
                            o["spec"]["boundObjectRef"] = br;
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(o)
}

/// Decodes a protobuf request body (`k8s\0` + runtime.Unknown) of the kinds above into JSON.
pub fn decode(body: &[u8]) -> ApiResult<Value> {
    let bad = || ApiError::bad_request("unable to decode the protobuf request body");
    let envelope = body.strip_prefix(b"k8s\0").ok_or_else(bad)?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, f) in fields(envelope).ok_or_else(bad)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (n, f) in fields(tm).ok_or_else(bad)? {
                    match (n, f) {
                        (1, Field::Bytes(b)) => api_version = String::from_utf8_lossy(b).into(),
                        (2, Field::Bytes(b)) => kind = String::from_utf8_lossy(b).into(),
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    if ![
        "Namespace",
        "ConfigMap",
        "Secret",
        "ServiceAccount",
        "TokenRequest",
    ]
    .contains(&kind.as_str())
    {
        return Err(ApiError::unsupported_media("application/json"));
    }
    let mut o = object(&kind, raw).ok_or_else(bad)?;
    o["kind"] = json!(kind);
    o["apiVersion"] = json!(api_version);
    Ok(o)
}
