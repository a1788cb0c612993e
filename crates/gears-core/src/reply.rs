//! The RESP shape of results, as RedisGears 1.2 encodes a Python record
//! (`PythonRecord_SendReply`).

use crate::executor::ExecutionOutcome;
use crate::record::Record;

/// A reply to send to a Redis client.
#[derive(Clone, Debug, PartialEq)]
pub enum ReplyValue {
    Bulk(Vec<u8>),
    Status(String),
    Error(String),
    Integer(i64),
    Array(Vec<ReplyValue>),
    Null,
}

const PY_RECORD: &[u8] = b"PY RECORD";

/// C's `printf("%lf")`.
fn c_float(f: f64) -> String {
    if f.is_nan() {
        if f.is_sign_negative() { "-nan" } else { "nan" }.to_string()
    } else if f.is_infinite() {
        if f > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{f:.6}")
    }
}

/// One result record: lists become arrays, integers and booleans integers, floats `%lf` bulk
/// strings, strings bulk strings except that a string longer than one character starting with
/// `+` is a status and one starting with `-` an error; anything else is `"PY RECORD"`.
pub fn encode_record(record: &Record) -> ReplyValue {
    match record {
        Record::List(items) => ReplyValue::Array(items.iter().map(encode_record).collect()),
        Record::Integer(i) => ReplyValue::Integer(*i),
        Record::Bool(b) => ReplyValue::Integer(*b as i64),
        Record::Float(f) => ReplyValue::Bulk(c_float(*f).into_bytes()),
        Record::String(s) if s.len() > 1 && s.starts_with('+') => {
            ReplyValue::Status(s[1..].to_string())
        }
        Record::String(s) if s.len() > 1 && s.starts_with('-') => {
            ReplyValue::Error(s[1..].to_string())
        }
        Record::String(s) => ReplyValue::Bulk(s.clone().into_bytes()),
        Record::Bytes(b) => ReplyValue::Bulk(b.clone()),
        Record::Error(e) => ReplyValue::Error(e.clone()),
        Record::Nil | Record::Map(_) | Record::Key(_) | Record::Native(_) => {
            ReplyValue::Bulk(PY_RECORD.to_vec())
        }
    }
}

/// A hooked command's reply (the hook's one result, or `override_reply`'s value): as
/// [`encode_record`], except that nil is the nil reply at any depth, so that a hook returning
/// `call_next(...)` answers as the command would (`GET` of a missing key: nil, where RedisGears
/// 1.2 replied `"PY RECORD"`).
pub fn encode_command_reply(record: &Record) -> ReplyValue {
    match record {
        Record::Nil => ReplyValue::Null,
        Record::List(items) => ReplyValue::Array(items.iter().map(encode_command_reply).collect()),
        other => encode_record(other),
    }
}

/// `[[results], [errors]]`, errors as bulk strings.
pub fn encode_outcome(outcome: &ExecutionOutcome) -> ReplyValue {
    ReplyValue::Array(vec![
        ReplyValue::Array(outcome.results.iter().map(encode_record).collect()),
        ReplyValue::Array(
            outcome
                .errors
                .iter()
                .map(|e| ReplyValue::Bulk(e.clone().into_bytes()))
                .collect(),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_record_rules() {
        assert_eq!(
            encode_record(&Record::Float(3.5)),
            ReplyValue::Bulk(b"3.500000".to_vec())
        );
        assert_eq!(
            encode_record(&Record::Float(1e20)),
            ReplyValue::Bulk(b"100000000000000000000.000000".to_vec())
        );
        assert_eq!(encode_record(&Record::Bool(true)), ReplyValue::Integer(1));
        assert_eq!(
            encode_record(&Record::from("-1")),
            ReplyValue::Error("1".into())
        );
        assert_eq!(
            encode_record(&Record::from("+OK")),
            ReplyValue::Status("OK".into())
        );
        assert_eq!(
            encode_record(&Record::from("-")),
            ReplyValue::Bulk(b"-".to_vec())
        );
        assert_eq!(
            encode_record(&Record::Nil),
            ReplyValue::Bulk(b"PY RECORD".to_vec())
        );
        assert_eq!(
            encode_record(&Record::List(vec![Record::Integer(1), Record::from("a")])),
            ReplyValue::Array(vec![
                ReplyValue::Integer(1),
                ReplyValue::Bulk(b"a".to_vec())
            ])
        );
    }

    #[test]
    fn a_command_reply_keeps_nil_at_any_depth() {
        assert_eq!(encode_command_reply(&Record::Nil), ReplyValue::Null);
        assert_eq!(
            encode_command_reply(&Record::List(vec![
                Record::from("v"),
                Record::Nil,
                Record::List(vec![Record::Nil])
            ])),
            ReplyValue::Array(vec![
                ReplyValue::Bulk(b"v".to_vec()),
                ReplyValue::Null,
                ReplyValue::Array(vec![ReplyValue::Null])
            ])
        );
        assert_eq!(
            encode_command_reply(&Record::from("+OK")),
            ReplyValue::Status("OK".into())
        );
    }
}
