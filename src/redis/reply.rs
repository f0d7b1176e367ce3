//! The entries of an `XREADGROUP` reply, taken from the client's reply by value.
//!
//! The client's own `StreamReadReply` clones the whole reply before converting it (it tries
//! one shape, then another, each on a copy): a quarter of a stream source's instructions went
//! to that copy. And `Cmd::query` first rebuilds every array of the reply to look for error
//! values in it. Here the reply, as `ConnectionLike::req_command` returns it, is walked once:
//! its strings are moved into the entries and an error value anywhere in it is the error.

use redis::{ErrorKind, RedisError, Value};

use super::entry::{Entry, Fields};

/// The entries of an `XREADGROUP` (or `XREAD`) reply, in order: `Nil` when nothing came,
/// else one row per stream (RESP2: `[[stream, [[id, [field, value, ...]], ...]], ...]`;
/// RESP3: a map from stream to its entries). An entry deleted while pending comes with nil
/// fields (an entry with no field).
pub(crate) fn entries(reply: Value) -> Result<Vec<Entry>, RedisError> {
    let mut out = Vec::new();
    match check(reply)? {
        Value::Nil => {}
        Value::Array(streams) => {
            for stream in streams {
                match check(stream)? {
                    Value::Array(row) if row.len() == 2 => {
                        let entries = row.into_iter().nth(1).expect("two elements");
                        stream_entries(entries, &mut out)?;
                    }
                    _ => return Err(shape("a stream's row is not [name, entries]")),
                }
            }
        }
        Value::Map(streams) => {
            for (_, entries) in streams {
                stream_entries(entries, &mut out)?;
            }
        }
        _ => return Err(shape("the reply is neither nil, an array nor a map")),
    }
    Ok(out)
}

/// One stream's entries: `[[id, fields], ...]`.
fn stream_entries(entries: Value, out: &mut Vec<Entry>) -> Result<(), RedisError> {
    let entries = match check(entries)? {
        Value::Array(entries) => entries,
        Value::Nil => return Ok(()),
        _ => return Err(shape("a stream's entries are not an array")),
    };
    out.reserve(entries.len());
    for entry in entries {
        // `[id, fields]`, and with `XREADGROUP ... CLAIM` two more elements, not used here.
        let Value::Array(parts) = check(entry)? else {
            return Err(shape("an entry is not [id, fields]"));
        };
        let mut parts = parts.into_iter();
        let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
            return Err(shape("an entry is not [id, fields]"));
        };
        out.push(Entry {
            id: text(check(id)?).ok_or_else(|| shape("an entry's id is not a string"))?,
            fields: fields_of(fields)?,
        });
    }
    Ok(())
}

/// An entry's fields: `[field, value, ...]`, a map (RESP3), or nil (deleted).
fn fields_of(fields: Value) -> Result<Fields, RedisError> {
    let mut out = Fields::new();
    match check(fields)? {
        Value::Nil => {}
        Value::Array(flat) => {
            if flat.len() % 2 != 0 {
                return Err(shape("an entry's fields are not field-value pairs"));
            }
            let mut flat = flat.into_iter();
            while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                let k = text(check(k)?).ok_or_else(|| shape("a field's name is not a string"))?;
                out.insert(k, super::entry::value_bytes(check(v)?));
            }
        }
        Value::Map(pairs) => {
            for (k, v) in pairs {
                let k = text(check(k)?).ok_or_else(|| shape("a field's name is not a string"))?;
                out.insert(k, super::entry::value_bytes(check(v)?));
            }
        }
        _ => return Err(shape("an entry's fields are not an array")),
    }
    Ok(out)
}

/// A string of the reply, moved out (bulk strings that are not UTF-8 are refused).
fn text(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// The value itself, without the attributes a RESP3 server may attach; an error value is the
/// error.
fn check(v: Value) -> Result<Value, RedisError> {
    match v {
        Value::Attribute { data, .. } => check(*data),
        Value::ServerError(e) => Err(e.into()),
        v => Ok(v),
    }
}

fn shape(what: &'static str) -> RedisError {
    RedisError::from((
        ErrorKind::UnexpectedReturnType,
        "unexpected XREADGROUP reply",
        what.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[(&str, &str)]) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(
                fields
                    .iter()
                    .flat_map(|(k, v)| [bulk(k), bulk(v)])
                    .collect(),
            ),
        ])
    }

    fn expected(id: &str, fields: &[(&str, &str)]) -> Entry {
        Entry {
            id: id.into(),
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn a_resp2_reply_gives_its_entries_in_order() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![
                entry("1-0", &[("n", "1"), ("m", "x")]),
                entry("1-1", &[("n", "2")]),
                // Deleted while pending: nil fields.
                Value::Array(vec![bulk("1-2"), Value::Nil]),
            ]),
        ])]);
        assert_eq!(
            entries(reply).unwrap(),
            [
                expected("1-0", &[("n", "1"), ("m", "x")]),
                expected("1-1", &[("n", "2")]),
                expected("1-2", &[]),
            ]
        );
        assert_eq!(entries(Value::Nil).unwrap(), []);
    }

    #[test]
    fn a_resp3_reply_gives_the_same_entries() {
        let reply = Value::Map(vec![(
            bulk("s"),
            Value::Array(vec![Value::Array(vec![
                bulk("1-0"),
                Value::Map(vec![(bulk("n"), bulk("1"))]),
            ])]),
        )]);
        assert_eq!(entries(reply).unwrap(), [expected("1-0", &[("n", "1")])]);
    }

    #[test]
    fn the_same_entries_as_the_clients_own_conversion() {
        use redis::streams::StreamReadReply;
        use redis::FromRedisValue;
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![
                entry("5-0", &[("a", "1")]),
                entry("5-1", &[("b", "2"), ("c", "3")]),
            ]),
        ])]);
        let theirs: Vec<Entry> = StreamReadReply::from_redis_value(reply.clone())
            .unwrap()
            .keys
            .into_iter()
            .flat_map(|k| k.ids)
            .map(Entry::from)
            .collect();
        assert_eq!(entries(reply).unwrap(), theirs);
    }

    #[test]
    fn a_reply_of_another_shape_is_an_error_naming_what_is_wrong() {
        for (reply, what) in [
            (Value::Int(3), "neither nil"),
            (Value::Array(vec![Value::Int(1)]), "[name, entries]"),
            (
                Value::Array(vec![Value::Array(vec![
                    bulk("s"),
                    Value::Array(vec![Value::Array(vec![
                        bulk("1-0"),
                        Value::Array(vec![bulk("k")]),
                    ])]),
                ])]),
                "field-value pairs",
            ),
        ] {
            let e = entries(reply).unwrap_err();
            assert!(e.to_string().contains(what), "{e}");
        }
    }

    #[test]
    fn an_error_value_anywhere_in_a_reply_is_the_error() {
        // As the client parses them off the wire: a whole reply that is an error, and an
        // error in place of a field's value.
        let parse = |wire: &str| redis::parse_redis_value(wire.as_bytes()).unwrap();
        let whole = parse("-NOGROUP No such key 's' or consumer group 'g'\r\n");
        let e = entries(whole).unwrap_err();
        assert!(e.to_string().contains("No such key"), "{e}");
        let inside = parse(concat!(
            "*1\r\n*2\r\n$1\r\ns\r\n*2\r\n",
            "*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nn\r\n$1\r\n1\r\n",
            "*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nn\r\n-ERR value lost\r\n",
        ));
        let e = entries(inside).unwrap_err();
        assert!(e.to_string().contains("value lost"), "{e}");
    }
}
