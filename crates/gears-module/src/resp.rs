//! A RESP2 reader for the protocol bytes of a `RedisModule_Call` reply, so that a reply can be
//! kept and sent later (to a blocked client) with statuses, errors and bulk strings apart.

use gears_core::ReplyValue;

/// The value at the start of `bytes` and how many bytes it took; `None` if it is cut short or
/// not RESP2.
pub(crate) fn parse(bytes: &[u8]) -> Option<(ReplyValue, usize)> {
    let end = bytes.windows(2).position(|w| w == b"\r\n")?;
    let line = &bytes[1..end];
    let text = || String::from_utf8_lossy(line).into_owned();
    let number = || std::str::from_utf8(line).ok()?.parse::<i64>().ok();
    let after = end + 2;
    match bytes.first()? {
        b'+' => Some((ReplyValue::Status(text()), after)),
        b'-' => Some((ReplyValue::Error(text()), after)),
        b':' => Some((ReplyValue::Integer(number()?), after)),
        b'$' => {
            let len = number()?;
            if len < 0 {
                return Some((ReplyValue::Null, after));
            }
            let len = len as usize;
            let data = bytes.get(after..after + len)?;
            Some((ReplyValue::Bulk(data.to_vec()), after + len + 2))
        }
        b'*' => {
            let count = number()?;
            if count < 0 {
                return Some((ReplyValue::Null, after));
            }
            let mut items = Vec::with_capacity(count.min(1024) as usize);
            let mut at = after;
            for _ in 0..count {
                let (item, used) = parse(bytes.get(at..)?)?;
                items.push(item);
                at += used;
            }
            Some((ReplyValue::Array(items), at))
        }
        _ => None,
    }
}

/// The RESP2 bytes of a reply (what [`parse`] reads back).
pub(crate) fn encode(value: &ReplyValue, out: &mut Vec<u8>) {
    match value {
        ReplyValue::Status(s) => {
            out.push(b'+');
            out.extend(s.replace(['\r', '\n'], " ").as_bytes());
            out.extend(b"\r\n");
        }
        ReplyValue::Error(s) => {
            out.push(b'-');
            out.extend(s.replace(['\r', '\n'], " ").as_bytes());
            out.extend(b"\r\n");
        }
        ReplyValue::Integer(i) => out.extend(format!(":{i}\r\n").as_bytes()),
        ReplyValue::Bulk(b) => {
            out.extend(format!("${}\r\n", b.len()).as_bytes());
            out.extend(b);
            out.extend(b"\r\n");
        }
        ReplyValue::Null => out.extend(b"$-1\r\n"),
        ReplyValue::Array(items) => {
            out.extend(format!("*{}\r\n", items.len()).as_bytes());
            for item in items {
                encode(item, out);
            }
        }
    }
}

/// Appends `n` in decimal (made for every stream entry and every execution: no formatting
/// machinery).
pub(crate) fn push_decimal(text: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    text.extend(digits[at..].iter().map(|&d| char::from(d)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_resp2_type() {
        let bytes = b"*5\r\n+OK\r\n-ERR no\r\n:-3\r\n$3\r\na\r\n\r\n$-1\r\n";
        assert_eq!(
            parse(bytes),
            Some((
                ReplyValue::Array(vec![
                    ReplyValue::Status("OK".into()),
                    ReplyValue::Error("ERR no".into()),
                    ReplyValue::Integer(-3),
                    ReplyValue::Bulk(b"a\r\n".to_vec()),
                    ReplyValue::Null,
                ]),
                bytes.len()
            ))
        );
        assert_eq!(parse(b"$5\r\nab"), None);
    }

    #[test]
    fn decimals() {
        for n in [0u64, 7, 10, 99, 1_000_000, u64::MAX] {
            let mut text = String::from("x-");
            super::push_decimal(&mut text, n);
            assert_eq!(text, format!("x-{n}"));
        }
    }
}
