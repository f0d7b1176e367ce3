//! [`Entry`]: one stream entry, its id and its fields; the conversion from the client's reply
//! and the JSON decoding and encoding of typed sources and sinks (pure, no I/O).

use std::collections::BTreeMap;
use std::fmt;

use redis::streams::StreamId;
use redis::Value;

/// The fields of a stream entry, by name (Redis keeps them in order of insertion; a map by
/// name is what handlers look things up in).
pub type Fields = BTreeMap<String, Vec<u8>>;

/// One entry of a stream, as a [`StreamSource`](super::StreamSource) without a type emits
/// it.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its id (`<milliseconds>-<sequence>`).
    pub id: String,
    /// Its fields.
    pub fields: Fields,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields: BTreeMap<&str, String> = self
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        f.debug_struct("Entry")
            .field("id", &self.id)
            .field("fields", &fields)
            .finish()
    }
}

impl Entry {
    /// The field `name` as UTF-8 text; `None` if it is missing or not UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    pub(crate) fn from_reply(s: StreamId) -> Entry {
        Entry::from(s)
    }
}

impl From<StreamId> for Entry {
    /// An entry of the client's reply (`XRANGE`, `XREADGROUP`), its values as bytes.
    fn from(s: StreamId) -> Entry {
        let fields = s
            .map
            .into_iter()
            .map(|(k, v)| (k, value_bytes(v)))
            .collect();
        Entry { id: s.id, fields }
    }
}

/// The bytes of a field's value (Redis sends bulk strings; anything else is rendered).
pub(crate) fn value_bytes(v: Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.into_bytes(),
        Value::Int(i) => i.to_string().into_bytes(),
        other => format!("{other:?}").into_bytes(),
    }
}

/// Decodes the JSON in `field` of `entry` into `T`.
pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(
    entry: &Entry,
    field: &str,
) -> Result<T, String> {
    let raw = entry
        .fields
        .get(field)
        .ok_or_else(|| format!("entry {} has no field `{field}`", entry.id))?;
    serde_json::from_slice(raw).map_err(|e| format!("entry {}: field `{field}`: {e}", entry.id))
}

/// Encodes `value` as JSON in one field named `field`.
pub(crate) fn encode_json<T: serde::Serialize>(value: &T, field: &str) -> Result<Fields, String> {
    let json = serde_json::to_vec(value).map_err(|e| format!("field `{field}`: {e}"))?;
    Ok(Fields::from([(field.to_owned(), json)]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(serde::Deserialize, serde::Serialize, Debug, PartialEq)]
    struct Job {
        n: u32,
    }

    #[test]
    fn entries_convert_and_decode() {
        let reply = StreamId {
            id: "1-2".into(),
            map: HashMap::from([
                ("json".to_owned(), Value::BulkString(b"{\"n\":7}".to_vec())),
                ("bad".to_owned(), Value::BulkString(b"{".to_vec())),
            ]),
            ..StreamId::default()
        };
        let e = Entry::from_reply(reply);
        assert_eq!(e.id, "1-2");
        assert_eq!(e.get_str("json"), Some("{\"n\":7}"));
        assert_eq!(decode_json::<Job>(&e, "json"), Ok(Job { n: 7 }));
        let missing = decode_json::<Job>(&e, "nope").unwrap_err();
        assert!(missing.contains("no field `nope`"), "{missing}");
        let bad = decode_json::<Job>(&e, "bad").unwrap_err();
        assert!(bad.starts_with("entry 1-2: field `bad`"), "{bad}");
        let fields = encode_json(&Job { n: 3 }, "json").unwrap();
        assert_eq!(fields["json"], b"{\"n\":3}");
    }
}
