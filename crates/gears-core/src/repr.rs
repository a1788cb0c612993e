//! Python's `str()` and `repr()` of core records.
//!
//! RedisGears replies with `str(record)` by default (`convertToStr=True`), so a record must
//! print exactly as CPython prints the equivalent value, whichever language produced it.

use crate::record::Record;

/// `str(value)`: strings print bare, everything else as `repr`.
pub fn python_str(record: &Record) -> String {
    match record {
        Record::String(s) => s.clone(),
        Record::Error(e) => e.clone(),
        other => python_repr(other),
    }
}

/// `repr(value)`.
pub fn python_repr(record: &Record) -> String {
    let mut out = String::new();
    write_repr(record, &mut out);
    out
}

fn write_repr(record: &Record, out: &mut String) {
    match record {
        Record::Nil => out.push_str("None"),
        Record::Bool(true) => out.push_str("True"),
        Record::Bool(false) => out.push_str("False"),
        Record::Integer(i) => out.push_str(&i.to_string()),
        Record::Float(f) => out.push_str(&python_float_repr(*f)),
        Record::String(s) => write_str_repr(s, out),
        Record::Bytes(b) => write_bytes_repr(b, out),
        Record::Error(e) => write_str_repr(e, out),
        Record::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(item, out);
            }
            out.push(']');
        }
        Record::Map(entries) => write_map(entries.iter().map(|(k, v)| (k, v)), out),
        Record::Key(key) => write_repr(&key.to_map(), out),
        Record::Native(_) => out.push_str("<native value>"),
    }
}

fn write_map<'a>(entries: impl Iterator<Item = (&'a Record, &'a Record)>, out: &mut String) {
    out.push('{');
    for (i, (k, v)) in entries.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_repr(k, out);
        out.push_str(": ");
        write_repr(v, out);
    }
    out.push('}');
}

fn write_str_repr(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if (0x80..0xa0).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

fn write_bytes_repr(bytes: &[u8], out: &mut String) {
    let quote = if bytes.contains(&b'\'') && !bytes.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    out.push('b');
    out.push(quote as char);
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            b if b == quote => {
                out.push('\\');
                out.push(b as char);
            }
            0x20..=0x7e => out.push(b as char),
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push(quote as char);
}

/// `repr(float)`: the shortest digits that round-trip, in fixed notation for exponents in
/// `-4..16` and scientific notation (`1e+16`, `1.5e-05`) otherwise.
pub fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // `{:e}` gives the shortest round-trip digits: "-1.2345e3".
    let sci = format!("{f:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if (-4..16).contains(&exponent) {
        if exponent < 0 {
            out.push_str("0.");
            out.push_str(&"0".repeat((-exponent - 1) as usize));
            out.push_str(&digits);
        } else {
            let point = exponent as usize + 1;
            if digits.len() <= point {
                out.push_str(&digits);
                out.push_str(&"0".repeat(point - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exponent < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exponent.abs()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::KeyRecord;

    #[test]
    fn floats_print_like_python() {
        let cases = [
            (14.0, "14.0"),
            (44.6, "44.6"),
            (49.5, "49.5"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456789012345.0, "123456789012345.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e100, "1e+100"),
            (0.0, "0.0"),
            (f64::INFINITY, "inf"),
        ];
        for (value, expected) in cases {
            assert_eq!(python_float_repr(value), expected, "{value}");
        }
    }

    #[test]
    fn strings_pick_quotes_like_python() {
        assert_eq!(python_repr(&Record::from("abc")), "'abc'");
        assert_eq!(python_repr(&Record::from("it's")), "\"it's\"");
        assert_eq!(python_repr(&Record::from("a'b\"c")), "'a\\'b\"c'");
        assert_eq!(python_repr(&Record::from("a\nb")), "'a\\nb'");
        assert_eq!(python_repr(&Record::Bytes(vec![0xff, b'a'])), "b'\\xffa'");
    }

    #[test]
    fn key_record_prints_as_redisgears_dict() {
        let record = Record::Key(Box::new(KeyRecord {
            key: b"user:1".to_vec(),
            value: Some(Record::Map(vec![
                (Record::from("name"), Record::from("Ann")),
                (Record::from("age"), Record::from("40")),
            ])),
            key_type: "hash".into(),
            event: None,
        }));
        assert_eq!(
            python_str(&record),
            "{'event': None, 'key': 'user:1', 'type': 'hash', 'value': {'name': 'Ann', 'age': '40'}}"
        );
    }

    #[test]
    fn containers_and_scalars() {
        let record = Record::List(vec![
            Record::Integer(1),
            Record::Bool(true),
            Record::Nil,
            Record::Float(2.0),
            Record::List(vec![]),
        ]);
        assert_eq!(python_str(&record), "[1, True, None, 2.0, []]");
        assert_eq!(python_str(&Record::from("plain")), "plain");
    }
}
